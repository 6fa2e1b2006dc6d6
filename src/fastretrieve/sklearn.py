"""scikit-learn estimators over fastretrieve's exact search: a drop-in for brute force.

- :class:`NearestNeighbors` -- ``sklearn.neighbors.NearestNeighbors`` semantics
  (``kneighbors``, ``kneighbors_graph``, ``radius_neighbors``, ``radius_neighbors_graph``).
- :class:`KNeighborsTransformer`, :class:`RadiusNeighborsTransformer` -- precomputed
  sparse neighbour graphs for ``Isomap``, ``TSNE``, ``SpectralClustering``, ``DBSCAN`` or
  ``KNeighborsClassifier(metric="precomputed")`` inside a ``Pipeline``.

Install with ``pip install "fastretrieve[sklearn]"``. Metrics:

- ``"euclidean"``: true Euclidean distances (square roots), as scikit-learn returns;
- ``"sqeuclidean"``: squared Euclidean distances;
- ``"cosine"``: cosine distance ``1 - cosine similarity`` (a zero vector is at distance 1
  from everything, as in scikit-learn);
- ``"negative_inner_product"``: ``-<x, y>``, so that smaller is closer and maximum
  inner product search keeps scikit-learn's ascending order.

Differences from scikit-learn, by design: vectors are searched as float32 (float64 input
is rounded once; distances are exact with respect to the rounded vectors and returned as
float64); ``n_jobs=None`` uses every core (scikit-learn would use one); sparse input is
refused (fastretrieve searches dense vectors); radius results are always sorted, best
first, and bounded by ``fastretrieve.range_search``'s default ``max_results``.

This module uses only fastretrieve's public functions; scikit-learn is imported here and
nowhere else in the package.
"""

from __future__ import annotations

import numbers

import numpy as np
from joblib import effective_n_jobs
from scipy import sparse
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

import fastretrieve

__all__ = ["KNeighborsTransformer", "NearestNeighbors", "RadiusNeighborsTransformer"]

METRICS = ("euclidean", "sqeuclidean", "cosine", "negative_inner_product")
# The library metric searched for each estimator metric.
_LIBRARY_METRIC = {"euclidean": "l2", "sqeuclidean": "l2", "cosine": "cosine",
                   "negative_inner_product": "ip"}
_MODES = ("connectivity", "distance")


def _to_distances(metric, scores):
    """The estimator metric's float64 distances from the library's float32 scores."""
    scores = np.asarray(scores, np.float64)
    if metric == "euclidean":
        return np.sqrt(np.maximum(scores, 0.0))
    if metric == "sqeuclidean":
        return scores
    if metric == "cosine":
        return np.clip(1.0 - scores, 0.0, 2.0)  # as sklearn.metrics.pairwise.cosine_distances
    return -scores


def _library_radius(metric, radius):
    """The library's radius for an estimator radius: distance <= radius, in its terms."""
    if metric == "euclidean":
        return radius * radius
    if metric == "sqeuclidean":
        return radius
    if metric == "cosine":
        return 1.0 - radius  # similarity >= 1 - radius
    return -radius  # inner product >= -radius


def _refuse_sparse(X):
    if sparse.issparse(X):
        raise TypeError(
            "fastretrieve.sklearn searches dense vectors: sparse input is not supported. "
            "Convert with X.toarray() if it fits in memory, or use sklearn.neighbors."
        )


class _NeighborsBase(BaseEstimator):
    """fit and the validation shared by the three estimators."""

    def _check_parameters(self):
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} is not supported: expected one of "
                             f"{', '.join(METRICS)}")
        if self.n_jobs == 0 or not (self.n_jobs is None or isinstance(self.n_jobs, numbers.Integral)):
            raise ValueError(f"n_jobs must be None or a non-zero integer, got {self.n_jobs!r}")

    def _threads(self):
        """n_jobs as library threads: None and -1 are every core, -2 all but one, ..."""
        if self.n_jobs is None or self.n_jobs == -1:
            return None
        return effective_n_jobs(self.n_jobs)

    def _validate(self, X, *, reset):
        _refuse_sparse(X)
        return validate_data(self, X, reset=reset, dtype=np.float32, order="C")

    def fit(self, X, y=None):
        """Store the vectors to search (as float32). ``y`` is ignored.

        Returns
        -------
        self
        """
        self._check_parameters()
        self._fit_X = self._validate(X, reset=True)
        self.n_samples_fit_ = self._fit_X.shape[0]
        self.effective_metric_ = self.metric
        return self

    def _queries(self, X):
        """The validated queries, or None for the fitted vectors themselves."""
        check_is_fitted(self)
        return None if X is None else self._validate(X, reset=False)

    def _search_arguments(self, queries):
        """(vecs, database) for the library: None as database excludes each row itself."""
        if queries is None:
            return self._fit_X, None
        return queries, self._fit_X


