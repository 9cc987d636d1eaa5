"""Reading PyTorch state-dict files with the standard library and NumPy only.

Both layouts that `torch.save` writes are read:

- the zip layout (torch >= 1.6): an archive holding `PREFIX/data.pkl` (the pickled object)
  and one raw little- or big-endian record per storage in `PREFIX/data/KEY`;
- the legacy layout: five consecutive pickles (a magic number, the protocol version, system
  info, the object, the list of storage keys) followed, per storage, by its element count
  (int64) and its raw bytes.

The pickled object is rebuilt by a restricted unpickler: it knows how to make tensors from
storages (and the `OrderedDict` that holds them) and refuses every other class or function
a file asks for, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class name -> NumPy dtype. "bfloat16" is widened to float32 on reading.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


class TorchWeightsError(ValueError):
    """A state-dict file that cannot be read or is refused; the message names the file."""


class _StorageType:
    """Stand-in for a `torch.*Storage` class: only its element type matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else self.dtype.itemsize


class _Storage:
    """A flat typed buffer; in the legacy layout its bytes arrive after the object pickle."""

    def __init__(self, storage_type: _StorageType, numel: int):
        self.storage_type = storage_type
        self.numel = numel
        self.array: np.ndarray | None = None

    def fill(self, raw: bytes, byteorder: str) -> None:
        """Sets the contents from raw bytes in `byteorder` ("little" or "big")."""
        expected = self.numel * self.storage_type.itemsize
        if len(raw) != expected:
            raise ValueError(f"storage holds {len(raw)} bytes, expected {expected}")
        order = "<" if byteorder == "little" else ">"
        if self.storage_type.dtype == "bfloat16":
            # bfloat16 is the top half of a float32: shift its bits into place.
            bits = np.frombuffer(raw, np.dtype(f"{order}u2")).astype(np.uint32) << 16
            self.array = bits.view(np.float32)
        else:
            dtype = self.storage_type.dtype.newbyteorder(order)
            self.array = np.frombuffer(raw, dtype).astype(self.storage_type.dtype.newbyteorder("="))


class _StorageView:
    """A slice of a legacy storage (old files could share one storage between views)."""

    def __init__(self, base: _Storage, offset: int, numel: int):
        self.base, self.offset, self.numel = base, offset, numel


class _TensorRef:
    """A tensor to materialise once its storage is filled."""

    def __init__(self, storage, offset: int, size, stride):
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            storage, offset = storage.base, offset + storage.offset
        flat = storage.array
        if flat is None:
            raise ValueError("a tensor refers to a storage that the file never provides")
        if not self.size:
            if offset >= flat.size:
                raise ValueError("a tensor reaches past the end of its storage")
            return np.array(flat[offset])  # 0-d
        # Strides and offsets are checked non-negative, so this bounds every element read.
        extent = offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if min(self.size) > 0 and extent > flat.size:
            raise ValueError("a tensor reaches past the end of its storage")
        strides = tuple(s * flat.itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(flat[offset:], self.size, strides, writeable=False)
        return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, (_Storage, _StorageView)):
        raise TypeError(f"a tensor built from {type(storage).__name__}, not a storage")
    numbers = [storage_offset, *size, *stride]
    if len(size) != len(stride) or not all(isinstance(n, int) and n >= 0 for n in numbers):
        raise ValueError(
            f"bad tensor layout: offset {storage_offset}, size {size}, stride {stride}"
        )
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_ignored):
    return data


