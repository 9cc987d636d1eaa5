"""Training steps repeat exactly: the gradient of the same batch is the same every time.

With TensorFlow's graph optimiser (Grappler) on, the gradient of the annotations' projection,
a sum of one term per time step, varied with thread timing at the sizes below (a real-photo
grid, LSTM 256): the same gradient came out different on six calls of six on a 2-core
machine, and this test failed. `repeatable_steps`, which the training loop runs its steps
in, turns the rewrites off (its docstring says which rewrite is the likely cause).
"""

import keras
import numpy as np
import tensorflow as tf

from captioner.config import TrainConfig
from captioner.models.captioning_model import caption_loss_sums
from captioner.runtime import repeatable_steps
from captioner.training.setup import build_model, resolve_settings

IMAGES, CAPTIONS, WORDS, LENGTH, UNITS = 16, 5, 500, 12, 256


def gradient_function():
    """The compiled gradient of one fixed batch, for the photo defaults at LSTM 256."""
    sizes = dict.fromkeys(("embed_dim", "units", "attention_dim", "feature_dim"), UNITS)
    config = TrainConfig(data="photos", encoder_weights="none", **sizes)
    keras.utils.set_random_seed(0)
    model = build_model(resolve_settings(config, synthetic=False), WORDS)
    rng = np.random.default_rng(0)
    features = tf.constant(rng.normal(size=(IMAGES, 81, 1280)), "float32")  # Lite2's 9x9 grid
    ids = tf.constant(rng.integers(4, WORDS, (IMAGES, CAPTIONS, LENGTH + 1)), "int32")
    targets = tf.reshape(ids[:, :, 1:], (-1, LENGTH))

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            outputs = model((features, ids[:, :, :-1]), training=False)
            cross_entropy = caption_loss_sums(targets, outputs["logits"], outputs["alphas"])[0]
        grads = tape.gradient(cross_entropy, model.trainable_variables)
        return [tf.convert_to_tensor(g) for g in grads]

    return gradients


def test_the_same_batch_gives_the_same_gradient_every_time():
    gradients = gradient_function()
    with repeatable_steps():
        first = [g.numpy() for g in gradients()]
        for _ in range(5):
            again = gradients()
            assert all(np.array_equal(a, b.numpy()) for a, b in zip(first, again, strict=True))


def test_the_optimizer_options_are_restored():
    before = tf.config.optimizer.get_experimental_options()
    try:
        with repeatable_steps():
            assert tf.config.optimizer.get_experimental_options()["disable_meta_optimizer"]
        assert tf.config.optimizer.get_experimental_options() == before
    finally:
        tf.config.optimizer.set_experimental_options(before)
