"""fastretrieve.Index: ids, metadata, search against a float64 oracle, storage dtypes, memory.

The checking helpers here are shared by the other test_index_* modules; the float64
oracle itself is the one in conftest.py.
"""

import tracemalloc

import numpy as np
import pytest
from conftest import oracle_scores

import fastretrieve
from fastretrieve import Index
from fastretrieve import _stored_rows

METRICS = ("l2", "ip", "cosine")
DTYPES = ("float32", "float16", "bfloat16", "int8")


def assert_exact_topk(distances, found_ids, queries, stored_ids, stored_vectors, metric, k,
                      tolerance=1e-4):
    """Check a search answer against the oracle for one state of the index.

    Each answer must list distinct stored ids, best first, with their true distances,
    and nothing left out may beat the worst one returned (beyond ``tolerance``, which
    absorbs float32 near-ties at the k-th place). Padding must follow the rules.
    """
    stored_ids = np.asarray(stored_ids)
    scores = oracle_scores(queries, stored_vectors, metric)
    sign = 1.0 if metric == "l2" else -1.0  # turn every metric into "smaller is better"
    row_of = {int(i): row for row, i in enumerate(stored_ids)}
    expected_found = min(k, len(stored_ids))
    for query in range(len(queries)):
        ids, dists = found_ids[query], distances[query].astype(np.float64)
        assert (ids[:expected_found] >= 0).all() and (ids[expected_found:] == -1).all()
        assert (dists[expected_found:] == (np.inf if metric == "l2" else -np.inf)).all()
        missing = [int(i) for i in ids[:expected_found] if int(i) not in row_of]
        assert not missing, f"ids {missing} are not stored in this state"
        rows = np.array([row_of[int(i)] for i in ids[:expected_found]], np.int64)
        assert len(set(rows.tolist())) == len(rows)
        true = scores[query, rows]
        scale = 1.0 + np.abs(true)
        np.testing.assert_array_less(np.abs(dists[:expected_found] - true), tolerance * scale)
        assert (np.diff(sign * dists[:expected_found]) >= 0).all()
        left_out = np.setdiff1d(np.arange(len(stored_ids)), rows)
        if len(left_out) and len(rows):
            worst_kept = (sign * true).max()
            best_left = (sign * scores[query, left_out]).min()
            assert worst_kept <= best_left + tolerance * (1.0 + abs(best_left))


def random_vectors(rows, dim, seed):
    return np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)


# -- float32 storage: search ------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dim", [1, 3, 7, 13, 100, 257])
def test_search_matches_oracle(metric, dim):
    vectors = random_vectors(300, dim, seed=dim)
    queries = random_vectors(9, dim, seed=dim + 1)
    index = Index(dim, metric=metric)
    ids = index.add(vectors, ids=np.arange(300) * 7 + 5)
    distances, found = index.search(queries, 10)
    assert distances.dtype == np.float32 and found.dtype == np.int64
    assert distances.shape == found.shape == (9, 10)
    assert_exact_topk(distances, found, queries, ids, index.get(ids), metric, 10)


@pytest.mark.parametrize("metric", METRICS)
def test_search_equals_module_search_on_stored_vectors(metric):
    vectors = random_vectors(500, 16, seed=1)
    queries = random_vectors(20, 16, seed=2)
    index = Index(16, metric=metric)
    index.add(vectors, ids=np.arange(1000, 1500))
    distances, found = index.search(queries, 12)
    expected_distances, positions = fastretrieve.search(
        queries, 12, database=index.get(index.ids), metric=metric
    )
    np.testing.assert_array_equal(found, index.ids[positions])
    np.testing.assert_array_equal(distances, expected_distances)


def test_cosine_index_stores_unit_vectors_and_keeps_zero_vectors_zero():
    vectors = np.array([[3.0, 4.0], [0.0, 0.0], [-2.0, 0.0]], np.float32)
    index = Index(2, metric="cosine")
    ids = index.add(vectors)
    np.testing.assert_allclose(index.get(ids), [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], rtol=1e-6)
    distances, found = index.search(np.array([1.0, 0.0]), 3)
    np.testing.assert_array_equal(found, [0, 1, 2])
    np.testing.assert_allclose(distances, [0.6, 0.0, -1.0], rtol=1e-6)
    zero_query_distances, _ = index.search(np.zeros(2), 3)
    np.testing.assert_array_equal(zero_query_distances, [0.0, 0.0, 0.0])


