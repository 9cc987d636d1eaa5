"""The training inputs: decoded images or a frozen encoder's cached features, and their batches."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from captioner.config import TrainConfig
from captioner.data.batching import (
    EpochBatches,
    InputLookup,
    array_lookup,
    encode_captions,
    file_lookup,
    memmap_lookup,
)
from captioner.data.dataset import ImageRecord
from captioner.data.feature_cache import cached_features
from captioner.data.image_pipeline import image_dataset
from captioner.data.vocabulary import Vocabulary
from captioner.errors import DatasetError
from captioner.models.captioning_model import CaptioningModel

IN_MEMORY_BYTES = 2e9  # decoded training images are held in memory up to this size


def image_inputs(
    records: list[ImageRecord], image_size: int, limit_bytes: float = IN_MEMORY_BYTES
) -> tuple[InputLookup, list[ImageRecord]]:
    """The training images and the records they belong to.

    Images are decoded once into memory when they fit in `limit_bytes` (unreadable ones
    are reported and their records left out); larger datasets are read from their files
    at every visit (an unreadable image is then left out of its batch).
    """
    if len(records) * image_size * image_size * 3 > limit_bytes:
        return file_lookup([str(r.path) for r in records], image_size), records
    readable, images = [], []
    for indices, batch in image_dataset(records, image_size).batch(256):
        readable.extend(indices.numpy().tolist())
        images.append(batch.numpy())
    if not readable:
        raise DatasetError("none of the training images can be read")
    return array_lookup(np.concatenate(images)), [records[i] for i in readable]


def caption_batches(
    lookup: InputLookup, records: list[ImageRecord], vocab: Vocabulary, config: TrainConfig
) -> EpochBatches:
    """The teacher-forcing batches of `records`' captions, their inputs from `lookup`."""
    caption_ids, caption_counts = encode_captions(records, vocab, config.max_length)
    return EpochBatches(
        lookup,
        caption_ids,
        caption_counts,
        batch_size=config.batch_size,
        seed=config.seed,
        bucketing=config.bucketing,
        captions_per_image=config.captions_per_image,
    )


def feature_inputs(
    model: CaptioningModel,
    config: TrainConfig,
    train_records: list[ImageRecord],
    val_records: list[ImageRecord],
    log: Callable[[str], None],
    verbose: int,
) -> tuple[InputLookup, list[ImageRecord], np.ndarray | None]:
    """A frozen encoder's cached features (extracted once, see `captioner.data.feature_cache`).

    Returns:
        (lookup, records, val_features): the training features of the readable images,
        those images' records, and the validation images' features (None if one of them
        cannot be read: validation then decodes the images like any other run).
    """

    def cache(split_records):
        return cached_features(
            model,
            split_records,
            config.feature_cache,
            label=config.encoder,
            log=log,
            verbose=verbose,
        )

    features, unreadable = cache(train_records)
    rows = np.setdiff1d(np.arange(len(train_records)), unreadable)
    if not len(rows):
        raise DatasetError("none of the training images can be read")
    val_features = None
    if val_records:
        val_features, unreadable = cache(val_records)
        if len(unreadable):
            val_features = None
    return memmap_lookup(features, rows), [train_records[i] for i in rows], val_features
