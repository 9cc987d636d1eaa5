"""Training: teacher forcing, model selection by free-running validation BLEU-4."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from captioner.batching import EpochBatches, array_lookup, file_lookup
from captioner.checkpoint import CHECKPOINT_FILE, CheckpointStore
from captioner.config import TrainConfig
from captioner.data import ImageRecord, encode_captions, image_dataset, load_karpathy, select_split
from captioner.distribute import is_chief, make_strategy
from captioner.encoders import is_pretrained
from captioner.evaluation import evaluate_split
from captioner.inference import CONFIG_FILE, MODEL_FILE, VOCAB_FILE, Captioner
from captioner.model import CaptioningModel
from captioner.monitoring import (
    CURVES_FILE,
    AttentionSnapshots,
    CurvesPlotCallback,
    ProgressCallback,
    TensorBoardCallback,
)
from captioner.schedules import PlateauReducer, WarmupSchedule
from captioner.synth import generate_dataset
from captioner.train_step import TrainStep
from captioner.trainer import Trainer
from captioner.vocab import Vocabulary

HISTORY_FILE = "history.json"
ATTENTION_SNAPSHOTS = 3  # validation images shown with their attention in TensorBoard


def resolve_dataset(config: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """The dataset JSON to train on; the synthetic one is generated on first use."""
    if config.data is not None:
        return Path(config.data)
    path = Path(config.synthetic_dir) / "dataset.json"
    if not path.is_file():
        log(f"generating the synthetic dataset in {config.synthetic_dir} (once) ...")
        started = time.perf_counter()
        generate_dataset(config.synthetic_dir)
        log(f"  done in {time.perf_counter() - started:.1f}s")
    return path


class ValidationCallback(keras.callbacks.Callback):
    """After every epoch: free-running validation scores, history file, best model kept."""

    def __init__(self, vocab: Vocabulary, records: list[ImageRecord], run_dir: Path, log):
        super().__init__()
        self.vocab = vocab
        self.records = records
        self.run_dir = run_dir
        self.log = log
        self.best = -math.inf
        self.history: list[dict] = []
        self.captioner: Captioner | None = None
        self.epoch_started = 0.0

    def get_state(self) -> dict:
        return {"best": self.best, "history": self.history}

    def set_state(self, state: dict) -> None:
        self.best, self.history = state["best"], list(state["history"])

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        train_seconds = time.perf_counter() - self.epoch_started
        if self.captioner is None:
            self.captioner = Captioner(self.model, self.vocab)
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
        row["train_seconds"] = round(train_seconds, 2)
        if self.records:
            scores = evaluate_split(self.captioner, self.records, split="val")
            row.update({f"val_{k}": v for k, v in scores.items() if k.startswith("bleu")})
            if "object_accuracy" in scores:
                row["val_object_accuracy"] = scores["object_accuracy"]
            logs.update({k: v for k, v in row.items() if k.startswith("val_")})
            metric = scores["bleu4"]
        else:
            metric = -row["loss"]  # no validation split: keep the lowest training loss
        improved = metric > self.best
        if improved:
            self.best = metric
            self.model.save(self.run_dir / MODEL_FILE)
        row["best"] = improved
        self.history.append(row)
        (self.run_dir / HISTORY_FILE).write_text(
            json.dumps(self.history, indent=2) + "\n", encoding="utf-8"
        )
        shown = ", ".join(
            f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "epoch"
        )
        self.log(f"epoch {epoch + 1}: {shown}{'  (best, saved)' if improved else ''}")


# Settings that may change between a run and its resumption.
RESUMABLE_CHANGES = {"out", "resume", "checkpoint_steps", "tensorboard", "strategy", "val_images"}


def check_resumable(config: TrainConfig, run_dir: Path) -> bool:
    """Whether the run directory holds a checkpoint of this configuration to continue from.

    Raises:
        ValueError: there is a checkpoint of a different configuration.
    """
    if not config.resume or not (run_dir / CHECKPOINT_FILE).is_file():
        return False
    saved = TrainConfig.load(run_dir / CONFIG_FILE)
    changed = sorted(
        f.name
        for f in dataclasses.fields(TrainConfig)
        if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(config, f.name)
    )
    if changed:
        raise ValueError(
            f"{run_dir / CHECKPOINT_FILE}: a checkpoint of a run with other settings "
            f"({', '.join(changed)}); use another --out, the same settings, or --no-resume"
        )
    return True


def precision_policy(precision: str) -> str:
    """The Keras dtype policy of a --precision value ("mixed": float16 on GPU, else bfloat16)."""
    if precision == "mixed":
        import tensorflow as tf

        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    if precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(
            f"precision must be float32, mixed, mixed_float16 or mixed_bfloat16, got {precision!r}"
        )
    return precision


@contextlib.contextmanager
def dtype_policy(name: str):
    """Sets the global Keras dtype policy for the models built inside, then restores it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(config: TrainConfig, vocab_size: int) -> CaptioningModel:
    """The captioning model that `config` describes, built."""
    train_encoder = config.train_encoder
    if train_encoder is None:
        train_encoder = not is_pretrained(config.encoder)
    model = CaptioningModel(
        vocab_size,
        encoder=config.encoder,
        image_size=config.image_size,
        encoder_weights=config.encoder_weights,
        train_encoder=train_encoder,
        penalty_weight=config.penalty_weight if config.attention == "soft" else 0.0,
        max_length=config.max_length,
        embed_dim=config.embed_dim,
        units=config.units,
        attention_dim=config.attention_dim,
        dropout=config.dropout,
        attention=config.attention,
    )
    model.build()
    return model


