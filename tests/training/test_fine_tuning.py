"""Fine-tuning: a second stage trains the encoder's top blocks with the decoder, on images."""

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from captioner.cli import main
from captioner.config import TrainConfig
from captioner.data.vocabulary import Vocabulary
from captioner.inference.captioner import Captioner, load_model_file
from captioner.models.encoders import torch_port
from captioner.training import validation as training
from captioner.training.checkpoint import CHECKPOINT_FILE, FINE_TUNE_CHECKPOINT_FILE
from captioner.training.fine_tuning import check_fine_tuning
from captioner.training.setup import build_model
from captioner.training.train import train
from captioner.training.train_step import TrainStep

TOP_BLOCKS = ("block7a_", "head_")  # the top 2 blocks of efficientnet_lite0


REAL_STEP, REAL_SCORES = TrainStep.__call__, training.validation_scores


class Interrupted(Exception):
    """Stands in for a killed process."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("fine_tune")
    args = ["synth", "--out", str(root / "synth"), "--num-train", "8", "--num-val", "4",
            "--num-test", "2", "--image-size", "64"]  # fmt: skip
    assert main(args) == 0
    return root


def tiny_config(root, out, **changes) -> TrainConfig:
    config = TrainConfig(
        data=str(root / "synth" / "dataset.json"),
        out=str(root / out),
        feature_cache=str(root / "cache"),
        encoder="efficientnet_lite0",
        encoder_weights="imagenet",  # real weights: healthy gradients in the top blocks
        image_size=64,
        grid_stride=32,  # the whole network: its top blocks are block7a and the head
        embed_dim=8,
        units=16,
        attention_dim=8,
        max_length=8,
        batch_size=4,  # 2 batches per epoch
        epochs=1,
        val_images=4,
        tensorboard=False,
        checkpoint_steps=1,
        fine_tune_blocks=2,
        fine_tune_epochs=1,
    )
    return dataclasses.replace(config, **changes)


class Spy:
    """Records every training step's input rank (3: cached features, 4: images) and the
    validation calls; scripts the selected validation score of every epoch in turn."""

    def __init__(self, monkeypatch, scores, interrupt_at_image_step=None, decode=True):
        self.ranks, self.validation_features, self.messages = [], [], []
        scores = iter(scores)

        def step(step_self, batch):
            rank = len(batch[0][0].shape)
            if rank == 4 and self.ranks.count(4) + 1 == interrupt_at_image_step:
                raise Interrupted
            self.ranks.append(rank)
            return REAL_STEP(step_self, batch)

        def validation_scores(captioner, records, metric, features=None):
            self.validation_features.append(features)
            real = REAL_SCORES(captioner, records, metric, features) if decode else {}
            return {**real, "bleu4": next(scores)}

        monkeypatch.setattr(TrainStep, "__call__", step)
        monkeypatch.setattr(training, "validation_scores", validation_scores)

    def log(self, message):
        self.messages.append(message)


def checkpoint_values(path) -> list[np.ndarray]:
    """The model variables saved in a checkpoint file, in `model.variables` order."""
    with np.load(path) as data:
        return [data[f"model/{i}"] for i in range(sum(k.startswith("model/") for k in data))]


def untrained_model(config):
    """A model of the run's architecture: its `variables` name the checkpoint's values."""
    saved = TrainConfig.load(f"{config.out}/config.json")  # the run's concrete settings
    untrained = dataclasses.replace(saved, encoder_weights=None)
    return build_model(untrained, len(Vocabulary.load(f"{config.out}/vocab.json")))


def run_dir_of(config) -> Path:
    return Path(config.out)


@pytest.fixture(scope="module")
def fine_tuned(dataset):
    """One run: 1 epoch from the feature cache, then 1 better epoch fine-tuning 2 blocks."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = Spy(monkeypatch, scores=[10.0, 20.0])
        config = tiny_config(dataset, "run")
        train(config, log=spy.log, verbose=0)
    return config, spy


def test_the_second_stage_trains_on_images_and_says_so(fine_tuned):
    config, spy = fine_tuned
    assert spy.ranks == [3, 3, 4, 4]  # stage 1 from the cache, stage 2 from images
    # validation of stage 2 decodes images: the cached features are the old encoder's
    assert spy.validation_features[0] is not None and spy.validation_features[1] is None
    begins = [m for m in spy.messages if m.startswith("fine-tuning (stage 2)")]
    assert len(begins) == 1
    assert "top 2 of 18 encoder blocks unfrozen (block7a, head)" in begins[0]
    # block7a: expand 192x1152, depthwise 3x3x1152, project 1152x320; head 320x1280
    weights = 192 * 1152 + 9 * 1152 + 1152 * 320 + 320 * 1280
    assert f"{weights:,} encoder weights now trained" in begins[0]
    history = json.loads((run_dir_of(config) / "history.json").read_text())
    assert [(row["epoch"], row["stage"], row["best"]) for row in history] == [
        (1, 1, True),
        (2, 2, True),
    ]
    assert TrainConfig.load(run_dir_of(config) / "config.json").fine_tune_blocks == 2


