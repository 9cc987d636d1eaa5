"""Cost of decoding images with the shared PIL loader in tf.data, against TensorFlow's decoder.

Usage:
    python benchmarks/image_loading.py [--num-images N] [--repeats R]

Writes N PNG images of 128 px (the synthetic dataset's format) and N JPEG photos-like
images of 500x375 px (COCO/Flickr size), then times one pass of `image_dataset` (PIL, via
`tf.numpy_function`) and of the same pipeline decoding with `tf.io.decode_image`, both
resizing to 128 px. Prints images per second, the best of R passes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from captioner.data.dataset import ImageRecord
from captioner.data.image_pipeline import image_dataset, resize_image


def tf_io_dataset(records, image_size: int) -> tf.data.Dataset:
    """The previous pipeline: TensorFlow's decoders (no 16-bit, CMYK, EXIF or WebP support)."""

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return resize_image(image, image_size)

    paths = tf.data.Dataset.from_tensor_slices([str(r.path) for r in records])
    return paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def write_images(folder: Path, count: int, size: tuple[int, int], fmt: str) -> list[ImageRecord]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    width, height = size
    ramp = np.linspace(0, 200, width)[None, :, None] + np.linspace(0, 50, height)[:, None, None]
    records = []
    for i in range(count):
        noise = rng.normal(0, 12, (height, width, 3))
        pixels = np.clip(ramp + noise + rng.integers(0, 50, 3), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.{fmt.lower()}"
        Image.fromarray(pixels).save(path, format=fmt)
        records.append(ImageRecord(i, path, "train", [["x"]]))
    return records


def images_per_second(make_dataset, records, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in make_dataset(records, 128).batch(32).prefetch(2):
            pass
        best = min(best, time.perf_counter() - started)
    return len(records) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        sets = {
            "PNG 128x128": write_images(Path(folder) / "png", args.num_images, (128, 128), "PNG"),
            "JPEG 500x375": write_images(Path(folder) / "jpg", args.num_images, (500, 375), "JPEG"),
        }
        print(f"{'images':<14}{'tf.io (img/s)':>15}{'PIL loader (img/s)':>20}{'ratio':>8}")
        for name, records in sets.items():
            tf_rate = images_per_second(tf_io_dataset, records, args.repeats)

            def pil(records, size):
                return image_dataset(records, size).map(lambda index, image: image)

            pil_rate = images_per_second(pil, records, args.repeats)
            print(f"{name:<14}{tf_rate:>15.0f}{pil_rate:>20.0f}{pil_rate / tf_rate:>8.2f}")


if __name__ == "__main__":
    main()
