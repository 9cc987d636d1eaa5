"""Karpathy split JSON reading and the `tf.data` input pipelines."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from captioner.dataset_problems import EXAMPLES_SHOWN, DatasetProblems
from captioner.errors import DatasetError
from captioner.files import read_json
from captioner.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
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
    json_path: str | Path,
    images_root: str | Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[ImageRecord]:
    """Reads a Karpathy split file (COCO, Flickr8k/30k or the synthetic dataset).

    Entries that cannot be used are dropped and reported through `warn`, one line per
    kind of problem with its count and the first few examples: malformed entries, unknown
    split names, duplicate images (the first entry is kept), empty or whitespace-only
    captions, captions that are not valid Unicode. Images without captions are kept (the
    callers skip them) and reported.

    Args:
        json_path: the dataset JSON.
        images_root: the folder that `filepath/filename` are relative to; defaults to the
            JSON's folder.
        warn: receives the problem lines (default: printed on stderr).

    Raises:
        DatasetError: the file is missing, not UTF-8, not valid JSON (line and column are
            named), not a Karpathy split file, or has no usable image.
    """
    json_path = Path(json_path)
    root = Path(images_root) if images_root is not None else json_path.parent
    data = read_json(json_path, DatasetError)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{json_path}: not a Karpathy split file (no 'images' list)")
    problems = DatasetProblems(json_path)
    records = []
    seen: set[Path] = set()
    for index, entry in enumerate(data["images"]):
        record = _read_entry(entry, index, root, problems)
        if record is None:
            continue
        if record.path in seen:
            problems.add("duplicate image entries (the first kept)", _where(entry, index))
            continue
        seen.add(record.path)
        if not record.captions:
            problems.add(
                "images without captions (not used for training or scoring)", _where(entry, index)
            )
        records.append(record)
    if not records:
        summary = "; ".join(line.split(": ", 1)[1] for line in problems.lines())
        raise DatasetError(f"{json_path}: no usable images" + (f" ({summary})" if summary else ""))
    problems.report(warn or _print_warning)
    return records


def _print_warning(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


def _where(entry: object, index: int) -> str:
    name = entry.get("filename") if isinstance(entry, dict) else None
    return f"#{index} {name}" if isinstance(name, str) else f"#{index}"


def _read_entry(
    entry: object, index: int, root: Path, problems: DatasetProblems
) -> ImageRecord | None:
    """One image entry as a record, or None (and the problem counted) if it is unusable."""
    where = _where(entry, index)
    if not isinstance(entry, dict):
        problems.add("entries that are not JSON objects (dropped)", where)
        return None
    filename, filepath = entry.get("filename"), entry.get("filepath", "")
    if not isinstance(filename, str) or not filename.strip() or not isinstance(filepath, str):
        problems.add("entries without a valid 'filename' (dropped)", where)
        return None
    split = entry.get("split")
    if split not in SPLITS:
        problems.add(f"images with unknown split {split!r} (dropped)", where)
        return None
    sentences = entry.get("sentences", [])
    if not isinstance(sentences, list):
        problems.add("entries whose 'sentences' is not a list (dropped)", where)
        return None
    captions = []
    for number, sentence in enumerate(sentences):
        tokens = _caption_tokens(sentence)
        if tokens is None:
            problems.add("malformed captions (dropped)", f"{where} caption {number}")
        elif any(_is_invalid_unicode(t) for t in tokens):
            problems.add(
                "captions that are not valid Unicode (dropped)", f"{where} caption {number}"
            )
        elif not tokens:
            problems.add("empty or whitespace-only captions (dropped)", f"{where} caption {number}")
        else:
            captions.append(tokens)
    image_id = entry.get("cocoid", entry.get("imgid", index))
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        problems.add("entries with a non-integer id (their position used)", where)
        image_id = index
    objects = entry.get("objects")
    return ImageRecord(
        image_id=image_id,
        path=root / filepath / filename,
        split=split,
        captions=captions,
        objects=objects if isinstance(objects, list) else None,
    )


def _caption_tokens(sentence: object) -> list[str] | None:
    """A caption's lower-cased tokens (the raw text tokenised if none); None if malformed."""
    if not isinstance(sentence, dict):
        return None
    tokens, raw = sentence.get("tokens"), sentence.get("raw", "")
    if tokens:
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            return None
        return [t.strip().lower() for t in tokens if t.strip()]
    if not isinstance(raw, str):
        return None
    return tokenize(raw)


def _is_invalid_unicode(text: str) -> bool:
    # JSON escapes can hold lone surrogates ("\ud800"), which no UTF-8 file can store.
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def check_image_files(
    records: Sequence[ImageRecord],
    *,
    source: str | Path,
    skip_missing: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[ImageRecord]:
    """The records whose image file exists; missing ones refused, or skipped with a warning.

    Raises:
        DatasetError: some image files are missing and `skip_missing` is False; the message
            says how many, names the first few and the way out.
    """
    missing = [r for r in records if not r.path.is_file()]
    if not missing:
        return list(records)
    shown = ", ".join(str(r.path) for r in missing[:EXAMPLES_SHOWN])
    more = ", ..." if len(missing) > EXAMPLES_SHOWN else ""
    counted = f"{len(missing)} of {len(records)} image files are missing: {shown}{more}"
    if not skip_missing:
        raise DatasetError(
            f"{source}: {counted}; check the images folder (--images) or skip them with "
            "--skip-missing"
        )
    (warn or _print_warning)(f"{source}: {counted} (skipped)")
    kept = [r for r in records if r.path.is_file()]
    if not kept:
        raise DatasetError(f"{source}: none of the {len(records)} image files exists")
    return kept


def count_long_captions(records: Sequence[ImageRecord], max_length: int) -> tuple[int, int]:
    """(captions longer than `max_length` words, all captions) of the records."""
    lengths = [len(c) for r in records for c in r.captions]
    return sum(n > max_length for n in lengths), len(lengths)


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

    Images are decoded by `captioner.images.load_image`, the loader `captioner caption`
    uses, so training, evaluation and captioning read every file the same way. An image
    that cannot be read gives a black image and False; its error message is passed to
    `on_error` once (default: a warning on stderr).
    """
    report = on_error or _print_warning
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
