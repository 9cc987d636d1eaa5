"""Encoder blocks: grouping, unfreezing the top ones, batch norm frozen while fine-tuning."""

import keras
import numpy as np
import pytest
from keras.layers import BatchNormalization

from captioner.models.captioning_model import CaptioningModel
from captioner.models.encoders import build_encoder
from captioner.models.encoders.blocks import unfreeze_top_blocks
from captioner.training.distribute import make_strategy
from captioner.training.train_step import TrainStep


@pytest.mark.parametrize(
    "name, grid_stride, count, last",
    [
        ("efficientnet_lite0", 32, 18, ["block6d", "block7a", "head"]),
        ("mobilenet_v2_tv", 32, 19, ["block6c", "block7a", "head"]),
        ("efficientnet_lite0", 16, 12, ["block5a", "block5b", "block5c"]),  # cut at stride 16
    ],
)
def test_blocks_run_from_the_stem_to_the_head(name, grid_stride, count, last):
    encoder = build_encoder(name, 32, grid_stride=grid_stride)
    blocks = encoder.blocks()
    names = [block for block, _ in blocks]
    assert len(names) == count and names[0] == "stem" and names[-3:] == last
    assert len(set(names)) == len(names)  # every block is one run of layers
    layers = [layer for _, group in blocks for layer in group]
    # every layer with weights belongs to exactly one block
    with_weights = [layer for layer in encoder.model.layers if layer.weights]
    assert sorted(id(x) for x in with_weights) == sorted(id(x) for x in layers if x.weights)


def test_unfreezing_picks_the_top_blocks_without_batch_norm():
    encoder = build_encoder("efficientnet_lite0", 32)
    encoder.trainable = False
    assert unfreeze_top_blocks(encoder, 2) == ["block7a", "head"]
    trained = {w.path for w in encoder.trainable_weights}
    expected = {
        w.path
        for layer in encoder.model.layers
        if layer.name.startswith(("block7a_", "head_"))
        and not isinstance(layer, keras.layers.BatchNormalization)
        for w in layer.weights
    }
    assert trained == expected and len(expected) == 4  # expand, depthwise, project, head conv
    bn = encoder.model.get_layer("head_bn")
    assert not bn.trainable and all(not w.trainable for w in bn.weights)


@pytest.mark.parametrize("count", [0, 19, -1])
def test_a_block_count_the_encoder_lacks_is_refused(count):
    encoder = build_encoder("efficientnet_lite0", 32)
    with pytest.raises(ValueError, match=r"efficientnet_lite0 has 18 blocks \(stem, .*head\)"):
        unfreeze_top_blocks(encoder, count)


@pytest.mark.parametrize("name", ["small_cnn", "resnet50"])
def test_encoders_without_known_blocks_are_refused(name):
    encoder = build_encoder(name, 32)
    with pytest.raises(ValueError, match="fine-tuning supports the offline encoders"):
        unfreeze_top_blocks(encoder, 1)


def _values(layers):
    return {w.path: keras.ops.convert_to_numpy(w).copy() for layer in layers for w in layer.weights}


def _calibrate_batch_norm(encoder, images):
    """Sets every BN layer's moving statistics to its batch statistics on `images`.

    Randomly initialised, the network's activations vanish with depth in inference mode;
    calibrated, it behaves like a trained one (activations of a sane size, real gradients).
    """
    norms = [layer for layer in encoder.model.layers if isinstance(layer, BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0  # the moving statistics become this batch's
    encoder(images, training=True)
    for layer in norms:
        layer.momentum = 0.99


def test_training_steps_change_only_the_top_blocks_and_no_batch_norm_statistics():
    model = CaptioningModel(
        9, encoder="efficientnet_lite0", image_size=64, embed_dim=8, units=16, attention_dim=8,
        train_encoder=False,
    )  # fmt: skip
    model.build()
    rng = np.random.default_rng(0)
    # calibrated on dark images, trained on bright ones: a batch-statistics update would show
    _calibrate_batch_norm(model.encoder, rng.integers(0, 100, (8, 64, 64, 3), dtype=np.uint8))
    images = rng.integers(100, 255, (4, 64, 64, 3), dtype=np.uint8)
    sequences = rng.integers(1, 9, (4, 6)).astype(np.int32)

    blocks = model.encoder.blocks()
    unfreeze_top_blocks(model.encoder, 2)
    layers = {
        "top": [
            x for _, group in blocks[-2:] for x in group if not isinstance(x, BatchNormalization)
        ],
        "bottom": [x for _, group in blocks[:-2] for x in group],
        "norms": [x for _, group in blocks for x in group if isinstance(x, BatchNormalization)],
    }
    before = {group: _values(members) for group, members in layers.items()}
    step = TrainStep(model, keras.optimizers.Adam(1e-3), make_strategy("default"))
    for _ in range(2):
        step(((images, sequences[:, :-1]), sequences[:, 1:]))
    after = {group: _values(members) for group, members in layers.items()}

    assert (
        len(before["top"]) == 4 and len(before["norms"]) == 49 * 4
    )  # 49 BN layers: gamma, beta, mean, variance
    for path, value in before["top"].items():
        assert not np.array_equal(after["top"][path], value), f"{path} was not trained"
    for group in ("bottom", "norms"):
        for path, value in before[group].items():
            np.testing.assert_array_equal(after[group][path], value, err_msg=path)
