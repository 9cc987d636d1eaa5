"""Training-step speed of the two stages: decoder from cached features vs. fine-tuning.

    PYTHONPATH=. python benchmarks/fine_tuning_speed.py [--encoder efficientnet_lite0]
        [--image-size 128] [--grid-stride 16] [--blocks 2] [--steps 5]

On the first `--batch-size` x (`--steps` + 1) training images of the synthetic dataset
(generated if missing) it times the real training step (`TrainStep`, three captions per
image as `captioner train` does) of one model in three settings:

- stage 1: encoder frozen, the decoder trains from cached grid features (no CNN in the step);
- stage 2: the top `--blocks` blocks of the encoder unfrozen (batch norm frozen), images in;
- for scale, the whole encoder trained on images (`--train-encoder`, batch norm included).

Each setting runs one warm-up step (tracing), then `--steps` timed steps; the table gives
median seconds per step, captions/s, and the warm-up step (tracing included).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from captioner.data.batching import (  # noqa: E402
    EpochBatches,
    array_lookup,
    encode_captions,  # noqa: E402
)
from captioner.data.dataset import select_split
from captioner.data.image_pipeline import image_dataset
from captioner.data.karpathy import load_karpathy
from captioner.data.synthetic import generate_dataset  # noqa: E402
from captioner.data.vocabulary import Vocabulary  # noqa: E402
from captioner.models.captioning_model import CaptioningModel  # noqa: E402
from captioner.models.encoders.blocks import unfreeze_top_blocks  # noqa: E402
from captioner.training.distribute import make_strategy  # noqa: E402
from captioner.training.train_step import TrainStep  # noqa: E402


def step_seconds(model, inputs, ids, counts, args) -> tuple[float, float]:
    """(median seconds of `args.steps` training steps, seconds of the warm-up step before)."""
    batches = EpochBatches(
        array_lookup(inputs), ids, counts, batch_size=args.batch_size, captions_per_image=3
    )
    step = TrainStep(model, keras.optimizers.Adam(1e-4), make_strategy("default"))
    times = []
    for batch in batches.dataset(epoch=0).take(args.steps + 1):
        start = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:])), times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--grid-stride", type=int, default=16, choices=(16, 32))
    parser.add_argument("--data", default="data/synthetic")
    args = parser.parse_args()
    if not (Path(args.data) / "dataset.json").is_file():
        generate_dataset(args.data)
    records = select_split(load_karpathy(Path(args.data) / "dataset.json"), "train")
    records = records[: args.batch_size * (args.steps + 1)]
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    ids, counts = encode_captions(records, vocab, max_length=20)
    images = np.concatenate(
        [b.numpy() for _, b in image_dataset(records, args.image_size).batch(64)]
    )

    def build(train_encoder=False):
        model = CaptioningModel(
            len(vocab),
            encoder=args.encoder,
            image_size=args.image_size,
            encoder_weights="imagenet",
            grid_stride=args.grid_stride,
            train_encoder=train_encoder,
            feature_norm=True,
        )
        model.build()
        return model

    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {args.encoder} at "
        f"{args.image_size} px cut at stride {args.grid_stride}, batch {args.batch_size} "
        f"images x 3 captions, median of {args.steps} steps"
    )
    rows = []
    model = build()
    features = np.concatenate(
        [keras.ops.convert_to_numpy(model.grid_features(images[i : i + 64])) for i in
         range(0, len(images), 64)]
    ).astype(np.float16)  # fmt: skip
    rows.append(
        ("stage 1: decoder, cached features", step_seconds(model, features, ids, counts, args))
    )
    unfreeze_top_blocks(model.encoder, args.blocks)
    trained = sum(int(np.prod(w.shape)) for w in model.encoder.trainable_weights)
    rows.append(
        (f"stage 2: top {args.blocks} blocks ({trained:,} weights) + decoder, images",
         step_seconds(model, images, ids, counts, args))
    )  # fmt: skip
    keras.backend.clear_session()
    rows.append(
        ("whole encoder + decoder, images", step_seconds(build(True), images, ids, counts, args))
    )
    print("| setting | s/step | captions/s | vs. stage 1 | warm-up step s |")
    print("|---|---|---|---|---|")
    stage1 = rows[0][1][0]
    for name, (seconds, warmup) in rows:
        captions = 3 * args.batch_size
        print(
            f"| {name} | {seconds:.3f} | {captions / seconds:.0f} | {seconds / stage1:.1f}x "
            f"| {warmup:.1f} |"
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
