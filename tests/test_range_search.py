"""fastretrieve.range_search on every kernel path (each ISA, each backend) against the
float64 oracle, including data far from the origin."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import oracle_scores
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastretrieve as fr

METRICS = ["l2", "ip", "cosine"]
ODD_DIMS = [1, 3, 7, 13, 100, 257]


def oracle_ranges(queries, database, radius, metric, exclude_self=False):
    """The float64 oracle's (lims, values, indices) within the radius, best first."""
    lims, values, indices = [0], [], []
    for i in range(len(queries)):
        row = oracle_scores(queries[i:i + 1], database, metric)[0]
        inside = row <= radius if metric == "l2" else row >= radius
        if exclude_self:
            inside[i] = False
        found = np.nonzero(inside)[0]
        key = row[found] if metric == "l2" else -row[found]
        order = np.lexsort((found, key))
        indices.append(found[order])
        values.append(row[found][order])
        lims.append(lims[-1] + len(found))
    return np.array(lims), np.concatenate(values), np.concatenate(indices)


def assert_range_matches_oracle(queries, database, radius, metric, result, exclude_self=False,
                                expected=None):
    """Check (lims, distances, indices); `expected` from oracle_ranges, computed if None."""
    lims, distances, indices = result
    assert lims.dtype == np.int64 and lims.shape == (len(queries) + 1,) and lims[0] == 0
    assert distances.dtype == np.float32 and indices.dtype == np.int64
    assert len(distances) == len(indices) == lims[-1] and np.all(np.diff(lims) >= 0)
    if expected is None:
        expected = oracle_ranges(queries, database, radius, metric, exclude_self)
    want_lims, want_values, want_indices = expected
    np.testing.assert_array_equal(lims, want_lims)
    np.testing.assert_array_equal(indices, want_indices)
    # Exact distances rounded once to float32.
    np.testing.assert_allclose(distances, want_values, rtol=2**-23, atol=1e-30)


def radius_between(values, fraction, metric):
    """A radius halfway between two distinct oracle values, so that no pair sits on it:
    about `fraction` of the pairs inside."""
    ordered = np.unique(values)
    if len(ordered) < 2:  # one value: a radius just past it, everything inside
        return float(ordered[0] + (1e-6 * abs(ordered[0]) + 1e-6) * (1 if metric == "l2" else -1))
    if metric != "l2":
        ordered = ordered[::-1]
    position = min(len(ordered) - 2, int(fraction * len(ordered)))
    return float((ordered[position] + ordered[position + 1]) / 2)


def offset_data(seed, n_queries, n_database, dim, offset):
    rng = np.random.default_rng(seed)
    database = (offset + rng.standard_normal((n_database, dim))).astype(np.float32)
    queries = (offset + rng.standard_normal((n_queries, dim))).astype(np.float32)
    return queries, database


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dim", ODD_DIMS)
def test_range_search_matches_oracle_near_and_far_from_origin(kernel_path, dim, metric):
    # Offsets of 1e3 and 1e4 times the spread: |q|^2 - 2<q, x> + |x|^2 in float32 would
    # lose every digit of the distances; the answer must not move.
    for offset in (0.0, 1e3, 1e4):
        queries, database = offset_data(dim, 9, 301, dim, offset)
        exact = oracle_scores(queries, database, metric)
        for fraction in (0.0, 0.3):
            radius = radius_between(exact, fraction, metric)
            result = fr.range_search(queries, radius, database=database, metric=metric)
            assert_range_matches_oracle(queries, database, radius, metric, result)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n_queries", [1, 3, 260])
def test_range_search_splits_and_thread_counts(kernel_path, n_queries, metric):
    # The rows are split in chunks across threads (4,096 rows at least per chunk in the
    # C++ backend); 260 queries make two query blocks.
    queries, database = offset_data(n_queries, n_queries, 9_000 if n_queries < 10 else 5_000,
                                    12, 0.0)
    radius = {"l2": 6.0, "ip": 7.0, "cosine": 0.6}[metric]
    expected = oracle_ranges(queries, database, radius, metric)
    for threads in (1, 2, 3):
        result = fr.range_search(queries, radius, database=database, metric=metric,
                                 threads=threads)
        assert result[0][-1] > 0
        assert_range_matches_oracle(queries, database, radius, metric, result, expected=expected)


@pytest.mark.parametrize("metric", METRICS)
def test_radius_on_an_exact_distance_is_included_and_ties_keep_lower_index(kernel_path, metric):
    # Small integers: every distance is exact, so the radius can sit exactly on one.
    rng = np.random.default_rng(3)
    database = rng.integers(-2, 3, size=(3000, 5)).astype(np.float32)
    database[1000:1200] = database[:200]  # exact duplicates: ties
    queries = rng.integers(-2, 3, size=(20, 5)).astype(np.float32)
    # Cosine sits on 0 (orthogonal pairs): other exact cosines depend on rounding order.
    radius = {"l2": 4.0, "ip": 3.0, "cosine": 0.0}[metric]
    result = fr.range_search(queries, radius, database=database, metric=metric)
    exact = oracle_scores(queries, database, metric)
    assert np.any(exact == radius)  # the boundary case is exercised
    assert_range_matches_oracle(queries, database, radius, metric, result)


@pytest.mark.parametrize("metric", METRICS)
def test_self_join_excludes_own_row_and_finds_duplicates(kernel_path, metric):
    vectors, _ = offset_data(11, 200, 1, 10, 1e3)
    vectors[50] = vectors[7]
    radius = {"l2": 0.0, "ip": float(oracle_scores(vectors[7:8], vectors[7:8], "ip")[0, 0]),
              "cosine": 1.0 - 1e-12}[metric]
    result = fr.range_search(vectors, radius, metric=metric)
    assert_range_matches_oracle(vectors, vectors, radius, metric, result, exclude_self=True)
    lims, _, indices = result
    assert 50 in indices[lims[7]:lims[8]] and 7 in indices[lims[50]:lims[51]]
    for i in range(len(vectors)):
        assert i not in indices[lims[i]:lims[i + 1]]


