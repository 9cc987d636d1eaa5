"""Training: teacher forcing, model selection by a free-running validation metric."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from captioner.coco_metrics import COCO_METRICS
from captioner.config import TrainConfig
from captioner.data import (
    ImageRecord,
    check_image_files,
    count_long_captions,
    load_karpathy,
    select_split,
    training_dataset,
)
from captioner.encoders import is_pretrained
from captioner.errors import DatasetError
from captioner.evaluation import evaluate_split
from captioner.features import cached_features
from captioner.files import atomic_path, write_json_atomic
from captioner.inference import CONFIG_FILE, MODEL_FILE, VOCAB_FILE, Captioner
from captioner.model import CaptioningModel
from captioner.selection import ModelSelector, check_select_metric
from captioner.synth import generate_dataset
from captioner.vocab import Vocabulary

HISTORY_FILE = "history.json"


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
    """After every epoch: free-running validation scores, history file, best model kept.

    The best model is the one with the highest `selector.metric` on the validation records
    (the lowest training loss without them); `selector.patience` stops training early.
    """

    def __init__(
        self,
        vocab: Vocabulary,
        records: list[ImageRecord],
        run_dir: Path,
        log,
        selector: ModelSelector | None = None,
        features: np.ndarray | None = None,
    ):
        super().__init__()
        self.vocab = vocab
        self.records = records
        self.features = features
        self.run_dir = run_dir
        self.log = log
        self.selector = selector or ModelSelector()
        self.history: list[dict] = []
        self.captioner: Captioner | None = None
        self.epoch_started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        train_seconds = time.perf_counter() - self.epoch_started
        if self.captioner is None:
            self.captioner = Captioner(self.model, self.vocab)
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
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
        self.log(f"epoch {epoch + 1}: {shown}{'  (best, saved)' if improved else ''}")
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
    kept = ("bleu1", "bleu2", "bleu3", "bleu4", "object_accuracy", "pointing_accuracy", *coco)
    return {k: scores[k] for k in kept if scores.get(k) is not None}


def train(config: TrainConfig, log: Callable[[str], None] = print, verbose: int = 1) -> Path:
    """Trains a captioning model as `config` says; returns the run directory.

    The run directory receives config.json, vocab.json, model.keras (the best epoch by
    free-running validation metric, `config.select_metric`) and history.json.
    """
    check_select_metric(config.select_metric)
    data_path = resolve_dataset(config, log)
    records = load_karpathy(data_path, config.images, warn=log)
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
    vocab = Vocabulary.build((c for r in train_records for c in r.captions), config.min_count)
    vocab.save(run_dir / VOCAB_FILE)
    config.save(run_dir / CONFIG_FILE)
    log(f"vocabulary: {len(vocab)} words (min count {config.min_count})")

    keras.utils.set_random_seed(config.seed)
    train_encoder = config.train_encoder
    if train_encoder is None:
        train_encoder = not is_pretrained(config.encoder)
    model = CaptioningModel(
        len(vocab),
        encoder=config.encoder,
        image_size=config.image_size,
        encoder_weights=config.encoder_weights,
        train_encoder=train_encoder,
        penalty_weight=config.penalty_weight if config.attention == "soft" else 0.0,
        feature_dim=config.feature_dim,
        max_length=config.max_length,
        embed_dim=config.embed_dim,
        units=config.units,
        attention_dim=config.attention_dim,
        dropout=config.dropout,
        attention=config.attention,
    )
    model.build()
    log(f"model: {model.count_params():,} parameters, grid {model.grid_size}")

    features = feature_rows = val_features = None
    if not train_encoder and config.feature_cache:

        def cache(split_records):
            return cached_features(
                model,
                split_records,
                config.feature_cache,
                label=config.encoder,
                log=log,
                verbose=verbose,
            )

        features, unreadable = cache(train_records)
        feature_rows = np.setdiff1d(np.arange(len(train_records)), unreadable)
        train_records = [train_records[i] for i in feature_rows]
        if val_records:
            val_features, unreadable = cache(val_records)
            if len(unreadable):  # rare: decode those from the images like any other run
                val_features = None
    dataset = training_dataset(
        train_records,
        vocab,
        image_size=config.image_size,
        max_length=config.max_length,
        batch_size=config.batch_size,
        seed=config.seed,
        captions_per_image=config.captions_per_image,
        features=features,
        feature_rows=feature_rows,
    )
    steps_per_epoch = math.ceil(len(train_records) / config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.epochs * steps_per_epoch, alpha=0.05
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule, global_clipnorm=config.clip_norm),
        jit_compile=config.jit_compile,
    )
    selector = ModelSelector(config.select_metric, config.early_stopping_patience)
    callback = ValidationCallback(vocab, val_records, run_dir, log, selector, val_features)
    model.fit(dataset, epochs=config.epochs, callbacks=[callback], verbose=verbose, shuffle=False)
    return run_dir
