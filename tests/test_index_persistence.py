"""Index persistence: round trips (attributes included), mmap loading, atomic save under
SIGKILL, bad files."""

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastretrieve import Index, IndexFormatError
from fastretrieve import index_format
from index_file_fixtures import as_version_1, rebuilt, sections_of
from test_index import DTYPES, METRICS, random_vectors

SOURCE_DIR = Path(__file__).resolve().parents[1] / "src"
SAMPLE_ATTRIBUTES = {
    "model": {"name": "attribute-test-model", "image_size": [224, 224], "mean": [0.485, 0.5]},
    "created_by": "tests",
    "note": "caf\u00e9 \u2713",  # non-ASCII survives the UTF-8 round trip
}


def sample_index(dtype="float32", metric="l2", rows=60, dim=7, seed=0):
    index = Index(dim, metric=metric, dtype=dtype)
    index.add(
        random_vectors(rows, dim, seed),
        ids=np.arange(rows) * 5 + 3,
        metadata=[
            {"path": f"images/{i}.jpg", "tags": ["a", i]} if i % 4 else None
            for i in range(rows)
        ],
    )
    index.remove([8, 13])
    index.attributes = SAMPLE_ATTRIBUTES
    return index


def assert_same_index(loaded, original, queries):
    for attribute in ("dim", "metric", "dtype", "attributes"):
        assert getattr(loaded, attribute) == getattr(original, attribute)
    np.testing.assert_array_equal(loaded.ids, original.ids)
    np.testing.assert_array_equal(loaded.get(original.ids), original.get(original.ids))
    assert loaded.get_metadata(original.ids) == original.get_metadata(original.ids)
    for expected, actual in zip(original.search(queries, 9), loaded.search(queries, 9)):
        np.testing.assert_array_equal(actual, expected)


def with_header_field(data, offset, fmt, value):
    """The file bytes with one header field replaced and the header checksum redone."""
    patched = bytearray(data)
    struct.pack_into(fmt, patched, offset, value)
    crc_offset = index_format.HEADER_SIZE - 4
    struct.pack_into("<I", patched, crc_offset, zlib.crc32(patched[:crc_offset]))
    return bytes(patched)


def with_metadata_section(data, section):
    """Version 1 file bytes with the metadata section replaced by ``section``."""
    return rebuilt(data, metadata=section)


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:the int8 quantiser was fitted on")  # small test data
@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(tmp_path, dtype, metric, mmap):
    original = sample_index(dtype, metric)
    path = tmp_path / "items.fridx"
    original.save(path)
    loaded = Index.load(path, mmap=mmap)
    assert_same_index(loaded, original, random_vectors(6, 7, seed=99))
    # The loaded index keeps working: automatic ids continue, and it saves again.
    new_ids = loaded.add(random_vectors(2, 7, seed=0))  # inside the int8 quantiser's range
    assert new_ids.min() > original.ids.max()
    loaded.remove(original.ids[:3])
    loaded.save(tmp_path / "again.fridx")
    assert_same_index(Index.load(tmp_path / "again.fridx"), loaded, random_vectors(6, 7, seed=97))


@pytest.mark.filterwarnings("ignore:the int8 quantiser was fitted on")  # small test data
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_index_round_trip(tmp_path, dtype):
    Index(3, metric="ip", dtype=dtype).save(tmp_path / "empty.fridx")
    loaded = Index.load(tmp_path / "empty.fridx")
    assert len(loaded) == 0 and loaded.dtype == dtype and loaded.attributes == {}
    loaded.add(np.ones((2, 3)))
    assert loaded.search(np.ones(3), 3)[1].tolist() == [0, 1, -1]


def test_mapped_index_copies_on_write_and_never_touches_its_file(tmp_path):
    path = tmp_path / "items.fridx"
    sample_index(rows=200).save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = Index.load(path, mmap=True)
    mapped_before = loaded.get(loaded.ids)
    loaded.add(random_vectors(5, 7, seed=1), ids=loaded.ids[:5])  # replacements
    loaded.add(random_vectors(5, 7, seed=2))
    loaded.remove(loaded.ids[10:20])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    np.testing.assert_array_equal(Index.load(path).get(loaded.ids[20:50]), mapped_before[20:50])


