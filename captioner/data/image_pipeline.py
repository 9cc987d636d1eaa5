"""The `tf.data` image pipeline: files decoded by the one image loader and resized."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from captioner.data.dataset import ImageRecord, print_warning
from captioner.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image


def resize_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, the one resize used in training and inference.

    A batch (N, H, W, 3) works too, each image resized on its own.
    """
    image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


# Pixels resized in one call at most: tf.image.resize works in float32 (16 Mpx: 192 MB).
RESIZE_CALL_PIXELS = 16 * 2**20


@functools.cache
def _compiled_resize(size: int):
    """`resize_image` of (N, H, W, 3) batches, traced once for every input size."""
    signature = [tf.TensorSpec((None, None, None, 3), tf.uint8)]
    return tf.function(lambda images: resize_image(images, size), input_signature=signature)


def resize_images(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """(H_i, W_i, 3) uint8 images of any sizes -> (N, size, size, 3) uint8, as `resize_image`.

    Outside `tf.data`, where every eager call costs more than a small image's resize, this
    is the fast way: a compiled resize, one call for all the images of one size (up to
    `RESIZE_CALL_PIXELS` pixels per call).
    """
    resize = _compiled_resize(size)
    out = np.empty((len(images), size, size, 3), np.uint8)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    for (height, width, _), indices in by_shape.items():
        per_call = max(1, RESIZE_CALL_PIXELS // (height * width))
        for start in range(0, len(indices), per_call):
            chosen = indices[start : start + per_call]
            out[chosen] = resize(np.stack([images[i] for i in chosen])).numpy()
    return out


def image_reader(
    image_size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_error: Callable[[str], None] | None = None,
) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """A `tf.data` map function: file path -> ((size, size, 3) uint8 image, readable flag).

    Images are decoded by `captioner.data.images.load_image`, the loader `captioner caption`
    uses, so training, evaluation and captioning read every file the same way. An image
    that cannot be read gives a black image and False; its error message is passed to
    `on_error` once (default: a warning on stderr).
    """
    report = on_error or print_warning
    reported: set[str] = set()

    def load(path: bytes) -> tuple[np.ndarray, bool]:
        try:
            return load_image(os.fsdecode(path), max_pixels), True
        except ImageLoadError as error:
            if error.args[0] not in reported:
                reported.add(error.args[0])
                report(f"{error} (skipped)")
            return np.zeros((1, 1, 3), np.uint8), False

    def read(path):
        image, ok = tf.numpy_function(load, [path], (tf.uint8, tf.bool), stateful=False)
        image.set_shape((None, None, 3))
        ok.set_shape(())
        return resize_image(image, image_size), ok

    return read


def image_dataset(
    records: Sequence[ImageRecord],
    image_size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_error: Callable[[str], None] | None = None,
) -> tf.data.Dataset:
    """`(index, image)` pairs in record order: the record's position and its (size, size, 3)
    uint8 image.

    An image that cannot be read is left out (its index is missing) and reported once
    through `on_error` (see `image_reader`); the pipeline goes on.
    """
    read = image_reader(image_size, max_pixels=max_pixels, on_error=on_error)

    def decode(index, path):
        return (index, *read(path))

    def readable(index, image, ok):
        return ok

    def without_flag(index, image, ok):
        return index, image

    paths = [os.fsencode(str(r.path)) for r in records]
    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(records), dtype=tf.int32), paths))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.filter(readable).map(without_flag)
