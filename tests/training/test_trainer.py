"""The training loop on a tiny model: resume equals an uninterrupted run, NaN stops it."""

import keras
import numpy as np
import pytest

from captioner.data.batching import EpochBatches, array_lookup, memmap_lookup
from captioner.models.captioning_model import CaptioningModel
from captioner.training.checkpoint import CheckpointStore
from captioner.training.distribute import make_strategy
from captioner.training.schedules import WarmupSchedule
from captioner.training.train_step import TrainStep
from captioner.training.trainer import Trainer, TrainingDiverged, TrainingInterrupted

V, N, SIZE = 11, 24, 32


def data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (N, SIZE, SIZE, 3), dtype=np.uint8)
    ids = np.zeros((N, 2, 9), np.int32)
    for i in range(N):
        for j in range(2):
            words = int(rng.integers(2, 7))
            ids[i, j, : words + 2] = [1, *rng.integers(4, V, words), 2]
    return images, ids


def make_trainer(
    tmp_path, epochs=2, callbacks=(), checkpoint_steps=2, bucketing=False, cached=False
):
    """A tiny run on images, or (`cached`) on a frozen encoder's cached features with 3
    captions per image (every image has 2: one all-padding row each)."""
    keras.utils.set_random_seed(0)
    model = CaptioningModel(
        V,
        image_size=SIZE,
        embed_dim=8,
        units=16,
        attention_dim=8,
        max_length=7,
        dropout=0.3,
        train_encoder=not cached,
        feature_dim=6 if cached else 0,
    )
    model.build()
    images, ids = data()
    if cached:
        path = tmp_path.parent / f"{tmp_path.name}-features.npy"
        np.save(path, keras.ops.convert_to_numpy(model.grid_features(images)).astype("float16"))
        lookup = memmap_lookup(np.load(path, mmap_mode="r"))
    else:
        lookup = array_lookup(images)
    batches = EpochBatches(
        lookup,
        ids,
        np.full(N, 2),
        batch_size=8,
        seed=3,
        bucketing=bucketing,
        captions_per_image=3 if cached else 1,
    )
    schedule = WarmupSchedule(3e-3, warmup_steps=2, decay_steps=epochs * batches.steps_per_epoch)
    optimizer = keras.optimizers.Adam(schedule)
    model.compile(optimizer=optimizer)
    step = TrainStep(model, optimizer, make_strategy("default"), clip_norm=1.0)
    return Trainer(
        model,
        step,
        batches,
        epochs=epochs,
        callbacks=list(callbacks),
        store=CheckpointStore(tmp_path / "checkpoint.npz"),
        checkpoint_steps=checkpoint_steps,
        log=lambda _: None,
    )


class StopAfter(keras.callbacks.Callback):
    """Acts like Ctrl-C after `steps` steps."""

    def __init__(self, trainer_box, steps):
        super().__init__()
        self.box, self.steps = trainer_box, steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.steps:
            self.box[0].stop_signal = "SIGINT"


def weights(model):
    return [w.numpy().copy() for w in model.weights]


@pytest.mark.parametrize("cached", [False, True], ids=["images", "cached-features"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, cached):
    whole = make_trainer(tmp_path / "whole", cached=cached)
    whole.fit()
    assert whole.global_step == 6 and whole.epoch == 2
    if cached:
        assert whole.sums["captions"] == 0  # reset at the epoch end

    box = []
    first = make_trainer(tmp_path / "parts", callbacks=[StopAfter(box, 4)], cached=cached)
    box.append(first)
    with pytest.raises(TrainingInterrupted, match="epoch 2, batch 1"):
        first.fit()  # mid-epoch: 3 batches per epoch
    if cached:  # 8 images of 2 real captions (and one padding row) per batch
        assert first.sums["captions"] == 16
    resumed = make_trainer(tmp_path / "parts", cached=cached)
    assert resumed.restore()
    assert (resumed.epoch, resumed.batch, resumed.global_step) == (1, 1, 4)
    resumed.fit()
    assert resumed.global_step == 6
    for a, b in zip(weights(whole.model), weights(resumed.model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the finished run's checkpoint says so
    again = make_trainer(tmp_path / "parts", cached=cached)
    assert again.restore() and again.epoch == 2


class Poison(keras.callbacks.Callback):
    """Puts a NaN into the weights after `steps` steps."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.steps:
            weight = self.model.decoder.out.kernel
            weight.assign(np.full(weight.shape, np.nan, "float32"))


@pytest.mark.parametrize("poisoned_at", [3, 4])
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, poisoned_at):
    # checkpoints every 2 steps and at epoch ends (3 steps); a save that finds a NaN fails
    trainer = make_trainer(tmp_path, callbacks=[Poison(poisoned_at)])
    with pytest.raises(TrainingDiverged, match="not finite.*last good checkpoint"):
        trainer.fit()
    resumed = make_trainer(tmp_path)
    assert resumed.restore()
    assert resumed.global_step == {3: 2, 4: 3}[poisoned_at]  # epoch ends at step 3
    assert all(np.isfinite(w).all() for w in weights(resumed.model))