def test_cosine_similarities_match_those_of_the_raw_vectors():
    vectors = random_vectors(200, 24, seed=3) * 50.0
    queries = random_vectors(5, 24, seed=4)
    index = Index(24, metric="cosine")
    index.add(vectors)
    distances, found = index.search(queries, 5)
    raw_distances, raw_positions = fastretrieve.search(
        queries, 5, database=vectors, metric="cosine"
    )
    np.testing.assert_array_equal(found, raw_positions)
    np.testing.assert_allclose(distances, raw_distances, atol=1e-6)


@pytest.mark.parametrize("metric, pad", [("l2", np.inf), ("ip", -np.inf), ("cosine", -np.inf)])
def test_padding_when_k_exceeds_the_index(metric, pad):
    index = Index(4, metric=metric)
    empty_distances, empty_ids = index.search(np.ones((2, 4)), 3)
    np.testing.assert_array_equal(empty_ids, -np.ones((2, 3)))
    np.testing.assert_array_equal(empty_distances, np.full((2, 3), pad, np.float32))
    index.add(random_vectors(2, 4, seed=5), ids=[10, 20])
    distances, found = index.search(np.ones(4), 5)
    assert found.shape == distances.shape == (5,)
    assert sorted(found[:2].tolist()) == [10, 20]
    np.testing.assert_array_equal(found[2:], [-1, -1, -1])
    np.testing.assert_array_equal(distances[2:], [pad] * 3)


def test_equal_distances_rank_the_earlier_stored_row_first():
    index = Index(3, metric="l2")
    index.add(np.ones((6, 3)), ids=[50, 40, 30, 20, 10, 0])
    _, found = index.search(np.zeros(3), 4)
    np.testing.assert_array_equal(found, [50, 40, 30, 20])


