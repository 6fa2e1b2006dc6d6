"""The restricted .pth reader: real weights load; hostile or damaged files are refused
without running anything they name."""

import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from fastretrieve.embed import efficientnet
from fastretrieve.embed.builtin import weight_path
from fastretrieve.embed.torch_weights import LEGACY_MAGIC, LEGACY_PROTOCOL, UnsafeWeightsError, load_state_dict


def _text(value: str) -> bytes:
    encoded = value.encode()
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _ints(values) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"


EMPTY_ORDERED_DICT = b"ccollections\nOrderedDict\n)R"


def state_dict_pickle(tensors, *, build_after_tensor: bytes = b"") -> bytes:
    """Protocol-2 pickle opcodes of a torch state_dict, as torch.save writes them:
    ``{name: (storage key, numel, offset, shape, stride)}``."""
    body = b"\x80\x02" + EMPTY_ORDERED_DICT + b"("
    for name, (key, numel, offset, shape, stride) in tensors.items():
        storage = b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text(key) + _text("cpu") + _int(numel) + b"tQ"
        body += _text(name) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + _int(offset)
        body += _ints(shape) + _ints(stride) + b"\x89" + EMPTY_ORDERED_DICT + b"tR" + build_after_tensor
    return body + b"u."


def write_zip_pth(path, data_pkl: bytes, storages: dict[str, np.ndarray]):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        for key, values in storages.items():
            archive.writestr(f"archive/data/{key}", np.asarray(values, "<f4").tobytes())
    return path


def write_legacy_pth(path, main_pickle: bytes, storage_keys=(), storages=()):
    header = b"".join(pickle.dumps(value, protocol=2) for value in
                      (LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": LEGACY_PROTOCOL, "little_endian": True}))
    tail = pickle.dumps(list(storage_keys), protocol=2)
    tail += b"".join(struct.pack("<q", len(s)) + np.asarray(s, "<f4").tobytes() for s in storages)
    path.write_bytes(header + main_pickle + tail)
    return path


class RunsCommand:
    """Pickles to ``os.system(command)``: what a hostile .pth does to torch.load."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class EvaluatesCode:
    def __reduce__(self):
        return eval, ("__import__('os').system('true')",)


def test_the_shipped_lite0_weights_load_with_every_key_shape_and_dtype():
    state = load_state_dict(weight_path("efficientnet-lite0"))
    variant = efficientnet.VARIANTS["efficientnet-lite0"]
    efficientnet.check_state_dict(state, variant, "lite0")  # raises on any difference
    assert len(state) == 296
    assert sum(v.size for k, v in state.items() if k.endswith(("weight", "bias"))) == 4_652_008  # learned
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_conv_stem.weight"].dtype == np.float32


def test_a_valid_zip_state_dict_round_trips(tmp_path):
    storage = np.arange(12, dtype=np.float32)
    # "b" is a transposed view: shape (2, 3), strides (1, 2), starting at element 6.
    data = state_dict_pickle({"a": ("0", 12, 0, (3, 4), (4, 1)), "b": ("0", 12, 6, (2, 3), (1, 2))})
    state = load_state_dict(write_zip_pth(tmp_path / "ok.pth", data, {"0": storage}))
    np.testing.assert_array_equal(state["a"], storage.reshape(3, 4))
    np.testing.assert_array_equal(state["b"], storage[6:12].reshape(3, 2).T)
    assert list(state) == ["a", "b"]


@pytest.mark.parametrize("payload", [RunsCommand, EvaluatesCode])
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_a_pickle_naming_a_callable_is_refused_and_nothing_runs(tmp_path, payload, container):
    marker = tmp_path / "pwned"
    evil = payload(f"touch {marker}") if payload is RunsCommand else payload()
    for protocol in (2, 4):  # GLOBAL and STACK_GLOBAL
        data = pickle.dumps({"weight": evil}, protocol=protocol)
        path = (write_zip_pth(tmp_path / "evil.pth", data, {}) if container == "zip"
                else write_legacy_pth(tmp_path / "evil.pth", data))
        with pytest.raises(UnsafeWeightsError, match="only tensors, storages and OrderedDict"):
            load_state_dict(path)
    assert not marker.exists()


def test_a_hostile_legacy_header_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(RunsCommand(f"touch {marker}"), protocol=2))
    with pytest.raises(UnsafeWeightsError, match="header names a global"):
        load_state_dict(path)
    assert not marker.exists()


def test_state_set_on_a_tensor_after_it_was_built_is_refused(tmp_path):
    # BUILD could enlarge a checked shape, to read memory past the storage.
    grow = b"}" + _text("shape") + _ints((1000, 1000)) + b"sb"
    data = state_dict_pickle({"a": ("0", 4, 0, (4,), (1,))}, build_after_tensor=grow)
    with pytest.raises(UnsafeWeightsError, match="set state"):
        load_state_dict(write_zip_pth(tmp_path / "evil.pth", data, {"0": np.zeros(4)}))


@pytest.mark.parametrize("shape, stride, offset", [((5,), (1,), 0), ((2, 2), (3, 1), 0), ((4,), (1,), 1)])
def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path, shape, stride, offset):
    data = state_dict_pickle({"a": ("0", 4, offset, shape, stride)})
    with pytest.raises(UnsafeWeightsError, match="reaches element"):
        load_state_dict(write_zip_pth(tmp_path / "bad.pth", data, {"0": np.zeros(4)}))


def test_damaged_files_are_refused_with_a_reason(tmp_path):
    real = weight_path("efficientnet-lite0").read_bytes()
    (tmp_path / "cut.pth").write_bytes(real[: len(real) // 2])
    with pytest.raises(UnsafeWeightsError, match="truncated"):
        load_state_dict(tmp_path / "cut.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(UnsafeWeightsError):
        load_state_dict(tmp_path / "junk.pth")
    data = state_dict_pickle({"a": ("0", 4, 0, (4,), (1,))})
    with pytest.raises(UnsafeWeightsError, match="missing from the archive"):
        load_state_dict(write_zip_pth(tmp_path / "nostorage.pth", data, {}))
    with pytest.raises(UnsafeWeightsError, match="expected a state_dict"):
        load_state_dict(write_zip_pth(tmp_path / "list.pth", pickle.dumps([1, 2], protocol=2), {}))


def test_a_state_dict_of_the_wrong_architecture_is_refused():
    state = load_state_dict(weight_path("efficientnet-lite0"))
    variant = efficientnet.VARIANTS["efficientnet-lite0"]
    wrong_shape = {**state, "_fc.bias": np.zeros(10, np.float32)}
    with pytest.raises(UnsafeWeightsError, match=r"_fc.bias is float32\[10\]"):
        efficientnet.check_state_dict(wrong_shape, variant, "x")
    with pytest.raises(UnsafeWeightsError, match="missing keys"):
        efficientnet.check_state_dict({k: v for k, v in state.items() if k != "_bn0.bias"}, variant, "x")
    poisoned = {**state, "_bn1.running_var": np.full(1280, np.nan, np.float32)}
    with pytest.raises(UnsafeWeightsError, match="NaN"):
        efficientnet.check_state_dict(poisoned, variant, "x")
    with pytest.raises(UnsafeWeightsError, match="is not efficientnet-lite1"):
        efficientnet.check_state_dict(state, efficientnet.VARIANTS["efficientnet-lite1"], "x")
