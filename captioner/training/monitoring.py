"""What a training run shows: progress with throughput and ETA, TensorBoard logs, and a
PNG of the training curves."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras

CURVES_FILE = "training_curves.png"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressCallback(keras.callbacks.Callback):
    """One progress line per epoch: batches, mean loss, captions/s and ETA of the epoch.

    On a terminal the line is redrawn about every second; otherwise (logs, CI) a line is
    printed every `interval` seconds.

    Args:
        steps_per_epoch: batches in an epoch.
        epochs: epochs of the run.
        interval: seconds between printed lines when the output is not a terminal.
        stream: where the lines go.
    """

    def __init__(self, steps_per_epoch: int, epochs: int, interval: float = 30.0, stream=None):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.stream = stream if stream is not None else sys.stdout
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 1.0 if self.interactive else interval
        self.epoch = 0
        self.started = self.last_shown = 0.0
        self.losses: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.losses = []
        self.started = self.last_shown = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self.losses.append(float(logs.get("loss", math.nan)))
        now = time.perf_counter()
        if now - self.last_shown < self.interval and batch + 1 < self.steps_per_epoch:
            return
        self.last_shown = now
        rate = float(logs.get("captions_per_second", 0.0))
        seconds_per_step = (now - self.started) / len(self.losses)
        left = self.steps_per_epoch - (batch + 1)
        line = (
            f"epoch {self.epoch + 1}/{self.epochs} {batch + 1}/{self.steps_per_epoch} "
            f"loss {sum(self.losses) / len(self.losses):.4f} {rate:,.0f} captions/s "
            f"ETA {_duration(left * seconds_per_step)}"
        )
        end = "" if self.interactive else "\n"
        prefix = "\r" if self.interactive else ""
        self.stream.write(f"{prefix}{line}{end}")
        self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


class TensorBoardCallback(keras.callbacks.Callback):
    """TensorBoard scalars: step losses and learning rate every `every` steps, and all
    epoch logs (losses, validation metrics, lr, throughput) at each epoch end.

    Args:
        log_dir: the TensorBoard folder (e.g. RUN_DIR/tensorboard).
        every: steps between step scalars.
        epoch_images: optional `epoch -> [(name, (H, W, 3) uint8)]`, e.g. captioned
            validation images with their attention, written at each epoch end.
    """

    def __init__(
        self,
        log_dir: str | Path,
        every: int = 20,
        epoch_images: Callable[[int], list] | None = None,
    ):
        super().__init__()
        import tensorflow as tf

        self.tf = tf
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.every = every
        self.epoch_images = epoch_images

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if not logs or step % self.every:
            return
        with self.writer.as_default(step=step):
            for key, value in logs.items():
                self.tf.summary.scalar(f"step/{key}", value)
            learning_rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            self.tf.summary.scalar("step/lr", float(learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default(step=epoch + 1):
            for key, value in (logs or {}).items():
                if isinstance(value, (int, float)):
                    self.tf.summary.scalar(f"epoch/{key}", value)
            if self.epoch_images is not None:
                for name, image in self.epoch_images(epoch):
                    self.tf.summary.image(name, image[None], step=epoch + 1)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


class CurvesPlotCallback(keras.callbacks.Callback):
    """Redraws `RUN_DIR/training_curves.png` after every epoch: losses, validation BLEU,
    learning rate. Its rows are part of the resumable state.

    Args:
        path: the PNG file.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = []

    def get_state(self) -> dict:
        return {"rows": self.rows}

    def set_state(self, state: dict) -> None:
        self.rows = list(state["rows"])

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))})
        self.rows.append(row)
        plot_curves(self.rows, self.path)


def plot_curves(rows: list[dict], path: str | Path) -> None:
    """Draws the epoch rows' losses, validation BLEU scores and learning rate to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("loss", [k for k in ("loss", "xent", "penalty") if any(k in r for r in rows)]),
        ("validation BLEU", [k for k in ("val_bleu1", "val_bleu4") if any(k in r for r in rows)]),
        ("learning rate", ["lr"] if any("lr" in r for r in rows) else []),
    ]
    panels = [(title, keys) for title, keys in panels if keys]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for axis, (title, keys) in zip(axes[0], panels):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in rows if key in r]
            axis.plot(*zip(*points), marker="o", label=key)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


class AttentionSnapshots:
    """A few validation images captioned free-running, with the attention of every word,
    as RGB arrays for TensorBoard (`TensorBoardCallback(epoch_images=...)`).

    Args:
        model: the captioning model being trained.
        vocab: its vocabulary.
        images: (N, S, S, 3) uint8 validation images (a handful).
    """

    def __init__(self, model, vocab, images):
        self.model = model
        self.vocab = vocab
        self.images = images
        self.captioner = None

    def __call__(self, epoch: int) -> list:
        import tempfile

        import numpy as np
        from PIL import Image

        from captioner.inference.captioner import Captioner
        from captioner.inference.visualize import save_attention

        if self.captioner is None:
            self.captioner = Captioner(self.model, self.vocab)
        snapshots = []
        with tempfile.TemporaryDirectory() as folder:
            captions = self.captioner.caption(self.images)
            for index, (image, caption) in enumerate(zip(self.images, captions)):
                (png,) = save_attention(
                    Path(folder) / f"val_{index}",
                    image,
                    caption.words,
                    caption.alphas,
                    caption.betas,
                    formats=("png",),
                )
                with Image.open(png) as drawn:
                    snapshots.append((f"attention/val_{index}", np.asarray(drawn.convert("RGB"))))
        return snapshots
