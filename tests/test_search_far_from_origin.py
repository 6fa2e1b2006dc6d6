"""Exactness wherever the data sits: every kernel path against the float64 oracle on data
far from the origin, where the expanded form |x|^2 - 2<q,x> loses every digit that tells
neighbours apart (l2 is translation invariant, so the answer must not change)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_matches_oracle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastretrieve as fr

METRICS = ["l2", "ip", "cosine"]


def far_data(seed, n_queries, n_database, dim, offset, spread=1.0):
    """Rows around a common far point; queries are near-copies of the first rows."""
    rng = np.random.default_rng(seed)
    centre = offset * (1.0 + 0.1 * rng.standard_normal(dim))
    database = (centre + spread * rng.standard_normal((n_database, dim))).astype(np.float32)
    nudge = 1e-3 * spread * rng.standard_normal((n_queries, dim))
    queries = (database[np.arange(n_queries) % n_database] + nudge).astype(np.float32)
    return queries, database


def test_reported_case_unnormalised_features(kernel_path):
    # 5,000 rows of 1,000 + 0.05 x noise, queries that are tiny perturbations of rows 0-19:
    # each query's nearest neighbour is its own row, at a distance of about 0.005.
    rng = np.random.default_rng(0)
    database = (1000 + 0.05 * rng.standard_normal((5000, 64))).astype(np.float32)
    queries = (database[:20] + 0.01 * rng.standard_normal((20, 64))).astype(np.float32)
    distances, indices = fr.search(queries, 10, database=database)
    assert indices[:, 0].tolist() == list(range(20))
    assert_matches_oracle(queries, database, 10, "l2", distances, indices)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dim", [1, 3, 17, 64, 129])
@pytest.mark.parametrize("offset", [1e1, 1e3, 1e4])
def test_far_from_origin_matches_oracle_each_dim(kernel_path, dim, offset, metric):
    queries, database = far_data(dim, 6, 700, dim, offset)
    for k in (1, 10, 705):  # 705 > N: padded
        distances, indices = fr.search(queries, k, database=database, metric=metric)
        assert_matches_oracle(queries, database, k, metric, distances, indices)


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("n_queries", [1, 5, 70, 300])
def test_far_from_origin_both_regimes(kernel_path, n_queries, metric):
    # Few queries split the database across threads; from 64 queries on the packed panels
    # run, and 300 queries make two query blocks; 3 threads split each block's scan.
    queries, database = far_data(n_queries, n_queries, 12_000, 40, 1e3)
    for threads in (1, 3):
        distances, indices = fr.search(queries, 10, database=database, metric=metric,
                                       threads=threads)
        assert_matches_oracle(queries, database, 10, metric, distances, indices)


@pytest.mark.parametrize("metric", METRICS)
def test_far_from_origin_self_join(kernel_path, metric):
    _, vectors = far_data(5, 0, 400, 24, 1e3)
    vectors[123] = vectors[45]  # an exact duplicate: each is the other's nearest
    distances, indices = fr.search(vectors, 5, metric=metric)
    assert_matches_oracle(vectors, vectors, 5, metric, distances, indices, exclude_self=True)
    if metric == "l2":
        assert indices[45, 0] == 123 and indices[123, 0] == 45


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_far_from_origin_with_many_duplicates(kernel_path, metric):
    # Far from the origin every screened score is within its error bound of the others:
    # hundreds of exact duplicates must still come back lowest index first.
    _, base = far_data(9, 0, 50, 12, 1e4)
    database = np.concatenate([base] * 40)  # 2,000 rows, each vector 40 times
    queries = base[:7] + np.float32(0.25)
    distances, indices = fr.search(queries, 30, database=database, metric=metric)
    assert_matches_oracle(queries, database, 30, metric, distances, indices)


@pytest.mark.parametrize("dtype,offset,spread", [
    ("float32", 1e4, 1.0),
    ("float16", 1e2, 1.0),     # float16 steps are 1/16 at 100: rows stay distinct
    ("bfloat16", 1e2, 10.0),   # bfloat16 steps are 0.5 at 100
    ("int8", 1e4, 1.0),
])
@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("n_queries", [2, 5, 80])  # 5: rows of 33 take the panels
def test_far_from_origin_index_storage(kernel_path, dtype, offset, spread, metric, n_queries):
    # Exact with respect to the stored (decoded) vectors, with norms cached at add time.
    queries, database = far_data(17, n_queries, 3000, 33, offset, spread)
    index = fr.Index(33, metric=metric, dtype=dtype)
    index.add(database)
    decoded = index.get(index.ids)
    distances, found = index.search(queries, 10)
    assert_matches_oracle(queries, decoded, 10, metric, distances, found)


# The kernel path is fixed per test item; hypothesis draws where the data sits and its scale.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_queries=st.integers(1, 10),
    n_database=st.integers(1, 120),
    dim=st.integers(1, 40),
    k=st.integers(1, 130),
    metric=st.sampled_from(METRICS),
    offset_exponent=st.integers(-2, 4),   # offset = 10**e x the spread
    scale_exponent=st.integers(-6, 6),    # spread = 10**e
    seed=st.integers(0, 2**32 - 1),
)
def test_property_translation_and_scale(kernel_path, n_queries, n_database, dim, k, metric,
                                        offset_exponent, scale_exponent, seed):
    spread = 10.0**scale_exponent
    queries, database = far_data(seed, n_queries, n_database, dim,
                                 spread * 10.0**offset_exponent, spread)
    distances, indices = fr.search(queries, k, database=database, metric=metric)
    assert_matches_oracle(queries, database, k, metric, distances, indices)
