"""The public search entry points: argument validation and coercion, then one backend call.

Everything a user can get wrong is checked here, up front, on the small arguments
(queries, k, metric, threads). The database is never scanned an extra time for
validation: a NaN or infinity in it is detected by the backend inside its selection step
and reported as a ValueError naming the row (see DESIGN.md, "Kernel principles").
"""

from __future__ import annotations

import numbers

import numpy as np

from ._backend import active_backend

METRICS = ("l2", "ip", "cosine")

# Padding for results beyond the database, as FAISS does: index -1 with the worst distance.
_PAD_DISTANCE = {"l2": np.inf, "ip": -np.inf, "cosine": -np.inf}


def queries_and_database(vecs, database):
    """The validated float32 queries and database of a search: ``(queries, single, base,
    exclude_self)``. ``single``: ``vecs`` was one 1-D query. ``database=None`` searches the
    queries themselves, each row's own match excluded. The queries are checked for NaN and
    infinity here; the database inside the kernels' scan, never by an extra pass."""
    queries, single = as_float32_matrix(vecs, "vecs", allow_1d=True)
    if database is None:
        base, exclude_self = queries, True
    else:
        base, _ = as_float32_matrix(database, "database")
        exclude_self = False
        check_same_dim(queries, base)
        if base.shape[0] == 0:
            raise ValueError("database is empty: there is nothing to search")
    check_finite_rows(queries, "vecs")
    return queries, single, base, exclude_self


def search(vecs, k, *, database=None, metric="l2", threads=None):
    """Exact k-nearest-neighbour search.

    Parameters
    ----------
    vecs : array-like, shape (n, d) or (d,)
        The queries. Any real dtype is accepted and converted to float32 (a copy);
        non-contiguous and Fortran-ordered arrays are copied to C order.
    k : int
        Number of neighbours per query, >= 1. When k exceeds the number of candidates
        the rows are padded with index -1 and distance +inf (``l2``) or -inf
        (``ip``, ``cosine``), as FAISS does.
    database : array-like, shape (N, d), optional
        The vectors searched. ``None`` builds the k-NN graph of ``vecs`` itself, each
        row's own match excluded (other rows equal to it are still found).
        A float32 C-contiguous database is used without a copy; anything else is
        converted on every call -- use :class:`fastretrieve.Index` for repeated searches.
    metric : {"l2", "ip", "cosine"}
        ``"l2"``: squared Euclidean distance, ascending. ``"ip"``: inner product,
        descending. ``"cosine"``: cosine similarity, descending; a zero vector has
        similarity 0 with everything (never NaN).
    threads : int, optional
        An upper bound on the threads this call runs on; default: all cores available to
        the process (its affinity mask). A search never runs on more threads than those
        cores: a larger value splits the work more finely but starts no extra threads.
        Values below 1 or above 65536 raise ValueError. The NumPy backend runs on the
        calling thread (and whatever threads NumPy's BLAS uses).

    Returns
    -------
    distances : float32 ndarray, shape (n, k)
    indices : int64 ndarray, shape (n, k)
        Best first; equal distances are ordered by the lower index. The returned
        distances are recomputed exactly (in float64, rounded to float32) for the
        neighbours found. A 1-D query gives 1-D results of shape (k,).

    Raises
    ------
    ValueError
        Bad shapes, unknown metric, k < 1, empty database, NaN or infinity in the
        queries or the database (the message names the first bad row).
    TypeError
        Non-numeric input (object, string, complex arrays) or a non-integer k.
    """
    metric = check_metric(metric)
    k = check_k(k)
    threads = check_threads(threads)
    queries, single, base, exclude_self = queries_and_database(vecs, database)
    if queries.shape[0] == 0:
        result = (np.empty((0, k), np.float32), np.empty((0, k), np.int64))
    else:
        result = knn(queries, base, k, metric, threads, exclude_self=exclude_self)
    if single:
        return result[0][0], result[1][0]
    return result


def distances(a, b, metric="l2", *, threads=None):
    """The full (len(a), len(b)) float32 matrix of distances or similarities.

    ``"l2"`` gives squared Euclidean distances computed directly as sum((a - b)**2)
    (no cancellation for near-identical vectors); ``"ip"`` inner products;
    ``"cosine"`` cosine similarities (0 for a zero vector). Inputs are coerced and
    validated as in :func:`search`; both are checked for NaN and infinity.
    A 1-D ``a`` or ``b`` is treated as a single vector and that axis is dropped.
    """
    metric = check_metric(metric)
    threads = check_threads(threads)
    left, left_single = as_float32_matrix(a, "a", allow_1d=True)
    right, right_single = as_float32_matrix(b, "b", allow_1d=True)
    check_same_dim(left, right, names=("a", "b"))
    check_finite_rows(left, "a")
    check_finite_rows(right, "b")
    if left.shape[0] == 0 or right.shape[0] == 0:
        matrix = np.empty((left.shape[0], right.shape[0]), np.float32)
    else:
        matrix = active_backend().distances(left, right, metric, threads)
    if left_single:
        matrix = matrix[0]
    if right_single:
        matrix = matrix[..., 0]
    return matrix


