import numpy as np
import pytest
from keras import ops

from captioner.models.encoders import ApplicationsEncoder, SmallCNN, build_encoder


def test_small_cnn_grid_follows_the_input_size():
    encoder = SmallCNN()
    for size, grid in ((128, 8), (64, 4), (96, 6)):
        images = np.zeros((2, size, size, 3), np.uint8)
        features = encoder(images)
        assert tuple(features.shape) == (2, grid, grid, 128)
        assert encoder.compute_output_shape((2, size, size, 3)) == (2, grid, grid, 128)


def test_applications_backbone_from_a_local_weights_file(tmp_path):
    first = ApplicationsEncoder("mobilenet_v2", image_size=64)
    images = np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    expected = ops.convert_to_numpy(first(images))
    path = tmp_path / "backbone.weights.h5"
    first.model.save_weights(path)
    second = ApplicationsEncoder("mobilenet_v2", image_size=64, weights=str(path))
    np.testing.assert_allclose(ops.convert_to_numpy(second(images)), expected, atol=1e-5)
    assert expected.shape == (1, 2, 2, 1280)  # the grid comes from the backbone
    assert second.get_config()["weights"] is None  # a saved model never asks for a download


def test_unknown_encoder_names_the_choices():
    with pytest.raises(ValueError, match="choose from small_cnn"):
        build_encoder("alexnet", 224)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_encoder("small_cnn", 128, weights="imagenet")


def test_imagenet_weights_offline_fail_at_once_naming_the_alternatives(tmp_path, monkeypatch):
    from captioner.models.encoders import OFFLINE_ENCODERS, applications

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache
    monkeypatch.setattr(applications.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(applications, "can_connect", lambda *args, **kwargs: False)

    def no_download(*args, **kwargs):
        raise AssertionError("Keras was asked to download")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", no_download)
    for backbone in ("resnet50", "inception_v3", "vgg19", "efficientnet_b3", "convnext_tiny"):
        with pytest.raises(applications.ImageNetWeightsUnavailableError) as info:
            build_encoder(backbone, 64, weights="imagenet")
        message = str(info.value)
        assert backbone in message and "--encoder-weights PATH" in message
        assert all(name in message for name in OFFLINE_ENCODERS)
    # A cached file is used without asking the network.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "efficientnetb0_notop.h5").write_bytes(b"")
    assert applications.keras_weights_cached("efficientnet_b0")
    assert not applications.keras_weights_cached("efficientnet_b1")


def test_every_expected_keras_backbone_is_offered_and_checked_for_its_cache():
    from captioner.models.encoders import ENCODERS, applications

    expected = {"resnet50", "resnet101", "resnet152", "inception_v3", "vgg16", "vgg19"}
    expected |= {f"efficientnet_b{i}" for i in range(8)}
    expected |= {"mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "convnext_tiny"}
    assert expected <= set(ENCODERS)
    assert set(applications._CACHED_NO_TOP) == set(applications.BACKBONES)


def test_can_connect_is_false_for_a_closed_port():
    import socket

    from captioner.models.encoders import applications

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert not applications.can_connect("127.0.0.1", port, timeout=1.0)
