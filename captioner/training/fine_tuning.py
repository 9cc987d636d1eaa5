"""Fine-tuning: a second training stage that also trains the encoder's top blocks.

Stage 1 (`captioner.training`) trains the decoder on a frozen pretrained encoder, from
cached features when the cache is on. Stage 2 starts from the best stage-1 model
(`model.keras`), unfreezes the top N blocks of the encoder and trains them with the
decoder on images (the cached features belong to the stage-1 encoder), with a fresh Adam
at `fine_tune_learning_rate` decayed by a cosine over the stage's steps.

Batch normalization stays frozen in every block: its layers are not trainable, so Keras
normalises with their moving statistics and never updates them. The encoder also runs in
inference mode (`CaptioningModel.grid_features` passes `training` only to an encoder
trained from the start), which is what a frozen batch norm needs with small batches.

Validation and model selection continue those of stage 1: `model.keras` is replaced only
by an epoch better on the selection metric than every earlier one, and `history.json`
gains rows marked `"stage": 2`, numbered on from the last stage-1 epoch. The stage keeps
its own checkpoint (`fine_tune_checkpoint.npz`), so a run killed in stage 2 resumes there
without training stage 1 again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from captioner.config import TrainConfig
from captioner.data.dataset import ImageRecord
from captioner.data.vocabulary import Vocabulary
from captioner.models.captioning_model import CaptioningModel
from captioner.models.encoders import OFFLINE_ENCODERS
from captioner.models.encoders.blocks import unfreeze_top_blocks
from captioner.training.checkpoint import FINE_TUNE_CHECKPOINT_FILE
from captioner.training.inputs import caption_batches, image_inputs
from captioner.training.later_stage import later_stage_trainer, load_best_model
from captioner.training.schedules import WarmupSchedule
from captioner.training.setup import trains_encoder
from captioner.training.train_step import TrainStep


def check_fine_tuning(config: TrainConfig) -> None:
    """Refuses fine-tuning settings that cannot work, before anything is trained.

    The number of blocks is checked against the encoder once it is built
    (`captioner.models.encoders.blocks.check_block_count`).

    Raises:
        ValueError: a negative block count, an encoder without known blocks (small_cnn,
            keras.applications backbones), an encoder already trained in stage 1, or a
            stage without epochs or with a learning rate that is not positive.
    """
    blocks = config.fine_tune_blocks
    if blocks == 0:
        return
    if blocks < 0:
        raise ValueError(f"--fine-tune-blocks must be 0 (no fine-tuning) or more, got {blocks}")
    if config.encoder not in OFFLINE_ENCODERS:
        reason = (
            "is trained with the decoder from the start, there is nothing to unfreeze"
            if config.encoder == "small_cnn"
            else "has no known blocks to unfreeze"
        )
        raise ValueError(
            f"--fine-tune-blocks: the encoder {config.encoder} {reason}; fine-tuning supports "
            f"the pretrained encoders {', '.join(OFFLINE_ENCODERS)}"
        )
    if trains_encoder(config):
        raise ValueError(
            "--fine-tune-blocks with --train-encoder: the whole encoder already trains in the "
            "first stage; leave --train-encoder unset to fine-tune its top blocks afterwards"
        )
    if config.fine_tune_epochs < 1:
        raise ValueError(f"--fine-tune-epochs must be at least 1, got {config.fine_tune_epochs}")
    if not config.fine_tune_learning_rate > 0:
        raise ValueError(
            f"--fine-tune-learning-rate must be positive, got {config.fine_tune_learning_rate}"
        )


def fine_tune(
    model: CaptioningModel,
    config: TrainConfig,
    vocab: Vocabulary,
    train_records: list[ImageRecord],
    val_records: list[ImageRecord],
    run_dir: Path,
    first_stage: dict,
    strategy,
    policy: str,
    log: Callable[[str], None] = print,
    verbose: int = 1,
) -> None:
    """Stage 2: trains the encoder's top `config.fine_tune_blocks` blocks with the decoder.

    Args:
        model: the built model of the run (created in `strategy.scope()`).
        config: the run's settings.
        vocab: the run's vocabulary.
        train_records: the training images with their captions.
        val_records: the validation images.
        run_dir: the run directory; its `model.keras` is the best stage-1 model.
        first_stage: the final loop state of stage 1 (`Trainer.state()`).
        strategy: the `tf.distribute` strategy.
        policy: the Keras dtype policy name.
        log: where messages go.
        verbose: show progress lines.

    Raises:
        RunDirectoryError: there is no stage-1 model to start from.
        TrainingDiverged, TrainingInterrupted: as in stage 1 (see `Trainer.fit`).
    """
    load_best_model(model, run_dir)
    unfrozen = unfreeze_top_blocks(model.encoder, config.fine_tune_blocks)
    blocks = len(model.encoder.blocks())
    trained = sum(int(np.prod(w.shape)) for w in model.encoder.trainable_weights)

    lookup, train_records = image_inputs(train_records, config.image_size)
    batches = caption_batches(lookup, train_records, vocab, config)
    schedule = WarmupSchedule(
        config.fine_tune_learning_rate,
        decay_steps=config.fine_tune_epochs * batches.steps_per_epoch,
        kind="cosine",
    )
    optimizer = keras.optimizers.Adam(schedule)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer)
    step = TrainStep(model, optimizer, strategy, config.clip_norm, config.jit_compile)

    trainer, resumed = later_stage_trainer(
        model,
        step,
        batches,
        first_stage,
        config,
        vocab,
        val_records,
        run_dir,
        stage=2,
        epochs=config.fine_tune_epochs,
        checkpoint_file=FINE_TUNE_CHECKPOINT_FILE,
        log=log,
        verbose=verbose,
    )
    if trainer is None:
        return
    first_epoch, last_epoch = first_stage["epoch"], trainer.epochs
    selected = first_stage["stateful"]["validation"]["selector"]
    log(
        f"fine-tuning (stage 2) from the best first-stage model (epoch {selected['best_epoch']}, "
        f"val {config.select_metric} {selected['best']:.4g}): top {len(unfrozen)} of {blocks} "
        f"encoder blocks unfrozen ({', '.join(unfrozen)}), {trained:,} encoder weights now "
        f"trained (batch norm frozen); epochs {first_epoch + 1}-{last_epoch} on images at "
        f"learning rate {config.fine_tune_learning_rate:g}, {batches.steps_per_epoch} batches "
        "per epoch"
    )
    if resumed:
        log(f"resuming fine-tuning from epoch {trainer.epoch + 1}, batch {trainer.batch}")
    trainer.fit()
