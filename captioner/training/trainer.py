"""The resumable training loop: epochs of compiled steps, checkpoints, interrupts, NaN stop."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable

import keras
import numpy as np

from captioner.data.batching import EpochBatches
from captioner.runtime import repeatable_steps
from captioner.training.checkpoint import CheckpointStore
from captioner.training.train_step import TrainStep

LOSS_KEYS = ("loss", "xent", "penalty")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: a checkpoint was saved and the run can be resumed."""


class Trainer:
    """Runs epochs of `TrainStep`s over `EpochBatches` with Keras callbacks.

    Everything a resumed run needs is in its checkpoint: model and optimiser variables
    (the optimiser's step count drives the learning-rate schedule; dropout seed states are
    model variables), the epoch and the batches done in it (an epoch's batches are a pure
    function of the seed and the epoch), the epoch's running sums, and the state of the
    callbacks that have `get_state`/`set_state`. Killed at any moment, the run restarts
    from its last checkpoint and sees the same batches in the same order as an
    uninterrupted one.

    Args:
        model: the built model.
        step: its `TrainStep`.
        batches: the training batches.
        epochs: the number of epochs.
        callbacks: Keras callbacks (they see `on_epoch_end` logs with the epoch's mean losses
            and `lr`; setting `model.stop_training` ends the run after the epoch).
        store: where checkpoints go (None: none, e.g. on non-chief workers).
        checkpoint_steps: also checkpoint every this many steps (0: at epoch ends only).
        stateful: objects with `get_state() -> dict` and `set_state(dict)` saved in the
            checkpoint, by name.
        log: where messages go.
        first_epoch: the number of the first epoch (a later stage continues the numbering;
            `epochs` counts from 0, so the stage runs epochs `first_epoch` to `epochs` - 1).
        loss_keys: the values every step returns, averaged over the epoch in the logs.
    """

    def __init__(
        self,
        model: keras.Model,
        step: TrainStep,
        batches: EpochBatches,
        *,
        epochs: int,
        callbacks: list[keras.callbacks.Callback] = (),
        store: CheckpointStore | None = None,
        checkpoint_steps: int = 0,
        stateful: dict | None = None,
        log: Callable[[str], None] = print,
        first_epoch: int = 0,
        loss_keys: tuple[str, ...] = LOSS_KEYS,
    ):
        self.model = model
        self.step = step
        self.batches = batches
        self.epochs = epochs
        self.callbacks = keras.callbacks.CallbackList(list(callbacks), model=model)
        self.store = store
        self.checkpoint_steps = checkpoint_steps
        self.stateful = dict(stateful or {})
        self.log = log
        self.loss_keys = loss_keys
        self.epoch = first_epoch
        self.batch = 0  # batches done in the current epoch
        self.sums = self._empty_sums()
        self.stop_signal: str | None = None

    def _empty_sums(self) -> dict:
        return {**dict.fromkeys(self.loss_keys, 0.0), "steps": 0, "captions": 0, "seconds": 0.0}

    @property
    def optimizer(self):
        return self.step.optimizer

    @property
    def global_step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    # -- checkpoints -----------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "global_step": self.global_step,
            "sums": self.sums,
            "finished": self.epoch >= self.epochs,
            "stopped": bool(self.model.stop_training),  # e.g. by early stopping
            "stateful": {name: obj.get_state() for name, obj in self.stateful.items()},
        }

    def save(self) -> None:
        if self.store is None:
            return
        try:
            self.store.save(self.model.variables, self.optimizer.variables, self.state())
        except FloatingPointError as error:
            raise TrainingDiverged(
                f"{error} at epoch {self.epoch + 1}, step {self.global_step}; stopped, "
                f"the last good checkpoint {self.store.path} is kept"
            ) from None

    def restore(self) -> bool:
        """Loads the checkpoint if there is one; returns whether it did."""
        if self.store is None or not self.store.exists():
            return False
        self.optimizer.build(self.model.trainable_variables)
        state = self.store.load(self.model.variables, self.optimizer.variables)
        self.epoch, self.batch, self.sums = state["epoch"], state["batch"], state["sums"]
        self.model.stop_training = state["stopped"]
        for name, obj in self.stateful.items():
            if name in state["stateful"]:
                obj.set_state(state["stateful"][name])
        return True

    # -- the loop --------------------------------------------------------------------------

    def fit(self) -> None:
        """Trains until the last epoch or until a callback stops the run.

        Raises:
            TrainingDiverged: the loss became NaN or Inf.
            TrainingInterrupted: Ctrl-C or SIGTERM; a checkpoint was saved first.
        """
        with self._signals_stop_gracefully():
            self.callbacks.on_train_begin()
            while self.epoch < self.epochs and not self.model.stop_training:
                self._run_epoch()
            self.callbacks.on_train_end()

    def _run_epoch(self) -> None:
        epoch = self.epoch
        self.callbacks.on_epoch_begin(epoch)
        dataset = self.step.distribute(self.batches.dataset(epoch, skip_batches=self.batch))
        started = time.perf_counter()
        with repeatable_steps():
            for inputs, targets in dataset:
                captions = _caption_count(targets)
                losses = self.step((inputs, targets))
                if not all(math.isfinite(v) for v in losses.values()):
                    self._diverged(losses)
                self.batch += 1
                now = time.perf_counter()
                self.sums["seconds"] += now - started
                started = now
                self.sums["steps"] += 1
                self.sums["captions"] += captions
                for key in self.loss_keys:
                    self.sums[key] += losses[key]
                rate = self.sums["captions"] / max(self.sums["seconds"], 1e-9)
                self.callbacks.on_train_batch_end(
                    self.batch - 1, {**losses, "captions_per_second": rate}
                )
                if self.stop_signal is not None:
                    self._stop_for_signal()
                if self.checkpoint_steps and self.global_step % self.checkpoint_steps == 0:
                    self.save()
        steps = max(self.sums["steps"], 1)
        logs = {key: self.sums[key] / steps for key in self.loss_keys}
        logs["lr"] = self.learning_rate()
        logs["captions_per_second"] = self.sums["captions"] / max(self.sums["seconds"], 1e-9)
        self.callbacks.on_epoch_end(epoch, logs)
        self.epoch, self.batch, self.sums = epoch + 1, 0, self._empty_sums()
        self.save()
        if self.stop_signal is not None:
            self._stop_for_signal()

    def _diverged(self, losses: dict) -> None:
        shown = ", ".join(f"{k} {v}" for k, v in losses.items())
        where = (
            f"the last good checkpoint {self.store.path} is kept"
            if self.store is not None and self.store.exists()
            else "no checkpoint had been saved yet"
        )
        raise TrainingDiverged(
            f"the loss is not finite ({shown}) at epoch {self.epoch + 1}, batch "
            f"{self.batch + 1}; stopped, {where}. Lower --learning-rate or --clip-norm, or "
            f"add warm-up steps"
        )

    def _stop_for_signal(self) -> None:
        self.save()
        where = f"; checkpoint {self.store.path}" if self.store is not None else ""
        raise TrainingInterrupted(
            f"{self.stop_signal}: stopped at epoch {self.epoch + 1}, batch {self.batch}{where}"
        )

    def _signals_stop_gracefully(self):
        """Ctrl-C and SIGTERM finish the current step, save a checkpoint and stop."""
        trainer = self

        class Handlers:
            def __enter__(self):
                self.previous = {}
                if threading.current_thread() is not threading.main_thread():
                    return self
                for number in (signal.SIGINT, signal.SIGTERM):
                    self.previous[number] = signal.signal(number, self.handle)
                return self

            def handle(self, number, frame):
                if trainer.stop_signal is not None:  # a second Ctrl-C: stop now
                    raise KeyboardInterrupt
                trainer.stop_signal = signal.Signals(number).name

            def __exit__(self, *exc):
                for number, handler in self.previous.items():
                    signal.signal(number, handler)

        return Handlers()


def _caption_count(targets) -> int:
    """The real captions of a batch's targets, (B, T) or (B, C, T) (all-padding rows not)."""
    parts = targets.values if hasattr(targets, "values") else (targets,)  # per-replica parts
    return sum(int(np.count_nonzero(np.any(np.asarray(t) != 0, axis=-1))) for t in parts)
