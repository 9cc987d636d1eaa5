"""Karpathy split JSON reading and the `tf.data` input pipelines."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from captioner.text import tokenize
from captioner.vocab import Vocabulary

SPLITS = ("train", "restval", "val", "test")
# `restval` (the COCO images outside the 5k val/test sets) is training data.
SPLIT_MEMBERS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}


@dataclasses.dataclass
class ImageRecord:
    """One image of a dataset, with its reference captions (token lists)."""

    image_id: int
    path: Path
    split: str
    captions: list[list[str]]
    objects: list[dict] | None = None


def load_karpathy(
    json_path: str | Path, images_root: str | Path | None = None
) -> list[ImageRecord]:
    """Reads a Karpathy split file (COCO, Flickr8k/30k or the synthetic dataset).

    Args:
        json_path: the dataset JSON.
        images_root: the folder that `filepath/filename` are relative to; defaults to the
            JSON's folder.
    """
    json_path = Path(json_path)
    root = Path(images_root) if images_root is not None else json_path.parent
    with json_path.open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{json_path}: not a Karpathy split file (no 'images' list)")
    records = []
    for index, entry in enumerate(data["images"]):
        try:
            filename = entry["filename"]
            split = entry["split"]
            sentences = entry["sentences"]
        except KeyError as missing:
            raise ValueError(f"{json_path}: image #{index} has no {missing} field") from None
        if split not in SPLITS:
            raise ValueError(f"{json_path}: image #{index} has unknown split {split!r}")
        captions = [
            [w.lower() for w in s["tokens"]] if s.get("tokens") else tokenize(s.get("raw", ""))
            for s in sentences
        ]
        records.append(
            ImageRecord(
                image_id=int(entry.get("cocoid", entry.get("imgid", index))),
                path=root / entry.get("filepath", "") / filename,
                split=split,
                captions=[c for c in captions if c],
                objects=entry.get("objects"),
            )
        )
    return records


def select_split(records: Sequence[ImageRecord], split: str) -> list[ImageRecord]:
    """The records of a split; "train" includes `restval`."""
    if split not in SPLIT_MEMBERS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLIT_MEMBERS)}")
    members = SPLIT_MEMBERS[split]
    return [r for r in records if r.split in members]


def encode_captions(
    records: Sequence[ImageRecord], vocab: Vocabulary, max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Captions as id matrices `<start> w… <end> <pad>…`.

    Returns:
        ids: (N, C, max_length + 2) int32, C the largest number of captions of an image;
            captions longer than `max_length` words are truncated.
        counts: (N,) int32, the number of captions of each image.
    """
    num_captions = max((len(r.captions) for r in records), default=1)
    ids = np.zeros((len(records), max(num_captions, 1), max_length + 2), np.int32)
    counts = np.zeros(len(records), np.int32)
    for i, record in enumerate(records):
        counts[i] = len(record.captions)
        for j, tokens in enumerate(record.captions):
            seq = [vocab.start_id, *vocab.encode(tokens[:max_length]), vocab.end_id]
            ids[i, j, : len(seq)] = seq
    return ids, counts


def resize_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, the one resize used in training and inference."""
    image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def read_image(path: tf.Tensor, size: int) -> tf.Tensor:
    """Reads and decodes an image file (JPEG, PNG, GIF, BMP) to (size, size, 3) uint8."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return resize_image(image, size)


def _should_cache(num_images: int, image_size: int, limit_bytes: float = 2e9) -> bool:
    return num_images * image_size * image_size * 3 <= limit_bytes


def image_dataset(records: Sequence[ImageRecord], image_size: int) -> tf.data.Dataset:
    """Decoded, resized images (size, size, 3) uint8 in record order."""
    paths = tf.data.Dataset.from_tensor_slices([str(r.path) for r in records])
    return paths.map(lambda p: read_image(p, image_size), num_parallel_calls=tf.data.AUTOTUNE)


def training_dataset(
    records: Sequence[ImageRecord],
    vocab: Vocabulary,
    *,
    image_size: int,
    max_length: int,
    batch_size: int,
    seed: int = 0,
    captions_per_image: int = 1,
    features: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Teacher-forcing batches `((images, caption_in), caption_out)`.

    Every epoch visits each image once, in a new shuffled order, with
    `captions_per_image` of its captions drawn at random (without repetition; an image
    with fewer captions gets all-padding rows, which the loss ignores). `caption_in` is
    `<start> w1 … wn` and `caption_out` the same sequence shifted by one step,
    `w1 … wn <end>`; both are padded with 0 to `max_length + 1` steps, shape (B, T) for one
    caption per image and (B, C, T) for several.

    Args:
        features: the cached encoder output of every record, (N, L, D) (a memory-mapped
            array is fine). Batches then carry these instead of the images, which are
            otherwise decoded and resized to (B, size, size, 3) uint8.
    """
    ids, counts = encode_captions(records, vocab, max_length)
    if ids.shape[1] < captions_per_image:
        ids = np.pad(ids, ((0, 0), (0, captions_per_image - ids.shape[1]), (0, 0)))
    ids_table = tf.constant(ids)
    counts_table = tf.constant(counts)
    num_slots = ids.shape[1]

    def pick(index, draw):
        # Real captions first, in random order, then the empty slots.
        noise = tf.random.stateless_uniform([num_slots], seed=tf.stack([draw, index]))
        empty = tf.cast(tf.range(num_slots) >= counts_table[index], tf.float32)
        chosen = tf.gather(ids_table[index], tf.argsort(noise + 2.0 * empty)[:captions_per_image])
        if captions_per_image == 1:
            chosen = chosen[0]
        return index, chosen[..., :-1], chosen[..., 1:]

    indices = tf.data.Dataset.range(len(records))
    if features is None:
        images = image_dataset(records, image_size)
        if _should_cache(len(records), image_size):
            images = images.cache()
        ds = tf.data.Dataset.zip(images, indices)
    else:
        ds = indices
    ds = ds.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    if features is None:
        ds = tf.data.Dataset.zip(ds, draws).map(
            lambda example, draw: (example[0], *pick(example[1], draw)[1:]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        ds = ds.batch(batch_size)
    else:
        ds = tf.data.Dataset.zip(ds, draws).map(pick, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size).map(_gatherer(features), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda inputs, caption_in, caption_out: ((inputs, caption_in), caption_out))
    return ds.prefetch(tf.data.AUTOTUNE)


def _gatherer(features: np.ndarray):
    """A `tf.data` map function replacing a batch's record indices by their features."""
    dtype = tf.as_dtype(features.dtype)
    shape = features.shape[1:]

    def gather(indices):
        return np.asarray(features[np.asarray(indices)])

    def replace(indices, caption_in, caption_out):
        batch = tf.numpy_function(gather, [indices], dtype, stateful=False)
        batch.set_shape((None, *shape))
        return batch, caption_in, caption_out

    return replace
