"""Training steps timed one at a time, so that the variants a benchmark compares can take
turns (one step of each in turn) and share whatever else loads the machine."""

from __future__ import annotations

import time
from collections.abc import Callable


class InterleavedSteps:
    """One variant's steps over an endless stream of its batches (epoch after epoch).

    Args:
        batches: an `EpochBatches`.
        train: runs one training step on a batch.
        include_batch_wait: time the wait for the batch with the step.
    """

    def __init__(self, batches, train: Callable, include_batch_wait: bool = False):
        self.batches = batches
        self.train = train
        self.include_batch_wait = include_batch_wait
        self.stream = self._stream()
        self.shapes: set = set()
        self.captions = self.steps = 0
        self.seconds = 0.0

    def _stream(self):
        epoch = 0
        while True:
            yield from self.batches.dataset(epoch)
            epoch += 1

    def warm_up(self) -> None:
        """One step of every batch shape of an epoch: tracing and compiling are not timed."""
        for batch in self.batches.dataset(epoch=0):
            shape = tuple(batch[1].shape)
            if shape not in self.shapes:
                self.shapes.add(shape)
                self.train(batch)

    def timed_step(self) -> None:
        """One step; a batch shape the warm-up did not see is traced now and not counted."""
        started = time.perf_counter()
        batch = next(self.stream)
        if not self.include_batch_wait:
            started = time.perf_counter()
        self.train(batch)
        seconds = time.perf_counter() - started
        shape = tuple(batch[1].shape)  # targets: (B, T) or (B, C, T), C captions per image
        if shape not in self.shapes:
            self.shapes.add(shape)
            return
        self.seconds += seconds
        self.captions += shape[0] * (shape[1] if len(shape) == 3 else 1)
        self.steps += 1

    @property
    def captions_per_second(self) -> float:
        return self.captions / max(self.seconds, 1e-9)
