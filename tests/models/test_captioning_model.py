import keras
import numpy as np
import pytest
from keras import ops

from captioner.models.captioning_model import CaptioningModel, caption_loss

V = 13


def tiny_model(**options):
    model = CaptioningModel(
        V, image_size=32, embed_dim=8, units=16, attention_dim=8, max_length=6, **options
    )
    model.build()
    return model


def random_batch(batch=2, steps=5, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (batch, 32, 32, 3), dtype=np.uint8)
    caption_in = rng.integers(1, V, (batch, steps)).astype(np.int32)
    return images, caption_in


def test_outputs_have_the_grid_of_the_encoder():
    model = tiny_model()
    assert model.grid_size == (2, 2)  # 32 px / 16
    images, caption_in = random_batch()
    out = model((images, caption_in))
    assert tuple(out["logits"].shape) == (2, 5, V)
    assert tuple(out["alphas"].shape) == (2, 5, 4)


def test_annotations_carry_the_cell_coordinates():
    model = tiny_model(feature_dim=5)
    annotations, grid = model.encode(np.zeros((1, 64, 64, 3), np.uint8))
    assert annotations.shape == (1, 16, 5 + 2)
    coordinates = ops.convert_to_numpy(annotations)[0, :, -2:].reshape(*grid, 2)  # (4, 4, 2)
    np.testing.assert_allclose(coordinates[0, :, 0], np.linspace(-1, 1, 4), atol=1e-6)  # x
    np.testing.assert_allclose(coordinates[:, 0, 1], np.linspace(-1, 1, 4), atol=1e-6)  # y


@pytest.mark.parametrize("feature_dim", [0, 6])
def test_cached_features_give_the_same_outputs_as_images(feature_dim):
    model = tiny_model(feature_dim=feature_dim)
    images, caption_in = random_batch()
    features = model.grid_features(images)  # (B, L, D)
    from_images = model((images, caption_in))["logits"]
    from_cache = model((ops.cast(features, "float16"), caption_in))["logits"]
    np.testing.assert_allclose(from_cache, from_images, atol=2e-2)
    exact = model((features, caption_in))["logits"]
    np.testing.assert_allclose(exact, from_images, atol=1e-5)


def test_several_captions_per_image_share_its_annotations():
    model = tiny_model()
    images, _ = random_batch(batch=2)
    captions = np.random.default_rng(1).integers(1, V, (2, 3, 5)).astype(np.int32)  # (B, C, T)
    together = ops.convert_to_numpy(model((images, captions))["logits"])
    assert together.shape == (6, 5, V)
    for image in range(2):
        for slot in range(3):
            alone = model((images[image : image + 1], captions[image, slot][None]))["logits"]
            np.testing.assert_allclose(together[image * 3 + slot], alone[0], atol=1e-5)
    targets = np.random.default_rng(2).integers(0, V, (2, 3, 5))
    out = model((images, captions))
    flat = caption_loss(targets.reshape(6, 5), out["logits"], out["alphas"])
    np.testing.assert_allclose(caption_loss(targets, out["logits"], out["alphas"]), flat)


def test_penalty_matches_numpy():
    rng = np.random.default_rng(3)
    targets = np.array([[5, 6, 2, 0, 0], [7, 2, 0, 0, 0]], np.int32)
    logits = rng.normal(size=(2, 5, V)).astype(np.float32)
    alphas = rng.dirichlet(np.ones(4), size=(2, 5)).astype(np.float32)
    _, _, penalty = caption_loss(targets, logits, alphas)
    mask = (targets != 0).astype(np.float32)
    coverage = (alphas * mask[..., None]).sum(axis=1)  # (B, L), real steps only
    expected = np.mean(np.sum((1.0 - coverage) ** 2, axis=-1))
    np.testing.assert_allclose(ops.convert_to_numpy(penalty), expected, rtol=1e-5)


def test_cross_entropy_is_the_mean_over_real_tokens():
    targets = np.array([[3, 2, 0]], np.int32)
    logits = np.zeros((1, 3, V), np.float32)
    logits[0, 2, 5] = 100.0  # a wild prediction at a padded step must not count
    total, cross_entropy, penalty = caption_loss(targets, logits, np.full((1, 3, 2), 0.5), 0.0)
    np.testing.assert_allclose(ops.convert_to_numpy(cross_entropy), np.log(V), rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(total), np.log(V), rtol=1e-5)


def test_padding_a_batch_further_changes_nothing():
    model = tiny_model()
    images, _ = random_batch()
    sequences = np.array([[1, 4, 5, 6, 2, 0], [1, 7, 2, 0, 0, 0]], np.int32)
    losses = []
    for extra in (0, 4):
        padded = np.pad(sequences, ((0, 0), (0, extra)))
        out = model((images, padded[:, :-1]))
        losses.append([float(x) for x in caption_loss(padded[:, 1:], out["logits"], out["alphas"])])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"attention": "soft"},
        {"attention": "mean"},
        {"feature_norm": True},
        {"decoder": "topdown"},
        {"decoder": "topdown", "coverage": True},
        {"attention": "soft+mean"},
    ],
)
def test_keras_save_load_gives_identical_outputs(tmp_path, options):
    model = tiny_model(**options)
    images, caption_in = random_batch()
    before = model((images, caption_in))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    after = loaded((images, caption_in))
    for key in ("logits", "alphas", "betas"):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(before[key]), ops.convert_to_numpy(after[key])
        )
    assert loaded.get_config() == model.get_config()


def test_feature_norm_standardises_every_channel_with_its_batch_statistics():
    model = tiny_model(feature_norm=True, grid_coordinates=False)
    depth = model.grid_features(random_batch()[0]).shape[-1]
    rng = np.random.default_rng(3)
    loc, scale = rng.uniform(-9, 9, depth), rng.uniform(0.5, 8, depth)  # per channel
    features = rng.normal(loc=loc, scale=scale, size=(16, 4, depth))
    annotations = ops.convert_to_numpy(model.annotate(features.astype("float32"), training=True))
    flat = annotations.reshape(-1, depth)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(flat.std(axis=0), 1.0, atol=1e-2)
    # In inference, the moving statistics (which that training call updated) are used.
    norm = model.normalization
    mean, variance = (ops.convert_to_numpy(v) for v in (norm.moving_mean, norm.moving_variance))
    assert np.abs(mean).max() > 0.01  # moved from their initial zeros
    inference = ops.convert_to_numpy(model.annotate(features.astype("float32")))
    expected = (features - mean) / np.sqrt(variance + norm.epsilon)
    np.testing.assert_allclose(inference, expected, rtol=1e-4, atol=1e-4)


def test_config_round_trip():
    model = tiny_model(attention="mean", penalty_weight=0.0)
    clone = CaptioningModel.from_config(model.get_config())
    clone.build()
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()


def test_a_saved_model_keeps_its_own_encoder_architecture(tmp_path):
    from captioner.models.encoders import SmallCNN

    encoder = SmallCNN(stem_filters=8, filters=(8, 16), convs_per_stage=(1, 1), name="encoder")
    model = CaptioningModel(
        V,
        encoder=keras.saving.serialize_keras_object(encoder),
        image_size=32,
        embed_dim=8,
        units=16,
        attention_dim=8,
    )
    model.build()
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.encoder.get_config()["filters"] == [8, 16]
    images, caption_in = random_batch()
    np.testing.assert_array_equal(
        ops.convert_to_numpy(model((images, caption_in))["logits"]),
        ops.convert_to_numpy(loaded((images, caption_in))["logits"]),
    )
