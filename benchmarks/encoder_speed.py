"""Bare forward-pass speed of the offline ImageNet encoders, and their feature grids.

    PYTHONPATH=. nice -n 10 python benchmarks/encoder_speed.py [--batch-size 32] [--batches 3]

For every encoder, input size (its native size, 128 and 224 px) and grid stride (32: the
whole network; 16: cut after its last stride-16 stage) it builds the headless
encoder, runs `--warmup` batches of random uint8 images through `predict_on_batch`, then
times `--batches` more. It reports the median images/s (wall clock) and the images per
CPU-second of this process (less sensitive to other processes sharing the cores). Only the
network runs: no image decoding, resizing or input pipeline. Weights do not change the
speed; the ImageNet ones are loaded anyway so that this is the encoder as used.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from captioner.models.encoders import OFFLINE_ENCODERS, build_encoder  # noqa: E402

NATIVE_SIZE = {
    "efficientnet_lite0": 224,
    "efficientnet_lite1": 240,
    "efficientnet_lite2": 260,
    "mobilenet_v2_tv": 224,
}


def measure(
    name: str, size: int, grid_stride: int, batch_size: int, warmup: int, batches: int
) -> dict:
    """Images/s of one encoder at one input size and grid stride, and its grid shape."""
    inputs = keras.Input((size, size, 3))
    encoder = build_encoder(name, size, weights="imagenet", grid_stride=grid_stride)
    model = keras.Model(inputs, encoder(inputs))
    images = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), np.uint8)
    for _ in range(warmup):
        grid = model.predict_on_batch(images)
    seconds = []
    cpu_start = time.process_time()
    for _ in range(batches):
        start = time.perf_counter()
        model.predict_on_batch(images)
        seconds.append(time.perf_counter() - start)
    cpu_seconds = time.process_time() - cpu_start  # all threads of this process
    return {
        "encoder": name,
        "image_size": size,
        "grid_stride": grid_stride,
        "grid": list(grid.shape[1:]),
        "images_per_s": batch_size / statistics.median(seconds),
        "images_per_cpu_s": batch_size * batches / cpu_seconds,
        "batch_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=list(OFFLINE_ENCODERS))
    parser.add_argument("--sizes", nargs="+", default=["native", "128", "224"])
    parser.add_argument("--grid-strides", nargs="+", type=int, default=[32, 16])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, batch {args.batch_size}"
    )
    print("| encoder | input px | grid stride | grid (gh x gw x D) | images/s | images/CPU-s |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name in args.encoders:
        sizes = [NATIVE_SIZE[name] if s == "native" else int(s) for s in args.sizes]
        sizes = dict.fromkeys(sizes)  # native 224 is measured once
        for size, stride in itertools.product(sizes, args.grid_strides):
            row = measure(name, size, stride, args.batch_size, args.warmup, args.batches)
            rows.append(row)
            grid = " x ".join(str(n) for n in row["grid"])
            speed, per_cpu = row["images_per_s"], row["images_per_cpu_s"]
            print(
                f"| {name} | {size} | {stride} | {grid} | {speed:.1f} | {per_cpu:.1f} |",
                flush=True,
            )
            keras.backend.clear_session()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