def test_search_validates_queries():
    index = Index(4, metric="l2")
    index.add(np.eye(4))
    with pytest.raises(ValueError, match="dimension mismatch"):
        index.search(np.ones((1, 5)), 1)
    with pytest.raises(ValueError, match="row 1 contains NaN"):
        index.search(np.array([[0, 0, 0, 0], [np.nan, 0, 0, 0]]), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(np.ones(4), 0)
    distances, found = index.search(np.empty((0, 4)), 2)
    assert distances.shape == found.shape == (0, 2)


# -- ids, replacement, removal ------------------------------------------------------------------


def test_automatic_ids_continue_after_the_largest_id_ever_held():
    index = Index(2, metric="l2")
    np.testing.assert_array_equal(index.add(np.ones((3, 2))), [0, 1, 2])
    index.add(np.ones((1, 2)), ids=[100])
    index.remove([100])
    np.testing.assert_array_equal(index.add(np.ones((2, 2))), [101, 102])
    assert sorted(index.ids.tolist()) == [0, 1, 2, 101, 102]


def test_re_adding_an_id_replaces_its_vector_and_metadata():
    index = Index(2, metric="l2")
    index.add([[1.0, 0.0], [0.0, 1.0]], ids=[7, 8], metadata=["old", {"keep": 1}])
    version = index.version
    index.add([[5.0, 5.0], [9.0, 9.0]], ids=[7, 9], metadata=["new", None])
    assert index.version == version + 1
    assert len(index) == 3
    np.testing.assert_array_equal(index.get([7, 8, 9]), [[5, 5], [0, 1], [9, 9]])
    assert index.get_metadata([7, 8, 9]) == ["new", {"keep": 1}, None]
    _, found = index.search([5.0, 5.0], 1)
    assert found.tolist() == [7]


def test_remove_forgets_ids_and_rejects_unknown_ones_without_removing_anything():
    vectors = random_vectors(50, 5, seed=6)
    index = Index(5, metric="ip")
    index.add(vectors, ids=np.arange(50), metadata=[str(i) for i in range(50)])
    with pytest.raises(KeyError, match="id 999 is not in the index"):
        index.remove([3, 999])
    assert len(index) == 50 and 3 in index
    index.remove(np.arange(0, 50, 3))
    survivors = [i for i in range(50) if i % 3]
    assert sorted(index.ids.tolist()) == survivors and 3 not in index
    with pytest.raises(KeyError, match="id 3 is not in the index"):
        index.get_metadata(3)
    assert index.get_metadata(4) == "4"
    np.testing.assert_array_equal(index.get(survivors), vectors[survivors])
    queries = random_vectors(4, 5, seed=7)
    distances, found = index.search(queries, 8)
    assert_exact_topk(distances, found, queries, survivors, vectors[survivors], "ip", 8)
    index.remove(index.ids)
    assert len(index) == 0
    assert index.search(queries, 2)[1].tolist() == [[-1, -1]] * 4


@pytest.mark.parametrize(
    "ids, error, message",
    [
        ([1, 2, 1], ValueError, "id 1 more than once"),
        ([1, -2, 3], ValueError, ">= 0"),
        ([1.0, 2.0, 3.0], TypeError, "must be integers"),
        ([1, 2], ValueError, "2 entries for 3 vectors"),
        (np.array([2**63, 1, 2], np.uint64), ValueError, "beyond the int64 range"),
    ],
)
def test_add_rejects_bad_ids(ids, error, message):
    index = Index(2)
    with pytest.raises(error, match=message):
        index.add(np.ones((3, 2)), ids=ids)
    assert len(index) == 0 and index.version == 0


def test_remove_rejects_duplicate_ids():
    index = Index(2)
    index.add(np.ones((2, 2)))
    with pytest.raises(ValueError, match="more than once"):
        index.remove([0, 0])


def test_add_rejects_non_finite_rows_and_wrong_dimensions():
    index = Index(3, metric="l2")
    with pytest.raises(ValueError, match="vecs row 2 contains NaN or infinity"):
        index.add([[0, 0, 0], [1, 1, 1], [0, np.inf, 0]])
    with pytest.raises(ValueError, match="dimension mismatch"):
        index.add(np.ones((2, 4)))
    with pytest.raises(ValueError, match="squared norm beyond the float32 range"):
        index.add(np.full((1, 3), 3e38, np.float32))
    assert len(index) == 0


def test_metadata_is_stored_as_its_json_round_trip_and_validated():
    index = Index(2)
    index.add(np.ones((2, 2)), metadata=[("a", 1), {3: "x"}])
    assert index.get_metadata([0, 1]) == [["a", 1], {"3": "x"}]
    returned = index.get_metadata(1)
    returned["3"] = "changed"
    assert index.get_metadata(1) == {"3": "x"}
    with pytest.raises(TypeError, match="metadata for row 1 is not JSON-serialisable"):
        index.add(np.ones((2, 2)), metadata=["ok", object()])
    with pytest.raises(TypeError, match="metadata for row 0"):
        index.add(np.ones((1, 2)), metadata=[float("nan")])
    with pytest.raises(ValueError, match="metadata has 1 entries for 2 vectors"):
        index.add(np.ones((2, 2)), metadata=["one"])
    with pytest.raises(TypeError, match="one JSON value per vector"):
        index.add(np.ones((1, 2)), metadata="path.jpg")
    assert len(index) == 2


def test_attributes_are_a_json_round_trip_and_setting_them_is_a_modification():
    index = Index(2)
    assert index.attributes == {}
    index.add(np.ones((2, 2)))
    given = {"model": {"name": "classic", "size": (224, 224)}, 7: "seven", "ok": True}
    index.attributes = given
    assert index.version == 2  # the add, then the assignment
    assert index.attributes == {"model": {"name": "classic", "size": [224, 224]},
                                "7": "seven", "ok": True}
    given["model"]["name"] = "changed by the caller"  # the index kept its own copy
    returned = index.attributes
    returned["model"]["name"] = "changed"
    returned["new"] = 1
    assert index.attributes["model"]["name"] == "classic" and "new" not in index.attributes
    index.attributes = {}
    assert index.attributes == {} and index.version == 3
    assert len(index) == 2 and index.search(np.ones(2), 1)[1].tolist() == [0]


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"model": object()}, "attributes are not JSON-serialisable"),
        ({"scale": float("nan")}, "attributes are not JSON-serialisable"),
        ({"scale": [1.0, float("inf")]}, "attributes are not JSON-serialisable"),
        ({("a", "b"): 1}, "attributes are not JSON-serialisable"),
        (["model", "classic"], "attributes must be a dict"),
        ("classic", "attributes must be a dict"),
        (None, "attributes must be a dict"),
    ],
)
def test_attributes_reject_what_json_cannot_represent(attributes, message):
    index = Index(2)
    index.attributes = {"model": "classic"}
    with pytest.raises(TypeError, match=message):
        index.attributes = attributes
    assert index.attributes == {"model": "classic"} and index.version == 1


