"""Index search on float16, bfloat16 and int8 storage, on every kernel path.

The C++ kernels scan the stored rows themselves (widening each element to float32); the
Numba and NumPy backends search decoded blocks. Either way the answer must be the exact
one for the stored, decoded vectors (what `Index.get` returns), checked against the
float64 oracle -- for dimensions that hit every SIMD tail, and for 1, 9 and 70 queries,
which cover both C++ regimes (the reducing tiles below 8 queries, packed panels from 8).
"""

import numpy as np
import pytest

from conftest import assert_matches_oracle
from fastretrieve import Index, _backend
from fastretrieve import _stored_rows
from fastretrieve.search import knn

METRICS = ("l2", "ip", "cosine")
LOW_PRECISION = ("float16", "bfloat16", "int8")
ROWS = 600  # two full 256-row blocks and a ragged one, with a ragged last panel


def filled_index(dtype, metric, dim, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    index = Index(dim, metric=metric, dtype=dtype)
    ids = index.add((rng.standard_normal((ROWS, dim)) + shift).astype(np.float32))
    return index, ids, index.get(ids)


@pytest.mark.parametrize("metric", METRICS)
# 24 and 48: whole bfloat16 pairs chunks followed by one whole SIMD vector (AVX2, AVX-512)
@pytest.mark.parametrize("dim", [1, 7, 16, 24, 48, 100, 257])
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_search_is_exact_on_the_decoded_vectors(kernel_path, dtype, dim, metric):
    index, ids, decoded = filled_index(dtype, metric, dim, seed=dim)
    rng = np.random.default_rng(1000 + dim)
    for n_queries in (1, 9, 70):
        queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
        distances, found = index.search(queries, 10)
        assert_matches_oracle(queries, decoded, 10, metric, distances, found)


@pytest.mark.parametrize("metric", METRICS)
def test_int8_far_from_the_origin_stays_exact(kernel_path, metric):
    # The folded quantiser's per-query offset is large here (low ~ 7 in every dimension):
    # the scan must still rank the decoded vectors as the oracle does.
    index, ids, decoded = filled_index("int8", metric, 33, seed=5, shift=10.0)
    queries = (np.random.default_rng(6).standard_normal((12, 33)) + 10.0).astype(np.float32)
    for batch in (queries[:1], queries):
        distances, found = index.search(batch, 7)
        assert_matches_oracle(batch, decoded, 7, metric, distances, found)


@pytest.mark.filterwarnings("ignore:the int8 quantiser was fitted on")  # small test data
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_equal_stored_rows_rank_the_earlier_one_first(kernel_path, dtype, monkeypatch):
    # Small decode blocks, so the Numba and NumPy paths merge blocks too.
    monkeypatch.setattr(_stored_rows, "DECODE_BLOCK_BYTES", 3 * 4 * 4)
    index = Index(3, metric="l2", dtype=dtype)
    index.add(np.tile([[0.5, -0.25, 1.0], [2.0, 2.0, 2.0]], (9, 1)), ids=np.arange(18)[::-1])
    distances, found = index.search([[0.5, -0.25, 1.0]] * 9, 12)
    np.testing.assert_array_equal(found[:, :9], np.tile(np.arange(18)[::-1][0::2], (9, 1)))
    np.testing.assert_array_equal(found[:, 9:], np.tile([16, 14, 12], (9, 1)))
    assert (distances[:, :9] == distances[0, 0]).all()


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_cpp_scans_the_stored_rows_without_decoding_them(dtype, monkeypatch):
    if _backend.active_backend().NAME != "cpp":
        pytest.skip("the C++ backend is not active")
    index, ids, decoded = filled_index(dtype, "l2", 24, seed=3)

    def refuse(codes):
        raise AssertionError("search decoded the stored rows")

    monkeypatch.setattr(index._codec, "decode", refuse)
    queries = np.random.default_rng(4).standard_normal((3, 24)).astype(np.float32)
    distances, found = index.search(queries, 5)
    assert_matches_oracle(queries, decoded, 5, "l2", distances, found)


def test_knn_takes_stored_rows_on_every_backend(kernel_path):
    codes = np.zeros((4, 2), np.uint16)
    queries = np.ones((1, 2), np.float32)
    norms = np.zeros(4, np.float32)
    _, found = knn(queries, codes, 2, "ip", 0, database_sqnorms=norms, storage="bfloat16")
    np.testing.assert_array_equal(found, [[0, 1]])


def test_cpp_knn_checks_stored_rows_and_quantiser():
    core = pytest.importorskip("fastretrieve._core")
    queries = np.ones((1, 3), np.float32)
    norms = np.ones(2, np.float32)
    low, step = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="uint16"):
        core.knn(queries, np.zeros((2, 3), np.int8), 1, "l2", 0, norms, False, "bfloat16")
    with pytest.raises(ValueError, match="int8 codes"):
        core.knn(queries, np.zeros((2, 3), np.uint16), 1, "l2", 0, norms, False, "int8", low, step)
    with pytest.raises(ValueError, match="database_sqnorms"):
        core.knn(queries, np.zeros((2, 3), np.uint16), 1, "l2", 0, None, False, "float16")
    with pytest.raises(ValueError, match="quant_low and quant_step"):
        core.knn(queries, np.zeros((2, 3), np.int8), 1, "l2", 0, norms, False, "int8")
    with pytest.raises(ValueError, match="quant_step must be float32"):
        core.knn(queries, np.zeros((2, 3), np.int8), 1, "l2", 0, norms, False, "int8", low,
                 np.ones(2, np.float32))
    with pytest.raises(ValueError, match="unknown storage"):
        core.knn(queries, np.zeros((2, 3), np.uint16), 1, "l2", 0, norms, False, "float8")


