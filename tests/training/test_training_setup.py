import dataclasses
import json

import keras
import numpy as np
import pytest

from captioner.config import DATA_DEFAULTS, TrainConfig
from captioner.inference.captioner import CONFIG_FILE
from captioner.models.captioning_model import CaptioningModel, caption_loss
from captioner.training.checkpoint import CHECKPOINT_FILE, SCST_CHECKPOINT_FILE
from captioner.training.distribute import make_strategy
from captioner.training.setup import (
    build_model,
    check_resumable,
    dtype_policy,
    precision_policy,
    resolve_settings,
)
from captioner.training.train_step import TrainStep


def test_precision_policies():
    assert precision_policy("float32") == "float32"
    assert precision_policy("mixed") == "mixed_bfloat16"  # no GPU in the tests
    assert precision_policy("mixed_float16") == "mixed_float16"
    with pytest.raises(ValueError, match="precision must be"):
        precision_policy("half")


def test_resume_only_with_the_same_settings(tmp_path):
    config = TrainConfig(out=str(tmp_path))
    assert not check_resumable(config, tmp_path)  # no checkpoint
    config.save(tmp_path / CONFIG_FILE)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"")
    assert check_resumable(config, tmp_path)
    assert check_resumable(dataclasses.replace(config, checkpoint_steps=7), tmp_path)
    assert not check_resumable(dataclasses.replace(config, resume=False), tmp_path)
    changed = dataclasses.replace(config, learning_rate=0.5, batch_size=3)
    with pytest.raises(ValueError, match=r"checkpoint.npz.*\(batch_size, learning_rate\)"):
        check_resumable(changed, tmp_path)


def test_a_later_stage_can_be_added_until_it_has_a_checkpoint(tmp_path):
    config = TrainConfig(out=str(tmp_path))
    config.save(tmp_path / CONFIG_FILE)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"")
    with_scst = dataclasses.replace(config, scst_epochs=2, scst_learning_rate=1e-4)
    assert check_resumable(with_scst, tmp_path)
    assert check_resumable(dataclasses.replace(config, fine_tune_blocks=2), tmp_path)
    (tmp_path / SCST_CHECKPOINT_FILE).write_bytes(b"")  # the stage has begun
    with pytest.raises(ValueError, match=r"\(scst_learning_rate, scst_samples\)"):
        check_resumable(dataclasses.replace(with_scst, scst_samples=2), tmp_path)


def test_a_begun_self_critical_stage_can_be_given_more_epochs_not_fewer(tmp_path):
    config = TrainConfig(out=str(tmp_path), scst_epochs=3)
    config.save(tmp_path / CONFIG_FILE)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"")
    (tmp_path / SCST_CHECKPOINT_FILE).write_bytes(b"")
    assert check_resumable(dataclasses.replace(config, scst_epochs=5), tmp_path)
    with pytest.raises(ValueError, match=r"\(scst_epochs\)"):
        check_resumable(dataclasses.replace(config, scst_epochs=2), tmp_path)
    with pytest.raises(ValueError, match=r"\(scst_learning_rate\)"):
        check_resumable(dataclasses.replace(config, scst_epochs=5, scst_learning_rate=1), tmp_path)


def test_a_run_saved_before_data_kind_can_be_continued(tmp_path):
    config = TrainConfig(out=str(tmp_path))  # data_kind "": as saved before it existed
    config.save(tmp_path / CONFIG_FILE)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"")
    assert check_resumable(dataclasses.replace(config, data_kind="photos", scst_epochs=3), tmp_path)
    dataclasses.replace(config, data_kind="synthetic").save(tmp_path / CONFIG_FILE)
    with pytest.raises(ValueError, match=r"\(data_kind\)"):
        check_resumable(dataclasses.replace(config, data_kind="photos"), tmp_path)


def test_a_run_saved_before_scst_baseline_loads_with_the_greedy_baseline_it_used(tmp_path):
    path = tmp_path / CONFIG_FILE
    TrainConfig().save(path)
    assert TrainConfig.load(path).scst_baseline == "samples"  # the default now
    saved = json.loads(path.read_text())
    del saved["scst_baseline"]
    path.write_text(json.dumps(saved))
    assert TrainConfig.load(path).scst_baseline == "greedy"


