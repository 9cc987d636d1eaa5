"""What every stage after the first shares: the best model so far as its start, validation
and selection going on, and a resumable loop with its own checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from captioner.config import TrainConfig
from captioner.data.batching import EpochBatches
from captioner.data.dataset import ImageRecord
from captioner.data.vocabulary import Vocabulary
from captioner.errors import RunDirectoryError
from captioner.inference.captioner import MODEL_FILE
from captioner.training.checkpoint import CheckpointStore
from captioner.training.distribute import is_chief
from captioner.training.monitoring import CURVES_FILE, CurvesPlotCallback, ProgressCallback
from captioner.training.selection import ModelSelector
from captioner.training.trainer import LOSS_KEYS, Trainer
from captioner.training.validation import ValidationCallback


def load_best_model(model, run_dir: Path) -> None:
    """Starts a later stage from the best model so far (`model.keras`), not the last epoch.

    Raises:
        RunDirectoryError: there is no model to start from.
    """
    best = run_dir / MODEL_FILE
    if not best.is_file():
        raise RunDirectoryError(f"{best}: no model of the first stage to train further")
    model.load_weights(best)
    model.stop_training = False  # an early stop of the earlier stage ends that stage only


def continued_validation(
    previous_stage: dict,
    config: TrainConfig,
    vocab: Vocabulary,
    records: list[ImageRecord],
    run_dir: Path,
    log,
    stage: int,
    features: np.ndarray | None = None,
) -> tuple[ValidationCallback, CurvesPlotCallback]:
    """Validation and the curves of a later stage, going on from the stage before.

    Selection continues: the best score so far is kept, with a fresh patience count, and
    `history.json` gains the new stage's rows.

    Args:
        previous_stage: the final loop state of the stage before (`Trainer.state()`).
        config: the run's settings.
        vocab: the run's vocabulary.
        records: the validation images.
        run_dir: the run directory.
        log: where messages go.
        stage: the new stage's number (2: fine-tuning, 3: self-critical training).
        features: the validation images' cached features, or None.
    """
    previous = previous_stage["stateful"]["validation"]
    selector = ModelSelector(config.select_metric, config.early_stopping_patience)
    validation = ValidationCallback(vocab, records, run_dir, log, selector, features, stage)
    validation.set_state(
        {
            "history": previous["history"],
            "selector": {**previous["selector"], "epochs_without_improvement": 0},
        }
    )
    plot = CurvesPlotCallback(run_dir / CURVES_FILE)
    plot.set_state(previous_stage["stateful"]["plot"])
    return validation, plot


def later_stage_trainer(
    model,
    step,
    batches: EpochBatches,
    previous_stage: dict,
    config: TrainConfig,
    vocab: Vocabulary,
    val_records: list[ImageRecord],
    run_dir: Path,
    *,
    stage: int,
    epochs: int,
    checkpoint_file: str,
    log,
    verbose: int = 1,
    val_features: np.ndarray | None = None,
    loss_keys: tuple[str, ...] = LOSS_KEYS,
) -> tuple[Trainer | None, bool]:
    """The loop of a stage after the first, restored from its checkpoint if there is one.

    Its epochs are numbered on from the stage before; validation and selection continue
    (`continued_validation`).

    Returns:
        (trainer, resumed): the trainer, or None when the stage is already complete, and
        whether it was restored from its checkpoint.
    """
    validation, plot = continued_validation(
        previous_stage, config, vocab, val_records, run_dir, log, stage, val_features
    )
    first_epoch = previous_stage["epoch"]
    last_epoch = first_epoch + epochs
    callbacks = [validation, plot]
    if verbose:
        callbacks.append(ProgressCallback(batches.steps_per_epoch, last_epoch))
    trainer = Trainer(
        model,
        step,
        batches,
        epochs=last_epoch,
        first_epoch=first_epoch,
        callbacks=callbacks,
        store=CheckpointStore(run_dir / checkpoint_file, read_only=not is_chief()),
        checkpoint_steps=config.checkpoint_steps,
        stateful={"validation": validation, "plot": plot},
        log=log,
        loss_keys=loss_keys,
    )
    resumed = trainer.restore()
    if resumed and (trainer.epoch >= last_epoch or model.stop_training):
        log(f"{run_dir}: the run is already complete")
        return None, resumed
    return trainer, resumed
