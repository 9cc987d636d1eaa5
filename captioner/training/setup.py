"""A run's settings made concrete, and the model, optimiser and precision they describe."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import keras

from captioner.config import DATA_DEFAULTS, TrainConfig
from captioner.data import synthetic as synth
from captioner.evaluation.coco_metrics import COCO_METRICS, coco_missing_reason
from captioner.inference.captioner import CONFIG_FILE
from captioner.models.captioning_model import CaptioningModel
from captioner.models.encoders import OFFLINE_ENCODERS, is_pretrained, native_image_size
from captioner.models.encoders.grid_stride import FULL_STRIDE
from captioner.training.checkpoint import (
    CHECKPOINT_FILE,
    FINE_TUNE_CHECKPOINT_FILE,
    SCST_CHECKPOINT_FILE,
)
from captioner.training.schedules import WarmupSchedule


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
# The settings of a later stage, which may change until that stage has a checkpoint: a
# finished cross-entropy run can be given a fine-tuning or self-critical stage afterwards.
LATER_STAGE_SETTINGS = {
    FINE_TUNE_CHECKPOINT_FILE: {"fine_tune_blocks", "fine_tune_epochs", "fine_tune_learning_rate"},
    SCST_CHECKPOINT_FILE: {
        "scst_epochs",
        "scst_samples",
        "scst_learning_rate",
        "scst_baseline",
        "scst_penalty_weight",
    },
}


def check_resumable(config: TrainConfig, run_dir: Path) -> bool:
    """Whether the run directory holds a checkpoint of this configuration to continue from.

    Raises:
        ValueError: there is a checkpoint of a different configuration.
    """
    if not config.resume or not (run_dir / CHECKPOINT_FILE).is_file():
        return False
    saved = TrainConfig.load(run_dir / CONFIG_FILE)
    free = set(RESUMABLE_CHANGES)
    if not saved.data_kind:
        free.add("data_kind")  # saved before data_kind existed: this run's detected kind holds
    for checkpoint, settings in LATER_STAGE_SETTINGS.items():
        if not (run_dir / checkpoint).is_file():
            free |= settings
    if (config.scst_epochs or 0) > (saved.scst_epochs or 0):
        # Its learning rate is constant, so more epochs continue the stage as it was.
        free.add("scst_epochs")
    changed = sorted(
        f.name
        for f in dataclasses.fields(TrainConfig)
        if f.name not in free and getattr(saved, f.name) != getattr(config, f.name)
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


def resolve_settings(config: TrainConfig, synthetic: bool | None = None) -> TrainConfig:
    """`config` with its automatic settings ("", 0, None) made concrete.

    The synthetic main job gets EfficientNet-Lite0 at 128 px; other datasets (real photos)
    EfficientNet-Lite2 at its native 260 px. Offline encoders are cut where
    `DATA_DEFAULTS` says (the synthetic data: stride 16; photos: the whole network), other
    encoders are whole; pretrained features are standardised. "imagenet" weights mean none
    for small_cnn, which is always trained from scratch. The decoder, its sizes, dropout,
    attention penalty, vocabulary threshold, captions per image, epochs, selection metric and
    self-critical epochs follow the data (`DATA_DEFAULTS`); selecting by CIDEr-D needs the
    coco extra, else BLEU-4 is used, and a run that fine-tunes its encoder has no
    self-critical stage.

    `synthetic` says whether the data are the synthetic shapes (default: when no `data` is
    given; a synthetic dataset given with `--data`, such as `synth --orders mixed`, is too);
    an explicit `config.data_kind` wins over it.
    """
    if config.data_kind:
        if config.data_kind not in DATA_DEFAULTS:
            raise ValueError(
                f"--data-kind must be one of {sorted(DATA_DEFAULTS)}, got {config.data_kind!r}"
            )
        synthetic = config.data_kind == "synthetic"
    elif synthetic is None:
        synthetic = config.data is None
    data_kind = "synthetic" if synthetic else "photos"
    defaults = DATA_DEFAULTS[data_kind]
    encoder = config.encoder or ("efficientnet_lite0" if synthetic else "efficientnet_lite2")
    weights = config.encoder_weights
    if weights == "imagenet" and not is_pretrained(encoder):
        weights = "none"
    image_size = config.image_size or (128 if synthetic else native_image_size(encoder))
    grid_stride = config.grid_stride or (
        defaults["grid_stride"] if encoder in OFFLINE_ENCODERS else FULL_STRIDE
    )
    feature_norm = is_pretrained(encoder) if config.feature_norm is None else config.feature_norm
    automatic = {
        name: value
        for name, value in defaults.items()
        if name != "grid_stride" and getattr(config, name) is None
    }
    if automatic.get("select_metric") in COCO_METRICS and coco_missing_reason() is not None:
        automatic["select_metric"] = "bleu4"
    if "scst_epochs" in automatic and config.fine_tune_blocks:
        automatic["scst_epochs"] = 0
    return dataclasses.replace(
        config,
        data_kind=data_kind,
        encoder=encoder,
        encoder_weights=weights,
        image_size=image_size,
        grid_stride=grid_stride,
        feature_norm=feature_norm,
        **automatic,
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
        penalty_weight=config.penalty_weight if config.attention != "mean" else 0.0,
        feature_dim=config.feature_dim,
        feature_norm=config.feature_norm,
        grid_coordinates=config.grid_coordinates,
        max_length=config.max_length,
        embed_dim=config.embed_dim,
        units=config.units,
        attention_dim=config.attention_dim,
        dropout=config.dropout,
        attention=config.attention,
        decoder=config.decoder,
        coverage=config.coverage,
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