def test_only_the_top_blocks_change_and_batch_norm_statistics_do_not(fine_tuned):
    config, _ = fine_tuned
    run_dir = run_dir_of(config)
    before = checkpoint_values(run_dir / CHECKPOINT_FILE)  # the end of stage 1
    after = checkpoint_values(run_dir / FINE_TUNE_CHECKPOINT_FILE)
    model = untrained_model(config)
    layer_of = {id(w): layer for layer in model.encoder.model.layers for w in layer.weights}
    changed, expected, decoder_changed = set(), set(), False
    for index, variable in enumerate(model.variables):
        moved = not np.array_equal(before[index], after[index])
        layer = layer_of.get(id(variable))
        if layer is None:
            decoder_changed |= moved and "/decoder/" in variable.path
            continue
        if moved:
            changed.add(variable.path)
        if layer.name.startswith(TOP_BLOCKS) and not isinstance(
            layer, keras.layers.BatchNormalization
        ):
            expected.add(variable.path)
    assert len(layer_of) == 265 - 20  # every encoder weight was compared
    assert changed == expected and len(expected) == 4
    assert decoder_changed


def head_kernel(values, config) -> np.ndarray:
    paths = [v.path for v in untrained_model(config).variables]
    return values[paths.index("head_conv/kernel")]


def test_the_fine_tuned_model_loads_and_captions_offline(fine_tuned, monkeypatch):
    config, _ = fine_tuned
    run_dir = run_dir_of(config)

    def no_weights_package(*args, **kwargs):
        raise AssertionError("a saved model must not ask for the ImageNet weights again")

    monkeypatch.setattr(torch_port, "offline_weights_file", no_weights_package)
    captioner = Captioner.from_run_dir(run_dir)
    # stage 2 was better, so model.keras holds its encoder weights
    head = captioner.model.encoder.model.get_layer("head_conv").kernel
    fine_tuned_head = head_kernel(checkpoint_values(run_dir / FINE_TUNE_CHECKPOINT_FILE), config)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(head), fine_tuned_head)
    images = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    captions = captioner.caption(images)
    assert len(captions) == 2 and all(c.alphas.shape[1:] == (2, 2) for c in captions)


def test_a_run_killed_in_the_second_stage_resumes_there(dataset, monkeypatch):
    config = tiny_config(dataset, "resumed", fine_tune_epochs=2)
    run_dir = run_dir_of(config)
    # stage 2 never beats stage 1 here: model.keras must stay the stage-1 model
    spy = Spy(monkeypatch, scores=[10.0, 5.0, 7.0], interrupt_at_image_step=4, decode=False)
    with pytest.raises(Interrupted):
        train(config, log=spy.log, verbose=0)
    assert spy.ranks == [3, 3, 4, 4, 4]

    spy = Spy(monkeypatch, scores=[7.0], decode=False)
    train(config, log=spy.log, verbose=0)
    assert spy.ranks == [4]  # stage 1 is not trained again, stage 2 finishes its last batch
    assert "resuming fine-tuning from epoch 3, batch 1" in spy.messages
    with np.load(run_dir / FINE_TUNE_CHECKPOINT_FILE) as data:
        state = json.loads(str(data["state"]))
    assert state["finished"] and state["global_step"] == 4 and state["epoch"] == 3
    history = json.loads((run_dir / "history.json").read_text())
    assert [(row["epoch"], row["stage"], row["best"]) for row in history] == [
        (1, 1, True),
        (2, 2, False),
        (3, 2, False),
    ]
    first_stage_head = head_kernel(checkpoint_values(run_dir / CHECKPOINT_FILE), config)
    best = load_model_file(run_dir / "model.keras").encoder.model.get_layer("head_conv").kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(best), first_stage_head)

    spy = Spy(monkeypatch, scores=[], decode=False)
    train(config, log=spy.log, verbose=0)
    assert spy.ranks == [] and f"{run_dir}: the run is already complete" in spy.messages


def test_too_many_blocks_are_refused_before_training(dataset):
    config = tiny_config(dataset, "too_many", fine_tune_blocks=19)
    with pytest.raises(ValueError, match=r"top 19 blocks: .*efficientnet_lite0 has 18 blocks"):
        train(config, log=lambda message: None, verbose=0)
    assert not (run_dir_of(config) / "model.keras").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"encoder": "small_cnn"}, "small_cnn is trained with the decoder from the start"),
        ({"encoder": "resnet50"}, "resnet50 has no known blocks"),
        ({"train_encoder": True}, "the whole encoder already trains in the first stage"),
        ({"fine_tune_blocks": -1}, "must be 0 .no fine-tuning. or more"),
        ({"fine_tune_epochs": 0}, "--fine-tune-epochs must be at least 1"),
        ({"fine_tune_learning_rate": 0.0}, "--fine-tune-learning-rate must be positive"),
    ],
)
def test_settings_that_cannot_fine_tune_are_refused(changes, message):
    config = TrainConfig(**{"encoder": "efficientnet_lite0", "fine_tune_blocks": 2, **changes})
    with pytest.raises(ValueError, match=message):
        check_fine_tuning(config)
    check_fine_tuning(dataclasses.replace(config, fine_tune_blocks=0))  # no stage 2: fine


def test_the_command_line_refuses_fine_tuning_small_cnn_in_one_line(tmp_path, capsys):
    argv = ["train", "--encoder", "small_cnn", "--fine-tune-blocks", "2"]
    code = main([*argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("captioner: error: --fine-tune-blocks: the encoder small_cnn")
    assert not (tmp_path / "run").exists()
