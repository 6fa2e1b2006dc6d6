"""Index file format version 2: metadata decoded per id when read, ids found without a
table built on load, version 1 files still read, changes layered over a loaded file."""

import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from fastretrieve import Index, IndexFormatError, _id_lookup, index_format
from index_file_fixtures import rebuilt, sections_of

REFERENCE_V1 = Path(__file__).parent / "reference" / "index_format_v1.fridx"


def reference_index():
    """The index that fastretrieve 0.x (format version 1) saved as REFERENCE_V1, built
    again by this version."""
    index = Index(5, metric="cosine", dtype="float16")
    rng = np.random.default_rng(7)
    index.add(rng.standard_normal((12, 5)), ids=np.arange(12) * 3 + 1,
              metadata=[{"path": f"photos/{i}.jpg", "sha256": f"{i:064x}", "note": "caf\u00e9"}
                        if i % 3 else None for i in range(12)])
    index.remove([4])
    index.attributes = {"embedder": {"model": "classic", "format": 1}}
    return index


def assert_same_contents(actual, expected):
    assert (actual.dim, actual.metric, actual.dtype) == (expected.dim, expected.metric, expected.dtype)
    assert actual.attributes == expected.attributes
    np.testing.assert_array_equal(actual.ids, expected.ids)
    np.testing.assert_array_equal(actual.get(expected.ids), expected.get(expected.ids))
    assert actual.get_metadata(expected.ids) == expected.get_metadata(expected.ids)
    queries = np.random.default_rng(1).standard_normal((3, expected.dim))
    for got, wanted in zip(actual.search(queries, 4), expected.search(queries, 4)):
        np.testing.assert_array_equal(got, wanted)


def file_version(path):
    return struct.unpack_from("<I", Path(path).read_bytes(), 8)[0]


@pytest.mark.parametrize("mmap", [True, False])
def test_a_version_1_file_loads_the_same_and_saves_as_version_2(tmp_path, mmap):
    assert file_version(REFERENCE_V1) == 1
    loaded = Index.load(REFERENCE_V1, mmap=mmap, verify=True)
    expected = reference_index()
    assert_same_contents(loaded, expected)
    assert loaded.get_metadata(22) == {"path": "photos/7.jpg", "sha256": f"{7:064x}", "note": "caf\u00e9"}
    assert loaded.get_metadata(1) is None
    loaded.save(tmp_path / "upgraded.fridx")
    assert file_version(tmp_path / "upgraded.fridx") == index_format.FORMAT_VERSION == 2
    upgraded = Index.load(tmp_path / "upgraded.fridx", mmap=mmap, verify=True)
    assert_same_contents(upgraded, expected)
    assert upgraded.add(np.ones(5)).tolist() == [35]  # after the largest id ever held, 34


