import numpy as np
import pytest
from keras import ops

from captioner.encoders import ApplicationsEncoder, SmallCNN, build_encoder


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