def test_saving_a_mapped_index_over_its_own_file(tmp_path):
    path = tmp_path / "items.fridx"
    original = sample_index(rows=100)
    original.save(path)
    loaded = Index.load(path, mmap=True)
    loaded.save(path)  # the mapping keeps the old inode alive; the rename replaces the name
    assert_same_index(Index.load(path, mmap=False), original, random_vectors(4, 7, seed=3))
    assert_same_index(loaded, original, random_vectors(4, 7, seed=3))
    assert sorted(os.listdir(tmp_path)) == ["items.fridx"]  # no temporary file left behind


@pytest.mark.parametrize("mmap", [True, False])
def test_attributes_changed_on_a_loaded_index_are_saved_with_it(tmp_path, mmap):
    path = tmp_path / "items.fridx"
    original = sample_index(rows=50)
    original.save(path)
    loaded = Index.load(path, mmap=mmap)
    assert loaded.attributes == SAMPLE_ATTRIBUTES and loaded.version == 0
    loaded.attributes = {**loaded.attributes, "note": "updated"}
    loaded.save(path)  # over the mapped file itself when mmap
    reloaded = Index.load(path, mmap=mmap)
    assert reloaded.attributes == {**SAMPLE_ATTRIBUTES, "note": "updated"}
    np.testing.assert_array_equal(reloaded.get(original.ids), original.get(original.ids))
    assert reloaded.get_metadata(original.ids) == original.get_metadata(original.ids)


def test_minimal_metadata_section_in_either_member_order_loads(tmp_path, saved_v1):
    data = saved_v1
    for section in (b'{"attributes":{"model":"m"},"items":{}}',
                    b'{ "items" : { } , "attributes" : { "model" : "m" } }'):
        loaded = load_bytes(tmp_path, with_metadata_section(data, section), mmap=False)
        assert loaded.attributes == {"model": "m"}
        assert loaded.get_metadata(loaded.ids) == [None] * len(loaded)


def test_save_creates_no_file_when_it_fails(tmp_path):
    with pytest.raises(FileNotFoundError):
        sample_index().save(tmp_path / "missing-directory" / "items.fridx")
    assert os.listdir(tmp_path) == []


# -- bad files --------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "items.fridx"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the int8 quantiser was fitted on")  # 40 rows
        sample_index(dtype="int8", rows=40).save(path)
    return path, path.read_bytes()


@pytest.fixture
def saved_v1(saved):
    """The same index as ``saved``, as format version 1 bytes."""
    return as_version_1(saved[1])


def load_bytes(tmp_path, data, **options):
    path = tmp_path / "bad.fridx"
    path.write_bytes(data)
    return Index.load(path, **options)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda data: b"", "not a fastretrieve index"),
        (lambda data: b"PK\x03\x04" + bytes(300), "not a fastretrieve index"),
        (lambda data: data[:100], "truncated"),
        (lambda data: data[:-1], "truncated"),
        (lambda data: data[: index_format.HEADER_SIZE + 10], "truncated"),
        (lambda data: data + b"\0", "unexpected bytes after the last section"),
        (lambda data: with_header_field(data, 8, "<I", 3), "format version 3 is newer"),
        (lambda data: with_header_field(data, 8, "<I", 0), "invalid index format version 0"),
        (lambda data: with_header_field(data, 16, "<I", 8), "dimension/count mismatch"),
        (lambda data: with_header_field(data, 40, "<Q", 41), "dimension/count mismatch"),
        (lambda data: with_header_field(data, 40, "<Q", 2**60), "dimension/count mismatch"),
        (lambda data: with_header_field(data, 16, "<I", 0), "dimension 0"),
        (lambda data: with_header_field(data, 24, "8s", b"hamming"), "unknown metric"),
        (lambda data: with_header_field(data, 48, "<Q", 3), "does not exceed the largest id"),
        (lambda data: data[:20] + b"\xff" + data[21:], "checksum mismatch in the header"),
        (lambda data: with_header_field(data, 248, "<I", 1), "reserved header bytes"),
    ],
)
@pytest.mark.parametrize("version", [1, 2])
def test_bad_files_raise_index_format_error(tmp_path, saved, make, message, version):
    data = saved[1] if version == 2 else as_version_1(saved[1])
    for mmap in (True, False):
        with pytest.raises(IndexFormatError, match=message):
            load_bytes(tmp_path, make(data), mmap=mmap)


