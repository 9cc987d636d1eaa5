"""Training: teacher forcing, model selection by a free-running validation metric."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from captioner import synth
from captioner.batching import EpochBatches, InputLookup, array_lookup, file_lookup, memmap_lookup
from captioner.checkpoint import CHECKPOINT_FILE, FINE_TUNE_CHECKPOINT_FILE, CheckpointStore
from captioner.coco_metrics import COCO_METRICS
from captioner.config import TrainConfig
from captioner.data import (
    ImageRecord,
    check_image_files,
    count_long_captions,
    encode_captions,
    image_dataset,
    load_karpathy,
    select_split,
)
from captioner.distribute import is_chief, make_strategy
from captioner.encoders import OFFLINE_ENCODERS, is_pretrained, native_image_size
from captioner.encoders.blocks import check_block_count
from captioner.encoders.grid_stride import FULL_STRIDE
from captioner.errors import DatasetError
from captioner.evaluation import evaluate_split
from captioner.features import cached_features
from captioner.files import atomic_path, write_json_atomic
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
from captioner.selection import ModelSelector, check_select_metric
from captioner.train_step import TrainStep
from captioner.trainer import Trainer
from captioner.vocab import Vocabulary

HISTORY_FILE = "history.json"
ATTENTION_SNAPSHOTS = 3  # validation images shown with their attention in TensorBoard
IN_MEMORY_BYTES = 2e9  # decoded training images are held in memory up to this size


def resolve_dataset(config: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """The dataset JSON to train on; the synthetic one is generated on first use."""
    if config.data is not None:
        return Path(config.data)
    path = Path(config.synthetic_dir) / "dataset.json"
    current = synth.is_current(path)
    if path.is_file() and not current:
        log(f"{path}: made by an older version of the generator; making it again")
    if not current:
        log(f"generating the synthetic dataset in {config.synthetic_dir} (once) ...")
        started = time.perf_counter()
        synth.generate_dataset(config.synthetic_dir)
        log(f"  done in {time.perf_counter() - started:.1f}s")
    return path


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
        self.stage = stage  # 1: decoder training, 2: fine-tuning (see captioner.fine_tuning)
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
        stage = " (fine-tuning)" if self.stage == 2 else ""
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
    kept = ("bleu1", "bleu2", "bleu3", "bleu4", "object_accuracy", "pointing_accuracy", *coco)
    return {k: scores[k] for k in kept if scores.get(k) is not None}


# Settings that may change between a run and its resumption.
RESUMABLE_CHANGES = {
    "out",
    "resume",
    "checkpoint_steps",
    "tensorboard",
    "strategy",
    "val_images",
    "feature_cache",
}


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


def resolve_settings(config: TrainConfig) -> TrainConfig:
    """`config` with its automatic model settings ("", 0, None) made concrete.

    The synthetic main job gets EfficientNet-Lite0 at 128 px; other datasets (real photos)
    EfficientNet-Lite2 at its native 260 px. Offline encoders are cut at stride 16, the
    paper's grid; pretrained features are standardised. "imagenet" weights mean none for
    small_cnn, which is always trained from scratch.
    """
    synthetic = config.data is None
    encoder = config.encoder or ("efficientnet_lite0" if synthetic else "efficientnet_lite2")
    weights = config.encoder_weights
    if weights == "imagenet" and not is_pretrained(encoder):
        weights = "none"
    image_size = config.image_size or (128 if synthetic else native_image_size(encoder))
    grid_stride = config.grid_stride or (16 if encoder in OFFLINE_ENCODERS else FULL_STRIDE)
    feature_norm = is_pretrained(encoder) if config.feature_norm is None else config.feature_norm
    return dataclasses.replace(
        config,
        encoder=encoder,
        encoder_weights=weights,
        image_size=image_size,
        grid_stride=grid_stride,
        feature_norm=feature_norm,
    )


def trains_encoder(config: TrainConfig) -> bool:
    """Whether the encoder is trained (by default: small CNNs yes, pretrained backbones no)."""
    if config.train_encoder is None:
        return not is_pretrained(config.encoder)
    return config.train_encoder


def build_model(config: TrainConfig, vocab_size: int) -> CaptioningModel:
    """The captioning model that `config` describes, built."""
    model = CaptioningModel(
        vocab_size,
        encoder=config.encoder,
        image_size=config.image_size,
        encoder_weights=None if config.encoder_weights == "none" else config.encoder_weights,
        grid_stride=config.grid_stride,
        train_encoder=trains_encoder(config),
        penalty_weight=config.penalty_weight if config.attention == "soft" else 0.0,
        feature_dim=config.feature_dim,
        feature_norm=config.feature_norm,
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


def image_inputs(
    records: list[ImageRecord], image_size: int, limit_bytes: float = IN_MEMORY_BYTES
) -> tuple[InputLookup, list[ImageRecord]]:
    """The training images and the records they belong to.

    Images are decoded once into memory when they fit in `limit_bytes` (unreadable ones
    are reported and their records left out); larger datasets are read from their files
    at every visit (an unreadable image is then left out of its batch).
    """
    if len(records) * image_size * image_size * 3 > limit_bytes:
        return file_lookup([str(r.path) for r in records], image_size), records
    readable, images = [], []
    for indices, batch in image_dataset(records, image_size).batch(256):
        readable.extend(indices.numpy().tolist())
        images.append(batch.numpy())
    if not readable:
        raise DatasetError("none of the training images can be read")
    return array_lookup(np.concatenate(images)), [records[i] for i in readable]


def caption_batches(
    lookup: InputLookup, records: list[ImageRecord], vocab: Vocabulary, config: TrainConfig
) -> EpochBatches:
    """The teacher-forcing batches of `records`' captions, their inputs from `lookup`."""
    caption_ids, caption_counts = encode_captions(records, vocab, config.max_length)
    return EpochBatches(
        lookup,
        caption_ids,
        caption_counts,
        batch_size=config.batch_size,
        seed=config.seed,
        bucketing=config.bucketing,
        captions_per_image=config.captions_per_image,
    )


