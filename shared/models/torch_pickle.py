"""Read PyTorch ``.pth`` state dicts into NumPy arrays without importing torch.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the pickle
names.  Loading a third-party checkpoint with ``torch.load`` (or plain
``pickle``) therefore means trusting it completely.  Here a restricted
unpickler resolves only the handful of globals a state dict needs, each mapped
to a harmless local stand-in; any other global (``os.system``,
``builtins.eval``, ...) raises :class:`UnsafePickleError` before it can run.

Two on-disk layouts are supported:

* legacy (torch < 1.6): consecutive pickles -- magic number, protocol version,
  ``sys_info``, the object pickle (tensors reference storages through
  persistent ids), the list of storage keys -- followed by each storage's raw
  little-endian bytes, prefixed with an 8-byte element count;
* zip (torch >= 1.6): ``<root>/data.pkl`` plus one ``<root>/data/<key>``
  member per storage.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["UnsafePickleError", "load_torch_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle referenced a global outside the allow-list (or was malformed)."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only the dtype matters."""

    name: str
    dtype: np.dtype


_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class _Storage:
    """A flat buffer; filled after the object pickle has been read (legacy)."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


@dataclass
class _LazyTensor:
    """Result of ``_rebuild_tensor_v2``; materialised once storages are read."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise UnsafePickleError("tensor references a storage that was never read")
        if len(self.size) != len(self.stride) or any(s < 0 for s in self.size):
            raise UnsafePickleError("invalid tensor geometry")
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, dtype=data.dtype)
        last = self.offset + sum((n - 1) * st for n, st in zip(self.size, self.stride, strict=True))
        if self.offset < 0 or any(st < 0 for st in self.stride) or last >= data.size:
            raise UnsafePickleError("tensor view exceeds its storage")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(st * item for st in self.stride),
            writeable=False,
        )
        return np.array(view, dtype=data.dtype.newbyteorder("="), order="C", copy=True)


def _rebuild_tensor_v2(
    storage: _Storage,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _LazyTensor:
    if not isinstance(storage, _Storage):
        raise UnsafePickleError("_rebuild_tensor_v2 called without a storage")
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, requires_grad: bool = False, backward_hooks: Any = None) -> Any:
    return data


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    # Only allow construction from nothing or pairs; no attribute smuggling.
    return collections.OrderedDict(*args)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{
        ("torch", name): _StorageType(name, np.dtype(code))
        for name, code in _STORAGE_DTYPES.items()
    },
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` consults a fixed allow-list.

    ``persistent_load`` turns ``('storage', type, key, location, numel, ...)``
    ids into shared :class:`_Storage` placeholders keyed by ``key``.
    """

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage] | None = None) -> None:
        super().__init__(file)
        self.storages = storages if storages is not None else {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing to load global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafePickleError(f"unsupported persistent id {pid!r}")
        if len(pid) < 5:
            raise UnsafePickleError("malformed storage id")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            raise UnsafePickleError("storage views (torch < 0.4 format) are not supported")
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"unknown storage type {storage_type!r}")
        key = str(key)
        storage = self.storages.get(key)
        if storage is None:
            storage = _Storage(storage_type.dtype, int(numel))
            self.storages[key] = storage
        return storage


def _materialize(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        return {k: _materialize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _load_legacy(f: BinaryIO) -> Any:
    magic = _RestrictedUnpickler(f).load()
    if magic != _LEGACY_MAGIC:
        raise UnsafePickleError("not a PyTorch legacy checkpoint (bad magic number)")
    protocol = _RestrictedUnpickler(f).load()
    if protocol != _LEGACY_PROTOCOL:
        raise UnsafePickleError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = _RestrictedUnpickler(f).load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise UnsafePickleError("big-endian checkpoints are not supported")

    unpickler = _RestrictedUnpickler(f)
    result = unpickler.load()
    keys = _RestrictedUnpickler(f).load()
    if not isinstance(keys, list):
        raise UnsafePickleError("storage key list missing")
    for key in keys:
        storage = unpickler.storages.get(str(key))
        if storage is None:
            raise UnsafePickleError(f"data for unknown storage {key!r}")
        header = f.read(8)
        if len(header) != 8:
            raise UnsafePickleError("truncated storage header")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise UnsafePickleError(f"storage {key!r}: size {numel} != declared {storage.numel}")
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise UnsafePickleError(f"storage {key!r} truncated")
        storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    return _materialize(result)


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise UnsafePickleError("zip checkpoint without a unique data.pkl")
        root = pkl[0][: -len("data.pkl")]
        byteorder = root + "byteorder"
        if byteorder in names and zf.read(byteorder).strip() != b"little":
            raise UnsafePickleError("big-endian checkpoints are not supported")
        unpickler = _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])))
        result = unpickler.load()
        for key, storage in unpickler.storages.items():
            raw = zf.read(f"{root}data/{key}")
            nbytes = storage.numel * storage.dtype.itemsize
            if len(raw) < nbytes:
                raise UnsafePickleError(f"storage {key!r} truncated")
            storage.data = np.frombuffer(raw[:nbytes], dtype=storage.dtype.newbyteorder("<"))
    return _materialize(result)


def load_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load a ``.pth`` state dict (legacy or zip layout) as ``{name: ndarray}``.

    Raises :class:`UnsafePickleError` if the file names any global that is not
    needed to rebuild plain tensors, so a malicious file cannot execute code.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        result = _load_zip(path)
    else:
        with path.open("rb") as f:
            result = _load_legacy(f)
    if (
        isinstance(result, dict)
        and "state_dict" in result
        and isinstance(result["state_dict"], dict)
    ):
        result = result["state_dict"]
    if not isinstance(result, dict):
        raise UnsafePickleError(f"expected a state dict, got {type(result).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, value in result.items():
        if isinstance(value, np.ndarray):
            out[str(name)] = value
    return out
