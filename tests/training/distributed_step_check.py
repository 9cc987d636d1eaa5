"""Run in a fresh process by test_distribute.py: the CPU split into 2 logical devices."""

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from captioner.models.captioning_model import CaptioningModel  # noqa: E402
from captioner.training.distribute import make_strategy  # noqa: E402
from captioner.training.train_step import TrainStep  # noqa: E402

V = 11


def one_step(strategy, batch, initial):
    """Weights after one step from `initial` weights on `batch`, under `strategy`."""
    with strategy.scope():
        model = CaptioningModel(
            V,
            image_size=32,
            embed_dim=8,
            units=16,
            attention_dim=8,
            dropout=0.0,
            penalty_weight=1.0,
            # batch normalisation in training mode uses each replica's own statistics
            train_encoder=False,
        )
        model.build()
        model.set_weights(initial)
        optimizer = keras.optimizers.Adam(1e-2)
        step = TrainStep(model, optimizer, strategy, clip_norm=0.05)
    dataset = tf.data.Dataset.from_tensors(batch)
    for distributed in step.distribute(dataset):
        losses = step(distributed)
    return [w.numpy() for w in model.weights], losses


def main():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    # different real lengths in the two halves: the loss is a mean over the global tokens
    lengths = [1, 2, 2, 5, 6, 6]
    sequences = np.zeros((6, 7), np.int32)
    for i, n in enumerate(lengths):
        sequences[i, : n + 1] = rng.integers(3, V, n + 1)
    batch = ((images, sequences[:, :-1]), sequences[:, 1:])
    keras.utils.set_random_seed(1)
    reference = CaptioningModel(V, image_size=32, embed_dim=8, units=16, attention_dim=8)
    reference.build()
    initial = reference.get_weights()
    mirrored = make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    single, single_losses = one_step(make_strategy("default"), batch, initial)
    split, split_losses = one_step(mirrored, batch, initial)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(single, initial))
    difference = max(float(np.abs(a - b).max()) for a, b in zip(single, split))
    json.dump(
        {
            "replicas": mirrored.num_replicas_in_sync,
            "moved": moved,
            "difference": difference,
            "single_losses": single_losses,
            "split_losses": split_losses,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