# (module, name) -> what the unpickler gives for it. Nothing else can be loaded.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data, tensors and storages; refuses any other global."""

    def __init__(self, file: BinaryIO, source: str, storages: dict[str, _Storage] | None = None):
        super().__init__(file)
        self.source = source
        self.storages = storages if storages is not None else {}

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise TorchWeightsError(
                f"{self.source}: refused to load global '{module}.{name}': a state-dict file "
                "should hold only tensors (the file may be malicious or not a state dict)"
            ) from None

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchWeightsError(f"{self.source}: unsupported persistent id {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType):
            raise TorchWeightsError(f"{self.source}: storage of unknown type {storage_type!r:.80}")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(storage_type, int(numel))
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # legacy: (view_key, offset, view_numel)
            return _StorageView(storage, int(view[1]), int(view[2]))
        return storage


def _flatten(value, prefix: str, source: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(value, _TensorRef):
        try:
            out[prefix] = value.to_numpy()
        except ValueError as error:
            raise TorchWeightsError(f"{source}: tensor {prefix!r}: {error}") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), source, out)


def _load_zip(path: Path) -> tuple[object, dict[str, _Storage]]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = sorted((n for n in names if n.endswith("data.pkl")), key=lambda n: n.count("/"))
        if not pickles:
            raise TorchWeightsError(f"{path}: zip file without data.pkl: not a torch file")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder_name = prefix + "byteorder"
        byteorder = "little"
        if byteorder_name in names:
            byteorder = archive.read(byteorder_name).decode().strip()
        storages: dict[str, _Storage] = {}
        with archive.open(pickles[0]) as handle:
            obj = _RestrictedUnpickler(io.BytesIO(handle.read()), str(path), storages).load()
        for key, storage in storages.items():
            record = f"{prefix}data/{key}"
            if record not in names:
                raise TorchWeightsError(f"{path}: storage record {record} is missing")
            try:
                storage.fill(archive.read(record), byteorder)
            except ValueError as error:
                raise TorchWeightsError(f"{path}: storage {key}: {error}") from None
    return obj, storages


def _load_legacy(path: Path) -> tuple[object, dict[str, _Storage]]:
    source = str(path)
    with open(path, "rb") as handle:
        magic = _RestrictedUnpickler(handle, source).load()
        if magic != _LEGACY_MAGIC:
            raise TorchWeightsError(f"{path}: not a torch file (wrong magic number)")
        protocol = _RestrictedUnpickler(handle, source).load()
        if protocol != _LEGACY_PROTOCOL:
            raise TorchWeightsError(f"{path}: unsupported legacy protocol {protocol!r}")
        sys_info = _RestrictedUnpickler(handle, source).load()
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
        byteorder = "little" if little else "big"
        storages: dict[str, _Storage] = {}
        obj = _RestrictedUnpickler(handle, source, storages).load()
        keys = _RestrictedUnpickler(handle, source).load()
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise TorchWeightsError(f"{path}: storage {key} is not used by any tensor")
            header = handle.read(8)
            if len(header) != 8:
                raise TorchWeightsError(f"{path}: file ends inside storage {key}")
            (numel,) = struct.unpack("<q" if little else ">q", header)
            raw = handle.read(numel * storage.storage_type.itemsize)
            try:
                storage.numel = numel
                storage.fill(raw, byteorder)
            except ValueError as error:
                raise TorchWeightsError(f"{path}: storage {key}: {error}") from None
    return obj, storages


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a PyTorch state-dict file (zip or legacy layout) without torch.

    Args:
        path: a file written by `torch.save(model.state_dict(), path)`. Nested mappings
            (e.g. `{"state_dict": {...}}`) are flattened with dotted names; values that are
            not tensors are dropped.

    Returns:
        {parameter name: array}, in the file's order, with the tensors' shapes and dtypes
        (bfloat16 widened to float32).

    Raises:
        TorchWeightsError: the file is missing, malformed, or asks for anything but tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise TorchWeightsError(f"{path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            obj, _ = _load_zip(path)
        else:
            obj, _ = _load_legacy(path)
    except TorchWeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError) as error:
        raise TorchWeightsError(f"{path}: not a readable torch file ({error})") from None
    tensors: dict[str, np.ndarray] = {}
    _flatten(obj, "", str(path), tensors)
    if not tensors:
        raise TorchWeightsError(f"{path}: holds no tensors")
    return tensors