class _KNeighborsMixin:
    """kneighbors and kneighbors_graph, over fastretrieve.search."""

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """The ``n_neighbors`` nearest fitted vectors of each row of ``X``, closest first.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), optional
            Queries. ``None``: the fitted vectors, each one not its own neighbour.
        n_neighbors : int, optional
            Defaults to the estimator's ``n_neighbors``.
        return_distance : bool
            Whether to return the distances too.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors), float64
            Only with ``return_distance``.
        indices : ndarray of shape (n_queries, n_neighbors), int64
        """
        queries = self._queries(X)
        if n_neighbors is None:
            n_neighbors = self.n_neighbors
        if isinstance(n_neighbors, (bool, np.bool_)) or not isinstance(n_neighbors, numbers.Integral):
            raise TypeError(f"n_neighbors does not take {type(n_neighbors).__name__} value, "
                            "enter integer value")
        if n_neighbors <= 0:
            raise ValueError(f"Expected n_neighbors > 0. Got {n_neighbors}")
        n_samples = self.n_samples_fit_ if queries is None else queries.shape[0]
        candidates = self.n_samples_fit_ - (1 if queries is None else 0)
        if n_neighbors > candidates:
            raise ValueError(
                f"Expected n_neighbors <= n_samples_fit{' - 1 (X=None)' if queries is None else ''}"
                f", but n_neighbors = {n_neighbors}, n_samples_fit = {self.n_samples_fit_}, "
                f"n_samples = {n_samples}"
            )
        vecs, database = self._search_arguments(queries)
        scores, indices = fastretrieve.search(
            vecs, int(n_neighbors), database=database, metric=_LIBRARY_METRIC[self.metric],
            threads=self._threads())
        if return_distance:
            return _to_distances(self.metric, scores), indices
        return indices

    def kneighbors_graph(self, X=None, n_neighbors=None, mode="connectivity"):
        """Sparse graph of the k nearest neighbours, as scikit-learn builds it.

        Returns
        -------
        graph : scipy.sparse CSR matrix of shape (n_queries, n_samples_fit)
            ``mode="connectivity"``: ones; ``mode="distance"``: the distances (a
            distance of 0 is stored explicitly). Rows sorted by distance.
        """
        if mode not in _MODES:
            raise ValueError(f'Unsupported mode, must be one of "connectivity", or "distance" '
                             f"but got {mode!r} instead")
        distances, indices = self.kneighbors(X, n_neighbors, return_distance=True)
        n_queries, k = indices.shape
        data = np.ones(indices.size) if mode == "connectivity" else distances.ravel()
        indptr = np.arange(0, n_queries * k + 1, k)
        return sparse.csr_matrix((data, indices.ravel(), indptr),
                                 shape=(n_queries, self.n_samples_fit_))


class _RadiusNeighborsMixin:
    """radius_neighbors and radius_neighbors_graph, over fastretrieve.range_search."""

    def _range(self, X, radius):
        """(lims, distances, indices) of the fitted vectors within ``radius``, sorted."""
        queries = self._queries(X)
        if radius is None:
            radius = self.radius
        if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, numbers.Real):
            raise TypeError(f"radius must be a real number, got {type(radius).__name__}")
        if not np.isfinite(radius) or (radius < 0 and self.metric != "negative_inner_product"):
            raise ValueError(f"radius must be a finite number >= 0, got {radius}")
        vecs, database = self._search_arguments(queries)
        lims, scores, indices = fastretrieve.range_search(
            vecs, _library_radius(self.metric, float(radius)), database=database,
            metric=_LIBRARY_METRIC[self.metric], threads=self._threads())
        return lims, _to_distances(self.metric, scores), indices

    def radius_neighbors(self, X=None, radius=None, return_distance=True, sort_results=False):
        """Every fitted vector within ``radius`` of each row of ``X`` (distance <= radius).

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), optional
            Queries. ``None``: the fitted vectors, each one not its own neighbour.
        radius : float, optional
            Defaults to the estimator's ``radius``.
        return_distance : bool
        sort_results : bool
            Accepted for compatibility: results are always sorted, closest first.

        Returns
        -------
        distances : ndarray of shape (n_queries,), dtype object
            One float64 array per query; only with ``return_distance``.
        indices : ndarray of shape (n_queries,), dtype object
            One int64 array per query.
        """
        if sort_results and not return_distance:
            raise ValueError("return_distance must be True if sort_results is True.")
        lims, distances, indices = self._range(X, radius)
        neighbours = _split(indices, lims)
        if return_distance:
            return _split(distances, lims), neighbours
        return neighbours

    def radius_neighbors_graph(self, X=None, radius=None, mode="connectivity", sort_results=False):
        """Sparse graph of the neighbours within ``radius``, rows sorted by distance.

        Returns
        -------
        graph : scipy.sparse CSR matrix of shape (n_queries, n_samples_fit)
            ``mode="connectivity"``: ones; ``mode="distance"``: the distances.
        """
        del sort_results  # always sorted
        if mode not in _MODES:
            raise ValueError(f'Unsupported mode, must be one of "connectivity", or "distance" '
                             f"but got {mode!r} instead")
        lims, distances, indices = self._range(X, radius)
        data = np.ones(len(indices)) if mode == "connectivity" else distances
        return sparse.csr_matrix((data, indices, lims), shape=(len(lims) - 1, self.n_samples_fit_))


