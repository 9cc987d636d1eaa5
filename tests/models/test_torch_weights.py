"""Reading torch state-dict files without torch, and refusing anything but tensors."""

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from captioner.models.torch_weights import TorchWeightsError, load_state_dict
from tests.helpers import FIXTURES

STATE_DICTS = FIXTURES / "torch_state_dicts"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_reads_both_layouts_that_torch_writes(layout):
    # Written by tools/make_torch_state_dict_fixtures.py with torch.save.
    tensors = load_state_dict(STATE_DICTS / f"tiny_{layout}.pth")
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert list(tensors) == [
        "conv.weight",
        "shared.t",
        "shared.row",
        "half",
        "bf16",
        "steps",
        "mask",
        "param",
    ]
    expected = {
        "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
        "shared.t": base.T,
        "shared.row": base[1],
        "half": np.array([0.5, -2.0], np.float16),
        "bf16": np.array([1.5, -3.0], np.float32),
        "steps": np.array(7, np.int64),
        "mask": np.array([True, False]),
        "param": np.ones(2, np.float32),
    }
    for name, value in expected.items():
        assert isinstance(tensors[name], np.ndarray), name
        assert tensors[name].dtype == value.dtype, name
        np.testing.assert_array_equal(tensors[name], value, err_msg=name)


class _RunsACommand:
    """Unpickling this calls os.system: what a malicious "weights" file does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _malicious_payload(marker: Path) -> bytes:
    return pickle.dumps({"weight": _RunsACommand(f"touch {marker}")}, protocol=2)


def test_refuses_a_legacy_file_asking_for_os_system(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    header = b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, 1001, {}))
    path.write_bytes(header + _malicious_payload(marker))
    with pytest.raises(TorchWeightsError, match=r"refused to load global '\w+\.system'") as info:
        load_state_dict(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_refuses_a_zip_file_asking_for_os_system(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", _malicious_payload(marker))
        archive.writestr("evil/version", "3\n")
    with pytest.raises(TorchWeightsError, match=r"evil\.pth: refused to load global") as info:
        load_state_dict(path)
    assert "system" in str(info.value)
    assert not marker.exists()


def test_refuses_an_arbitrary_class_in_the_magic_number_pickle(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(io.BytesIO(b"x"), protocol=2))
    with pytest.raises(TorchWeightsError, match=r"refused to load global '_io\.BytesIO'"):
        load_state_dict(path)


def test_broken_files_are_named_in_the_error(tmp_path):
    with pytest.raises(TorchWeightsError, match="missing.pth: no such file"):
        load_state_dict(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(TorchWeightsError, match="garbage.pth"):
        load_state_dict(garbage)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((STATE_DICTS / "tiny_legacy.pth").read_bytes()[:-10])
    with pytest.raises(TorchWeightsError, match="truncated.pth"):
        load_state_dict(truncated)
    no_pickle = tmp_path / "archive.pth"
    with zipfile.ZipFile(no_pickle, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(TorchWeightsError, match="archive.pth: zip file without data.pkl"):
        load_state_dict(no_pickle)


def _string(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _int_tuple(values) -> bytes:
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"  # BININT


def _crafted_zip(path: Path, numel: int, offset: int, size, stride) -> None:
    """A zip-layout file, pickled opcode by opcode, with one float tensor named "w"."""
    storage = (
        b"(" + _string("storage") + b"ctorch\nFloatStorage\n" + _string("0") + _string("cpu")
        + b"J" + struct.pack("<i", numel) + b"tQ"  # a tuple, then BINPERSID
    )  # fmt: skip
    tensor = (
        b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"J" + struct.pack("<i", offset)
        + _int_tuple(size) + _int_tuple(stride) + b"\x89ccollections\nOrderedDict\n)RtR"
    )  # fmt: skip
    data = b"\x80\x02}" + _string("w") + tensor + b"s."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("crafted/data.pkl", data)
        archive.writestr("crafted/data/0", np.arange(numel, dtype="<f4").tobytes())


def test_reads_a_hand_written_file_and_checks_tensor_bounds(tmp_path):
    path = tmp_path / "crafted.pth"
    _crafted_zip(path, numel=6, offset=1, size=(2, 2), stride=(1, 2))
    np.testing.assert_array_equal(load_state_dict(path)["w"], [[1, 3], [2, 4]])
    _crafted_zip(path, numel=6, offset=3, size=(2, 2), stride=(2, 1))  # needs element 6
    with pytest.raises(TorchWeightsError, match="'w': a tensor reaches past the end"):
        load_state_dict(path)
    _crafted_zip(path, numel=6, offset=5, size=(2,), stride=(-1,))
    with pytest.raises(TorchWeightsError, match="crafted.pth: .*bad tensor layout"):
        load_state_dict(path)