def test_l2_radius_zero_finds_exact_duplicates_only(kernel_path):
    vectors, _ = offset_data(5, 50, 1, 7, 1e4)
    vectors[[10, 20, 30]] = vectors[3]
    lims, distances, indices = fr.range_search(vectors, 0.0)
    assert indices[lims[3]:lims[4]].tolist() == [10, 20, 30]
    assert indices[lims[20]:lims[21]].tolist() == [3, 10, 30]
    assert np.all(distances == 0) and lims[-1] == 12


def test_cosine_zero_vectors_have_similarity_zero(kernel_path):
    database = np.array([[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 0]], np.float32)
    queries = np.array([[0, 0, 0], [2, 0, 0]], np.float32)
    lims, distances, indices = fr.range_search(queries, 0.0, database=database, metric="cosine")
    assert lims.tolist() == [0, 4, 7]
    assert indices.tolist() == [0, 1, 2, 3, 1, 0, 3]
    assert distances.tolist() == [0, 0, 0, 0, 1, 0, 0]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_database_row_is_named(kernel_path, metric, bad):
    rng = np.random.default_rng(1)
    database = rng.standard_normal((9_000, 9)).astype(np.float32)
    database[7_000, 4] = bad
    database[5, 0] = bad
    with pytest.raises(ValueError, match="database row 5 contains NaN or infinity"):
        fr.range_search(np.ones((2, 9), np.float32), 1.0, database=database, metric=metric)


def test_non_finite_query_row_is_named(kernel_path):
    queries = np.ones((4, 3), np.float32)
    queries[2, 1] = np.inf
    with pytest.raises(ValueError, match="vecs row 2 contains NaN or infinity"):
        fr.range_search(queries, 1.0, database=np.ones((5, 3), np.float32))


def test_max_results_bounds_the_result(kernel_path):
    queries, database = offset_data(2, 40, 5000, 4, 0.0)
    lims, _, _ = fr.range_search(queries, 2.0, database=database)
    total = int(lims[-1])
    assert total > 1000
    assert fr.range_search(queries, 2.0, database=database, max_results=total)[0][-1] == total
    with pytest.raises(ValueError, match=f"more than max_results={total - 1:,} neighbours"):
        fr.range_search(queries, 2.0, database=database, max_results=total - 1)
    with pytest.raises(ValueError, match="max_results=0 "):
        fr.range_search(queries, 2.0, database=database, max_results=0)
    assert fr.range_search(queries, 2.0, database=database, max_results=None)[0][-1] == total


def test_arguments_are_validated():
    database = np.ones((5, 3), np.float32)
    query = np.zeros(3, np.float32)
    lims, distances, indices = fr.range_search(query, 3.0, database=database)  # 1-D: one query
    assert lims.tolist() == [0, 5] and indices.tolist() == [0, 1, 2, 3, 4]
    lims, distances, indices = fr.range_search(np.empty((0, 3)), 1.0, database=database)
    assert lims.tolist() == [0] and len(distances) == len(indices) == 0
    assert fr.range_search(query, -1.0, database=database)[0].tolist() == [0, 0]
    with pytest.raises(ValueError, match="radius must be finite"):
        fr.range_search(query, np.nan, database=database)
    with pytest.raises(TypeError, match="radius must be a real number"):
        fr.range_search(query, "1", database=database)
    with pytest.raises(TypeError, match="max_results must be an integer"):
        fr.range_search(query, 1.0, database=database, max_results=1.5)
    with pytest.raises(ValueError, match="max_results must be >= 0"):
        fr.range_search(query, 1.0, database=database, max_results=-1)
    with pytest.raises(ValueError, match="unknown metric"):
        fr.range_search(query, 1.0, database=database, metric="hamming")
    with pytest.raises(ValueError, match="dimension mismatch"):
        fr.range_search(query, 1.0, database=np.ones((5, 4)))
    with pytest.raises(ValueError, match="database is empty"):
        fr.range_search(query, 1.0, database=np.ones((0, 3)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_queries=st.integers(1, 8),
    n_database=st.integers(1, 80),
    dim=st.integers(1, 40),
    metric=st.sampled_from(METRICS),
    seed=st.integers(0, 2**32 - 1),
    offset_exponent=st.sampled_from([None, 3, 4]),
    quantised=st.booleans(),
)
def test_property_agrees_with_oracle(kernel_path, n_queries, n_database, dim, metric, seed,
                                     offset_exponent, quantised):
    rng = np.random.default_rng(seed)
    database = rng.standard_normal((n_database, dim))
    queries = rng.standard_normal((n_queries, dim))
    if quantised:  # coarse values: duplicates and zero vectors
        database, queries = np.round(database), np.round(queries)
    if offset_exponent is not None:
        database, queries = database + 10.0**offset_exponent, queries + 10.0**offset_exponent
    database, queries = database.astype(np.float32), queries.astype(np.float32)
    exact = oracle_scores(queries, database, metric)
    radius = radius_between(exact, rng.uniform(0, 1), metric)
    if quantised and offset_exponent is None and metric != "cosine":
        radius = float(np.round(radius))  # exact distances on the radius
    result = fr.range_search(queries, radius, database=database, metric=metric)
    assert_range_matches_oracle(queries, database, radius, metric, result)
