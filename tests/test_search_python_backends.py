"""The Numba and NumPy backends' own machinery: tiles and blocks merged exactly, memory
bounded by bytes."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import assert_matches_oracle
from test_search_far_from_origin import far_data

import fastretrieve as fr
from fastretrieve import _backend, _numpy

try:
    from fastretrieve import _numba
except ImportError:
    _numba = None

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
