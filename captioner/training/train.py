"""Training: teacher forcing, model selection by a free-running validation metric."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from captioner.config import TrainConfig
from captioner.data.dataset import check_image_files, count_long_captions, select_split
from captioner.data.formats import load_dataset
from captioner.data.image_pipeline import image_dataset
from captioner.data.vocabulary import Vocabulary
from captioner.errors import DatasetError
from captioner.inference.captioner import CONFIG_FILE, VOCAB_FILE
from captioner.models.encoders.blocks import check_block_count
from captioner.runtime import device_description
from captioner.training.checkpoint import (
    CHECKPOINT_FILE,
    FINE_TUNE_CHECKPOINT_FILE,
    SCST_CHECKPOINT_FILE,
    CheckpointStore,
)
from captioner.training.distribute import is_chief, make_strategy
from captioner.training.fine_tuning import check_fine_tuning, fine_tune
from captioner.training.inputs import caption_batches, feature_inputs, image_inputs
from captioner.training.monitoring import (
    CURVES_FILE,
    AttentionSnapshots,
    CurvesPlotCallback,
    ProgressCallback,
    TensorBoardCallback,
)
from captioner.training.schedules import PlateauReducer
from captioner.training.scst import check_scst, self_critical_training
from captioner.training.selection import ModelSelector, check_select_metric
from captioner.training.setup import (
    build_model,
    check_resumable,
    dtype_policy,
    make_optimizer,
    precision_policy,
    resolve_dataset,
    resolve_settings,
)
from captioner.training.train_step import TrainStep
from captioner.training.trainer import Trainer
from captioner.training.validation import ATTENTION_SNAPSHOTS, ValidationCallback


def train(config: TrainConfig, log: Callable[[str], None] = print, verbose: int = 1) -> Path:
    """Trains a captioning model as `config` says; returns the run directory.

    The run directory receives config.json, vocab.json, model.keras (the best epoch by the
    free-running validation metric `config.select_metric`), history.json, checkpoint.npz
    (to resume; the same call continues a killed run), training_curves.png and
    tensorboard/. With a frozen encoder and `config.feature_cache`, the decoder trains
    from the encoder's cached features. With `config.fine_tune_blocks`, a second stage
    then fine-tunes the encoder's top blocks with the decoder
    (`captioner.training.fine_tuning`; it resumes from fine_tune_checkpoint.npz); with
    `config.scst_epochs`, a self-critical stage follows (`captioner.training.scst`).

    Raises:
        TrainingDiverged: the loss became NaN or Inf (the last good checkpoint is kept).
        TrainingInterrupted: Ctrl-C or SIGTERM (a checkpoint was saved).
    """
    data_path = resolve_dataset(config, log)
    records, dataset = load_dataset(data_path, config.images, warn=log)
    # Scenes with listed objects are the synthetic shapes, also when given with --data.
    config = resolve_settings(config, synthetic=all(r.objects is not None for r in records))
    check_select_metric(config.select_metric)
    check_fine_tuning(config)
    check_scst(config)
    if not config.out:  # the run directory is named after the data
        config = dataclasses.replace(config, out=str(Path("runs") / dataset.name))
    train_records = [r for r in select_split(records, "train") if r.captions]
    val_records = [r for r in select_split(records, "val") if r.captions][: config.val_images]
    if not train_records:
        raise DatasetError(f"{data_path}: no training images with captions")
    # Missing image files are refused (or skipped) now, not halfway through an epoch.
    kept = check_image_files(
        train_records + val_records, source=data_path, skip_missing=config.skip_missing, warn=log
    )
    train_records = [r for r in kept if r.split != "val"]
    val_records = [r for r in kept if r.split == "val"]
    long_captions, num_captions = count_long_captions(train_records, config.max_length)
    if long_captions:
        log(
            f"{data_path}: {long_captions} of {num_captions} training captions longer than "
            f"{config.max_length} words (truncated)"
        )
    log(f"{data_path}: {len(train_records)} training images, {len(val_records)} validation")

    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    resuming = check_resumable(config, run_dir)
    chief = is_chief()
    if resuming:
        vocab = Vocabulary.load(run_dir / VOCAB_FILE)
    else:
        vocab = Vocabulary.build((c for r in train_records for c in r.captions), config.min_count)
        if chief:
            vocab.save(run_dir / VOCAB_FILE)
    if chief:
        config.save(run_dir / CONFIG_FILE)
    log(f"vocabulary: {len(vocab)} words (min count {config.min_count})")

    keras.utils.set_random_seed(config.seed)
    policy = precision_policy(config.precision)
    strategy = make_strategy(config.strategy)
    with dtype_policy(policy), strategy.scope():
        model = build_model(config, len(vocab))
        log(f"model: {model.count_params():,} parameters, grid {model.grid_size}, {policy}")
        log(f"training on {device_description()}")
        if config.fine_tune_blocks:
            check_block_count(model.encoder, config.fine_tune_blocks)  # before anything trains
        val_features = None
        if not model.train_encoder and config.feature_cache:
            lookup, train_records, val_features = feature_inputs(
                model, config, train_records, val_records, log, verbose
            )
        else:
            lookup, train_records = image_inputs(train_records, config.image_size)
        batches = caption_batches(lookup, train_records, vocab, config)
        optimizer, schedule = make_optimizer(config, batches.steps_per_epoch, policy)
        model.compile(optimizer=optimizer)
        step = TrainStep(model, optimizer, strategy, config.clip_norm, config.jit_compile)
        selector = ModelSelector(config.select_metric, config.early_stopping_patience)
        validation = ValidationCallback(vocab, val_records, run_dir, log, selector, val_features)
        plot = CurvesPlotCallback(run_dir / CURVES_FILE)
        callbacks = [validation, plot]
        stateful = {"validation": validation, "plot": plot}
        if config.lr_schedule == "plateau":
            plateau = PlateauReducer(
                schedule,
                factor=config.plateau_factor,
                patience=config.plateau_patience,
                log=log,
                monitor=f"val_{config.select_metric}",
            )
            callbacks.append(plateau)
            stateful["plateau"] = plateau
        if verbose:
            callbacks.append(ProgressCallback(batches.steps_per_epoch, config.epochs))
        if config.tensorboard and chief:
            if importlib.util.find_spec("tensorboard") is None:
                log("TensorBoard logs skipped: the tensorboard package is not installed")
            else:
                snapshots = None
                if val_records:
                    shown = image_dataset(val_records[:ATTENTION_SNAPSHOTS], config.image_size)
                    images = [image.numpy() for _, image in shown]
                    if images:
                        snapshots = AttentionSnapshots(model, vocab, np.stack(images))
                callbacks.append(
                    TensorBoardCallback(run_dir / "tensorboard", epoch_images=snapshots)
                )
        trainer = Trainer(
            model,
            step,
            batches,
            epochs=config.epochs,
            callbacks=callbacks,
            store=CheckpointStore(run_dir / CHECKPOINT_FILE, read_only=not chief),
            checkpoint_steps=config.checkpoint_steps,
            stateful=stateful,
            log=log,
        )
        log(
            f"{batches.steps_per_epoch} batches per epoch, "
            f"{batches.padded_share():.0%} of caption positions padded"
        )
        first_stage_done = False
        if resuming and trainer.restore():
            first_stage_done = trainer.epoch >= config.epochs or model.stop_training
            if first_stage_done and not (config.fine_tune_blocks or config.scst_epochs):
                log(f"{run_dir}: the run is already complete")
                return run_dir
            if not first_stage_done:
                log(f"resuming from epoch {trainer.epoch + 1}, batch {trainer.batch}")
        if not first_stage_done and chief:  # later stages' checkpoints of an earlier run
            (run_dir / FINE_TUNE_CHECKPOINT_FILE).unlink(missing_ok=True)
            (run_dir / SCST_CHECKPOINT_FILE).unlink(missing_ok=True)
        trainer.fit()  # nothing left to do when the first stage is done
        if config.fine_tune_blocks:
            fine_tune(
                model, config, vocab, train_records, val_records, run_dir, trainer.state(),
                strategy, policy, log, verbose,
            )  # fmt: skip
        if config.scst_epochs:
            self_critical_training(
                model, config, vocab, lookup, train_records, val_records, val_features,
                run_dir, trainer.state(), log, verbose,
            )  # fmt: skip
    return run_dir
