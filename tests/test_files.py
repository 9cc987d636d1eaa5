"""Safe file reading and writing: clear errors, and failed writes that keep the old file."""

import errno

import keras
import numpy as np
import pytest

from captioner.config import TrainConfig
from captioner.data.vocabulary import Vocabulary
from captioner.errors import CaptionerError, DatasetError
from captioner.files import (
    atomic_path,
    read_json,
    read_text,
    write_bytes_atomic,
    write_json_atomic,
)


def test_json_errors_name_the_file_line_and_column(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{\n  "a": 1,\n  "b": tru\n}')
    with pytest.raises(DatasetError, match=r"d.json: invalid JSON at line 3 column 8"):
        read_json(path, DatasetError)


def test_non_utf8_text_names_the_first_bad_byte(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"first line\nsecond caf" + b"\xe9 line")
    with pytest.raises(CaptionerError, match=r"byte 0xe9 at line 2 column 11"):
        read_text(path)
    path.write_bytes(b"\xef\xbb\xbf{}")  # a UTF-8 byte-order mark is fine
    assert read_json(path) == {}


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "history.json"
    write_json_atomic(path, [1, 2])
    monkeypatch.setattr("captioner.files.os.fsync", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(path, [1, 2, 3])
    assert read_json(path) == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]  # no partial file left


def test_bytes_replace_the_file_and_a_failed_rename_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    write_bytes_atomic(path, b"old")
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    monkeypatch.setattr("captioner.files.os.replace", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_bytes_atomic(path, b"half")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]  # no partial file left


def test_config_and_vocabulary_survive_a_full_disk(tmp_path, monkeypatch):
    TrainConfig(epochs=3).save(tmp_path / "config.json")
    Vocabulary(["a", "dog"]).save(tmp_path / "vocab.json")
    monkeypatch.setattr("captioner.files.os.fsync", _disk_full)
    with pytest.raises(OSError):
        TrainConfig(epochs=9).save(tmp_path / "config.json")
    with pytest.raises(OSError):
        Vocabulary(["a", "cat"]).save(tmp_path / "vocab.json")
    assert TrainConfig.load(tmp_path / "config.json").epochs == 3
    assert Vocabulary.load(tmp_path / "vocab.json").itos[-1] == "dog"


def test_an_interrupted_model_save_keeps_the_last_model(tmp_path):
    path = tmp_path / "model.keras"
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones")])
    model.save(path)
    model.layers[0].kernel.assign(np.zeros((2, 1)))
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as partial:
            model.save(partial)
            raise KeyboardInterrupt  # Ctrl-C after the new file is written, before it replaces
    kept = keras.saving.load_model(path)
    np.testing.assert_array_equal(kept.layers[0].kernel.numpy(), np.ones((2, 1)))
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    with atomic_path(path) as partial:
        model.save(partial)
    assert not keras.saving.load_model(path).layers[0].kernel.numpy().any()
