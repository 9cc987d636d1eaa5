"""Loading run directories: every broken or unsafe file is a RunDirectoryError naming it."""

import json
import shutil
import zipfile

import keras
import numpy as np
import pytest

from captioner.config import DECODING_DEFAULTS
from captioner.errors import RunDirectoryError
from captioner.inference.captioner import Captioner


def _copy(untrained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(untrained_run, run_dir)
    return run_dir


def test_a_untrained_run_directory_loads_and_captions(untrained_run):
    captioner = Captioner.from_run_dir(untrained_run)
    captions = captioner.caption(np.zeros((2, 32, 32, 3), np.uint8))
    assert len(captions) == 2 and all(isinstance(c.text, str) for c in captions)


def test_the_run_s_decoding_defaults_fill_what_is_not_given(untrained_run, tmp_path):
    run_dir = _copy(untrained_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "data_kind": "photos"}))
    captioner = Captioner.from_run_dir(run_dir, decoding_for="evaluate")
    decoding = (captioner.beam_size, captioner.length_penalty, captioner.no_repeat_ngram)
    assert decoding == DECODING_DEFAULTS["photos"]["evaluate"]
    given = Captioner.from_run_dir(
        run_dir, decoding_for="caption", beam_size=2, length_penalty=None, no_repeat_ngram=4
    )
    photo_penalty = DECODING_DEFAULTS["photos"]["caption"][1]
    assert (given.beam_size, given.length_penalty, given.no_repeat_ngram) == (2, photo_penalty, 4)
    plain = Captioner.from_run_dir(untrained_run, decoding_for="evaluate")  # synthetic: greedy
    assert (plain.beam_size, plain.length_penalty) == (1, 0.0)
    unset = Captioner.from_run_dir(run_dir)  # no command: the constructor's defaults
    assert (unset.beam_size, unset.length_penalty) == (1, 0.0)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_a_member(path):
    # Flip bytes inside the stored weights: the archive's checksums catch it.
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("model.weights.h5")
    data = bytearray(path.read_bytes())
    start = member.header_offset + 30 + len(member.filename) + 200
    data[start : start + 16] = bytes(b ^ 0xFF for b in data[start : start + 16])
    path.write_bytes(bytes(data))


def _save_keras_model(path, layer):
    keras.Sequential([keras.Input((3,)), layer]).save(path)


BROKEN_RUNS = {
    "truncated model": ("model.keras", _truncate, "not a .keras model file"),
    "model is text": (
        "model.keras",
        lambda p: p.write_text("weights"),
        "not a .keras model file",
    ),
    "damaged model": ("model.keras", _corrupt_a_member, "damaged model file"),
    "model runs code": (
        "model.keras",
        lambda p: _save_keras_model(p, keras.layers.Lambda(lambda x: x * 2)),
        "refused by Keras safe mode",
    ),
    "another kind of model": (
        "model.keras",
        lambda p: _save_keras_model(p, keras.layers.Dense(2)),
        "a Sequential, not a captioning model",
    ),
    "vocabulary of another run": (
        "vocab.json",
        lambda p: p.write_text(json.dumps({"itos": ["<pad>", "<start>", "<end>", "<unk>", "x"]})),
        "5 words, but model.keras was built for 9",
    ),
    "vocabulary JSON syntax": ("vocab.json", lambda p: p.write_text('{"itos": ['), "line 1 column"),
    "vocabulary without words": ("vocab.json", lambda p: p.write_text("[]"), "not a captioner"),
    "config of another version": (
        "config.json",
        lambda p: p.write_text('{"config_version": 99}'),
        "config version 99",
    ),
    "config without version": ("config.json", lambda p: p.write_text("{}"), "no config_version"),
    "config not UTF-8": (
        "config.json",
        lambda p: p.write_bytes(b'{\n "data": "caf\xe9"}'),
        "not UTF-8 text (byte 0xe9 at line 2 column 14)",
    ),
    "model missing": ("model.keras", lambda p: p.unlink(), "not a run directory (no model.keras)"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_RUNS))
def test_broken_run_directories_give_one_clear_error(untrained_run, tmp_path, case):
    name, damage, reason = BROKEN_RUNS[case]
    run_dir = _copy(untrained_run, tmp_path)
    damage(run_dir / name)
    with pytest.raises(RunDirectoryError) as error:
        Captioner.from_run_dir(run_dir)
    message = str(error.value)
    assert reason in message
    assert message.startswith(str(run_dir)) and "\n" not in message


def test_a_missing_run_directory_is_named(tmp_path):
    with pytest.raises(RunDirectoryError, match="nowhere: no such run directory"):
        Captioner.from_run_dir(tmp_path / "nowhere")
