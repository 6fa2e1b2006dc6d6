"""Read a PyTorch ``state_dict`` file (``.pth``) into NumPy arrays, without torch and
without running any code the file names.

A ``.pth`` file is a pickle, and unpickling runs whatever callable the pickle names: an
ordinary ``torch.load`` of a hostile file can run ``os.system``. This reader overrides
:meth:`pickle.Unpickler.find_class` with an allow-list -- ``collections.OrderedDict``,
torch's tensor rebuild functions and its typed storage classes -- each replaced by an
inert stand-in defined here; any other global, and any persistent id other than a
storage, raises :class:`UnsafeWeightsError` before anything is called. What comes out is
checked too: a flat mapping of string names to tensors, every tensor inside its storage.

Both of torch's formats are read: the zip archive (``torch.save`` since 1.6: ``data.pkl``
plus one entry per storage) and the legacy stream (magic number, protocol version and
system-info pickles, the main pickle, the storage keys, then each storage's bytes after
an int64 element count).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# torch's typed storages and the little-endian NumPy dtype of their elements.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
MAX_DIMENSIONS = 8


class UnsafeWeightsError(ValueError):
    """A weight file that is not a plain tensor ``state_dict``, or that is damaged."""


class _Inert:
    """Base of every object the unpickler hands out: no attributes settable by the pickle.

    A pickle's BUILD opcode calls ``__setstate__``, which refuses, so a file cannot alter
    a stand-in after it was created (say, enlarge a tensor's shape once it was checked).
    """

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafeWeightsError("the weight file tries to set state on a tensor, storage or global")

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} is not picklable")


class _StorageType(_Inert):
    """Stand-in for a torch storage class (``torch.FloatStorage``): only its name."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _StorageRef(_Inert):
    """A storage named by a persistent id: its key, element dtype and count, then its data."""

    __slots__ = ("key", "dtype", "numel", "data")

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel, self.data = key, dtype, numel, None


class _TensorRef(_Inert):
    """What ``torch._utils._rebuild_tensor_v2`` would build: a strided view of a storage."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def to_numpy(self) -> np.ndarray:
        """A C-contiguous copy of the tensor, after checking it lies inside its storage."""
        if not isinstance(self.storage, _StorageRef) or self.storage.data is None:
            raise UnsafeWeightsError("a tensor whose storage is not a storage")
        for name, values in (("size", self.shape), ("stride", self.stride)):
            if not (isinstance(values, tuple) and len(values) <= MAX_DIMENSIONS
                    and all(type(v) is int and v >= 0 for v in values)):
                raise UnsafeWeightsError(f"a tensor with an invalid {name} {values!r:.80}")
        if type(self.offset) is not int or self.offset < 0 or len(self.shape) != len(self.stride):
            raise UnsafeWeightsError("a tensor with an invalid storage offset or stride")
        flat = self.storage.data
        if 0 in self.shape:
            return np.zeros(self.shape, flat.dtype)
        last = self.offset + sum((size - 1) * step for size, step in zip(self.shape, self.stride))
        if last >= len(flat):
            raise UnsafeWeightsError(f"a tensor reaches element {last} of a storage of {len(flat)}")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.shape, strides=[step * flat.dtype.itemsize for step in self.stride],
            writeable=False,
        )
        return np.ascontiguousarray(view)


class _RebuildTensor(_Inert):
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` (and the older ``_rebuild_tensor``)."""

    __slots__ = ()

    def __call__(self, storage, offset, shape, stride, *unused):
        return _TensorRef(storage, offset, shape, stride)


class _NewOrderedDict(_Inert):
    """Stand-in for ``collections.OrderedDict``: REDUCE calls it with no argument and the
    items arrive through SETITEMS."""

    __slots__ = ()

    def __call__(self, *args):
        if args:
            raise UnsafeWeightsError("OrderedDict called with arguments")
        return OrderedDict()


def _allowed_global(module: str, name: str):
    """A fresh stand-in for an allowed global (fresh, so nothing is shared between files)."""
    if (module, name) == ("collections", "OrderedDict"):
        return _NewOrderedDict()
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
        return _RebuildTensor()
    if module == "torch" and name in STORAGE_DTYPES:
        return _StorageType(name)
    raise UnsafeWeightsError(
        f"the weight file names {module}.{name}; only tensors, storages and OrderedDict are allowed"
    )


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that knows only the allowed globals and storage persistent ids."""

    def __init__(self, file, storages: dict, legacy: bool):
        super().__init__(file)
        self._storages = storages
        self._legacy = legacy

    def find_class(self, module, name):
        return _allowed_global(module, name)

    def persistent_load(self, saved_id):
        # zip: ('storage', type, key, location, numel); legacy adds view metadata (None).
        expected = 6 if self._legacy else 5
        if not (isinstance(saved_id, tuple) and len(saved_id) == expected and saved_id[0] == "storage"):
            raise UnsafeWeightsError(f"unsupported persistent id {saved_id!r:.80}")
        storage_type, key, numel = saved_id[1], saved_id[2], saved_id[4]
        if not (isinstance(storage_type, _StorageType) and isinstance(key, str)
                and type(numel) is int and numel >= 0):
            raise UnsafeWeightsError(f"malformed storage reference {saved_id!r:.80}")
        dtype = STORAGE_DTYPES[storage_type.name]
        if self._legacy and saved_id[5] is not None:
            raise UnsafeWeightsError("storage views are not supported")
        known = self._storages.get(key)
        if known is None:
            known = self._storages[key] = _StorageRef(key, dtype, numel)
        elif known.dtype != dtype or known.numel != numel:
            raise UnsafeWeightsError(f"storage {key} is described twice, differently")
        return known


def _unpickle(data: bytes, storages: dict, legacy: bool):
    try:
        return _RestrictedUnpickler(io.BytesIO(data), storages, legacy).load()
    except UnsafeWeightsError:
        raise
    except Exception as error:  # truncated or malformed pickles raise many types
        raise UnsafeWeightsError(f"not a readable state_dict pickle: {error}") from None


def _plain_pickle(stream: io.BytesIO):
    """One of the legacy header pickles: numbers, strings and dicts only (no globals)."""
    unpickler = _RestrictedUnpickler(stream, {}, legacy=True)
    unpickler.find_class = _refuse_global
    unpickler.persistent_load = _refuse_global
    try:
        return unpickler.load()
    except UnsafeWeightsError:
        raise
    except Exception as error:
        raise UnsafeWeightsError(f"not a PyTorch legacy file: {error}") from None


def _refuse_global(*args):
    raise UnsafeWeightsError("the file's header names a global or persistent object")


def _read_zip(path: Path) -> tuple[object, dict]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("/data.pkl") or name == "data.pkl"]
        if len(pickles) != 1:
            raise UnsafeWeightsError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        storages: dict[str, _StorageRef] = {}
        result = _unpickle(archive.read(pickles[0]), storages, legacy=False)
        for key, storage in storages.items():
            member = f"{prefix}data/{key}"
            if member not in names:
                raise UnsafeWeightsError(f"{path}: storage {key} is missing from the archive")
            raw = archive.read(member)
            storage.data = _storage_array(raw, storage, path)
    return result, storages


def _read_legacy(path: Path) -> tuple[object, dict]:
    stream = io.BytesIO(path.read_bytes())
    if _plain_pickle(stream) != LEGACY_MAGIC:
        raise UnsafeWeightsError(f"{path} is neither a zip archive nor a PyTorch legacy file")
    if _plain_pickle(stream) != LEGACY_PROTOCOL:
        raise UnsafeWeightsError(f"{path}: unsupported PyTorch legacy protocol")
    system = _plain_pickle(stream)
    if not (isinstance(system, dict) and system.get("little_endian") is True):
        raise UnsafeWeightsError(f"{path}: only little-endian files are supported")
    storages: dict[str, _StorageRef] = {}
    unpickler = _RestrictedUnpickler(stream, storages, legacy=True)
    try:
        result = unpickler.load()
    except UnsafeWeightsError:
        raise
    except Exception as error:
        raise UnsafeWeightsError(f"{path}: not a readable state_dict pickle: {error}") from None
    keys = _plain_pickle(stream)
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys) and set(keys) == set(storages)):
        raise UnsafeWeightsError(f"{path}: the storage list does not match the tensors")
    raw = stream.getbuffer()
    position = stream.tell()
    for key in keys:
        storage = storages[key]
        if position + 8 > len(raw):
            raise UnsafeWeightsError(f"{path} is truncated (storage {key})")
        count = int(np.frombuffer(raw, "<i8", 1, position)[0])
        if count != storage.numel:
            raise UnsafeWeightsError(f"{path}: storage {key} holds {count} elements, expected {storage.numel}")
        position += 8
        end = position + count * storage.dtype.itemsize
        storage.data = _storage_array(bytes(raw[position:end]), storage, path)
        position = end
    del raw
    return result, storages


def _storage_array(raw: bytes, storage: _StorageRef, path: Path) -> np.ndarray:
    if len(raw) != storage.numel * storage.dtype.itemsize:
        raise UnsafeWeightsError(f"{path} is truncated: storage {storage.key} has {len(raw)} bytes, "
                                 f"expected {storage.numel * storage.dtype.itemsize}")
    return np.frombuffer(raw, storage.dtype)


def load_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of a ``.pth`` state_dict as ``{name: float array}``, in file order.

    Raises :class:`UnsafeWeightsError` for anything but a flat mapping of names to tensors
    built only from allowed globals; nothing the file names is ever called.
    """
    path = Path(path)
    result, _ = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    if not isinstance(result, dict):
        raise UnsafeWeightsError(f"{path}: expected a state_dict (a mapping), found {type(result).__name__}")
    tensors = {}
    for name, value in result.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise UnsafeWeightsError(f"{path}: entry {name!r:.60} is not a named tensor")
        tensors[name] = value.to_numpy()
    return tensors
