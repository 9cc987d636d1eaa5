"""Resumable, length-bucketed teacher-forcing batches.

An epoch's order is a pure function of (seed, epoch): which images, in which order, with
which of their captions. It is planned in NumPy before any image is read, so a resumed run
skips the batches it has done for free and sees exactly the batches an uninterrupted run
would have seen. With bucketing, captions of similar length share a batch and every batch
is cut to its longest caption (rounded up to `LENGTH_STEP`), so little work goes to padding.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from captioner.data.dataset import ImageRecord
from captioner.data.vocabulary import Vocabulary

# Batches are cut to a multiple of this many steps: few distinct shapes to compile.
LENGTH_STEP = 4
# With bucketing, captions are sorted by length inside pools of this many batches.
POOL_BATCHES = 50


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


@dataclasses.dataclass(frozen=True)
class InputLookup:
    """How the model inputs of a batch's images are found from the images' indices.

    Attributes:
        fetch: with `per_example`, index () -> (input, readable flag); otherwise indices
            (B,) -> inputs (B, ...).
        per_example: inputs are read one image at a time (in parallel) and unreadable ones
            are left out of their batch; otherwise a whole batch is gathered at once.
    """

    fetch: Callable
    per_example: bool = False


def array_lookup(array: np.ndarray) -> InputLookup:
    """Model inputs held in memory (decoded images or encoder features), gathered by index."""
    # A variable, not a constant: tf.data would copy a captured constant into its graph.
    with tf.device("/cpu:0"):
        table = tf.Variable(array, trainable=False)
    return InputLookup(lambda indices: tf.gather(table, indices))


def memmap_lookup(features: np.ndarray, rows: np.ndarray | None = None) -> InputLookup:
    """Cached encoder features (N, L, D), e.g. a memory-mapped file larger than memory.

    Args:
        features: the feature cache (`captioner.data.feature_cache.cached_features`).
        rows: the cache row of every training image (default: the same index); images
            whose cache row is unusable are simply not listed.
    """
    rows = None if rows is None else np.asarray(rows, np.int64)
    dtype = tf.as_dtype(features.dtype)
    shape = tuple(features.shape[1:])

    def gather(indices: np.ndarray) -> np.ndarray:
        return np.asarray(features[indices if rows is None else rows[indices]])

    def fetch(indices):
        batch = tf.numpy_function(gather, [indices], dtype, stateful=False)
        batch.set_shape((None, *shape))
        return batch

    return InputLookup(fetch)


def file_lookup(
    paths: list[str], image_size: int, on_error: Callable[[str], None] | None = None
) -> InputLookup:
    """Images decoded from their files at every visit (datasets too large to hold).

    An unreadable image is reported once and left out of its batch.
    """
    from captioner.data.image_pipeline import image_reader

    table = tf.constant([os.fsencode(p) for p in paths])
    read = image_reader(image_size, on_error=on_error)
    return InputLookup(lambda index: read(tf.gather(table, index)), per_example=True)


@dataclasses.dataclass
class EpochPlan:
    """The examples of one epoch in batch order.

    Attributes:
        image_index: (N,) the image of every example.
        caption_index: (N, C) which of the image's caption slots it uses (C captions per
            image; a slot past the image's captions holds only padding).
        batch_size: all batches are full except possibly the last.
    """

    image_index: np.ndarray
    caption_index: np.ndarray
    batch_size: int

    @property
    def num_batches(self) -> int:
        return -(-len(self.image_index) // self.batch_size)


def plan_epoch(
    caption_lengths: np.ndarray,
    caption_counts: np.ndarray,
    *,
    epoch: int,
    seed: int,
    batch_size: int,
    bucketing: bool,
    captions_per_image: int = 1,
) -> EpochPlan:
    """Shuffles the images, draws their captions and, with bucketing, groups by length.

    Args:
        caption_lengths: (N, S) steps of every caption slot (`<start> w… ` = words + 1; 0
            for an empty slot), S >= `captions_per_image`.
        caption_counts: (N,) captions per image.
        epoch: the epoch number; with `seed` it fixes the whole plan.
        seed: the run's seed.
        batch_size: images per batch.
        bucketing: group captions of similar length into the same batches (an image's
            length is its longest drawn caption).
        captions_per_image: C, captions drawn per image without repetition: its real
            captions in random order first, then empty slots if it has fewer than C.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(caption_counts))
    slots = caption_lengths.shape[1]
    empty = np.arange(slots)[None, :] >= caption_counts[order][:, None]  # (N, S)
    noise = rng.random((len(order), slots)) + 2.0 * empty  # empty slots sort last
    choice = np.argsort(noise, axis=1, kind="stable")[:, :captions_per_image]  # (N, C)
    if bucketing:
        lengths = caption_lengths[order[:, None], choice].max(axis=1)
        pool = batch_size * POOL_BATCHES  # a multiple of the batch size: one partial batch
        batches = []
        for start in range(0, len(order), pool):
            by_length = start + np.argsort(lengths[start : start + pool], kind="stable")
            batches += [by_length[i : i + batch_size] for i in range(0, len(by_length), batch_size)]
        full = [b for b in batches if len(b) == batch_size]
        partial = [b for b in batches if len(b) < batch_size]
        shuffled = [full[i] for i in rng.permutation(len(full))] + partial
        positions = np.concatenate(shuffled) if shuffled else np.zeros(0, np.int64)
        order, choice = order[positions], choice[positions]
    return EpochPlan(order, choice, batch_size)


