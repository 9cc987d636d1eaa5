"""Where a real-photo training step's time goes: the Flickr8k defaults, taken apart.

Times `TrainStep` (the step `captioner train` runs) on the real-photo defaults
(`DATA_DEFAULTS["photos"]`: cached 9x9x1280 grid standardised and projected to 512,
embedding, LSTM and attention 384 (512 before 770dd18), batches of 32 images with 5
captions each, bucketed),
and on variants that each take one part away, so that the differences say what that part
costs:

- paper / topdown: the full step of each decoder, with a Flickr8k-sized output layer
  (2,542 words);
- "64 words": the same with a 64-word output layer (what is left is everything but the
  output layer and its softmax);
- "mean attention": the paper's decoder with the mean annotation instead of soft attention;
- "whole input at every step": the top-down step as it was before its attention LSTM's
  input was split (each step multiplied the whole input, the words and the mean annotation
  included, by the kernel: `per_step_inputs` below);
- "Grappler's rewrites on": the top-down step as it ran before the training loop ran its steps
  in `repeatable_steps` (TensorFlow's graph optimiser on; the other variants run as
  `captioner train` runs them, with its rewrites off);
- "widths 384" / "widths 512" / "attention 256": the top-down step with embedding, LSTMs and
  attention 384 wide (the defaults since 770dd18) or 512 (before it), or attention alone 256;
- "17x17 grid": the top-down step on the stride-16 cut of Lite2 at 260 px (`--grid-stride
  16`: 289 cells of 120 channels, projected to 512 like the whole network's);
- "fine-tuning": the top-down step of `--fine-tune-blocks 2`, the encoder's top two blocks
  (block7a and the head) trained with the decoder, so the step takes 260 px images and runs
  the whole encoder instead of reading the cache.

Features are random (speed does not depend on their values); caption lengths follow
Flickr8k's training captions roughly (normal, mean 11 words, s.d. 4, cut to 1..20). The
variants' timed steps are interleaved in one process, one step of each in turn, after a
warm-up step of every batch shape, so that they share whatever else loads the machine.
Usage:

    python benchmarks/photo_step.py [--rounds 8]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import InterleavedSteps  # noqa: E402  (benchmarks/, the script's folder)

FLICKR8K_VOCABULARY = 2542  # words seen at least 5 times in the training captions, + 4 special
SMALL_VOCABULARY = 64
NUM_IMAGES = 320
CAPTIONS_PER_IMAGE = 5
GRID, DEPTH = 81, 1280  # EfficientNet-Lite2's whole network at 260 px
STRIDE_16_GRID = 289, 120  # the same network cut after its last stride-16 stage: 17x17x120
NARROW = {"embed_dim": 384, "units": 384, "attention_dim": 384}  # the defaults since 770dd18
WIDE = {"embed_dim": 512, "units": 512, "attention_dim": 512}  # the defaults before it

VARIANTS = {
    "paper": {"decoder": "paper"},
    "paper, 64 words": {"decoder": "paper", "vocabulary": SMALL_VOCABULARY},
    "paper, mean attention": {"decoder": "paper", "attention": "mean"},
    "topdown": {"decoder": "topdown"},
    "topdown, whole input at every step": {"decoder": "topdown", "per_step_inputs": True},
    "topdown, 64 words": {"decoder": "topdown", "vocabulary": SMALL_VOCABULARY},
    "topdown, widths 384": {"decoder": "topdown", "sizes": NARROW},
    "topdown, widths 512": {"decoder": "topdown", "sizes": WIDE},
    "topdown, attention 256": {"decoder": "topdown", "sizes": {"attention_dim": 256}},
    "topdown, 17x17 grid": {
        "decoder": "topdown",
        "grid": STRIDE_16_GRID,
        "sizes": {"grid_stride": 16},
    },
    "topdown, Grappler's rewrites on": {"decoder": "topdown", "graph_rewrites": True},
    "topdown, fine-tuning the top 2 encoder blocks": {"decoder": "topdown", "fine_tune_blocks": 2},
}


def caption_ids(max_length: int, vocabulary: int, seed: int = 0):
    """(ids (N, C, max_length + 2), counts (N,)) of random captions of Flickr8k-like lengths."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = np.zeros((NUM_IMAGES, CAPTIONS_PER_IMAGE, max_length + 2), np.int32)
    lengths = np.clip(np.rint(rng.normal(11, 4, ids.shape[:2])), 1, max_length).astype(int)
    for (i, j), length in np.ndenumerate(lengths):
        # <start>=1, words from 4 on, <end>=2 (the ids are arbitrary here, only sizes matter)
        ids[i, j, : length + 2] = [1, *rng.integers(4, vocabulary, length), 2]
    return ids, np.full(NUM_IMAGES, CAPTIONS_PER_IMAGE, np.int32)


