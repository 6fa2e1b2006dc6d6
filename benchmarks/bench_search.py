"""pytest-benchmark suite for search: each backend, SIMD level, regime, k and storage dtype.

    python -m pytest benchmarks/bench_search.py --benchmark-columns=median,iqr,rounds

Backends are switched in-process, as the test-suite does; the ratio table against FAISS
is benchmarks/compare.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastretrieve as fr
from fastretrieve import Index, _backend, _numpy

try:
    from fastretrieve import _core, _cpp
except ImportError:
    _core = _cpp = None
try:
    from fastretrieve import _numba
except ImportError:
    _numba = None

PATHS = [pytest.param((_cpp, level), id=f"cpp-{level}")
         for level in (_core.supported_levels() if _core else [])]
if _numba is not None:
    PATHS.append(pytest.param((_numba, None), id="numba"))
PATHS.append(pytest.param((_numpy, None), id="numpy"))

# (rows, dim, metric, queries, k)
SHAPES = [
    pytest.param((1_000_000, 128, "l2", 1, 10), id="1M-d128-l2-q1"),
    pytest.param((1_000_000, 128, "l2", 16, 10), id="1M-d128-l2-q16"),
    pytest.param((200_000, 128, "l2", 1, 10), id="200k-d128-l2-q1"),
    pytest.param((200_000, 128, "l2", 16, 10), id="200k-d128-l2-q16"),
    pytest.param((50_000, 512, "ip", 256, 10), id="50k-d512-ip-q256"),
    pytest.param((50_000, 128, "cosine", 100, 100), id="50k-d128-cos-q100-k100"),
    pytest.param((1_000, 128, "l2", 1, 10), id="1k-d128-l2-q1"),
]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    backend, level = request.param
    monkeypatch.setattr(_backend, "_active", backend)
    if level:
        previous = _core.simd_level()
        _core.force_simd_level(level)
        yield
        _core.force_simd_level(previous)
    else:
        yield


@pytest.mark.parametrize("shape", SHAPES)
def test_search(benchmark, path, shape):
    rows, dim, metric, n_queries, k = shape
    if _backend._active is _numpy and rows * n_queries > 5_000_000:
        pytest.skip("the NumPy reference backend is too slow for this shape")
    rng = np.random.default_rng(0)
    database = rng.standard_normal((rows, dim), dtype=np.float32)
    queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    distances, indices = benchmark(fr.search, queries, k, database=database, metric=metric)
    assert indices.shape == (n_queries, k) and (indices >= 0).all()


# Index storage dtypes on a bandwidth-bound and a compute-bound shape: (rows, dim, metric,
# queries, k). The compute-bound one is where avx512_bf16 screens bfloat16 rows.
INDEX_SHAPES = [
    pytest.param((200_000, 128, "l2", 1, 10), id="200k-d128-l2-q1"),
    pytest.param((50_000, 512, "ip", 256, 10), id="50k-d512-ip-q256"),
]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int8"])
@pytest.mark.parametrize("shape", INDEX_SHAPES)
def test_index_search(benchmark, path, shape, dtype):
    rows, dim, metric, n_queries, k = shape
    if _backend._active is _numpy and rows * n_queries > 5_000_000:
        pytest.skip("the NumPy reference backend is too slow for this shape")
    rng = np.random.default_rng(0)
    index = Index(dim, metric=metric, dtype=dtype)
    index.add(rng.standard_normal((rows, dim), dtype=np.float32))
    queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    distances, ids = benchmark(index.search, queries, k)
    assert ids.shape == (n_queries, k) and (ids >= 0).all()