def test_a_run_saved_before_scst_penalty_weight_loads_without_the_penalty(tmp_path):
    path = tmp_path / CONFIG_FILE
    TrainConfig(data="d.json", scst_penalty_weight=0.01).save(path)
    saved = json.loads(path.read_text())
    del saved["scst_penalty_weight"]
    path.write_text(json.dumps(saved))
    assert TrainConfig.load(path).scst_penalty_weight == 0.0


@pytest.mark.parametrize("decoder", ["paper", "topdown"])
def test_mixed_bfloat16_step_keeps_float32_weights_and_losses(decoder):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    sequences = rng.integers(1, 9, (4, 6)).astype(np.int32)
    with dtype_policy("mixed_bfloat16"):
        model = CaptioningModel(
            9, image_size=32, embed_dim=8, units=16, attention_dim=8, decoder=decoder
        )
        model.build()
        optimizer = keras.optimizers.Adam(1e-3)
        step = TrainStep(model, optimizer, make_strategy("default"))
        outputs = model((images, sequences[:, :-1]))
        losses = step(((images, sequences[:, :-1]), sequences[:, 1:]))
    assert keras.config.dtype_policy().name == "float32"  # restored
    assert outputs["logits"].dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    assert all(np.isfinite(v) for v in losses.values())
    assert losses["loss"] > 0
    # searches call the decoder's step directly, outside the model's call
    annotations, _ = model.encode(images)
    logits, *_ = model.decoder.step(sequences[:, 0], model.decoder.initial_state(annotations))
    assert logits.dtype == "bfloat16" and np.isfinite(keras.ops.convert_to_numpy(logits)).all()


def test_step_on_several_captions_per_image_reports_the_flat_loss():
    rng = np.random.default_rng(1)
    model = CaptioningModel(
        9, image_size=32, embed_dim=8, units=16, attention_dim=8, dropout=0.0, train_encoder=False
    )
    model.build()
    features = model.grid_features(rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8))
    sequences = rng.integers(1, 9, (2, 3, 6)).astype(np.int32)  # (B, C, T + 1)
    sequences[1, 2] = 0  # an image with 2 captions: one all-padding row
    targets = sequences[..., 1:]
    outputs = model((features, sequences[..., :-1]))
    _, cross_entropy, penalty = caption_loss(targets, outputs["logits"], outputs["alphas"])
    step = TrainStep(model, keras.optimizers.Adam(1e-3), make_strategy("default"))
    losses = step(((features, sequences[..., :-1]), targets))
    np.testing.assert_allclose(losses["xent"], float(cross_entropy), rtol=1e-5)
    np.testing.assert_allclose(losses["penalty"], float(penalty), rtol=1e-5)
    # the padding row counts nowhere: the penalty is the mean over the 5 real captions
    flat = targets.reshape(6, -1)[:5]
    alphas = keras.ops.convert_to_numpy(outputs["alphas"])[:5]
    coverage = (alphas * (flat != 0)[..., None]).sum(axis=1)
    np.testing.assert_allclose(losses["penalty"], ((1 - coverage) ** 2).sum(-1).mean(), rtol=1e-5)


