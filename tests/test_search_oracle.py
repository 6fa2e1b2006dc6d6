"""Every kernel path (each ISA, each backend) against the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_matches_oracle, oracle_scores
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastretrieve as fr

METRICS = ["l2", "ip", "cosine"]
DIMS = [1, 3, 7, 13, 16, 100, 128, 257, 768]


def random_data(seed, n_queries, n_database, dim):
    rng = np.random.default_rng(seed)
    database = rng.standard_normal((n_database, dim)).astype(np.float32)
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    return queries, database


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dim", DIMS)
def test_search_matches_oracle_each_dim(kernel_path, dim, metric):
    queries, database = random_data(dim, 9, 301, dim)
    for k in (1, 10, 100, 310):  # 310 > N: padded
        distances, indices = fr.search(queries, k, database=database, metric=metric)
        assert_matches_oracle(queries, database, k, metric, distances, indices)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dim", [1, 7, 33, 64, 65, 128, 129, 257])
@pytest.mark.parametrize("n_queries", [2, 4, 7, 8, 15, 16])
def test_panel_thresholds_by_row_length(kernel_path, n_queries, dim, metric):
    # The kernels move from reduce tiles to packed panels at a query count that depends on
    # the row length: rows of up to 64 elements from 4 queries on (AVX2 from 8), up to 128
    # from 8, longer ones from 16. Each count here sits on one side of a threshold; 301
    # rows leave a short last panel strip.
    queries, database = random_data(dim + n_queries, n_queries, 301, dim)
    for k in (1, 10, 310):
        distances, indices = fr.search(queries, k, database=database, metric=metric)
        assert_matches_oracle(queries, database, k, metric, distances, indices)


def assert_exact_on_thread_counts(queries, database, metric, thread_counts):
    for threads in thread_counts:
        distances, indices = fr.search(queries, 10, database=database, metric=metric,
                                       threads=threads)
        assert_matches_oracle(queries, database, 10, metric, distances, indices)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n_queries", [1, 3, 70, 130])
def test_search_regimes_split_database_and_query_blocks(kernel_path, n_queries, metric):
    # 20,000 rows are split across threads for few queries (four chunks per thread) and
    # from 64 queries on (one per thread), then merged.
    queries, database = random_data(n_queries, n_queries, 20_000, 24)
    assert_exact_on_thread_counts(queries, database, metric, (1, 2, 3))


@pytest.mark.parametrize("metric", METRICS)
def test_several_query_blocks(kernel_path, metric):
    # 300 queries make two blocks of 150: 2 threads take one block each, whole; 3 threads
    # split each block's scan in three database chunks (six tasks) and merge.
    queries, database = random_data(300, 300, 9_000, 8)
    assert_exact_on_thread_counts(queries, database, metric, (2, 3))


@pytest.mark.parametrize("metric", METRICS)
def test_large_k_across_chunks(kernel_path, metric):
    queries, database = random_data(5, 4, 9_000, 8)
    distances, indices = fr.search(queries, 1000, database=database, metric=metric)
    assert_matches_oracle(queries, database, 1000, metric, distances, indices)


@pytest.mark.parametrize("metric", METRICS)
def test_self_join_excludes_own_row_and_finds_duplicates(kernel_path, metric):
    _, vectors = random_data(11, 0, 200, 10)
    vectors[50] = vectors[7]  # a planted duplicate
    distances, indices = fr.search(vectors, 5, metric=metric)
    assert_matches_oracle(vectors, vectors, 5, metric, distances, indices, exclude_self=True)
    if metric != "ip":  # by distance or angle, each twin is the other's nearest neighbour
        assert indices[7, 0] == 50 and indices[50, 0] == 7
    assert not np.any(indices == np.arange(200)[:, None])


def test_self_join_single_vector_is_all_padding(kernel_path):
    distances, indices = fr.search(np.ones((1, 4), np.float32), 3)
    assert indices.tolist() == [[-1, -1, -1]]
    assert np.all(distances == np.inf)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_ties_keep_lower_index(kernel_path, metric):
    # Small integers: every distance is exact in float32, so ties are real ties.
    rng = np.random.default_rng(3)
    database = rng.integers(-2, 3, size=(3000, 5)).astype(np.float32)
    database[1000:1200] = database[:200]  # many exact duplicates
    queries = rng.integers(-2, 3, size=(20, 5)).astype(np.float32)
    distances, indices = fr.search(queries, 50, database=database, metric=metric)
    assert_matches_oracle(queries, database, 50, metric, distances, indices, tie_rtol=0.0)


def test_cosine_zero_vectors_give_zero_similarity(kernel_path):
    database = np.array([[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 0]], np.float32)
    queries = np.array([[0, 0, 0], [2, 0, 0]], np.float32)
    distances, indices = fr.search(queries, 4, database=database, metric="cosine")
    assert not np.isnan(distances).any()
    # Zero query: everything ties at 0, so database order.
    assert indices[0].tolist() == [0, 1, 2, 3] and distances[0].tolist() == [0, 0, 0, 0]
    assert indices[1].tolist() == [1, 0, 3, 2]
    np.testing.assert_allclose(distances[1], [1, 0, 0, -1])
    matrix = fr.distances(queries, database, metric="cosine")
    np.testing.assert_allclose(matrix, [[0, 0, 0, 0], [0, 1, -1, 0]])


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dim", [1, 7, 16, 257])
def test_distances_matrix_matches_oracle(kernel_path, dim, metric):
    a, b = random_data(dim + 1, 67, 260, dim)
    matrix = fr.distances(a, b, metric=metric)
    assert matrix.shape == (67, 260) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix, oracle_scores(a, b, metric), rtol=1e-4, atol=1e-4)


def test_distances_l2_is_direct_for_near_identical_vectors(kernel_path):
    # |x|^2 - 2<q,x> + |q|^2 would cancel to noise here; the direct form keeps the digits.
    base = np.full((1, 64), 1000.0, np.float32)
    near = base.copy()
    near[0, 0] += 0.5
    np.testing.assert_allclose(fr.distances(base, near), [[0.25]], rtol=1e-5)
    distances, _ = fr.search(base, 1, database=near)
    np.testing.assert_allclose(distances, [[0.25]], rtol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("row", [0, 5, 17_999])
def test_non_finite_database_row_is_named(kernel_path, metric, bad, row):
    _, database = random_data(1, 0, 18_000, 9)
    database[row, 4] = bad
    queries = np.ones((2, 9), np.float32)
    with pytest.raises(ValueError, match=f"database row {row} contains NaN or infinity"):
        fr.search(queries, 3, database=database, metric=metric)


def test_non_finite_rows_reported_with_the_lowest_index(kernel_path):
    _, database = random_data(2, 0, 18_000, 9)
    database[[15_000, 9_000]] = np.nan
    with pytest.raises(ValueError, match="database row 9000 "):
        fr.search(np.ones((1, 9), np.float32), 3, database=database)


# The kernel path is fixed per test item; hypothesis varies the data within it.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_queries=st.integers(1, 12),
    n_database=st.integers(1, 90),
    dim=st.integers(1, 40),
    k=st.integers(1, 100),
    metric=st.sampled_from(METRICS),
    seed=st.integers(0, 2**32 - 1),
    quantised=st.booleans(),
)
def test_property_agrees_with_oracle(kernel_path, n_queries, n_database, dim, k, metric, seed, quantised):
    rng = np.random.default_rng(seed)
    database = rng.standard_normal((n_database, dim))
    queries = rng.standard_normal((n_queries, dim))
    if quantised:  # coarse values: exact ties and duplicates, including zero vectors
        database, queries = np.round(database), np.round(queries)
    database, queries = database.astype(np.float32), queries.astype(np.float32)
    distances, indices = fr.search(queries, k, database=database, metric=metric)
    assert_matches_oracle(queries, database, k, metric, distances, indices,
                          tie_rtol=0.0 if quantised else 1e-6)
