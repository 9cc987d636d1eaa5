import numpy as np
import pytest
from keras import ops
from PIL import Image

from captioner.data import feature_cache as feature_cache
from captioner.data.image_pipeline import image_dataset
from captioner.data.karpathy import load_karpathy
from captioner.models.captioning_model import CaptioningModel
from tests.helpers import write_karpathy


def tiny_model():
    model = CaptioningModel(
        9, image_size=32, embed_dim=8, units=16, attention_dim=8, train_encoder=False
    )
    model.build()
    return model


@pytest.fixture
def records(tmp_path):
    return load_karpathy(write_karpathy(tmp_path / "data"))


def test_features_are_the_encoder_output_and_are_reused(tmp_path, records, monkeypatch):
    model = tiny_model()
    messages = []
    first, unreadable = feature_cache.cached_features(
        model, records, tmp_path / "cache", log=messages.append
    )
    assert "extracting" in messages[0]
    assert len(unreadable) == 0
    images = np.concatenate([b.numpy() for _, b in image_dataset(records, 32).batch(4)])
    expected = ops.convert_to_numpy(model.grid_features(images))
    assert first.dtype == np.float16 and first.shape == expected.shape  # (N, L, D)
    np.testing.assert_allclose(first, expected, rtol=2e-3, atol=2e-3)

    def no_extraction(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(feature_cache, "extract_features", no_extraction)
    messages.clear()
    again, _ = feature_cache.cached_features(
        model, records, tmp_path / "cache", log=messages.append
    )
    assert "reusing" in messages[0]
    np.testing.assert_array_equal(again, first)


def test_a_changed_image_or_encoder_gives_a_new_entry(tmp_path, records):
    model = tiny_model()
    key = feature_cache.cache_key(model, records)
    assert feature_cache.cache_key(model, records) == key
    Image.new("RGB", (50, 40), "red").save(records[2].path)
    changed_image = feature_cache.cache_key(model, records)
    assert changed_image != key
    weight = model.encoder.weights[0]
    weight.assign(weight + 1.0)
    assert feature_cache.cache_key(model, records) not in (key, changed_image)


def test_an_interrupted_extraction_leaves_no_entry(tmp_path, records, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(feature_cache, "extract_features", crash)
    with pytest.raises(KeyboardInterrupt):
        feature_cache.cached_features(tiny_model(), records, tmp_path / "cache", log=print)
    assert list((tmp_path / "cache").iterdir()) == []


def test_unreadable_images_are_named_and_kept_out(tmp_path, records):
    records[1].path.write_bytes(b"not an image")
    model, messages = tiny_model(), []
    features, unreadable = feature_cache.cached_features(
        model, records, tmp_path / "cache", log=messages.append
    )
    assert unreadable.tolist() == [1] and features.shape[0] == len(records)
    _, again = feature_cache.cached_features(
        model, records, tmp_path / "cache", log=messages.append
    )
    assert "reusing" in messages[-1] and again.tolist() == [1]  # remembered by the entry
