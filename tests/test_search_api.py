"""The public search API: coercion of inputs and a clear error for every bad argument."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_matches_oracle

import fastretrieve as fr


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((5, 8)).astype(np.float32), rng.standard_normal((40, 8)).astype(
        np.float32
    )


def test_returns_float32_and_int64_best_first(data):
    queries, database = data
    distances, indices = fr.search(queries, 4, database=database)
    assert distances.dtype == np.float32 and indices.dtype == np.int64
    assert distances.shape == indices.shape == (5, 4)
    assert np.all(np.diff(distances, axis=1) >= 0)
    similarities, _ = fr.search(queries, 4, database=database, metric="ip")
    assert np.all(np.diff(similarities, axis=1) <= 0)


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a.astype(np.float64),
        lambda a: a.astype(np.float16).astype(np.float16),
        lambda a: np.asfortranarray(a),
        lambda a: a.tolist(),
    ],
    ids=["float64", "float16", "fortran", "list"],
)
def test_inputs_are_converted(data, convert):
    queries, database = data
    expected = fr.search(queries, 3, database=database)
    got = fr.search(convert(queries), 3, database=convert(database))
    if convert(queries).__class__ is np.ndarray and convert(queries).dtype == np.float16:
        queries16 = queries.astype(np.float16).astype(np.float32)
        database16 = database.astype(np.float16).astype(np.float32)
        assert_matches_oracle(queries16, database16, 3, "l2", *got)
    else:
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)


def test_integer_and_non_contiguous_inputs():
    database = np.arange(60, dtype=np.int64).reshape(20, 3)
    queries = database[::4]  # a strided view
    distances, indices = fr.search(queries, 1, database=database)
    assert indices[:, 0].tolist() == [0, 4, 8, 12, 16]
    assert distances[:, 0].tolist() == [0, 0, 0, 0, 0]
    strided = np.zeros((20, 6))[:, ::2] + database
    assert fr.search(queries, 1, database=strided)[1][:, 0].tolist() == [0, 4, 8, 12, 16]


def test_one_dimensional_query_gives_one_dimensional_result(data):
    queries, database = data
    distances, indices = fr.search(queries[2], 3, database=database)
    assert distances.shape == indices.shape == (3,)
    full = fr.search(queries, 3, database=database)
    np.testing.assert_array_equal(indices, full[1][2])


def test_empty_queries_give_empty_results(data):
    _, database = data
    distances, indices = fr.search(np.empty((0, 8), np.float32), 3, database=database)
    assert distances.shape == indices.shape == (0, 3)


def test_empty_database_is_an_error(data):
    queries, _ = data
    with pytest.raises(ValueError, match="database is empty"):
        fr.search(queries, 3, database=np.empty((0, 8), np.float32))


def test_k_beyond_database_pads(data):
    queries, database = data
    for metric, pad in (("l2", np.inf), ("ip", -np.inf), ("cosine", -np.inf)):
        distances, indices = fr.search(queries, 45, database=database, metric=metric)
        assert np.all(indices[:, 40:] == -1) and np.all(distances[:, 40:] == pad)
        assert np.all(indices[:, :40] >= 0)


@pytest.mark.parametrize("k, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError),
                                      ("3", TypeError), (True, TypeError), (None, TypeError)])
def test_bad_k(data, k, error):
    queries, database = data
    with pytest.raises(error, match="k must be"):
        fr.search(queries, k, database=database)


def test_numpy_integer_k_is_accepted(data):
    queries, database = data
    assert fr.search(queries, np.int32(2), database=database)[1].shape == (5, 2)


def test_dimension_mismatch(data):
    queries, database = data
    with pytest.raises(ValueError, match="dimension mismatch: vecs has d=8, database has d=7"):
        fr.search(queries, 3, database=database[:, :7])


def test_unknown_metric(data):
    queries, database = data
    with pytest.raises(ValueError, match="unknown metric 'hamming'"):
        fr.search(queries, 3, database=database, metric="hamming")
    with pytest.raises(ValueError, match="unknown metric"):
        fr.distances(queries, database, metric="euclid")


@pytest.mark.parametrize("shape", [(2, 3, 4), ()])
def test_wrong_rank(shape):
    with pytest.raises(ValueError, match="must be 1-D or 2-D"):
        fr.search(np.zeros(shape), 1, database=np.zeros((3, 4)))


def test_database_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"database must be 2-D \(n, d\)"):
        fr.search(np.zeros((1, 4)), 1, database=np.zeros(4))


def test_zero_dimension():
    with pytest.raises(ValueError, match="dimension 0"):
        fr.search(np.zeros((2, 0)), 1)


@pytest.mark.parametrize("bad", [np.array([["a", "b"]]), np.array([[object(), 1]], dtype=object),
                                 np.array([[1 + 2j, 0]])], ids=["str", "object", "complex"])
def test_non_numeric_arrays_are_refused(bad):
    with pytest.raises(TypeError, match="must hold real numbers"):
        fr.search(bad, 1, database=np.zeros((3, 2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_query_row_is_named(data, bad):
    queries, database = data
    queries[3, 1] = bad
    with pytest.raises(ValueError, match="vecs row 3 contains NaN or infinity"):
        fr.search(queries, 2, database=database)
    with pytest.raises(ValueError, match="a row 3 contains NaN or infinity"):
        fr.distances(queries, database)


def test_float64_overflowing_float32_is_reported(data):
    queries, database = data
    queries = queries.astype(np.float64)
    queries[1, 0] = 1e300
    with pytest.raises(ValueError, match="vecs row 1"):
        fr.search(queries, 2, database=database)


@pytest.mark.parametrize("threads, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError)])
def test_bad_threads(data, threads, error):
    queries, database = data
    with pytest.raises(error, match="threads must be"):
        fr.search(queries, 2, database=database, threads=threads)


def test_more_threads_than_cores_is_fine(data):
    queries, database = data
    expected = fr.search(queries, 3, database=database)
    got = fr.search(queries, 3, database=database, threads=16)
    np.testing.assert_array_equal(got[1], expected[1])


def test_distances_shapes_and_single_vectors(data):
    queries, database = data
    assert fr.distances(queries, database).shape == (5, 40)
    assert fr.distances(queries[0], database).shape == (40,)
    assert fr.distances(queries, database[0]).shape == (5,)
    assert fr.distances(queries[0], database[0]).shape == ()
    assert fr.distances(np.empty((0, 8)), database).shape == (0, 40)


def test_metric_names_are_case_insensitive(data):
    queries, database = data
    np.testing.assert_array_equal(fr.search(queries, 2, database=database, metric="L2")[1],
                                  fr.search(queries, 2, database=database)[1])
