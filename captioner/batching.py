"""Resumable, length-bucketed teacher-forcing batches.

An epoch's order is a pure function of (seed, epoch): which images, in which order, with
which of their captions. It is planned in NumPy before any image is read, so a resumed run
skips the batches it has done for free and sees exactly the batches an uninterrupted run
would have seen. With bucketing, captions of similar length share a batch and every batch
is cut to its longest caption (rounded up to `LENGTH_STEP`), so little work goes to padding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

# Batches are cut to a multiple of this many steps: few distinct shapes to compile.
LENGTH_STEP = 4
# With bucketing, captions are sorted by length inside pools of this many batches.
POOL_BATCHES = 50

InputLookup = Callable[[tf.Tensor], tf.Tensor]


def array_lookup(array: np.ndarray) -> InputLookup:
    """Model inputs held in memory (decoded images or encoder features), looked up by index."""
    # A variable, not a constant: tf.data would copy a captured constant into its graph.
    with tf.device("/cpu:0"):
        table = tf.Variable(array, trainable=False)
    return lambda index: tf.gather(table, index)


@dataclasses.dataclass
class EpochPlan:
    """The examples of one epoch in batch order.

    Attributes:
        image_index: (N,) the image of every example.
        caption_index: (N,) which of the image's captions it uses.
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
) -> EpochPlan:
    """Shuffles the images, draws one caption each and, with bucketing, groups by length.

    Args:
        caption_lengths: (N, C) steps of every caption (`<start> w… ` = words + 1).
        caption_counts: (N,) captions per image.
        epoch: the epoch number; with `seed` it fixes the whole plan.
        seed: the run's seed.
        batch_size: examples per batch.
        bucketing: group captions of similar length into the same batches.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(caption_counts))
    choice = np.floor(rng.random(len(order)) * caption_counts[order]).astype(np.int64)
    if bucketing:
        lengths = caption_lengths[order, choice]
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
    lengths = caption_lengths[plan.image_index, plan.caption_index]
    padded = total = 0
    for start in range(0, len(lengths), plan.batch_size):
        batch = lengths[start : start + plan.batch_size]
        steps = cut_length(int(batch.max()), max_steps)
        total += steps * len(batch)
        padded += steps * len(batch) - int(batch.sum())
    return padded / max(total, 1)


def cut_length(longest: int, max_steps: int) -> int:
    """The steps a batch is cut to: its longest caption rounded up to `LENGTH_STEP`."""
    return min(-(-longest // LENGTH_STEP) * LENGTH_STEP, max_steps)


class EpochBatches:
    """Teacher-forcing batches `((inputs, caption_in), caption_out)` of any epoch.

    Args:
        lookup: index (scalar int tensor) -> the model input of that image (an image, or
            cached encoder features); see `array_lookup`.
        caption_ids: (N, C, T + 1) int32 `<start> w… <end>` padded with 0
            (`captioner.data.encode_captions`).
        caption_counts: (N,) captions per image.
        batch_size: the global batch size.
        seed: the run's seed.
        bucketing: group captions by length and cut each batch to its longest caption;
            without it, every batch has the full T steps.
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
    ):
        self.lookup = lookup
        self.caption_ids = caption_ids
        self.caption_counts = np.asarray(caption_counts)
        self.max_steps = caption_ids.shape[-1] - 1
        # steps with a real target: the words and <end>
        self.caption_lengths = np.count_nonzero(caption_ids[..., 1:], axis=-1)
        self.batch_size = batch_size
        self.seed = seed
        self.bucketing = bucketing

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
        )

    def padded_share(self, epoch: int = 0) -> float:
        """The share of padded caption positions in an epoch's batches."""
        return padded_share(self.plan(epoch), self.caption_lengths, self.max_steps)

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        """The batches of `epoch`, without the first `skip_batches` (already trained on)."""
        plan = self.plan(epoch)
        start = skip_batches * self.batch_size
        image_index = plan.image_index[start:]
        sequences = self.caption_ids[image_index, plan.caption_index[start:]]  # (n, T + 1)
        ds = tf.data.Dataset.from_tensor_slices((image_index, sequences))
        ds = ds.map(
            lambda index, sequence: (self.lookup(index), sequence),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        ds = ds.batch(self.batch_size)
        if self.bucketing:
            ds = ds.map(self._cut, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(lambda inputs, s: ((inputs, s[:, :-1]), s[:, 1:]))
        return ds.prefetch(tf.data.AUTOTUNE)

    def _cut(self, inputs, sequences):
        longest = tf.reduce_max(tf.math.count_nonzero(sequences[:, 1:], axis=-1, dtype=tf.int32))
        steps = tf.minimum((longest + LENGTH_STEP - 1) // LENGTH_STEP * LENGTH_STEP, self.max_steps)
        return inputs, sequences[:, : steps + 1]

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator:
        """Iterates over the batches of `epoch` (eager tensors of concrete shapes)."""
        return iter(self.dataset(epoch, skip_batches))


def file_lookup(paths: list[str], image_size: int) -> InputLookup:
    """Images decoded from their files at every visit (datasets too large to hold)."""
    from captioner.data import read_image

    table = tf.constant(paths)
    return lambda index: read_image(tf.gather(table, index), image_size)
