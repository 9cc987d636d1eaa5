"""Model selection and early stopping on a free-running validation metric."""

from __future__ import annotations

import math

from captioner.evaluation.coco_metrics import COCO_METRICS, coco_missing_reason

# Scores `evaluate_split` reports where higher is better; never a teacher-forced one, and
# never one that a model can raise by saying less: `pointing_accuracy` leaves out the objects
# a caption does not name, `pointing_accuracy_all_objects` counts them as misses.
SELECT_METRICS = (
    "bleu1",
    "bleu2",
    "bleu3",
    "bleu4",
    *COCO_METRICS,
    "object_accuracy",
    "pointing_accuracy_all_objects",
)
# Reported, but refused for selection, with the score to use instead.
GAMEABLE_METRICS = {"pointing_accuracy": "pointing_accuracy_all_objects"}


def check_select_metric(metric: str) -> None:
    """Refuses a metric that cannot be used for model selection here.

    Raises:
        ValueError: For an unknown metric, or a coco metric without the coco extra (or,
            for METEOR, without Java), with the reason and the fix.
    """
    if metric in GAMEABLE_METRICS:
        raise ValueError(
            f"cannot select by {metric}: a model raises it by naming fewer objects; use "
            f"{GAMEABLE_METRICS[metric]}, which counts every object of the scene"
        )
    if metric not in SELECT_METRICS:
        raise ValueError(f"unknown selection metric {metric!r}; choose from {SELECT_METRICS}")
    if metric in COCO_METRICS:
        reason = coco_missing_reason(java=metric == "meteor")
        if reason is not None:
            raise ValueError(f"cannot select by {metric}: {reason}")


class ModelSelector:
    """Keeps track of the best validation score and says when to stop.

    Args:
        metric: The score to maximise (one of `SELECT_METRICS`).
        patience: Stop after this many evaluations in a row without improvement; 0 never
            stops early.
    """

    def __init__(self, metric: str = "bleu4", patience: int = 0):
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.metric = metric
        self.patience = patience
        self.best = -math.inf
        self.best_epoch: int | None = None
        self.epochs_without_improvement = 0

    def update(self, value: float | None, epoch: int) -> bool:
        """Records the score of `epoch`; returns whether it is the best so far.

        A missing score (None or NaN) never improves.
        """
        improved = value is not None and not math.isnan(value) and value > self.best
        if improved:
            self.best, self.best_epoch = float(value), epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return improved

    def get_state(self) -> dict:
        """What a resumed run needs: the best score, its epoch and the patience counter."""
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
        }

    def set_state(self, state: dict) -> None:
        self.best = float(state["best"])
        self.best_epoch = state["best_epoch"]
        self.epochs_without_improvement = int(state["epochs_without_improvement"])

    @property
    def should_stop(self) -> bool:
        """True once `patience` evaluations in a row have not improved."""
        return self.patience > 0 and self.epochs_without_improvement >= self.patience