def with_item_offsets(data, change):
    """Version 2 file bytes with the item offsets changed in place by ``change``."""
    offsets = np.frombuffer(sections_of(data)[1]["item_offsets"], "<u8").copy()
    change(offsets)
    return rebuilt(data, item_offsets=offsets.tobytes())


def with_id_order(data, change):
    order = np.frombuffer(sections_of(data)[1]["id_order"], "<i8").copy()
    change(order)
    return rebuilt(data, id_order=order.tobytes())


def with_ids(data, change):
    ids = np.frombuffer(sections_of(data)[1]["ids"], "<i8").copy()
    change(ids)
    return rebuilt(data, ids=ids.tobytes())


def with_repeated_id(data):
    """Ids holding 3 twice, with an id order that sorts them (not strictly)."""
    ids = np.frombuffer(sections_of(data)[1]["ids"], "<i8").copy()
    ids[1] = ids[0] = 3
    order = np.argsort(ids, kind="stable")
    return rebuilt(data, ids=ids.tobytes(), id_order=order.astype("<i8").tobytes())


def _set(position, value):
    def change(array):
        array[position] = value
    return change


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda data: with_item_offsets(data, _set(1, 10**6)), "item offsets are not monotonic"),
        (lambda data: with_item_offsets(data, _set(0, 1)), "item offsets do not start at 0"),
        (lambda data: with_item_offsets(data, _set(-1, 2**64 - 1)),
         "item offsets end at 18446744073709551615, but the items section holds"),
        (lambda data: rebuilt(data, items=sections_of(data)[1]["items"][:-1]),
         "item offsets end at"),
        (lambda data: with_id_order(data, lambda order: order.__setitem__(slice(None), order[::-1])),
         "id order section does not sort the ids"),
        (lambda data: with_id_order(data, _set(0, 37)), "does not sort the ids"),
        (lambda data: with_id_order(data, _set(5, -1)), "a row outside the index"),
        (lambda data: with_id_order(data, _set(5, 2**62)), "a row outside the index"),
        (lambda data: with_ids(data, _set(1, 3)), "does not sort the ids"),  # order stale
        (with_repeated_id, "the ids section holds id 3 more than once"),
        (lambda data: with_ids(data, _set(0, -7)), "holds a negative id"),
        (lambda data: rebuilt(data, attributes=b"[]"), "attributes section is not a JSON object"),
        (lambda data: rebuilt(data, attributes=b'{"a":1,"a":2}'), "duplicate key 'a'"),
        (lambda data: rebuilt(data, attributes=b'{"a":NaN}'), "NaN is not a JSON value"),
        (lambda data: rebuilt(data, attributes=b"[" * 100_000), "not valid JSON"),
    ],
)
def test_bad_version_2_sections_raise_index_format_error(tmp_path, saved, make, message):
    _, data = saved
    for mmap in (True, False):
        with pytest.raises(IndexFormatError, match=message):
            load_bytes(tmp_path, make(data), mmap=mmap)


@pytest.mark.parametrize(
    "section, message",
    [
        (b'{"3":{"path":"images/0.jpg"}}', "must hold exactly 'attributes' and 'items', found '3'"),
        (b"{}", "found none"),
        (b'{"attributes":{}}', "found 'attributes'"),
        (b'{"attributes":{},"items":{},"extra":1}', "found 'attributes', 'extra', 'items'"),
        (b"[]", "the metadata section is not a JSON object"),
        (b'"attributes"', "the metadata section is not a JSON object"),
        (b'{"attributes":[],"items":{}}', "attributes in the metadata section are not"),
        (b'{"attributes":null,"items":{}}', "attributes in the metadata section are not a JSON"),
        (b'{"attributes":{},"items":[]}', "items in the metadata section are not a JSON object"),
        (b'{"attributes":{"scale":NaN},"items":{}}', "not valid JSON: NaN is not a JSON value"),
        (b'{"attributes":{"s":-Infinity},"items":{}}', "not valid JSON: -Infinity is not a JSON"),
        (b'{"attributes":{"model":"\xff"},"items":{}}', "not valid JSON"),
        (b'{"attributes":{"model":"m"},"items":{}', "not valid JSON"),
        (b'{"attributes":' + b"[" * 100_000 + b"]" * 100_000 + b',"items":{}}', "not valid JSON"),
        (b'{"attributes":{},"items":{"03":1}}', "metadata key '03' is not a decimal id"),
        (b'{"attributes":{},"items":{"4":1}}', "metadata for id 4, which is not in the index"),
    ],
)
def test_malformed_metadata_sections_raise_index_format_error(tmp_path, saved_v1, section,
                                                              message):
    data = saved_v1
    for mmap in (True, False):
        with pytest.raises(IndexFormatError, match=message):
            load_bytes(tmp_path, with_metadata_section(data, section), mmap=mmap)