def sample_index(rows=50, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    index = Index(dim, metric="l2")
    ids = rng.choice(10**6, size=rows, replace=False)  # not in increasing order
    index.add(rng.standard_normal((rows, dim)), ids=ids,
              metadata=[{"path": f"images/{i}.jpg", "n": i} if i % 5 else None for i in range(rows)])
    index.attributes = {"model": "m"}
    return index


def with_item(data, row, value):
    """Version 2 file bytes with row ``row``'s stored metadata replaced by ``value``."""
    _, sections = sections_of(data)
    offsets = np.frombuffer(sections["item_offsets"], "<u8").astype(np.int64)
    items = [sections["items"][offsets[r]:offsets[r + 1]] for r in range(len(offsets) - 1)]
    items[row] = value
    new_offsets = np.zeros(len(items) + 1, "<u8")
    np.cumsum([len(item) for item in items], out=new_offsets[1:])
    return rebuilt(data, items=b"".join(items), item_offsets=new_offsets.tobytes())


@pytest.mark.parametrize(
    "bad, message",
    [
        (b'{"path":"a.jpg","path":"b.jpg"}', "duplicate key 'path'"),
        (b'{"n":NaN}', "NaN is not a JSON value"),
        (b"-Infinity", "-Infinity is not a JSON value"),
        (b'{"n":1', "Expecting"),
        (b'"caf\xe9"', "codec can't decode"),
        (b"[1] [2]", "Extra data"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
@pytest.mark.parametrize("mmap", [True, False])
def test_a_malformed_stored_value_raises_only_when_its_id_is_read(tmp_path, mmap, bad, message):
    original = sample_index()
    original.save(tmp_path / "good.fridx")
    bad_row = 7
    path = tmp_path / "bad.fridx"
    path.write_bytes(with_item((tmp_path / "good.fridx").read_bytes(), bad_row, bad))
    bad_id = int(original.ids[bad_row])
    others = np.delete(original.ids, bad_row)

    loaded = Index.load(path, mmap=mmap)  # nothing decoded yet
    assert loaded.get_metadata(others) == original.get_metadata(others)
    pattern = rf"the metadata of id {bad_id} \(row {bad_row}\) is not valid JSON: .*{message}"
    with pytest.raises(IndexFormatError, match=pattern):
        loaded.get_metadata(bad_id)
    with pytest.raises(IndexFormatError, match=pattern):
        Index.load(path, mmap=mmap, verify=True)
    # The damaged entry can be replaced or removed, and the rest saved without decoding it.
    replaced = Index.load(path, mmap=mmap)
    replaced.add(np.zeros(4), ids=[bad_id], metadata=["repaired"])
    replaced.save(tmp_path / "replaced.fridx")
    assert Index.load(tmp_path / "replaced.fridx", verify=True).get_metadata(bad_id) == "repaired"
    loaded.remove([bad_id])
    loaded.save(tmp_path / "removed.fridx")
    repaired = Index.load(tmp_path / "removed.fridx", verify=True)
    assert bad_id not in repaired
    assert repaired.get_metadata(others) == original.get_metadata(others)


def test_item_corruption_is_caught_by_its_checksum_unless_mapped_without_verification(tmp_path):
    sample_index().save(tmp_path / "good.fridx")
    data = (tmp_path / "good.fridx").read_bytes()
    position = data.index(b"images/1.jpg")
    path = tmp_path / "bad.fridx"
    path.write_bytes(data[:position] + b"imagez" + data[position + 6:])
    with pytest.raises(IndexFormatError, match="checksum mismatch in the items section"):
        Index.load(path, mmap=False)
    with pytest.raises(IndexFormatError, match="checksum mismatch in the items section"):
        Index.load(path, mmap=True, verify=True)
    loaded = Index.load(path, mmap=True)  # documented: the mapped items are unchecked
    assert {"path": "imagez/1.jpg", "n": 1} in loaded.get_metadata(loaded.ids)


@pytest.mark.parametrize("mmap", [True, False])
def test_changes_to_a_loaded_index_match_a_model_and_survive_saving(tmp_path, monkeypatch, mmap):
    # Rebuild the id lookup's sorted base often, so that both of its layers are exercised.
    monkeypatch.setattr(_id_lookup, "_MIN_CHANGES_BEFORE_REBUILD", 16)
    rng = np.random.default_rng(11)
    dim = 3
    original = sample_index(rows=300, dim=dim, seed=3)
    model = {int(i): (vector, value) for i, vector, value in zip(
        original.ids.tolist(), original.get(original.ids), original.get_metadata(original.ids))}
    path = tmp_path / "items.fridx"
    original.save(path)
    index = Index.load(path, mmap=mmap)
    removed = []

    def check(index):
        ids = sorted(model)
        assert sorted(index.ids.tolist()) == ids and len(index) == len(ids)
        np.testing.assert_array_equal(index.get(ids), np.array([model[i][0] for i in ids]))
        assert index.get_metadata(ids) == [model[i][1] for i in ids]
        assert not any(i in index for i in removed if i not in model)

    for step in range(80):
        present = np.array(sorted(model), np.int64)
        action = step % 4
        if action == 0:  # new ids, some of them removed before
            fresh = rng.choice(10**6, size=5, replace=False) + 10**6
            ids = np.concatenate([fresh, rng.choice(removed, size=min(2, len(removed)), replace=False)
                                  if removed else []]).astype(np.int64)
        elif action == 1:  # replacements
            ids = rng.choice(present, size=7, replace=False)
        else:  # removals
            doomed = rng.choice(present, size=6, replace=False)
            index.remove(doomed)
            for item_id in doomed.tolist():
                del model[item_id]
            removed.extend(doomed.tolist())
            continue
        vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
        values = [None if rng.random() < 0.3 else {"step": step, "row": row} for row in range(len(ids))]
        index.add(vectors, ids=ids, metadata=values)
        for item_id, vector, value in zip(ids.tolist(), vectors, values):
            model[item_id] = (vector, value)
        if step % 10 == 9:
            check(index)
    check(index)
    assert -1 not in index and 2**70 not in index and int(original.ids[0]) in model
    index.save(tmp_path / "again.fridx")
    for reload_mmap in (True, False):
        check(Index.load(tmp_path / "again.fridx", mmap=reload_mmap, verify=True))


def test_loading_builds_no_python_object_per_row(tmp_path):
    rows = 100_000
    index = Index(2, metric="l2")
    index.add(np.ones((rows, 2)), ids=np.arange(rows)[::-1] * 2,
              metadata=[{"path": f"/photos/{i}.jpg", "sha256": "ab" * 32} for i in range(rows)])
    path = tmp_path / "items.fridx"
    index.save(path)
    del index
    tracemalloc.start()
    try:
        loaded = Index.load(path, mmap=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # ids, norms, id order, sorted ids and item offsets: 36 bytes per row. Parsing the
    # metadata or a dict of the ids would take hundreds of bytes per row.
    assert peak < 48 * rows
    assert loaded.get_metadata([0, 2 * (rows - 1)]) == [
        {"path": f"/photos/{rows - 1}.jpg", "sha256": "ab" * 32},
        {"path": "/photos/0.jpg", "sha256": "ab" * 32},
    ]


def test_saving_an_unchanged_loaded_index_copies_its_file_sections(tmp_path):
    sample_index().save(tmp_path / "a.fridx")
    for mmap in (True, False):
        Index.load(tmp_path / "a.fridx", mmap=mmap).save(tmp_path / "b.fridx")
        assert (tmp_path / "b.fridx").read_bytes() == (tmp_path / "a.fridx").read_bytes()


@pytest.mark.parametrize("mmap", [True, False])
def test_ids_stored_in_increasing_order_need_the_identity_order(tmp_path, mmap):
    index = Index(2, metric="l2")
    index.add(np.ones((6, 2)), ids=[2, 3, 5, 8, 13, 21], metadata=list("abcdef"))
    index.save(tmp_path / "sorted.fridx")
    data = (tmp_path / "sorted.fridx").read_bytes()
    loaded = Index.load(tmp_path / "sorted.fridx", mmap=mmap)
    assert [i in loaded for i in (1, 2, 5, 21, 22)] == [False, True, True, True, False]
    assert loaded.get_metadata([21, 2, 8]) == ["f", "a", "d"]
    order = np.arange(6, dtype="<i8")
    order[[1, 2]] = order[[2, 1]]
    with pytest.raises(IndexFormatError, match="id order section does not sort the ids"):
        (tmp_path / "bad.fridx").write_bytes(rebuilt(data, id_order=order.tobytes()))
        Index.load(tmp_path / "bad.fridx", mmap=mmap)
    ids = np.array([-1, 3, 5, 8, 13, 21], "<i8")
    with pytest.raises(IndexFormatError, match="holds a negative id"):
        (tmp_path / "bad.fridx").write_bytes(rebuilt(data, ids=ids.tobytes()))
        Index.load(tmp_path / "bad.fridx", mmap=mmap)


def test_a_value_that_utf8_cannot_store_is_refused_by_add_not_by_a_later_save(tmp_path):
    index = Index(2, metric="l2")
    index.add(np.ones((1, 2)), metadata=["kept"])
    with pytest.raises(TypeError, match="metadata for row 1 is not JSON-serialisable"):
        index.add(np.ones((2, 2)), metadata=["fine", "lone surrogate \ud800"])
    assert len(index) == 1 and index.version == 1
    index.save(tmp_path / "items.fridx")
    assert Index.load(tmp_path / "items.fridx").get_metadata(0) == "kept"