def feature_inputs(
    model: CaptioningModel,
    config: TrainConfig,
    train_records: list[ImageRecord],
    val_records: list[ImageRecord],
    log: Callable[[str], None],
    verbose: int,
) -> tuple[InputLookup, list[ImageRecord], np.ndarray | None]:
    """A frozen encoder's cached features (extracted once, see `captioner.features`).

    Returns:
        (lookup, records, val_features): the training features of the readable images,
        those images' records, and the validation images' features (None if one of them
        cannot be read: validation then decodes the images like any other run).
    """

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
    rows = np.setdiff1d(np.arange(len(train_records)), unreadable)
    if not len(rows):
        raise DatasetError("none of the training images can be read")
    val_features = None
    if val_records:
        val_features, unreadable = cache(val_records)
        if len(unreadable):
            val_features = None
    return memmap_lookup(features, rows), [train_records[i] for i in rows], val_features


def train(config: TrainConfig, log: Callable[[str], None] = print, verbose: int = 1) -> Path:
    """Trains a captioning model as `config` says; returns the run directory.

    The run directory receives config.json, vocab.json, model.keras (the best epoch by the
    free-running validation metric `config.select_metric`), history.json, checkpoint.npz
    (to resume; the same call continues a killed run), training_curves.png and
    tensorboard/. With a frozen encoder and `config.feature_cache`, the decoder trains
    from the encoder's cached features. With `config.fine_tune_blocks`, a second stage
    then fine-tunes the encoder's top blocks with the decoder (`captioner.fine_tuning`;
    it resumes from fine_tune_checkpoint.npz).

    Raises:
        TrainingDiverged: the loss became NaN or Inf (the last good checkpoint is kept).
        TrainingInterrupted: Ctrl-C or SIGTERM (a checkpoint was saved).
    """
    from captioner.fine_tuning import check_fine_tuning, fine_tune  # it imports this module

    check_select_metric(config.select_metric)
    config = resolve_settings(config)
    check_fine_tuning(config)
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
            if first_stage_done and not config.fine_tune_blocks:
                log(f"{run_dir}: the run is already complete")
                return run_dir
            if not first_stage_done:
                log(f"resuming from epoch {trainer.epoch + 1}, batch {trainer.batch}")
        if not first_stage_done and chief:  # a fine-tuning checkpoint of an earlier run
            (run_dir / FINE_TUNE_CHECKPOINT_FILE).unlink(missing_ok=True)
        trainer.fit()  # nothing left to do when the first stage is done
        if config.fine_tune_blocks:
            fine_tune(
                model, config, vocab, train_records, val_records, run_dir, trainer.state(),
                strategy, policy, log, verbose,
            )  # fmt: skip
    return run_dir