def per_step_inputs(decoder) -> None:
    """Gives the top-down `decoder` the step it had before its attention LSTM's input was
    split: nothing is computed before the time loop, and each step runs the Keras cell on
    the whole concatenated input (the weights are the same)."""
    import types

    from keras import ops

    def loop_inputs(self, embedded, state):
        return embedded, None  # the words, multiplied inside the loop

    def recur(self, embedded, constants, state, training):
        h1, c1, h2, c2, annotations, projected, *coverage = state
        x1 = ops.concatenate([h2, ops.mean(annotations, axis=1), embedded], axis=-1)
        h1, (_, c1) = self.attention_cell(x1, [h1, c1], training=training)
        z, alpha, beta = self._attend(h1, annotations, projected, coverage)
        h2, (_, c2) = self.cell(ops.concatenate([z, h1], axis=-1), [h2, c2], training=training)
        covered = self._covered(coverage, alpha)
        return h2, z, alpha, beta, (h1, c1, h2, c2, annotations, projected, *covered)

    decoder._loop_inputs = types.MethodType(loop_inputs, decoder)
    decoder._recur = types.MethodType(recur, decoder)


class Variant(InterleavedSteps):
    """One kind of step with its own model, optimiser and (endless) bucketed batches."""

    def __init__(self, name: str, settings: dict, features, images):
        import keras

        from captioner.config import TrainConfig
        from captioner.data.batching import EpochBatches, array_lookup
        from captioner.models.encoders.blocks import unfreeze_top_blocks
        from captioner.runtime import repeatable_steps
        from captioner.training.distribute import make_strategy
        from captioner.training.setup import build_model, resolve_settings
        from captioner.training.train_step import TrainStep

        self.name = name
        vocabulary = settings.get("vocabulary", FLICKR8K_VOCABULARY)
        config = resolve_settings(
            TrainConfig(
                data="photos",
                encoder_weights="none",
                decoder=settings["decoder"],
                attention=settings.get("attention", "soft"),
                **settings.get("sizes", {}),
            ),
            synthetic=False,
        )
        keras.utils.set_random_seed(0)
        model = build_model(config, vocabulary)
        if settings.get("per_step_inputs"):
            per_step_inputs(model.decoder)
        inputs = features(*settings.get("grid", (GRID, DEPTH)))
        if settings.get("fine_tune_blocks"):
            unfreeze_top_blocks(model.encoder, settings["fine_tune_blocks"])
            inputs = images()
        ids, counts = caption_ids(config.max_length, vocabulary)
        batches = EpochBatches(
            array_lookup(inputs),
            ids,
            counts,
            batch_size=config.batch_size,
            bucketing=config.bucketing,
            captions_per_image=config.captions_per_image,
        )
        self.config = config
        step = TrainStep(model, keras.optimizers.Adam(1e-3), make_strategy("default"))
        rewrites = settings.get("graph_rewrites", False)

        def train(batch):  # the steps take turns, so each sets its own optimizer options
            with contextlib.nullcontext() if rewrites else repeatable_steps():
                return step(batch)

        super().__init__(batches, train)


def main(argv=None) -> int:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)

    def features(cells, depth):  # the cached grid features of NUM_IMAGES images
        return rng.normal(size=(NUM_IMAGES, cells, depth)).astype("float32")

    def images():  # made only for the fine-tuning variant: 260 px, as Lite2 takes them
        return rng.integers(0, 256, (NUM_IMAGES, 260, 260, 3), dtype=np.uint8)

    runs = [Variant(name, VARIANTS[name], features, images) for name in args.variants]
    for run in runs:
        run.warm_up()
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for run in runs:
            run.timed_step()
    load_after = os.getloadavg()[0]

    config = runs[0].config
    sizes = {k: getattr(config, k) for k in ("embed_dim", "units", "attention_dim", "batch_size")}
    load = f"load average {load_before:.1f}-{load_after:.1f}"
    print(f"sizes (unless the variant names others): {sizes}, grid {GRID}x{DEPTH}; {load}")
    print("| step | captions/s | s per 30,000 captions (a Flickr8k epoch) | timed steps |")
    print("|---|---:|---:|---:|")
    for run in runs:
        rate = run.captions_per_second
        print(f"| {run.name} | {rate:.1f} | {30000 / rate:.0f} | {run.steps} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
