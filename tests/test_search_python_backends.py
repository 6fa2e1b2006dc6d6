"""The Numba and NumPy backends' own machinery: tiles and blocks merged exactly, memory
bounded by bytes, searches from several Python threads at once."""

from __future__ import annotations

import importlib.metadata
import sys
import threading
import tracemalloc

import numpy as np
import pytest
from conftest import _numba, assert_matches_oracle
from test_search_far_from_origin import far_data

import fastretrieve as fr
from fastretrieve import _backend, _numpy

PYTHON_BACKENDS = [
    pytest.param(_numba, id="numba",
                 marks=[] if _numba else pytest.mark.skip(reason="numba missing")),
    pytest.param(_numpy, id="numpy"),
]


@pytest.fixture(params=PYTHON_BACKENDS)
def python_backend(request, monkeypatch):
    monkeypatch.setattr(_backend, "_active", request.param)
    return request.param


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_many_small_tiles_merge_to_the_exact_answer(python_backend, metric, monkeypatch):
    # Tiny tiles and query blocks: the running best-k crosses dozens of tiles, and 20
    # copies of each vector, far from the origin, must still come back lowest index first.
    monkeypatch.setattr(_numpy, "TILE_BYTES", 64 * 1024)
    if _numba is not None:
        monkeypatch.setattr(_numba, "_QUERY_BLOCK", 7)
    _, base = far_data(21, 0, 60, 9, 1e3)
    database = np.concatenate([base] * 20)
    queries = np.concatenate([base[:30] + np.float32(0.125), base[30:]])
    distances, indices = fr.search(queries, 25, database=database, metric=metric)
    assert_matches_oracle(queries, database, 25, metric, distances, indices)


def test_numpy_self_join_memory_is_bounded_by_bytes(monkeypatch):
    # 3,000 rows: a fixed 4096-row block of float64 scores per query would be ~100 MB;
    # the tiles keep every temporary within a few TILE_BYTES.
    monkeypatch.setattr(_backend, "_active", _numpy)
    monkeypatch.setattr(_numpy, "TILE_BYTES", 4 << 20)
    vectors = np.random.default_rng(3).standard_normal((3000, 4)).astype(np.float32)
    tracemalloc.start()
    try:
        distances, indices = fr.search(vectors, 3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * _numpy.TILE_BYTES + distances.nbytes + indices.nbytes
    sample = np.arange(0, 3000, 97)
    own = fr.search(vectors[sample], 4, database=vectors)
    np.testing.assert_array_equal(own[1][:, 0], sample)  # each row finds itself first...
    np.testing.assert_array_equal(indices[sample], own[1][:, 1:])  # ...then the self-join's


@pytest.mark.skipif(_numba is None, reason="numba missing")
def test_concurrent_numba_searches_return_the_serial_answers(monkeypatch):
    # Four Python threads launch parallel kernels at once (without the lock where the
    # threading layer is thread-safe); each must get exactly the answer of a lone search.
    monkeypatch.setattr(_backend, "_active", _numba)
    rng = np.random.default_rng(8)
    database = rng.standard_normal((30_000, 24)).astype(np.float32)
    batches = [rng.standard_normal((n, 24)).astype(np.float32) for n in (1, 5, 40, 300)]
    expected = [fr.search(batch, 7, database=database) for batch in batches]
    results = [None] * len(batches)
    barrier = threading.Barrier(len(batches))

    def worker(slot):
        barrier.wait()
        for _ in range(3):
            results[slot] = fr.search(batches[slot], 7, database=database, threads=2)

    workers = [threading.Thread(target=worker, args=(slot,)) for slot in range(len(batches))]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.skipif(_numba is None, reason="numba missing")
def test_numba_runs_on_tbb_where_the_tbb_package_is_installed(monkeypatch):
    # pip puts libtbb in the environment's lib/ folder, which a virtual environment's
    # loader does not search: without the backend's help Numba would silently fall back.
    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the tbb package is not installed")
    if not sys.platform.startswith("linux"):
        pytest.skip("the tbb dependency is for Linux")
    monkeypatch.setattr(_backend, "_active", _numba)
    fr.search(np.ones((2, 3), np.float32), 1)
    assert _numba.describe()["numba_threading_layer"] == "tbb"
    assert _numba._threadsafe_layer()