def test_properties_and_version():
    index = Index(5, metric="IP", dtype=np.float16)
    assert (index.dim, index.metric, index.dtype, len(index)) == (5, "ip", "float16", 0)
    assert repr(index) == "Index(dim=5, metric='ip', dtype='float16', count=0)"
    index.add(np.ones((3, 5)))
    index.add(np.empty((0, 5)))  # nothing to add: not a modification
    index.remove([])
    index.remove([1])
    assert index.version == 2
    with pytest.raises(ValueError):
        index.ids[0] = 5
    with pytest.raises(ValueError, match="unknown storage dtype"):
        Index(5, dtype="float64")
    with pytest.raises(ValueError, match="unknown metric"):
        Index(5, metric="hamming")
    with pytest.raises(ValueError, match="dim must be >= 1"):
        Index(0)


def test_float32_storage_stays_within_ten_percent_of_the_live_vectors():
    dim, batches = 64, 60
    vectors = random_vectors(100, dim, seed=8)
    tracemalloc.start()
    try:
        index = Index(dim, metric="l2")
        for batch in range(batches):
            index.add(vectors, ids=np.arange(100) + 100 * batch)
            if batch % 10 == 9:
                index.remove(np.arange(100 * batch, 100 * batch + 50))
        live = len(index)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    vector_bytes = live * dim * 4
    per_row_bookkeeping = 12 + 150  # id and norm, plus the id table (a Python dict)
    assert current <= 1.1 * vector_bytes + live * per_row_bookkeeping + 200_000


# -- low-precision storage -------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", DTYPES[1:])
def test_low_precision_search_is_exact_on_the_decoded_vectors(dtype, metric, monkeypatch):
    # Small decode blocks: the per-block results must merge into the exact answer.
    monkeypatch.setattr(_stored_rows, "DECODE_BLOCK_BYTES", 37 * 4 * 20)
    vectors = random_vectors(400, 20, seed=9)
    queries = random_vectors(11, 20, seed=10)
    index = Index(20, metric=metric, dtype=dtype)
    ids = index.add(vectors, ids=np.arange(400) * 3)
    distances, found = index.search(queries, 15)
    assert_exact_topk(distances, found, queries, ids, index.get(ids), metric, 15)
    expected_distances, positions = fastretrieve.search(
        queries, 15, database=index.get(ids), metric=metric
    )
    np.testing.assert_array_equal(found, ids[positions])
    np.testing.assert_array_equal(distances, expected_distances)


@pytest.mark.filterwarnings("ignore:the int8 quantiser was fitted on")  # small test data
@pytest.mark.parametrize("dtype", DTYPES[1:])
def test_low_precision_block_merge_keeps_the_tie_rule(dtype, monkeypatch):
    monkeypatch.setattr(_stored_rows, "DECODE_BLOCK_BYTES", 3 * 4 * 4)  # 4 rows a block
    index = Index(3, metric="l2", dtype=dtype)
    index.add(np.tile([[0.5, -0.25, 1.0], [2.0, 2.0, 2.0]], (9, 1)), ids=np.arange(18)[::-1])
    distances, found = index.search([0.5, -0.25, 1.0], 12)
    np.testing.assert_array_equal(found[:9], np.arange(18)[::-1][0::2])
    np.testing.assert_array_equal(found[9:], [16, 14, 12])
    assert (distances[:9] == distances[0]).all()
    _, padded = index.search([0.0, 0.0, 0.0], 20)
    np.testing.assert_array_equal(padded[18:], [-1, -1])


@pytest.mark.parametrize(
    "dtype, minimum_recall", [("float16", 0.99), ("bfloat16", 0.9), ("int8", 0.85)]
)
@pytest.mark.parametrize("metric", METRICS)
def test_low_precision_recall_against_float32(dtype, minimum_recall, metric):
    vectors = random_vectors(3000, 48, seed=11)
    queries = random_vectors(50, 48, seed=12)
    exact = Index(48, metric=metric)
    exact.add(vectors)
    low = Index(48, metric=metric, dtype=dtype)
    low.add(vectors)
    _, truth = exact.search(queries, 10)
    _, found = low.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth.tolist(), found.tolist())])
    assert recall >= minimum_recall