def test_automatic_model_settings_follow_the_data_and_the_encoder():
    synthetic = resolve_settings(TrainConfig())
    assert (synthetic.encoder, synthetic.image_size, synthetic.grid_stride) == (
        "efficientnet_lite0",
        128,
        16,
    )
    assert synthetic.encoder_weights == "imagenet" and synthetic.feature_norm is True
    assert (synthetic.embed_dim, synthetic.units, synthetic.min_count) == (64, 256, 1)
    assert (synthetic.epochs, synthetic.captions_per_image, synthetic.select_metric) == (
        8,
        3,
        "bleu4",
    )
    photos = resolve_settings(TrainConfig(data="coco/dataset.json"))
    assert (photos.encoder, photos.image_size, photos.grid_stride) == (
        "efficientnet_lite2",
        260,
        DATA_DEFAULTS["photos"]["grid_stride"],
    )
    for name, value in DATA_DEFAULTS["photos"].items():
        assert getattr(photos, name) in (value, "bleu4")  # bleu4: without the coco extra
    assert resolve_settings(TrainConfig(data="d.json", units=64, min_count=2)).units == 64
    # a synthetic dataset given with --data (e.g. synth --orders mixed) keeps its defaults
    mixed = resolve_settings(TrainConfig(data="mixed/dataset.json"), synthetic=True)
    assert (mixed.encoder, mixed.image_size, mixed.embed_dim) == ("efficientnet_lite0", 128, 64)
    scratch = resolve_settings(TrainConfig(encoder="small_cnn"))
    assert (scratch.encoder_weights, scratch.image_size, scratch.grid_stride) == ("none", 128, 32)
    assert scratch.feature_norm is False
    backbone = resolve_settings(TrainConfig(data="d.json", encoder="inception_v3"))
    assert (backbone.image_size, backbone.grid_stride) == (299, 32)
    explicit = TrainConfig(
        encoder="mobilenet_v2_tv", image_size=96, grid_stride=32, feature_norm=False
    )
    resolved = resolve_settings(explicit)
    kept = ("encoder", "image_size", "grid_stride", "feature_norm")
    assert [getattr(resolved, k) for k in kept] == [getattr(explicit, k) for k in kept]
    assert resolve_settings(synthetic) == synthetic  # resolving twice changes nothing


def test_the_model_is_built_with_the_decoder_and_coverage_asked_for():
    config = resolve_settings(
        TrainConfig(encoder="small_cnn", image_size=32, units=8, embed_dim=4, attention_dim=4)
    )
    plain = build_model(config, 10)
    assert (plain.decoder_kind, plain.decoder.coverage) == ("paper", False)
    covered = build_model(dataclasses.replace(config, decoder="topdown", coverage=True), 10)
    assert (covered.decoder_kind, covered.decoder.coverage) == ("topdown", True)
    annotations, _ = covered.encode(np.zeros((2, 32, 32, 3), np.uint8))
    assert len(covered.decoder.initial_state(annotations)) == 7  # coverage after the six


def test_the_kind_of_data_picks_the_decoder_stages_and_decoding():
    photos = resolve_settings(TrainConfig(data="flickr8k.json"))
    assert (photos.data_kind, photos.decoder, photos.scst_epochs) == ("photos", "topdown", 5)
    # fine-tuning and self-critical training do not combine: no SCST unless asked for
    assert resolve_settings(TrainConfig(data="d.json", fine_tune_blocks=2)).scst_epochs == 0
    synthetic = resolve_settings(TrainConfig())
    assert (synthetic.data_kind, synthetic.decoder, synthetic.scst_epochs) == (
        "synthetic",
        "paper",
        0,
    )
    # the attention penalty: on photos only, unless asked for
    assert (photos.penalty_weight, synthetic.penalty_weight) == (0.01, 0.0)
    assert (photos.scst_penalty_weight, synthetic.scst_penalty_weight) == (0.01, 0.0)
    assert resolve_settings(TrainConfig(data="d.json", penalty_weight=0.0)).penalty_weight == 0.0
    # an explicit kind wins over the data, and a wrong one is named
    forced = resolve_settings(TrainConfig(data="d.json", data_kind="synthetic"), synthetic=False)
    assert (forced.encoder, forced.embed_dim) == ("efficientnet_lite0", 64)
    with pytest.raises(ValueError, match="--data-kind must be one of"):
        resolve_settings(TrainConfig(data_kind="photo"))
    # decoding defaults follow the kind; runs saved before data_kind decode as they did
    assert photos.decoding_defaults("evaluate") == (3, 1.25, 2)
    assert synthetic.decoding_defaults("evaluate") == (1, 0.0, 0)
    assert synthetic.decoding_defaults("caption") == (3, 0.0, 0)
    assert TrainConfig(data="d.json").decoding_defaults("evaluate") == (1, 0.0, 0)
    assert TrainConfig(data="d.json").decoding_defaults("caption") == (3, 0.0, 0)
