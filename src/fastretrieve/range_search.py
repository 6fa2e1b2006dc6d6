"""Exact range search: every neighbour within a radius, as FAISS returns it.

Validation and coercion as in :mod:`fastretrieve.search`, then one call to the active
backend's range search: the C++ kernel (``_core.range_search``), or the Numba or NumPy
implementation in ``_range_numba`` / ``_range_numpy``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._backend import active_backend
from .search import check_metric, check_threads, queries_and_database

# Default bound on the neighbours one call may return: about 1.2 GB of results (12 bytes
# each) and, in the C++ backend, about 3 GB at the peak of the search.
DEFAULT_MAX_RESULTS = 100_000_000

_UNLIMITED = np.iinfo(np.int64).max


def range_search(vecs, radius, *, database=None, metric="l2", threads=None,
                 max_results=DEFAULT_MAX_RESULTS):
    """Exact range search: for each query, every database vector within ``radius``.

    Parameters
    ----------
    vecs : array-like, shape (n, d) or (d,)
        The queries, coerced and validated as in :func:`fastretrieve.search`.
    radius : float
        ``"l2"``: keep squared Euclidean distances ``<= radius`` (pass the square of a
        Euclidean radius). ``"ip"`` and ``"cosine"``: keep similarities ``>= radius``.
        A neighbour exactly at the radius is kept, as scikit-learn does (FAISS drops it).
        The comparison is made on the distance recomputed in float64 from the float32
        vectors, so the answer does not depend on where the data sits (offsets far from
        the origin included) nor on the SIMD level.
    database : array-like, shape (N, d), optional
        The vectors searched. ``None`` searches ``vecs`` against itself, each row's own
        match excluded (other rows equal to it are found).
    metric : {"l2", "ip", "cosine"}
        As in :func:`fastretrieve.search`.
    threads : int, optional
        Worker threads; default: all cores available to the process.
    max_results : int or None
        Bound on the total number of neighbours returned, which bounds memory: results
        take 12 bytes each (plus about 16 more while the C++ backend searches). Beyond
        it the search stops early and raises ``ValueError``; no full result is built.
        ``None`` removes the bound. To stream a large result, call once per slice of
        the queries (with ``database`` given, slices are independent searches).

    Returns
    -------
    lims : int64 ndarray, shape (n + 1,)
        Query ``i``'s neighbours are entries ``lims[i]:lims[i + 1]`` of the two arrays below.
    distances : float32 ndarray, shape (lims[-1],)
        Squared L2 distances, or similarities, exact (float64 rounded to float32).
    indices : int64 ndarray, shape (lims[-1],)
        Database rows. Within each query, best first; equal distances by lower index.
        A 1-D query is one query: ``lims`` has shape (2,).

    Raises
    ------
    ValueError
        Bad shapes, unknown metric, a radius that is NaN or infinite, an empty database,
        NaN or infinity in the queries or the database (the message names the first bad
        row), or more than ``max_results`` neighbours.
    TypeError
        Non-numeric input, a radius that is not a real number, or a non-integer
        ``max_results``.
    """
    metric = check_metric(metric)
    threads = check_threads(threads)
    radius = _check_radius(radius)
    limit = _check_max_results(max_results)
    queries, _, base, exclude_self = queries_and_database(vecs, database)
    if queries.shape[0] == 0:
        return np.zeros(1, np.int64), np.empty(0, np.float32), np.empty(0, np.int64)
    result = _backend_range_search()(queries, base, radius, metric, threads, exclude_self, limit)
    if result is None:
        raise ValueError(
            f"range_search found more than max_results={max_results:,} neighbours and "
            "stopped: lower the radius, search fewer queries per call, or raise max_results "
            "(None removes the bound)"
        )
    return result


def _backend_range_search():
    """The active backend's range search (same arguments, same results)."""
    name = active_backend().NAME
    if name == "cpp":
        from ._core import range_search as run
    elif name == "numba":
        from ._range_numba import range_search as run
    else:
        from ._range_numpy import range_search as run
    return run


def _check_radius(radius):
    if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, numbers.Real):
        raise TypeError(f"radius must be a real number, got {type(radius).__name__} {radius!r}")
    radius = float(radius)
    if not math.isfinite(radius):
        raise ValueError(f"radius must be finite, got {radius}")
    return radius


def _check_max_results(max_results):
    if max_results is None:
        return _UNLIMITED
    if isinstance(max_results, (bool, np.bool_)) or not isinstance(max_results, numbers.Integral):
        raise TypeError(f"max_results must be an integer or None, got {type(max_results).__name__}")
    if max_results < 0:
        raise ValueError(f"max_results must be >= 0, got {max_results}")
    return int(max_results)