def padded_share(plan: EpochPlan, caption_lengths: np.ndarray, max_steps: int) -> float:
    """The share of padded positions in the plan's batches, as `EpochBatches` cuts them."""
    lengths = caption_lengths[plan.image_index[:, None], plan.caption_index]  # (N, C)
    padded = total = 0
    for start in range(0, len(lengths), plan.batch_size):
        batch = lengths[start : start + plan.batch_size]
        steps = cut_length(int(batch.max()), max_steps)
        total += steps * batch.size
        padded += steps * batch.size - int(batch.sum())
    return padded / max(total, 1)


def cut_length(longest: int, max_steps: int) -> int:
    """The steps a batch is cut to: its longest caption rounded up to `LENGTH_STEP`."""
    return min(-(-longest // LENGTH_STEP) * LENGTH_STEP, max_steps)


class EpochBatches:
    """Teacher-forcing batches `((inputs, caption_in), caption_out)` of any epoch.

    `caption_in` is `<start> w1 … wn` and `caption_out` the same shifted by one step,
    `w1 … wn <end>`, padded with 0: (B, T) for one caption per image, (B, C, T) for C.

    Args:
        lookup: how the model inputs (images, or cached encoder features) of a batch's
            images are found (`array_lookup`, `memmap_lookup`, `file_lookup`).
        caption_ids: (N, S, T + 1) int32 `<start> w… <end>` padded with 0
            (`captioner.data.batching.encode_captions`).
        caption_counts: (N,) captions per image.
        batch_size: the global batch size, in images.
        seed: the run's seed.
        bucketing: group captions by length and cut each batch to its longest caption;
            without it, every batch has the full T steps.
        captions_per_image: C, captions of an image decoded together (the image is
            encoded once).
    """

    def __init__(
        self,
        lookup: InputLookup,
        caption_ids: np.ndarray,
        caption_counts: np.ndarray,
        *,
        batch_size: int,
        seed: int = 0,
        bucketing: bool = True,
        captions_per_image: int = 1,
    ):
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image must be at least 1, got {captions_per_image}")
        missing_slots = captions_per_image - caption_ids.shape[1]
        if missing_slots > 0:  # images with fewer captions get all-padding rows
            caption_ids = np.pad(caption_ids, ((0, 0), (0, missing_slots), (0, 0)))
        self.lookup = lookup
        self.caption_ids = caption_ids
        self.caption_counts = np.asarray(caption_counts)
        self.max_steps = caption_ids.shape[-1] - 1
        # steps with a real target: the words and <end>
        self.caption_lengths = np.count_nonzero(caption_ids[..., 1:], axis=-1)
        self.batch_size = batch_size
        self.seed = seed
        self.bucketing = bucketing
        self.captions_per_image = captions_per_image

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.caption_counts) // self.batch_size)

    def plan(self, epoch: int) -> EpochPlan:
        return plan_epoch(
            self.caption_lengths,
            self.caption_counts,
            epoch=epoch,
            seed=self.seed,
            batch_size=self.batch_size,
            bucketing=self.bucketing,
            captions_per_image=self.captions_per_image,
        )

    def padded_share(self, epoch: int = 0) -> float:
        """The share of padded caption positions in an epoch's batches."""
        return padded_share(self.plan(epoch), self.caption_lengths, self.max_steps)

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        """The batches of `epoch`, without the first `skip_batches` (already trained on)."""
        plan = self.plan(epoch)
        start = skip_batches * self.batch_size
        image_index = plan.image_index[start:]
        sequences = self.caption_ids[image_index[:, None], plan.caption_index[start:]]
        if self.captions_per_image == 1:
            sequences = sequences[:, 0]  # (n, T + 1)
        ds = tf.data.Dataset.from_tensor_slices((image_index, sequences))
        fetch = self.lookup.fetch
        if self.lookup.per_example:
            ds = ds.map(
                lambda index, sequence: (*fetch(index), sequence),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            ds = ds.filter(lambda inputs, ok, sequence: ok)
            ds = ds.map(lambda inputs, ok, sequence: (inputs, sequence)).batch(self.batch_size)
        else:
            ds = ds.batch(self.batch_size).map(
                lambda indices, sequences: (fetch(indices), sequences),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        if self.bucketing:
            ds = ds.map(self._cut, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(lambda inputs, s: ((inputs, s[..., :-1]), s[..., 1:]))
        return ds.prefetch(tf.data.AUTOTUNE)

    def _cut(self, inputs, sequences):
        longest = tf.reduce_max(tf.math.count_nonzero(sequences[..., 1:], axis=-1, dtype=tf.int32))
        steps = tf.minimum((longest + LENGTH_STEP - 1) // LENGTH_STEP * LENGTH_STEP, self.max_steps)
        return inputs, sequences[..., : steps + 1]

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator:
        """Iterates over the batches of `epoch` (eager tensors of concrete shapes)."""
        return iter(self.dataset(epoch, skip_batches))
