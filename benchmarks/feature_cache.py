"""What the feature cache saves: extraction speed, cache size, and decoder training speed.

    PYTHONPATH=. python benchmarks/feature_cache.py [--images 256] [--steps 10]

For every offline encoder at the given input size and grid stride (by default the main
job's: 128 px, cut at stride 16, standardised features) it measures, on the first `--images`
training images of the synthetic dataset (generated if missing):

- extraction images/s through the real pipeline (`captioner.data.feature_cache.extract_features`:
  PNG decoding, resizing, the encoder, float16 writes), next to the bare forward pass
  alone (`predict_on_batch` on images already in memory), so the pipeline's overhead shows;
- the cache's size per image (L x D float16 values);
- training captions/s of the same model and batch (frozen encoder, one caption per image)
  from cached features and with the CNN in the training step, side by side.
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

from captioner.data.batching import (  # noqa: E402
    EpochBatches,
    encode_captions,  # noqa: E402
    memmap_lookup,
)
from captioner.data.dataset import select_split
from captioner.data.feature_cache import extract_features  # noqa: E402
from captioner.data.image_pipeline import image_dataset
from captioner.data.karpathy import load_karpathy
from captioner.data.synthetic import generate_dataset  # noqa: E402
from captioner.data.vocabulary import Vocabulary  # noqa: E402
from captioner.models.captioning_model import CaptioningModel  # noqa: E402
from captioner.models.encoders import OFFLINE_ENCODERS  # noqa: E402
from captioner.training.inputs import image_inputs  # noqa: E402


def seconds_per_call(fn, repeats: int) -> float:
    fn()  # warm-up (tracing)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def training_speed(model, dataset, steps: int) -> float:
    """Captions/s of `train_on_batch` over `steps` batches (after one warm-up batch)."""
    batches = list(dataset.take(steps + 1))
    model.train_on_batch(*batches[0])
    start = time.perf_counter()
    captions = 0
    for inputs, targets in batches[1:]:
        model.train_on_batch(inputs, targets)
        captions += int(targets.shape[0])
    return captions / (time.perf_counter() - start)


def measure(name, records, vocab, args) -> dict:
    model = CaptioningModel(
        len(vocab),
        encoder=name,
        image_size=args.image_size,
        encoder_weights="imagenet",
        grid_stride=args.grid_stride,
        train_encoder=False,
        feature_dim=args.feature_dim,
        feature_norm=True,
    )
    model.build()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "features.npy"
        start = time.perf_counter()
        extract_features(model, records, path, batch_size=args.batch_size, verbose=0)
        extract_rate = len(records) / (time.perf_counter() - start)
        features = np.load(path)
    images = np.concatenate(
        [b.numpy() for _, b in image_dataset(records[: args.batch_size], args.image_size).batch(64)]
    )
    encoder = keras.Sequential([keras.Input(images.shape[1:], dtype="uint8"), model.encoder])
    forward_rate = len(images) / seconds_per_call(lambda: encoder.predict_on_batch(images), 3)

    ids, counts = encode_captions(records, vocab, max_length=20)

    def dataset(cached):
        lookup = memmap_lookup(features) if cached else image_inputs(records, args.image_size)[0]
        batches = EpochBatches(lookup, ids, counts, batch_size=args.batch_size, bucketing=False)
        return batches.dataset(epoch=0)

    return {
        "encoder": name,
        "grid": model.grid_size,
        "extract": extract_rate,
        "forward": forward_rate,
        "kib_per_image": features[0].nbytes / 1024,
        "train_cached": training_speed(model, dataset(True), args.steps),
        "train_cnn": training_speed(model, dataset(False), args.steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=list(OFFLINE_ENCODERS))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--grid-stride", type=int, default=16, choices=(16, 32))
    parser.add_argument("--feature-dim", type=int, default=0)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--data", default="data/synthetic")
    args = parser.parse_args()
    if not (Path(args.data) / "dataset.json").is_file():
        generate_dataset(args.data)
    records = select_split(load_karpathy(Path(args.data) / "dataset.json"), "train")
    records = records[: args.images]
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"{len(records)} images at {args.image_size} px, grid stride {args.grid_stride}, "
        f"batch {args.batch_size}"
    )
    print(
        "| encoder | grid | extraction images/s | bare forward images/s | cache KiB/image "
        "| training captions/s, cached | with the CNN | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.encoders:
        row = measure(name, records, vocab, args)
        print(
            f"| {name} | {row['grid'][0]}x{row['grid'][1]} | {row['extract']:.1f} "
            f"| {row['forward']:.1f} | {row['kib_per_image']:.0f} | {row['train_cached']:.0f} "
            f"| {row['train_cnn']:.1f} | {row['train_cached'] / row['train_cnn']:.1f}x |",
            flush=True,
        )
        keras.backend.clear_session()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