@pytest.mark.parametrize("dtype, tolerance", [("float16", 2**-11), ("bfloat16", 2**-8)])
def test_float_codecs_round_to_nearest(dtype, tolerance):
    vectors = random_vectors(200, 9, seed=13)
    index = Index(9, metric="l2", dtype=dtype)
    ids = index.add(vectors)
    decoded = index.get(ids)
    np.testing.assert_array_less(np.abs(decoded - vectors), tolerance * np.abs(vectors) + 1e-30)


def test_bfloat16_rounds_ties_to_even():
    one_ulp = 2.0**-7  # bfloat16 spacing just above 1.0
    values = np.array([[1.0, 1.0 + one_ulp / 2, 1.0 + 1.5 * one_ulp, -3.0]], np.float32)
    index = Index(4, metric="l2", dtype="bfloat16")
    index.add(values)
    np.testing.assert_array_equal(index.get(0), [1.0, 1.0, 1.0 + 2 * one_ulp, -3.0])


def test_float16_rejects_values_beyond_its_range():
    index = Index(2, metric="l2", dtype="float16")
    with pytest.raises(ValueError, match="row 1 has a value outside the float16 range"):
        index.add([[1.0, 2.0], [1e5, 0.0]])
    assert len(index) == 0


def test_int8_quantiser_widens_for_later_values_instead_of_clipping_them():
    first = np.array([[0.0, -1.0], [2.55, 1.0]], np.float32)
    index = Index(2, metric="l2", dtype="int8")
    with pytest.warns(UserWarning, match="fitted on 2 vector"):
        index.add(first)
    np.testing.assert_allclose(index.get([0, 1]), first, atol=1e-6)
    index.add([[1.0, 0.0]])
    np.testing.assert_allclose(index.get(2), [1.0, 0.0], atol=0.5 * 2 / 255 + 1e-6)
    index.add([[5.0, -7.0]])  # outside the fitted range: widened, stored rows re-encoded
    step = index._snapshot.codec.step
    np.testing.assert_allclose(index.get([0, 1, 2, 3]), np.vstack([first, [[1.0, 0.0], [5.0, -7.0]]]),
                               atol=float(step.max()) + 1e-6)  # two roundings at most
    distances, found = index.search([[5.0, -7.0], [0.0, -1.0]], 4)
    assert_exact_topk(distances, found, np.array([[5.0, -7.0], [0.0, -1.0]], np.float32),
                      index.ids, index.get(index.ids), "l2", 4)

def test_int8_first_add_of_one_vector_no_longer_destroys_every_dimension():
    """A cosine int8 index whose first add is one unit vector: every dimension is constant
    in that add. Each of 1,000 later vectors must still find itself first."""
    rng = np.random.default_rng(7)
    later = rng.standard_normal((1000, 32)).astype(np.float32)
    index = Index(32, metric="cosine", dtype="int8")
    with pytest.warns(UserWarning, match="fitted on 1 vector"):
        index.add(np.eye(32, dtype=np.float32)[:1])
    ids = index.add(later)
    _, found = index.search(later, 1)
    assert np.mean(found[:, 0] == ids) >= 0.98


def test_int8_dimension_constant_in_the_first_add_keeps_later_differences():
    index = Index(2, metric="l2", dtype="int8")
    with pytest.warns(UserWarning, match="fewer than 256"):
        index.add([[0.5, 1.0], [0.5, 2.0]])  # dimension 0 constant
    ids = index.add([[0.7, 1.5], [0.3, 1.5], [0.5, 1.5]])
    decoded = index.get(ids)[:, 0]
    step = float(index._snapshot.codec.step[0])
    assert step <= 2 * 2.0 / 255  # a range about as wide as the data (largest value 2.0)
    np.testing.assert_allclose(decoded, [0.7, 0.3, 0.5], atol=step)
    assert len(set(decoded.tolist())) == 3


def test_int8_fit_on_enough_vectors_does_not_warn():
    index = Index(8, metric="l2", dtype="int8")
    index.add(random_vectors(256, 8, seed=3))  # filterwarnings=error: any warning fails
