"""Learning-rate schedule: linear warm-up, then cosine decay or a constant rate that
reduce-on-plateau lowers."""

from __future__ import annotations

import math

import keras
from keras import ops

SCHEDULES = ("cosine", "plateau", "constant")


@keras.saving.register_keras_serializable(package="captioner")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`lr(step) = scale * peak * warmup(step) * decay(step)`.

    Args:
        peak: the rate reached at the end of the warm-up.
        warmup_steps: steps of the linear ramp from `peak / warmup_steps` to `peak`.
        decay_steps: total steps; "cosine" decays from `peak` to `alpha * peak` over the
            steps after the warm-up.
        kind: "cosine", "plateau" (constant; `scale` is lowered from outside, see
            `PlateauReducer`) or "constant".
        alpha: the final fraction of `peak` for "cosine".
        scale: the current reduce-on-plateau factor (part of the resumable state).
    """

    def __init__(self, peak, warmup_steps=0, decay_steps=1, kind="cosine", alpha=0.05, scale=1.0):
        if kind not in SCHEDULES:
            raise ValueError(f"learning-rate schedule must be one of {SCHEDULES}, got {kind!r}")
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.kind = kind
        self.alpha = float(alpha)
        # A variable, so that a compiled step sees the plateau reductions.
        self.scale = keras.Variable(float(scale), trainable=False, name="lr_scale")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.minimum((step + 1.0) / max(self.warmup_steps, 1), 1.0)
        if self.kind == "cosine":
            span = max(self.decay_steps - self.warmup_steps, 1)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
            decay = self.alpha + (1.0 - self.alpha) * cosine
        else:
            decay = 1.0
        return self.scale * self.peak * warmup * decay

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "kind": self.kind,
            "alpha": self.alpha,
            "scale": float(ops.convert_to_numpy(self.scale)),
        }


class PlateauReducer(keras.callbacks.Callback):
    """Reduce-on-plateau: multiplies the schedule's scale by `factor` after `patience`
    epochs without a new best of the monitored value: a free-running validation score
    where there is one (`monitor` in the epoch logs), otherwise minus the training loss.

    Args:
        schedule: the `WarmupSchedule` whose scale is lowered.
        monitor: the epoch log to maximise (the validation metric that selects models).
        factor: the reduction factor.
        patience: epochs without improvement before a reduction.
        min_scale: the scale is never lowered below this.
    """

    def __init__(
        self,
        schedule: WarmupSchedule,
        factor=0.5,
        patience=2,
        min_scale=1e-3,
        log=print,
        monitor="val_bleu4",
    ):
        super().__init__()
        self.monitor = monitor
        self.log = log
        self.schedule = schedule
        self.factor = factor
        self.patience = patience
        self.min_scale = min_scale
        self.best = -math.inf
        self.waited = 0

    def update(self, value: float) -> bool:
        """Takes the epoch's monitored value; returns whether the rate was lowered."""
        if value > self.best:
            self.best, self.waited = value, 0
            return False
        self.waited += 1
        if self.waited < self.patience:
            return False
        self.waited = 0
        scale = float(ops.convert_to_numpy(self.schedule.scale))
        new_scale = max(scale * self.factor, self.min_scale)
        self.schedule.scale.assign(new_scale)
        return new_scale < scale

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs[self.monitor] if self.monitor in logs else -logs["loss"]
        if self.update(float(value)):
            scale = float(ops.convert_to_numpy(self.schedule.scale))
            self.log(f"no improvement for {self.patience} epochs: learning rate x{scale:.3g}")

    def get_state(self) -> dict:
        scale = float(ops.convert_to_numpy(self.schedule.scale))
        return {"best": self.best, "waited": self.waited, "scale": scale}

    def set_state(self, state: dict) -> None:
        self.best, self.waited = state["best"], state["waited"]
        self.schedule.scale.assign(state["scale"])