@pytest.mark.parametrize("version, section", [(1, "metadata"), (2, "attributes")])
def test_attributes_are_covered_by_a_checksum(tmp_path, saved, version, section):
    data = saved[1] if version == 2 else as_version_1(saved[1])
    position = data.index(b"attribute-test-model")
    corrupted = data[:position] + b"A" + data[position + 1:]
    for mmap in (True, False):
        with pytest.raises(IndexFormatError, match=f"checksum mismatch in the {section} section"):
            load_bytes(tmp_path, corrupted, mmap=mmap)


def test_forged_huge_section_lengths_are_refused_before_allocating(tmp_path, saved):
    _, data = saved
    dim, count = 2**20, 2**40  # the vectors would need 2 ** 60 bytes
    forged = with_header_field(with_header_field(data, 16, "<I", dim), 40, "<Q", count)
    table = index_format._TABLE_START
    for number, length in enumerate([count * dim, 4 * count, 8 * count, 8 * count, 8 * dim]):
        forged = with_header_field(forged, table + 24 * number + 8, "<Q", length)
    with pytest.raises(IndexFormatError):
        load_bytes(tmp_path, forged, mmap=False)


def test_vector_corruption_is_caught_unless_mapped_without_verification(tmp_path):
    path = tmp_path / "items.fridx"
    sample_index(rows=40).save(path)
    data = bytearray(path.read_bytes())
    data[index_format.HEADER_SIZE + 5] ^= 0x10
    with pytest.raises(IndexFormatError, match="checksum mismatch in the vectors section"):
        load_bytes(tmp_path, bytes(data), mmap=False)
    with pytest.raises(IndexFormatError, match="checksum mismatch in the vectors section"):
        load_bytes(tmp_path, bytes(data), mmap=True, verify=True)
    assert len(load_bytes(tmp_path, bytes(data), mmap=True)) == 38  # documented: unchecked


def test_index_format_error_is_a_value_error():
    assert issubclass(IndexFormatError, ValueError)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_files_only_ever_raise_index_format_error(tmp_path, saved, data):
    _, original = saved
    if data.draw(st.booleans(), label="version 1"):  # the reader kept for older files
        original = as_version_1(original)
    if data.draw(st.booleans(), label="truncate"):
        mutated = original[: data.draw(st.integers(0, len(original) - 1), label="length")]
    else:
        mutated = bytearray(original)
        flips = data.draw(
            st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(1, 255)),
                     min_size=1, max_size=4, unique_by=lambda flip: flip[0]),
            label="flips",
        )
        for position, mask in flips:
            mutated[position] ^= mask
        mutated = bytes(mutated)
    # Fully verified loads reject every change: each byte is checked by a checksum, a
    # zero-padding rule or the exact file length.
    with pytest.raises(IndexFormatError):
        load_bytes(tmp_path, mutated, mmap=False)
    # An unverified mapped load may accept a changed vector or metadata byte: searching
    # must not crash (a NaN in the vectors is a ValueError naming the row), and reading
    # the metadata gives values or IndexFormatError, nothing else.
    try:
        loaded = load_bytes(tmp_path, mutated, mmap=True)
    except IndexFormatError:
        return
    try:
        loaded.search(np.ones(7), 3)
    except ValueError as error:
        assert "NaN or infinity" in str(error)
    for item_id in loaded.ids.tolist():
        try:
            loaded.get_metadata(item_id)
        except IndexFormatError as error:
            assert f"the metadata of id {item_id} " in str(error)


# -- crash safety -----------------------------------------------------------------------------

_SAVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from fastretrieve import Index

    path = sys.argv[1]
    versions = []
    for generation in (1, 2):
        index = Index(64, metric="l2")
        index.add(np.full((30_000, 64), generation, np.float32), metadata=[generation] * 30_000)
        versions.append(index)
    # Ready once a save has completed: from then on it saves without a pause, so a kill at
    # any later moment lands inside a save almost surely, however loaded the machine is.
    versions[0].save(path)
    print("ready", flush=True)
    while True:
        for index in versions:
            index.save(path)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_save_killed_at_random_moments_leaves_the_old_or_the_new_index(tmp_path):
    path = tmp_path / "items.fridx"
    old = Index(64, metric="l2")
    old.add(np.zeros((10, 64)), metadata=[0] * 10)
    old.save(path)
    seen = set()
    delays = np.random.default_rng(0).uniform(0.0, 0.08, size=20)
    environment = dict(os.environ, PYTHONPATH=str(SOURCE_DIR))
    for delay in delays:
        saver = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)],
                                 stdout=subprocess.PIPE, env=environment)
        assert saver.stdout.readline() == b"ready\n"
        time.sleep(delay)
        saver.send_signal(signal.SIGKILL)
        saver.wait()
        saver.stdout.close()
        loaded = Index.load(path, mmap=False)
        generation = loaded.get_metadata(int(loaded.ids[0]))
        seen.add(generation)
        expected_rows = 10 if generation == 0 else 30_000
        assert len(loaded) == expected_rows
        np.testing.assert_array_equal(loaded.get(loaded.ids[-1]), np.full(64, generation))
    interrupted_saves = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert interrupted_saves, "no kill landed inside a save: the test proved nothing"
    assert seen <= {0, 1, 2} and seen & {1, 2}


# -- memory -----------------------------------------------------------------------------------

_MAPPED_LOADER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import psutil
    from fastretrieve import Index

    process = psutil.Process()
    np.ones(4).sum()  # let NumPy settle its own allocations before measuring
    before = process.memory_info().rss
    start = time.perf_counter()
    index = Index.load(sys.argv[1], mmap=True)
    seconds = time.perf_counter() - start
    after = process.memory_info().rss
    _, found = index.search(np.full(128, 0.5, np.float32), 3)
    print(len(index), after - before, seconds, found[0])
    """
)


@pytest.mark.slow
def test_mapped_load_of_a_large_index_is_fast_and_uses_little_memory(tmp_path):
    rows, dim = 2_000_000, 128  # 1 GiB of float32 vectors
    path = tmp_path / "large.fridx"
    index = Index(dim, metric="l2")
    index.add(np.full((rows, dim), 0.5, np.float32))
    index.save(path)
    del index
    assert path.stat().st_size > rows * dim * 4
    environment = dict(os.environ, PYTHONPATH=str(SOURCE_DIR))
    output = subprocess.run([sys.executable, "-c", _MAPPED_LOADER, str(path)], env=environment,
                            capture_output=True, check=True, text=True).stdout.split()
    count, resident_growth, first = int(output[0]), int(output[1]), int(output[3])
    assert count == rows and first == 0
    # Memory, not time: how fast the load is belongs to benchmarks/bench_index.py.
    assert resident_growth < 64 * 2**20  # ids and norms (24 MiB) plus slack, not 1 GiB


# -- hardening: duplicate JSON keys, permission bits ------------------------------------------


@pytest.mark.parametrize(
    "section",
    [
        b'{"attributes":{},"attributes":{},"items":{}}',
        b'{"attributes":{"model":"a","model":"b"},"items":{}}',
        b'{"attributes":{},"items":{"3":1,"3":2}}',
        b'{"attributes":{},"items":{"3":{"path":"a.jpg","path":"b.jpg"}}}',
    ],
)
def test_duplicate_json_keys_in_the_metadata_raise_index_format_error(tmp_path, saved_v1,
                                                                     section):
    data = saved_v1
    for mmap in (True, False):
        with pytest.raises(IndexFormatError, match="duplicate key"):
            load_bytes(tmp_path, with_metadata_section(data, section), mmap=mmap)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_saving_over_an_index_keeps_its_permission_bits(tmp_path, mode):
    path = tmp_path / "items.fridx"
    sample_index(rows=10).save(path)
    path.chmod(mode)
    Index.load(path, mmap=False).save(path)
    assert path.stat().st_mode & 0o7777 == mode
