"""After every epoch: free-running validation scores, the history file and the best model."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from captioner.data.dataset import ImageRecord
from captioner.data.vocabulary import Vocabulary
from captioner.evaluation.coco_metrics import COCO_METRICS
from captioner.evaluation.evaluate_split import evaluate_split
from captioner.files import atomic_path, write_json_atomic
from captioner.inference.captioner import MODEL_FILE, Captioner
from captioner.training.selection import ModelSelector

HISTORY_FILE = "history.json"
ATTENTION_SNAPSHOTS = 3  # validation images shown with their attention in TensorBoard


class ValidationCallback(keras.callbacks.Callback):
    """After every epoch: free-running validation scores, history file, best model kept.

    The best model is the one with the highest `selector.metric` on the validation records
    (the lowest training loss without them); `selector.patience` stops training early. Its
    state (history and the selector's best score and patience counter) goes into the
    training checkpoint, so a resumed run selects and stops as an uninterrupted one.
    """

    def __init__(
        self,
        vocab: Vocabulary,
        records: list[ImageRecord],
        run_dir: Path,
        log,
        selector: ModelSelector | None = None,
        features: np.ndarray | None = None,
        stage: int = 1,
    ):
        super().__init__()
        self.stage = (
            stage  # 1: decoder training, 2: fine-tuning (see captioner.training.fine_tuning)
        )
        self.vocab = vocab
        self.records = records
        self.features = features
        self.run_dir = run_dir
        self.log = log
        self.selector = selector or ModelSelector()
        self.history: list[dict] = []
        self.captioner: Captioner | None = None
        self.epoch_started = 0.0

    def get_state(self) -> dict:
        return {"history": self.history, "selector": self.selector.get_state()}

    def set_state(self, state: dict) -> None:
        self.history = list(state["history"])
        self.selector.set_state(state["selector"])

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        train_seconds = time.perf_counter() - self.epoch_started
        if self.captioner is None:
            self.captioner = Captioner(self.model, self.vocab)
        row = {"epoch": epoch + 1, "stage": self.stage, **{k: float(v) for k, v in logs.items()}}
        row["train_seconds"] = round(train_seconds, 2)
        selected = self.selector.metric
        if self.records:
            scores = validation_scores(self.captioner, self.records, selected, self.features)
            row.update({f"val_{k}": v for k, v in scores.items()})
            logs.update({k: v for k, v in row.items() if k.startswith("val_")})
            metric = scores.get(selected)
        else:
            metric = -row["loss"]  # no validation split: keep the lowest training loss
        improved = self.selector.update(metric, epoch + 1)
        if improved:
            with atomic_path(self.run_dir / MODEL_FILE) as partial:  # a failed save keeps the last
                self.model.save(partial)
        row["best"] = improved
        if self.selector.should_stop:
            self.model.stop_training = True
            row["early_stop"] = True
        self.history.append(row)
        write_json_atomic(self.run_dir / HISTORY_FILE, self.history)
        shown = ", ".join(
            f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "epoch"
        )
        stage = {2: " (fine-tuning)", 3: " (SCST)"}.get(self.stage, "")
        self.log(f"epoch {epoch + 1}{stage}: {shown}{'  (best, saved)' if improved else ''}")
        if self.selector.should_stop:
            self.log(
                f"early stop: val {selected} has not improved for {self.selector.patience} "
                f"epochs (best {self.selector.best:.4g} at epoch {self.selector.best_epoch})"
            )


def validation_scores(
    captioner: Captioner,
    records: list[ImageRecord],
    metric: str,
    features: np.ndarray | None = None,
) -> dict:
    """Free-running validation scores: BLEU-1…4, object and pointing accuracy where the
    dataset has them, and `metric` (a coco metric is computed only when selected)."""
    coco = (metric,) if metric in COCO_METRICS else ()
    scores = evaluate_split(
        captioner,
        records,
        split="val",
        coco_metrics=coco,
        tokenizer="captioner",
        features=features,
    )
    kept = (
        "bleu1",
        "bleu2",
        "bleu3",
        "bleu4",
        "object_accuracy",
        "pointing_accuracy",
        "pointing_accuracy_all_objects",
        *coco,
    )
    return {k: scores[k] for k in kept if scores.get(k) is not None}