def _split(values, lims):
    """One array per query, as an object array (scikit-learn's radius_neighbors layout)."""
    out = np.empty(len(lims) - 1, dtype=object)
    for i in range(len(out)):
        out[i] = values[lims[i]:lims[i + 1]]
    return out


class NearestNeighbors(_KNeighborsMixin, _RadiusNeighborsMixin, _NeighborsBase):
    """Exact nearest neighbours with the API of ``sklearn.neighbors.NearestNeighbors``.

    Parameters
    ----------
    n_neighbors : int, default=5
        Neighbours returned by ``kneighbors`` by default.
    radius : float, default=1.0
        Radius used by ``radius_neighbors`` by default (a distance in the metric's units).
    metric : {"euclidean", "sqeuclidean", "cosine", "negative_inner_product"}, default="euclidean"
        See the module's documentation.
    n_jobs : int, optional
        Threads per search: ``None`` or -1 every core, -2 all but one, and so on.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str, when fitted on a DataFrame with string columns.
    n_samples_fit_ : int
    effective_metric_ : str
    """

    def __init__(self, *, n_neighbors=5, radius=1.0, metric="euclidean", n_jobs=None):
        self.n_neighbors = n_neighbors
        self.radius = radius
        self.metric = metric
        self.n_jobs = n_jobs


class _GraphTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _NeighborsBase):
    def _check_parameters(self):
        super()._check_parameters()
        if self.mode not in _MODES:
            raise ValueError(f"mode={self.mode!r} is not supported: expected 'distance' or "
                             "'connectivity'")

    @property
    def _n_features_out(self):
        """Columns of the transformed graph: one per fitted sample."""
        return self.n_samples_fit_

    def fit_transform(self, X, y=None):
        """``fit(X).transform(X)``: each sample is its own neighbour at distance 0."""
        return self.fit(X).transform(X)


class KNeighborsTransformer(_KNeighborsMixin, _GraphTransformer):
    """Transforms X into a sparse graph of k nearest neighbours, as
    ``sklearn.neighbors.KNeighborsTransformer`` does.

    With ``mode="distance"``, ``n_neighbors + 1`` neighbours are kept per row, so that a
    sample of the fitted data still has ``n_neighbors`` others besides itself (scikit-learn's
    convention). Parameters as :class:`NearestNeighbors`, plus ``mode``
    (``"distance"`` or ``"connectivity"``).
    """

    def __init__(self, *, mode="distance", n_neighbors=5, metric="euclidean", n_jobs=None):
        self.mode = mode
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.n_jobs = n_jobs

    def transform(self, X):
        """The (n_queries, n_samples_fit) CSR graph of X's nearest fitted samples."""
        check_is_fitted(self)
        extra = 1 if self.mode == "distance" else 0
        return self.kneighbors_graph(X, mode=self.mode, n_neighbors=self.n_neighbors + extra)


class RadiusNeighborsTransformer(_RadiusNeighborsMixin, _GraphTransformer):
    """Transforms X into a sparse graph of the neighbours within a radius, as
    ``sklearn.neighbors.RadiusNeighborsTransformer`` does.

    Parameters as :class:`NearestNeighbors`, plus ``mode`` (``"distance"`` or
    ``"connectivity"``).
    """

    def __init__(self, *, mode="distance", radius=1.0, metric="euclidean", n_jobs=None):
        self.mode = mode
        self.radius = radius
        self.metric = metric
        self.n_jobs = n_jobs

    def transform(self, X):
        """The (n_queries, n_samples_fit) CSR graph of X's fitted samples within the radius."""
        check_is_fitted(self)
        return self.radius_neighbors_graph(X, mode=self.mode, sort_results=True)