def make_optimizer(config: TrainConfig, steps_per_epoch: int, policy: str):
    """Adam on the warm-up schedule; gradient clipping is done by `TrainStep`."""
    schedule = WarmupSchedule(
        config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=config.epochs * steps_per_epoch,
        kind=config.lr_schedule,
    )
    optimizer = keras.optimizers.Adam(schedule)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer, schedule


def training_inputs(records: list[ImageRecord], image_size: int, limit_bytes: float = 2e9):
    """Index -> image lookup: decoded once into memory when they fit, else read every time."""
    if len(records) * image_size * image_size * 3 > limit_bytes:
        return file_lookup([str(r.path) for r in records], image_size)
    images = image_dataset(records, image_size).batch(256)
    return array_lookup(np.concatenate([batch.numpy() for batch in images]))


def train(config: TrainConfig, log: Callable[[str], None] = print, verbose: int = 1) -> Path:
    """Trains a captioning model as `config` says; returns the run directory.

    The run directory receives config.json, vocab.json, model.keras (the best epoch by
    free-running validation BLEU-4), history.json, checkpoint.npz (to resume; the same
    call continues a killed run), training_curves.png and tensorboard/.

    Raises:
        TrainingDiverged: the loss became NaN or Inf (the last good checkpoint is kept).
        TrainingInterrupted: Ctrl-C or SIGTERM (a checkpoint was saved).
    """
    data_path = resolve_dataset(config, log)
    records = load_karpathy(data_path, config.images)
    train_records = [r for r in select_split(records, "train") if r.captions]
    val_records = [r for r in select_split(records, "val") if r.captions][: config.val_images]
    if not train_records:
        raise ValueError(f"{data_path}: no training images with captions")
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
    caption_ids, caption_counts = encode_captions(train_records, vocab, config.max_length)
    batches = EpochBatches(
        training_inputs(train_records, config.image_size),
        caption_ids,
        caption_counts,
        batch_size=config.batch_size,
        seed=config.seed,
        bucketing=config.bucketing,
    )
    with dtype_policy(policy), strategy.scope():
        model = build_model(config, len(vocab))
        log(f"model: {model.count_params():,} parameters, grid {model.grid_size}, {policy}")
        optimizer, schedule = make_optimizer(config, batches.steps_per_epoch, policy)
        model.compile(optimizer=optimizer)
        step = TrainStep(model, optimizer, strategy, config.clip_norm, config.jit_compile)
        validation = ValidationCallback(vocab, val_records, run_dir, log)
        plot = CurvesPlotCallback(run_dir / CURVES_FILE)
        callbacks = [validation, plot]
        stateful = {"validation": validation, "plot": plot}
        if config.lr_schedule == "plateau":
            plateau = PlateauReducer(
                schedule, factor=config.plateau_factor, patience=config.plateau_patience, log=log
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
                    images = np.stack([image.numpy() for image in shown])
                    snapshots = AttentionSnapshots(model, vocab, images)
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
        if resuming and trainer.restore():
            if trainer.epoch >= config.epochs or model.stop_training:
                log(f"{run_dir}: the run is already complete")
                return run_dir
            log(f"resuming from epoch {trainer.epoch + 1}, batch {trainer.batch}")
        trainer.fit()
    return run_dir