def knn(queries, database, k, metric, threads, *, database_sqnorms=None, exclude_self=False,
        storage="float32", quantiser=None):
    """Backend call on arguments already validated; for `Index` and internal callers.

    ``queries``: float32 C-contiguous (n, d), finite, n >= 1. ``database``: C-contiguous
    (N, d), N >= 1, holding rows in ``storage`` (NaN/inf rows are reported by the backend):
    ``"float32"``; ``"float16"`` (float16 or its uint16 bit patterns); ``"bfloat16"``
    (uint16 bit patterns); ``"int8"`` (int8 codes, with ``quantiser=(low, step)``, float32
    (d,) arrays, the row being ``low + (code + 128) * step``), as `quantize` stores them.
    ``database_sqnorms``: float32 (N,) cache of squared norms of the decoded rows, so that
    an index does not recompute them per search; required unless ``storage="float32"``.
    Results are exact with respect to the decoded rows on every backend (the C++ kernels
    read the stored rows; the Python ones decode a bounded block at a time). Returns
    (distances, indices) padded to k.
    """
    return active_backend().knn(queries, database, k, metric, threads, database_sqnorms,
                                exclude_self, storage=storage, quantiser=quantiser)


def check_metric(metric):
    if not isinstance(metric, str) or metric.lower() not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    return metric.lower()


def check_k(k):
    # type(k) is int first: the abstract-class check below costs more than the search
    # of a few queries over a small database spends in Python otherwise.
    if type(k) is not int and (
            isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral)):
        raise TypeError(f"k must be an integer, got {type(k).__name__} {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


# Far beyond any machine's core count: a larger thread count is a mistake, not a request.
MAX_THREADS = 1 << 16


def check_threads(threads):
    """The ``threads`` argument as an int; 0 for None (the backend's default: every core).

    Values above the cores available are accepted (the work is split for that many
    threads, but no backend runs more threads than cores); above MAX_THREADS, ValueError.
    """
    if threads is None:
        return 0  # 0 asks the backend for its default: every core the process may use
    if type(threads) is not int and (
            isinstance(threads, (bool, np.bool_)) or not isinstance(threads, numbers.Integral)):
        raise TypeError(f"threads must be an integer or None, got {type(threads).__name__}")
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be between 1 and {MAX_THREADS}, got {threads}")
    return int(threads)


def as_float32_matrix(values, name, *, allow_1d=False):
    """Coerce an array-like to a C-contiguous float32 (n, d) matrix.

    Returns (matrix, was_1d). Copies only when the input is not already float32 C-order.
    """
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers, got dtype {array.dtype} "
            "(object, string and complex arrays are not accepted)"
        )
    was_1d = array.ndim == 1
    if was_1d and allow_1d:
        array = array[np.newaxis, :]
    if array.ndim != 2:
        expected = "1-D or 2-D" if allow_1d else "2-D (n, d)"
        raise ValueError(f"{name} must be {expected}, got an array of shape {array.shape}")
    if array.shape[1] == 0:
        raise ValueError(f"{name} has dimension 0: vectors need at least one component")
    if array.dtype == np.float32 and array.flags.c_contiguous:
        # Nothing to convert: skips the errstate context, a third of a small search's
        # Python time.
        return array, was_1d and allow_1d
    with np.errstate(over="ignore"):  # values beyond float32 become inf: reported by row below
        return np.ascontiguousarray(array, dtype=np.float32), was_1d and allow_1d


def check_same_dim(queries, database, names=("vecs", "database")):
    check_dim(queries, database.shape[1], names)


def check_dim(matrix, dim, names=("vecs", "database")):
    """ValueError unless ``matrix`` has ``dim`` columns; ``names``: the matrix's name and
    that of what sets the dimension (an index, a database)."""
    if matrix.shape[1] != dim:
        raise ValueError(
            f"dimension mismatch: {names[0]} has d={matrix.shape[1]}, {names[1]} has d={dim}"
        )


# Elements checked per slice by check_finite_rows: a 1 MiB boolean temporary at most.
_FINITE_CHECK_ELEMENTS = 1 << 20


def check_finite_rows(matrix, name):
    """Raise ValueError naming the first row holding NaN or infinity."""
    # Element-wise, slice by slice. A matrix-vector product with a ones vector screens
    # faster, but NumPy runs it on OpenBLAS threads that then busy-wait for the next call:
    # on a 2-core machine they took the cores the search was about to use (1000 x 512
    # queries against 200k rows: 0.24 s of search became 0.29 s).
    if matrix.size <= _FINITE_CHECK_ELEMENTS and np.isfinite(matrix).all():
        return  # the common case, a few queries, in one pass without per-row temporaries
    step = max(1, _FINITE_CHECK_ELEMENTS // max(1, matrix.shape[1]))
    for start in range(0, len(matrix), step):
        finite = np.isfinite(matrix[start:start + step]).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise ValueError(
                f"{name} row {row} contains NaN or infinity (or a value beyond float32's range)"
            )


def pad_distance(metric):
    return _PAD_DISTANCE[metric]
