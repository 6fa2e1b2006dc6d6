"""Numba backend: the C++ kernels' semantics, for platforms where the extension is missing.

Queries are taken in blocks of ``_QUERY_BLOCK``; for each block the database is split
into chunks scanned in parallel (``prange``). Each row is screened in float32 and every
row inside the screen's proven error bound is rescored exactly in float64 at once, while
it is in cache (the method and its proof: ``_exact``). Each chunk keeps, per query, two
bounded max-heaps as arrays (as in pynndescent): the smallest screen upper bounds, and
the best exact (key, index) pairs, so that equal keys keep the lower index. The chunks'
exact heaps are merged by ``_exact.finish``.

Kernels carry explicit signatures and ``cache=True``: they compile once per machine, on
the first use of this backend (this module is imported only when the backend is chosen).
``fastmath`` is limited to reassociation and contraction: the NaN/infinity checks must
not be optimised away.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import sys
import threading

import numba
import numpy as np
from numba import njit, prange, types

from ._backend import default_threads
from ._exact import centre, finish, screen_error_coefficient, screen_queries, underflow_bound
from ._stored_rows import decoded_blocks

NAME = "numba"

_L2, _IP, _COSINE = 0, 1, 2
_METRIC_CODES = {"l2": _L2, "ip": _IP, "cosine": _COSINE}
_NO_BAD_ROW = np.iinfo(np.int64).max
_FAST = {"reassoc", "contract", "nsz", "arcp"}

# Inputs are declared read-only (writable arrays convert to them): a memory-mapped index
# hands its vectors over read-only.
_INPUT_MATRIX = types.Array(types.float32, 2, "C", readonly=True)
_INPUT_VECTOR = types.Array(types.float32, 1, "C", readonly=True)
_INPUT_MATRIX_F64 = types.Array(types.float64, 2, "C", readonly=True)
_INPUT_VECTOR_F64 = types.Array(types.float64, 1, "C", readonly=True)

# Threading layers that let several Python threads launch parallel kernels at once. Numba
# picks the first that loads of tbb, omp, workqueue (unless NUMBA_THREADING_LAYER says
# otherwise); the "workqueue" layer aborts the process when two threads launch at once,
# so under it searches take turns on this lock. The layer is known after the first
# launch, which therefore always takes the lock.
_THREADSAFE_LAYERS = ("tbb", "omp")
_parallel_lock = threading.Lock()
_layer = None


def _make_tbb_loadable():
    """Load the TBB library of the ``tbb`` package (a dependency on x86-64 Linux and
    Windows), so that Numba's tbb layer finds it: pip puts it in the environment's lib/
    folder, which a virtual environment's loader does not search."""
    if not sys.platform.startswith("linux"):
        return
    try:
        files = importlib.metadata.files("tbb") or []
    except importlib.metadata.PackageNotFoundError:
        return
    for file in files:
        if file.name == "libtbb.so.12":
            try:
                ctypes.CDLL(str(file.locate()), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass  # Numba then falls back to its next layer
            return


_make_tbb_loadable()


def describe():
    return {"numba_threading_layer": _layer or numba.config.THREADING_LAYER}


def _threadsafe_layer():
    return _layer in _THREADSAFE_LAYERS


@njit(types.void(_INPUT_MATRIX, types.float32[::1]), parallel=True, nogil=True, cache=True,
      fastmath=_FAST)
def _sqnorms_kernel(rows, out):
    for j in prange(rows.shape[0]):
        acc = np.float32(0.0)
        for t in range(rows.shape[1]):
            acc += rows[j, t] * rows[j, t]
        out[j] = acc


@njit("void(float64[::1], int64[::1], float64, int64)", cache=True, nogil=True)
def _heap_replace_top(keys, rows, key, row):
    """Replace the worst entry (the root) of a max-heap ordered by (key, row)."""
    size = keys.shape[0]
    position = 0
    while True:
        child = 2 * position + 1
        if child >= size:
            break
        right = child + 1
        if right < size and (
            keys[right] > keys[child] or (keys[right] == keys[child] and rows[right] > rows[child])
        ):
            child = right
        if keys[child] < key or (keys[child] == key and rows[child] < row):
            break
        keys[position] = keys[child]
        rows[position] = rows[child]
        position = child
    keys[position] = key
    rows[position] = row


@njit("void(float64[::1], float64)", cache=True, nogil=True)
def _bound_replace_top(bounds, value):
    """Replace the largest value (the root) of a max-heap of screen upper bounds."""
    size = bounds.shape[0]
    position = 0
    while True:
        child = 2 * position + 1
        if child >= size:
            break
        if child + 1 < size and bounds[child + 1] > bounds[child]:
            child += 1
        if bounds[child] <= value:
            break
        bounds[position] = bounds[child]
        position = child
    bounds[position] = value


@njit(types.boolean(_INPUT_VECTOR), cache=True, nogil=True)
def _row_is_finite(row):
    for t in range(row.shape[0]):
        if not np.isfinite(row[t]):
            return False
    return True


@njit(
    types.void(_INPUT_MATRIX, _INPUT_MATRIX_F64, _INPUT_VECTOR_F64, _INPUT_VECTOR, _INPUT_MATRIX,
               types.int64, types.int64, _INPUT_VECTOR_F64, types.int64, types.boolean,
               types.int64, types.float64, types.float64, types.float64[:, :, ::1],
               types.float64[:, :, ::1], types.int64[:, :, ::1], types.int64[::1]),
    parallel=True,
    nogil=True,
    cache=True,
    fastmath=_FAST,
)
def _scan_chunks(screened, queries64, query_norms, centre, rows, first_row, first_query,
                 inverse_norms, metric, exclude_self, chunk_rows, coefficient, underflow,
                 bounds, best_keys, best_rows, bad_rows):
    """Screen every (query, row) of one block in float32 and rescore in float64 every row
    inside the screen's error bound (see _exact); chunks of rows run in parallel, each
    with its own heaps (``bounds``: upper bounds; ``best_keys``/``best_rows``: exact)."""
    n_chunks = bounds.shape[0]
    n_queries, dim = screened.shape
    for chunk in prange(n_chunks):
        begin = chunk * chunk_rows
        end = min(rows.shape[0], begin + chunk_rows)
        centred = np.empty(dim, np.float32)
        chunk_bounds = bounds[chunk]
        chunk_keys = best_keys[chunk]
        chunk_found = best_rows[chunk]
        for r in range(begin, end):
            row = first_row + r
            values = rows[r]
            # Per row, while it is in cache: the centred row and its norm (l2, ip) or its
            # inverse norm (cosine), for the screen and its bound.
            row_norm = 0.0
            inverse = 0.0
            squared = np.float32(0.0)
            if metric == _COSINE:
                if inverse_norms.shape[0] > 0:
                    inverse = inverse_norms[r]
                else:
                    squared64 = 0.0
                    for t in range(dim):
                        squared64 += np.float64(values[t]) * np.float64(values[t])
                    if squared64 > 0:
                        inverse = 1.0 / np.sqrt(squared64)
            else:
                for t in range(dim):
                    centred[t] = values[t] - centre[t]
                    squared += centred[t] * centred[t]
                # An upper bound of |x'| (squares lost to underflow included).
                row_norm = np.sqrt(np.float64(squared) * (1.0 + 2.0 * coefficient) + underflow)
            exact_norm = -1.0  # the row's float64 norm, computed when cosine first needs it
            bad = False
            for q in range(n_queries):
                if exclude_self and first_query + q == row:
                    continue
                dot = np.float32(0.0)
                if metric == _COSINE:
                    for t in range(dim):
                        dot += screened[q, t] * values[t]
                    score = -np.float64(dot) * inverse
                    error = coefficient + underflow * inverse
                else:
                    if query_norms[q] > 0:  # one query is its own centre: a zero vector
                        for t in range(dim):
                            dot += screened[q, t] * centred[t]
                    if metric == _L2:
                        score = np.float64(squared) - 2.0 * np.float64(dot)
                        norms_sum = query_norms[q] + row_norm
                        error = coefficient * norms_sum * norms_sum + underflow
                    else:
                        score = -np.float64(dot)
                        error = coefficient * query_norms[q] * row_norm + underflow
                bound = chunk_bounds[q, 0]
                # False for NaN: a row holding NaN or infinity, or whose screen overflowed,
                # always comes here (its bound is infinite, or its score NaN).
                if score - error > bound:
                    continue
                if not np.isfinite(score) and not _row_is_finite(values):
                    bad = True
                    break
                key = 0.0
                if metric == _L2:
                    for t in range(dim):
                        diff = np.float64(values[t]) - queries64[q, t]
                        key += diff * diff
                else:
                    for t in range(dim):
                        key += np.float64(values[t]) * queries64[q, t]
                    if metric == _COSINE:
                        if exact_norm < 0:
                            exact_norm = 0.0
                            for t in range(dim):
                                exact_norm += np.float64(values[t]) * np.float64(values[t])
                            exact_norm = np.sqrt(exact_norm)
                        norms = exact_norm * query_norms[q]
                        key = key / norms if norms > 0 else 0.0
                    key = -key
                worst = chunk_keys[q, 0]
                if key < worst or (key == worst and row < chunk_found[q, 0]):
                    _heap_replace_top(chunk_keys[q], chunk_found[q], key, row)
                upper = score + error
                if upper < bound:
                    _bound_replace_top(chunk_bounds[q], upper)
            if bad:
                bad_rows[chunk] = row  # rows are scanned in order: the chunk's first
                break


@njit(types.void(_INPUT_MATRIX, _INPUT_MATRIX, types.int64, types.float32[:, ::1]), parallel=True,
      nogil=True, cache=True, fastmath=_FAST)
def _pairwise_kernel(a, b, metric, out):
    for i in prange(a.shape[0]):
        for j in range(b.shape[0]):
            acc = np.float32(0.0)
            if metric == _L2:
                for t in range(a.shape[1]):
                    diff = a[i, t] - b[j, t]
                    acc += diff * diff
            else:
                for t in range(a.shape[1]):
                    acc += a[i, t] * b[j, t]
            out[i, j] = acc


def _run_parallel(threads, kernel, *args):
    global _layer
    threads = min(threads or default_threads(), default_threads(), numba.config.NUMBA_NUM_THREADS)
    # Numba's thread count is a per-thread setting: restored for the caller's own kernels.
    with contextlib.nullcontext() if _threadsafe_layer() else _parallel_lock:
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            kernel(*args)
        finally:
            numba.set_num_threads(previous)
        if _layer is None:  # only ever under the lock
            _layer = numba.threading_layer()


def sqnorms(x, threads=0):
    out = np.empty(x.shape[0], np.float32)
    _run_parallel(threads, _sqnorms_kernel, x, out)
    return out


def _cached_inverse_norms(metric, database_sqnorms):
    """float64 inverse row norms from the cache (cosine); empty: the kernel computes them."""
    if metric != "cosine" or database_sqnorms is None:
        return np.empty(0, np.float64)
    finite = np.isfinite(database_sqnorms)
    if not finite.all():
        raise ValueError(f"database row {int(np.argmin(finite))} contains NaN or infinity")
    roots = np.sqrt(database_sqnorms.astype(np.float64))
    return np.divide(1.0, roots, out=np.zeros_like(roots), where=roots > 0)


# Queries per kernel call: a block's float32 and float64 copies stay in the L2 cache
# while every row streams past them, and the per-chunk heaps stay small for a self-join.
_QUERY_BLOCK = 256


def knn(queries, database, k, metric, threads, database_sqnorms, exclude_self,
        storage="float32", quantiser=None):
    n_queries, total = queries.shape[0], database.shape[0]
    keep = min(k, total - (1 if exclude_self else 0))
    if keep <= 0:
        return finish(np.empty((n_queries, 0)), np.empty((n_queries, 0), np.int64), k, metric)
    inverse_norms = _cached_inverse_norms(metric, database_sqnorms)
    n_chunks = max(1, min(4 * (threads or default_threads()), total // 4096))
    keys = np.empty((n_queries, n_chunks * keep))
    found = np.empty((n_queries, n_chunks * keep), np.int64)
    for begin in range(0, n_queries, _QUERY_BLOCK):
        stop = min(n_queries, begin + _QUERY_BLOCK)
        keys[begin:stop], found[begin:stop] = _search_query_block(
            queries[begin:stop], begin, database, storage, quantiser, keep, metric, threads,
            inverse_norms, exclude_self, n_chunks)
    return finish(keys, found, k, metric)


def _search_query_block(queries, first_query, database, storage, quantiser, keep, metric,
                        threads, inverse_norms, exclude_self, n_chunks):
    """Per query, the exact (keys, rows) kept by every chunk: (n, n_chunks * keep)."""
    n, dim = queries.shape
    centre_point = centre(queries, metric)
    screened, query_norms = screen_queries(queries, metric, centre_point)
    queries64 = queries.astype(np.float64)
    bounds = np.full((n_chunks, n, keep), np.inf)
    best_keys = np.full((n_chunks, n, keep), np.inf)
    best_rows = np.full((n_chunks, n, keep), -1, np.int64)
    bad_rows = np.full(n_chunks, _NO_BAD_ROW, np.int64)
    for start, block in decoded_blocks(database, storage, quantiser):
        chunk_rows = -(-len(block) // n_chunks)
        block_inverse = inverse_norms[start : start + len(block)]
        _run_parallel(threads, _scan_chunks, screened, queries64, query_norms, centre_point,
                      block, start, first_query, block_inverse, _METRIC_CODES[metric],
                      exclude_self, chunk_rows, screen_error_coefficient(dim, metric),
                      underflow_bound(dim), bounds, best_keys, best_rows, bad_rows)
        if bad_rows.min() != _NO_BAD_ROW:
            raise ValueError(f"database row {int(bad_rows.min())} contains NaN or infinity")
    return (best_keys.transpose(1, 0, 2).reshape(n, -1),
            best_rows.transpose(1, 0, 2).reshape(n, -1))


def distances(a, b, metric, threads):
    out = np.empty((a.shape[0], b.shape[0]), np.float32)
    _run_parallel(threads, _pairwise_kernel, a, b, _METRIC_CODES[metric], out)
    if metric == "cosine":
        inverse_a, inverse_b = (
            np.divide(1.0, r, out=np.zeros_like(r), where=r > 0)
            for r in (np.sqrt(sqnorms(a, threads)), np.sqrt(sqnorms(b, threads)))
        )
        out *= inverse_a[:, None]
        out *= inverse_b[None, :]
        np.clip(out, -1.0, 1.0, out=out)
    return out
