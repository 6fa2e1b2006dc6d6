"""fastretrieve.sklearn: scikit-learn's estimator checks, equality with
sklearn.neighbors.NearestNeighbors(algorithm="brute"), and Pipelines."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the [sklearn] extra; part of [test]

from scipy import sparse  # noqa: E402
from sklearn import neighbors as sk  # noqa: E402
from sklearn.cluster import DBSCAN, SpectralClustering  # noqa: E402
from sklearn.datasets import make_blobs, make_s_curve  # noqa: E402
from sklearn.manifold import TSNE, Isomap, trustworthiness  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from fastretrieve.sklearn import (  # noqa: E402
    KNeighborsTransformer,
    NearestNeighbors,
    RadiusNeighborsTransformer,
)

ESTIMATORS = [NearestNeighbors(), KNeighborsTransformer(), RadiusNeighborsTransformer()]
SKLEARN_METRICS = ["euclidean", "sqeuclidean", "cosine"]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    # check_array_api_input is skipped here by scikit-learn itself unless SCIPY_ARRAY_API=1
    # was set before SciPy was imported: test_array_api_checks runs it in a process of its own.
    check(estimator)


def test_every_check_passes_with_array_api_dispatch():
    script = textwrap.dedent("""
        from sklearn.utils.estimator_checks import check_estimator
        from fastretrieve.sklearn import (KNeighborsTransformer, NearestNeighbors,
                                          RadiusNeighborsTransformer)
        for estimator in (NearestNeighbors(), KNeighborsTransformer(),
                          RadiusNeighborsTransformer()):
            results = check_estimator(estimator, on_fail=None)
            failed = [(r["check_name"], r["status"]) for r in results if r["status"] != "passed"]
            assert not failed, failed
            assert any(r["check_name"] == "check_array_api_input" for r in results)
        print("all passed")
    """)
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "all passed" in done.stdout


def test_the_library_does_not_import_scikit_learn():
    script = ("import sys, numpy as np, fastretrieve as fr; x = np.eye(3, dtype=np.float32); "
              "fr.search(x, 1); fr.range_search(x, 1.0); print(sorted("
              "m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def data(seed=0, n_fit=150, n_queries=40, dim=7):
    rng = np.random.default_rng(seed)
    fit = rng.standard_normal((n_fit, dim)).astype(np.float32)
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    return fit, queries


def brute(metric, **params):
    return sk.NearestNeighbors(algorithm="brute", metric=metric, **params)


@pytest.mark.parametrize("metric", SKLEARN_METRICS)
def test_kneighbors_equals_sklearn_brute(metric):
    fit, queries = data()
    ours = NearestNeighbors(n_neighbors=6, metric=metric).fit(fit)
    theirs = brute(metric, n_neighbors=6).fit(fit)
    for X in (queries, None):  # None: the fitted points, each excluding itself
        distances, indices = ours.kneighbors(X)
        want_distances, want_indices = theirs.kneighbors(X)
        np.testing.assert_array_equal(indices, want_indices)
        np.testing.assert_allclose(distances, want_distances, rtol=1e-5, atol=1e-6)
        assert distances.dtype == np.float64
        np.testing.assert_array_equal(ours.kneighbors(X, 3, return_distance=False),
                                      want_indices[:, :3])
    assert not np.any(ours.kneighbors()[1] == np.arange(len(fit))[:, None])


@pytest.mark.parametrize("mode", ["connectivity", "distance"])
@pytest.mark.parametrize("metric", SKLEARN_METRICS)
def test_kneighbors_graph_equals_sklearn_brute(metric, mode):
    fit, queries = data(1)
    ours = NearestNeighbors(n_neighbors=4, metric=metric).fit(fit)
    theirs = brute(metric, n_neighbors=4).fit(fit)
    for X in (queries, None):
        graph = ours.kneighbors_graph(X, mode=mode)
        want = theirs.kneighbors_graph(X, mode=mode)
        assert sparse.issparse(graph) and graph.format == "csr" and graph.shape == want.shape
        np.testing.assert_array_equal(graph.indices, want.indices)
        np.testing.assert_allclose(graph.toarray(), want.toarray(), rtol=1e-5, atol=1e-6)


def radius_between_distances(model, queries, quantile):
    """A radius halfway between two neighbouring distances: no pair near the boundary."""
    distances = np.unique(model.kneighbors(queries, model.n_samples_fit_)[0])
    position = int(quantile * len(distances))
    return float((distances[position] + distances[position + 1]) / 2)


@pytest.mark.parametrize("metric", SKLEARN_METRICS)
def test_radius_neighbors_equals_sklearn_brute(metric):
    fit, queries = data(2)
    theirs = brute(metric).fit(fit)
    radius = radius_between_distances(theirs, queries, 0.05)
    ours = NearestNeighbors(radius=radius, metric=metric).fit(fit)
    for X in (queries, None):
        distances, indices = ours.radius_neighbors(X)
        want_distances, want_indices = theirs.radius_neighbors(X, radius, sort_results=True)
        assert indices.dtype == object and len(indices) == len(want_indices)
        assert sum(len(row) for row in indices) > len(indices)  # a real test, not empties
        for got, want in zip(indices, want_indices):
            np.testing.assert_array_equal(got, want)
        for got, want in zip(distances, want_distances):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        for mode in ("connectivity", "distance"):
            # Compared column-sorted: rows of ours are ordered by distance, sklearn's not.
            graph = ours.radius_neighbors_graph(X, mode=mode).sorted_indices()
            want = theirs.radius_neighbors_graph(X, radius, mode=mode).sorted_indices()
            np.testing.assert_array_equal(graph.indptr, want.indptr)
            np.testing.assert_array_equal(graph.indices, want.indices)
            np.testing.assert_allclose(graph.data, want.data, rtol=1e-5, atol=1e-6)
    if metric == "euclidean":  # the radius is a distance, not a squared one
        inside = ours.radius_neighbors(queries, return_distance=False)
        assert all(np.all(np.linalg.norm(fit[row] - q, axis=1) <= radius * (1 + 1e-6))
                   for q, row in zip(queries, inside))


def test_negative_inner_product_orders_by_inner_product():
    fit, queries = data(3)
    model = NearestNeighbors(n_neighbors=5, metric="negative_inner_product").fit(fit)
    products = queries.astype(np.float64) @ fit.T.astype(np.float64)
    distances, indices = model.kneighbors(queries)
    np.testing.assert_array_equal(indices, np.argsort(-products, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(distances, -np.take_along_axis(products, indices, 1), rtol=1e-5)
    radius = -2.0  # inner product >= 2
    distances, indices = model.radius_neighbors(queries, radius)
    for i, row in enumerate(indices):
        np.testing.assert_array_equal(np.sort(row), np.nonzero(products[i] >= 2.0)[0])


def test_sparse_input_is_refused_clearly():
    fit, _ = data()
    with pytest.raises(TypeError, match="sparse input is not supported"):
        NearestNeighbors().fit(sparse.csr_matrix(fit))
    model = NearestNeighbors().fit(fit)
    with pytest.raises(TypeError, match="sparse input is not supported"):
        model.kneighbors(sparse.csr_matrix(fit))


def test_n_jobs_maps_to_threads_and_results_do_not_change():
    fit, queries = data(4, n_fit=3000)
    want = NearestNeighbors(n_jobs=1).fit(fit).kneighbors(queries)
    for n_jobs in (None, -1, -2, 2, 3):
        got = NearestNeighbors(n_jobs=n_jobs).fit(fit).kneighbors(queries)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    with pytest.raises(ValueError, match="n_jobs"):
        NearestNeighbors(n_jobs=0).fit(fit)


def test_errors_are_those_of_sklearn():
    fit, _ = data(n_fit=5)
    model = NearestNeighbors(n_neighbors=5).fit(fit)
    with pytest.raises(ValueError, match="Expected n_neighbors <= n_samples_fit"):
        model.kneighbors()  # 4 others only
    with pytest.raises(ValueError, match="Expected n_neighbors > 0"):
        model.kneighbors(fit, 0)
    with pytest.raises(ValueError, match="metric='minkowski' is not supported"):
        NearestNeighbors(metric="minkowski").fit(fit)
    with pytest.raises(ValueError, match="radius must be a finite number >= 0"):
        model.radius_neighbors(fit, -1.0)
    with pytest.raises(ValueError, match="Unsupported mode"):
        model.kneighbors_graph(fit, mode="weights")


def blobs(n_samples=120, seed=0):
    X, y = make_blobs(n_samples=n_samples, centers=3, n_features=5, random_state=seed)
    return X.astype(np.float32), y


def test_transformers_equal_sklearn_transformers():
    X, _ = blobs()
    for ours, theirs in (
        (KNeighborsTransformer(n_neighbors=7), sk.KNeighborsTransformer(n_neighbors=7)),
        (KNeighborsTransformer(n_neighbors=7, mode="connectivity"),
         sk.KNeighborsTransformer(n_neighbors=7, mode="connectivity")),
        (RadiusNeighborsTransformer(radius=2.5), sk.RadiusNeighborsTransformer(radius=2.5)),
    ):
        graph, want = ours.fit_transform(X), theirs.fit_transform(X)
        assert graph.shape == want.shape == (len(X), len(X))
        # The same stored entries, a sample itself (an explicit zero distance) included.
        np.testing.assert_array_equal(_explicit(graph), _explicit(want))
        np.testing.assert_allclose(graph.toarray(), want.toarray(), rtol=1e-5, atol=1e-5)


def _explicit(graph):
    """Dense mask of the stored entries, explicit zeros (a sample itself) included."""
    mask = np.zeros(graph.shape, bool)
    rows = np.repeat(np.arange(graph.shape[0]), np.diff(graph.indptr))
    mask[rows, graph.indices] = True
    return mask


def test_pipeline_isomap_equals_isomap_on_raw_vectors():
    X, _ = make_s_curve(150, random_state=0)
    X = X.astype(np.float32)
    ours = make_pipeline(KNeighborsTransformer(n_neighbors=10, mode="distance"),
                         Isomap(n_neighbors=10, metric="precomputed", eigen_solver="dense"))
    got = ours.fit_transform(X)
    want = Isomap(n_neighbors=10, eigen_solver="dense").fit_transform(X)
    # Eigenvectors are defined up to sign.
    np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-4 * np.abs(want).max())


def test_pipeline_tsne_keeps_neighbourhoods_as_tsne_does():
    # TSNE amplifies float32-level differences in the graph into a different layout, so
    # the embedding is judged by its trustworthiness, next to TSNE's own on raw vectors.
    X, _ = blobs(60)
    perplexity = 5
    settings = dict(perplexity=perplexity, init="random", max_iter=250, random_state=0)
    pipeline = make_pipeline(
        KNeighborsTransformer(n_neighbors=3 * perplexity + 1, mode="distance",
                              metric="sqeuclidean"),  # TSNE squares euclidean distances
        TSNE(metric="precomputed", **settings),
    )
    # One OpenMP thread: TSNE's spinning threads crawl on a busy two-core machine.
    with threadpool_limits(1):
        embedding = pipeline.fit_transform(X)
        reference = TSNE(**settings).fit_transform(X)
    assert embedding.shape == (len(X), 2) and np.isfinite(embedding).all()
    assert trustworthiness(X, embedding, n_neighbors=5) >= (
        trustworthiness(X, reference, n_neighbors=5) - 0.03)


def test_pipeline_dbscan_equals_dbscan_on_raw_vectors():
    X, _ = blobs()
    eps = 1.2
    pipeline = make_pipeline(RadiusNeighborsTransformer(radius=eps, mode="distance"),
                             DBSCAN(eps=eps, min_samples=4, metric="precomputed"))
    labels = pipeline.fit_predict(X)
    want = DBSCAN(eps=eps, min_samples=4).fit_predict(X)
    np.testing.assert_array_equal(labels, want)
    assert len(set(labels) - {-1}) >= 2


def test_pipeline_kneighbors_classifier_precomputed_equals_direct():
    X, y = blobs(200, seed=1)
    train, test = slice(0, 150), slice(150, None)
    pipeline = make_pipeline(KNeighborsTransformer(n_neighbors=5, mode="distance"),
                             sk.KNeighborsClassifier(n_neighbors=5, metric="precomputed"))
    pipeline.fit(X[train], y[train])
    direct = sk.KNeighborsClassifier(n_neighbors=5, algorithm="brute").fit(X[train], y[train])
    np.testing.assert_array_equal(pipeline.predict(X[test]), direct.predict(X[test]))
    np.testing.assert_allclose(pipeline.predict_proba(X[test]), direct.predict_proba(X[test]))


def test_pipeline_spectral_clustering_equals_sklearn_graph():
    X, _ = make_blobs(n_samples=120, centers=3, n_features=5, cluster_std=2.5, random_state=0)
    X = X.astype(np.float32)
    clustering = dict(n_clusters=3, affinity="precomputed_nearest_neighbors", n_neighbors=10,
                      random_state=0)
    graph = KNeighborsTransformer(n_neighbors=10, mode="connectivity").fit_transform(X)
    want_graph = sk.KNeighborsTransformer(n_neighbors=10, mode="connectivity").fit_transform(X)
    labels = SpectralClustering(**clustering).fit_predict(graph)
    want = SpectralClustering(**clustering).fit_predict(want_graph)
    assert adjusted_rand_score(want, labels) == 1.0