# The bfloat16 screen (avx512_bf16 level, from 8 queries on) scores rows against queries
# rounded to bfloat16, keeps every candidate within its error bound and rescores them. The
# next tests build data where that rounding misorders rows, so they fail if the bound or
# the rescoring is wrong; on the other paths they check the same exact answers.
SCREEN_QUERIES = 9


def test_bfloat16_screen_keeps_a_row_that_query_rounding_ranks_too_low(kernel_path):
    # q = 1 + 3 * 2^-10 in 63 dimensions rounds to 1 in bfloat16. Row 1 scores
    # 63 * 1.0029 = 63.18 exactly but 63 on the screen; row 0 scores 63.125 on both.
    dim = 65
    query = np.ones(dim, np.float32)
    query[:63] = 1 + 3 * 2.0**-10
    rows = np.zeros((40, dim), np.float32)
    rows[0, 63:] = [63.0, 0.125]
    rows[1, :63] = 1.0
    index = Index(dim, metric="ip", dtype="bfloat16")
    index.add(rows)
    np.testing.assert_array_equal(index.get([0, 1]), rows[:2])  # bfloat16 holds them exactly
    distances, found = index.search(np.tile(query, (SCREEN_QUERIES, 1)), 1)
    assert (found[:, 0] == 1).all()
    np.testing.assert_allclose(distances[:, 0], 63 * (1 + 3 * 2.0**-10), rtol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_bfloat16_screen_is_exact_among_near_duplicates(kernel_path, metric):
    # Rows a bfloat16 step or two apart around a few centres, and queries off the bfloat16
    # grid: the screen's scores tie or misorder many candidates, the answer may not.
    rng = np.random.default_rng(11)
    dim = 40
    centres = rng.standard_normal((4, dim)).astype(np.float32)
    rows = centres[rng.integers(0, 4, 700)] * (1 + 2.0**-7 * rng.integers(-2, 3, (700, dim)))
    index = Index(dim, metric=metric, dtype="bfloat16")
    index.add(rows.astype(np.float32))
    decoded = index.get(np.arange(700))
    # 300 queries: two query blocks, each split across threads and merged.
    queries = (centres[rng.integers(0, 4, 300)] +
               0.3 * rng.standard_normal((300, dim))).astype(np.float32)
    distances, found = index.search(queries, 15)
    assert_matches_oracle(queries, decoded, 15, metric, distances, found)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_bfloat16_screen_far_from_the_origin_stays_exact(kernel_path, metric):
    # Norms of about 340 make the screen's l2 bound wider than the spread of the
    # distances: it would pass every row, so the search falls back to float32 (ip keeps
    # the screen, with a wide margin).
    rng = np.random.default_rng(12)
    rows = (30 + rng.standard_normal((900, 128))).astype(np.float32)
    index = Index(128, metric=metric, dtype="bfloat16")
    index.add(rows)
    queries = (30 + rng.standard_normal((SCREEN_QUERIES, 128))).astype(np.float32)
    distances, found = index.search(queries, 5)
    assert_matches_oracle(queries, index.get(np.arange(900)), 5, metric, distances, found)
