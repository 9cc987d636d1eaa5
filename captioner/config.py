"""Run configuration: every setting that defines a training run, saved as `config.json`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from captioner.errors import RunDirectoryError
from captioner.files import read_json, write_json_atomic

CONFIG_VERSION = 1
# Settings added to version 1 after its first runs, with what the runs saved without them did.
SAVED_BEFORE_ADDED = {"scst_baseline": "greedy", "scst_penalty_weight": 0.0}

# The settings left automatic (None) in `TrainConfig`, by kind of data: the synthetic main
# job's, and those chosen on Flickr8k's validation split for real photos (docs/results.md).
# `training.setup.resolve_settings` makes them concrete; a run's config.json holds the values.
DATA_DEFAULTS = {
    "synthetic": {
        "grid_stride": 16,
        "feature_dim": 0,
        "bucketing": False,
        "embed_dim": 64,
        "units": 256,
        "attention_dim": 128,
        "dropout": 0.3,
        "min_count": 1,
        "captions_per_image": 3,
        "epochs": 8,
        "select_metric": "bleu4",
        "decoder": "paper",
        "scst_epochs": 0,
        "penalty_weight": 0.0,  # kept attention uniform here (docs/results.md)
        "scst_penalty_weight": 0.0,
    },
    "photos": {
        "grid_stride": 32,
        "feature_dim": 512,
        "bucketing": True,
        # Widths of 384 make the training step 1.41x as fast as 512 (the widths until
        # 8 + 5 epochs came back), and 8 cross-entropy epochs then fit the 90-minute budget
        # with the 5 self-critical ones: 8 + 5 at 384 scored validation CIDEr-D 56.72
        # against 53.23 for 5 + 5 at 512 (docs/results.md, ¹²).
        "embed_dim": 384,
        "units": 384,
        "attention_dim": 384,
        "dropout": 0.5,
        "min_count": 5,
        "captions_per_image": 5,
        "epochs": 8,
        "select_metric": "cider",  # bleu4 without the coco extra
        "decoder": "topdown",
        "scst_epochs": 5,  # 0 when the encoder is fine-tuned instead (the stages do not combine)
        "penalty_weight": 0.01,  # about 1/8 of the paper's weight: fewer attention sinks
        "scst_penalty_weight": 0.01,  # the same in the self-critical stage
    },
}

# Decoding when `evaluate`, `caption` and `export` are not given --beam-size,
# --length-penalty or --no-repeat-ngram, by the kind of data the model was trained on:
# (beam width, length penalty, no-repeat n-gram size). The synthetic data are scored
# greedily (the figures the README reports), and their captions repeat word pairs by design
# ("a small red star a small blue hexagon"); on photos beam 3 with length penalty 1.25 and
# no repeated word pair were chosen on Flickr8k's validation split (docs/results.md).
DECODING_OPTIONS = ("beam_size", "length_penalty", "no_repeat_ngram")
DECODING_DEFAULTS = {
    "synthetic": {"evaluate": (1, 0.0, 0), "caption": (3, 0.0, 0), "export": (3, 0.0, 0)},
    "photos": {"evaluate": (3, 1.25, 2), "caption": (3, 1.25, 2), "export": (3, 1.25, 2)},
}


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run; the defaults are the synthetic main job's.

    Data: `data` is a caption file in any format `captioner.data.formats` reads (None: the
    built-in synthetic dataset, generated under `synthetic_dir` on first use) and `images`
    the root its image paths are relative to (None: the format's default).
    """

    data: str | None = None
    images: str | None = None
    synthetic_dir: str = "data/synthetic"
    # Where a frozen encoder's features are cached ("" turns the cache off).
    feature_cache: str = "data/feature_cache"
    skip_missing: bool = False  # train without missing image files instead of refusing
    # "synthetic" or "photos": which DATA_DEFAULTS and DECODING_DEFAULTS apply. "": synthetic
    # when every image lists its objects (the synthetic shapes), else photos.
    data_kind: str = ""
    out: str = ""  # "": runs/NAME, named after the dataset (runs/synthetic, runs/flickr8k)

    # Model. "", 0 and None are automatic, made concrete by `training.resolve_settings`
    # before anything is built or saved (a run's config.json holds the values it used).
    encoder: str = ""  # "": efficientnet_lite0 on the synthetic data, efficientnet_lite2 else
    encoder_weights: str = "imagenet"  # "imagenet", "none" or a local file (small_cnn: none)
    train_encoder: bool | None = None  # None: train small CNNs, freeze pretrained backbones
    image_size: int = 0  # 0: 128 px on the synthetic data, else the encoder's native size
    # 16: cut an offline encoder after its last stride-16 stage (the paper's grid); 32: the
    # whole network; 0: by the data for the offline encoders (DATA_DEFAULTS), 32 for the rest.
    grid_stride: int = 0
    # > 0: project the encoder's features to this depth first; 0: no projection.
    feature_dim: int | None = None
    # Standardise the encoder's features per channel; None: for pretrained encoders.
    feature_norm: bool | None = None
    # Append every grid cell's (x, y) in [-1, 1] to its features: a deviation from the paper,
    # whose annotations carry no position; it tells attention where each cell is.
    grid_coordinates: bool = True
    # None (here and below): by the data, see DATA_DEFAULTS.
    embed_dim: int | None = None
    units: int | None = None
    attention_dim: int | None = None
    dropout: float | None = None
    # "soft"; "mean" (ablation: the mean annotation every step); "soft+mean": both, side by side.
    attention: str = "soft"
    # "paper": attention from h_{t-1}, as in Xu et al.; "topdown": attention queried after a
    # first LSTM has read the previous word (two LSTMs, Anderson et al. 2018).
    decoder: str | None = None
    # Attention scores that also see how much attention each cell has had so far (a coverage
    # vector; not in the paper): a model can tell what it has described from what it has not.
    coverage: bool = False
    # lambda of the doubly stochastic penalty. The design's form (mean token cross-entropy
    # + lambda * mean_b sum_i (1 - sum_t alpha_ti)^2) with lambda = 1 weighs the penalty
    # about T (the caption length) times more than the paper's summed NLL does. None: by
    # the data (DATA_DEFAULTS): none on the synthetic data, where it kept attention uniform,
    # 0.01 on photos, where it spreads attention over the photo (docs/results.md).
    penalty_weight: float | None = None

    # Vocabulary and captions.
    min_count: int | None = None
    max_length: int = 20

    # Optimisation.
    epochs: int | None = None
    batch_size: int = 32  # images per batch
    # Captions decoded per image and batch: an image is encoded once for all of them, so that
    # three captions cost far less than three images (the synthetic data has three each).
    captions_per_image: int | None = None
    learning_rate: float = 1e-3
    clip_norm: float = 5.0
    seed: int = 0
    jit_compile: bool = False
    lr_schedule: str = "cosine"  # "cosine", "plateau" (reduce on plateau) or "constant"
    warmup_steps: int = 0  # linear learning-rate warm-up before the schedule
    plateau_patience: int = 2  # epochs without a better validation score before a cut
    plateau_factor: float = 0.5
    # Batches of similar caption lengths, cut to their longest: less padding, but on data
    # whose caption length follows the scene (the synthetic objects) every batch then holds
    # one kind of scene, and the main job learned far slower (docs/results.md). Off on the
    # synthetic data, on for real photos (DATA_DEFAULTS).
    bucketing: bool | None = None
    precision: str = "float32"  # "float32", or "mixed" (float16 on GPU, bfloat16 on CPU)
    strategy: str = "default"  # "default", "mirrored" (local GPUs) or "multiworker"

    # Checkpoints and monitoring.
    checkpoint_steps: int = 100  # also checkpoint every this many steps (0: epoch ends only)
    resume: bool = True  # continue from the run directory's checkpoint if there is one
    tensorboard: bool = True  # TensorBoard logs in RUN_DIR/tensorboard

    # Validation: free-running (greedy) scores after every epoch on at most this many images;
    # the best epoch by `select_metric` is kept (cider etc. need the coco extra), and training
    # stops after `early_stopping_patience` epochs without improvement (0: never).
    val_images: int = 500
    select_metric: str | None = None
    early_stopping_patience: int = 0

    # Fine-tuning (a second stage after the decoder has trained): the top N blocks of the
    # encoder are unfrozen (batch norm stays frozen) and trained with the decoder on images
    # for `fine_tune_epochs` epochs at `fine_tune_learning_rate` (cosine decay). 0: no stage 2.
    fine_tune_blocks: int = 0
    fine_tune_epochs: int = 2
    fine_tune_learning_rate: float = 1e-4

    # Self-critical sequence training (a stage after cross-entropy, see training/scst.py):
    # `scst_samples` captions drawn per image, rewarded by their CIDEr-D above the greedy
    # caption's, for `scst_epochs` epochs at `scst_learning_rate`. 0: no such stage. The
    # learning rate is the one measured on Flickr8k and the mixed-order data (results.md).
    scst_epochs: int | None = None
    scst_samples: int = 5
    scst_learning_rate: float = 5e-5
    # What a sample's reward is measured against: "samples", the mean of the image's other
    # samples' CIDEr-D (measured better on Flickr8k); "greedy", the image's greedy caption's
    # (Rennie et al.).
    scst_baseline: str = "samples"
    # The weight of the sampled captions' doubly stochastic attention penalty in the
    # self-critical loss (0: none; the cross-entropy stage has its own, `penalty_weight`).
    scst_penalty_weight: float | None = None

    def decoding_defaults(self, command: str) -> tuple[int, float, int]:
        """(beam width, length penalty, no-repeat n-gram size) that `command` uses for this
        model unless told.

        Runs saved before `data_kind` existed keep the decoding they had then, whatever
        their data: the synthetic data's (greedy evaluation, beam 3 captions).
        """
        kind = self.data_kind or "synthetic"
        return DECODING_DEFAULTS[kind][command]

    def save(self, path: str | Path) -> None:
        data = {"config_version": CONFIG_VERSION, **dataclasses.asdict(self)}
        write_json_atomic(path, data)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Reads a saved config; a broken or incompatible file raises `RunDirectoryError`."""
        data = read_json(path, RunDirectoryError)
        if not isinstance(data, dict) or "config_version" not in data:
            raise RunDirectoryError(f"{path}: not a captioner run config (no config_version)")
        version = data.pop("config_version")
        if version != CONFIG_VERSION:
            raise RunDirectoryError(
                f"{path}: run written with config version {version!r}, this captioner reads "
                f"version {CONFIG_VERSION}; train the model again with this version"
            )
        data = {**SAVED_BEFORE_ADDED, **data}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RunDirectoryError(f"{path}: unknown settings {unknown}")
        return cls(**data)
