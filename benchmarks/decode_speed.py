"""Decoding speed: batched greedy and beam search against a per-image beam search loop.

Prints captions/s for greedy and beam 3 and 5 at batch 1 and 64, for two configurations:

- `main`: the small CNN model, once the main job's (small_cnn at 128 px, 8x8 grid, LSTM 256, 33-word
  vocabulary, 20 words + <end>), from cached encoder features and end to end from JPEG files
  (reading, resizing, encoding, decoding and building the per-word attention maps, as
  `caption_files` does; it reads the next batch while decoding the current one, which
  shows from `--images 128` on, two batches of 64);
- `scale`: 13 steps, LSTM 512, embedding and attention 512, a 7x7x1280 grid and 10,000 words,
  from cached features.

Weights are random (speed does not depend on them), and the output bias of `<end>` is set
very low so that no caption ends early: every search, batched or per image, runs exactly its
maximum number of steps, and the measures compare the same work. The per-image baseline is
the usual one: one image at a time, its K beams as a batch of K rows through the same
compiled decoder step, the bookkeeping in NumPy, beams dropping out as they reach <end>.

    PYTHONPATH=. python benchmarks/decode_speed.py [--config main scale] [--images 64] [--xla]
        [--beams 1 3 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from captioner.data.image_pipeline import resize_images  # noqa: E402
from captioner.data.images import load_image  # noqa: E402
from captioner.data.vocabulary import Vocabulary  # noqa: E402
from captioner.inference.caption_files import caption_files  # noqa: E402
from captioner.inference.captioner import Captioner  # noqa: E402
from captioner.inference.search import beam_search, greedy_search  # noqa: E402
from captioner.models.captioning_model import CaptioningModel  # noqa: E402
from captioner.models.decoder import AttentionDecoder  # noqa: E402

BEAMS = (1, 3, 5)
BATCHES = (1, 64)
PER_IMAGE_COUNT = 8  # images timed one at a time (per-image loop and batch 1)
PAD, START, END = 0, 1, 2


def per_image_beam_search(step, state, beam_size: int, max_steps: int, vocab_size: int):
    """Decodes one image: state rows (1, ...), K beams as rows, NumPy bookkeeping."""
    k = beam_size
    state = tuple(tf.repeat(x, k, axis=0) for x in state)
    tokens = np.full(k, START, np.int32)
    scores = np.zeros(k, np.float32)
    scores[1:] = -np.inf  # one live beam at the start
    sequences = [[] for _ in range(k)]
    finished, finished_scores = [], []
    for _ in range(max_steps):
        logits, state, _, _ = step(tf.constant(tokens), state)
        log_probs = tf.nn.log_softmax(logits).numpy()
        log_probs[:, [PAD, START]] = -np.inf
        total = (scores[:, None] + log_probs).ravel()
        best = np.argsort(-total, kind="stable")[:k]
        parent, word = best // vocab_size, best % vocab_size
        ended = word == END
        for i in np.flatnonzero(ended):
            finished.append(sequences[parent[i]] + [END])
            finished_scores.append(total[best[i]])
        going = ~ended
        k = int(going.sum())
        if k == 0:
            break
        parent, word = parent[going], word[going]
        sequences = [sequences[p] + [w] for p, w in zip(parent, word)]
        scores = total[best[going]]
        tokens = word.astype(np.int32)
        state = tuple(tf.gather(x, parent) for x in state)
    if finished:
        return finished[int(np.argmax(finished_scores))]
    return sequences[int(np.argmax(scores))]


def never_end(decoder: AttentionDecoder) -> None:
    """Makes `<end>` so unlikely that every search runs its maximum number of steps."""
    bias = decoder.out.bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[END]], [-1e4]))


def compiled_step(decoder: AttentionDecoder, length: int, depth: int, attention_dim: int):
    """The decoder step as one tf.function for any number of rows."""
    rows = tf.TensorSpec((None,), tf.int32)
    units = decoder.units
    state = (
        tf.TensorSpec((None, units)),
        tf.TensorSpec((None, units)),
        tf.TensorSpec((None, length, depth)),
        tf.TensorSpec((None, length, attention_dim)),
    )
    return tf.function(lambda tokens, state: decoder.step(tokens, state), [rows, state])


def batched_search(
    decoder: AttentionDecoder, length: int, depth: int, max_steps: int, k: int, xla: bool
):
    """Compiled batched search on cached annotations (B, L, D)."""
    options = dict(start_id=START, end_id=END, max_length=max_steps, banned_ids=(PAD, START))

    def search(annotations):
        state = decoder.initial_state(annotations)
        if k == 1:
            return greedy_search(decoder.step, state, **options)
        return beam_search(
            decoder.step,
            state,
            beam_size=k,
            static_entries=decoder.static_state_entries,
            **options,
        )

    signature = [tf.TensorSpec((None, length, depth))]
    return tf.function(search, input_signature=signature, jit_compile=xla)


def interleaved_rates(runs: dict, repeats: int) -> dict:
    """Captions/s of every `run()` in `runs` ({name: (run, captions)}), best of `repeats`.

    After a warm-up of each, every repeat times all the runs one after the other, so that a
    change of load on a shared machine hits the compared runs alike.
    """
    for run, _ in runs.values():
        run()
    best = {name: np.inf for name in runs}
    for _ in range(repeats):
        for name, (run, _) in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: count / best[name] for name, (_, count) in runs.items()}


def feature_rows(
    decoder, length, depth, attention_dim, max_steps, images, vocab_size, xla, beams, repeats
):
    """Captions/s from cached features: [(search, batch, captions/s)]."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(max(BATCHES), length, depth)).astype(np.float32)
    rows = []
    step = compiled_step(decoder, length, depth, attention_dim)
    initial = tf.function(decoder.initial_state)
    for k in beams:
        runs = {}
        for batch in BATCHES:
            search = batched_search(decoder, length, depth, max_steps, k, xla)
            chunk = tf.constant(features[:batch])
            calls = max(1, images // batch) if batch > 1 else min(images, PER_IMAGE_COUNT)

            def batched(search=search, chunk=chunk, calls=calls):
                for _ in range(calls):
                    search(chunk)

            runs[f"batched, batch {batch}"] = (batched, calls * batch)
        count = min(images, PER_IMAGE_COUNT)

        def per_image(k=k, count=count):
            for i in range(count):
                state = initial(tf.constant(features[i : i + 1]))
                per_image_beam_search(step, state, k, max_steps, vocab_size)

        runs["per image"] = (per_image, count)
        rows += [(k, how, value) for how, value in interleaved_rates(runs, repeats).items()]
    return rows


def write_jpegs(folder: Path, count: int, size: int) -> list[Path]:
    """Smooth random colour images, as JPEG files of about the synthetic data's size."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        paths.append(folder / f"image_{i:03d}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def file_rows(
    model: CaptioningModel, vocab: Vocabulary, images: int, xla: bool, beams, repeats: int
):
    """Captions/s end to end from JPEG files: [(search, batch, captions/s)]."""
    rows = []
    gh, gw = model.grid_size
    depth = annotation_depth(model)
    decoder = model.decoder
    step = compiled_step(decoder, gh * gw, depth, decoder.attention_dim)
    encode = tf.function(
        lambda images: decoder.initial_state(model.encode(images)[0]),
        input_signature=[tf.TensorSpec((None, model.image_size, model.image_size, 3), tf.uint8)],
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), max(images, max(BATCHES)), model.image_size)
        for k in beams:
            captioner = Captioner(model, vocab, beam_size=k, jit_compile=xla)
            runs = {}
            for batch in BATCHES:
                chosen = (
                    paths[: max(batch, images)]
                    if batch > 1
                    else paths[: min(images, PER_IMAGE_COUNT)]
                )

                def batched(chosen=chosen, batch=batch, captioner=captioner):
                    for _ in caption_files(captioner, chosen, batch_size=batch):
                        pass

                runs[f"batched, batch {batch}"] = (batched, len(chosen))
            count = min(images, PER_IMAGE_COUNT)

            def per_image(k=k, count=count):
                for path in paths[:count]:
                    # The same compiled resize as caption_files, for one image.
                    pixels = resize_images([load_image(path)], model.image_size)
                    state = encode(pixels)
                    per_image_beam_search(step, state, k, model.max_length + 1, model.vocab_size)

            runs["per image"] = (per_image, count)
            rows += [(k, how, value) for how, value in interleaved_rates(runs, repeats).items()]
    return rows


def annotation_depth(model: CaptioningModel) -> int:
    """D of the decoder's annotations: the encoder's depth plus the grid coordinates."""
    images = np.zeros((1, model.image_size, model.image_size, 3), np.uint8)
    return int(model.encode(images)[0].shape[-1])


def print_table(title: str, rows, beams) -> None:
    print(f"\n{title}\n")
    print("| search | decoding | captions/s |")
    print("|---|---|---:|")
    for k, how, value in rows:
        name = "greedy" if k == 1 else f"beam {k}"
        print(f"| {name} | {how} | {value:.1f} |")
    by_k = {(k, how): v for k, how, v in rows}
    for k in beams:
        speedup = by_k[(k, f"batched, batch {max(BATCHES)}")] / by_k[(k, "per image")]
        print(f"\nbeam {k}: batched at batch {max(BATCHES)} is {speedup:.1f}x the per-image loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", choices=("main", "scale"), default=["main", "scale"])
    parser.add_argument("--images", type=int, default=64, help="captions per batched measure")
    parser.add_argument("--xla", action="store_true", help="compile the batched searches with XLA")
    parser.add_argument(
        "--beams", type=int, nargs="+", default=BEAMS, help="beam sizes (1: greedy; default: 1 3 5)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, the best kept")
    args = parser.parse_args()
    tuning = (args.beams, args.repeats)
    keras.utils.set_random_seed(0)
    print(
        f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, XLA {args.xla}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    if "main" in args.config:
        vocab = Vocabulary([f"w{i}" for i in range(29)])
        model = CaptioningModel(len(vocab), image_size=128, max_length=20)
        model.build()
        never_end(model.decoder)
        gh, gw = model.grid_size
        depth = annotation_depth(model)
        print_table(
            f"main: cached features ({gh}x{gw}x{depth} grid, LSTM 256, V {len(vocab)}, 21 steps)",
            feature_rows(
                model.decoder, gh * gw, depth, 128, 21, args.images, len(vocab), args.xla, *tuning
            ),
            args.beams,
        )
        print_table(
            "main: end to end from JPEG files",
            file_rows(model, vocab, args.images, args.xla, *tuning),
            args.beams,
        )
    if "scale" in args.config:
        vocab_size, length, depth = 10_000, 49, 1280
        decoder = AttentionDecoder(vocab_size, embed_dim=512, units=512, attention_dim=512)
        decoder.step(tf.zeros((1,), tf.int32), decoder.initial_state(tf.zeros((1, length, depth))))
        never_end(decoder)
        print_table(
            "scale: cached features (7x7x1280 grid, LSTM 512, V 10000, 13 steps)",
            feature_rows(
                decoder, length, depth, 512, 13, args.images, vocab_size, args.xla, *tuning
            ),
            args.beams,
        )
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
