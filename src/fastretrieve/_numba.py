"""Numba backend: the C++ kernels' semantics, for platforms where the extension is missing.

The database is split into chunks scanned in parallel (``prange``); each chunk keeps one
bounded max-heap per query (arrays, as in pynndescent), ordered by (score, index) so that
equal scores keep the lower index. Per-chunk results are merged and the selected
neighbours rescored exactly by the shared code in ``_exact``.

Kernels carry explicit signatures and ``cache=True``: they compile once per machine, on
the first use of this backend (this module is imported only when the backend is chosen).
``fastmath`` is limited to reassociation and contraction: the NaN/infinity checks must
not be optimised away.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import njit, prange, types

from ._backend import default_threads
from ._exact import rescore_and_order

NAME = "numba"

_L2, _IP, _COSINE = 0, 1, 2
_METRIC_CODES = {"l2": _L2, "ip": _IP, "cosine": _COSINE}
_NO_BAD_ROW = np.iinfo(np.int64).max
_FAST = {"reassoc", "contract", "nsz", "arcp"}

# Inputs are declared read-only (writable arrays convert to them): a memory-mapped index
# hands its vectors over read-only.
_INPUT_MATRIX = types.Array(types.float32, 2, "C", readonly=True)
_INPUT_VECTOR = types.Array(types.float32, 1, "C", readonly=True)

# Numba's default "workqueue" threading layer aborts the process when two threads launch
# parallel kernels at once; searches from several Python threads take turns here.
_parallel_lock = threading.Lock()


def describe():
    return {"numba_threading_layer": numba.config.THREADING_LAYER}


@njit(types.void(_INPUT_MATRIX, types.float32[::1]), parallel=True, cache=True, fastmath=_FAST)
def _sqnorms_kernel(rows, out):
    for j in prange(rows.shape[0]):
        acc = np.float32(0.0)
        for t in range(rows.shape[1]):
            acc += rows[j, t] * rows[j, t]
        out[j] = acc


@njit("void(float32[::1], int64[::1], float32, int64)", cache=True, nogil=True)
def _heap_replace_top(scores, indices, score, index):
    """Replace the worst entry (the root) of a max-heap ordered by (score, index)."""
    size = scores.shape[0]
    position = 0
    while True:
        child = 2 * position + 1
        if child >= size:
            break
        right = child + 1
        if right < size and (
            scores[right] > scores[child]
            or (scores[right] == scores[child] and indices[right] > indices[child])
        ):
            child = right
        if scores[child] < score or (scores[child] == score and indices[child] < index):
            break
        scores[position] = scores[child]
        indices[position] = indices[child]
        position = child
    scores[position] = score
    indices[position] = index


@njit(
    types.void(_INPUT_MATRIX, _INPUT_MATRIX, _INPUT_VECTOR, types.int64, types.boolean,
               types.int64, types.float32[:, :, ::1], types.int64[:, :, ::1], types.int64[::1]),
    parallel=True,
    cache=True,
    fastmath=_FAST,
)
def _scan_chunks(queries, database, factors, metric, exclude_self, chunk_rows,
                 best_scores, best_indices, bad_rows):
    n_chunks = best_scores.shape[0]
    n_queries = queries.shape[0]
    dim = queries.shape[1]
    for chunk in prange(n_chunks):
        begin = chunk * chunk_rows
        end = min(database.shape[0], begin + chunk_rows)
        scores = best_scores[chunk]
        indices = best_indices[chunk]
        stop = False
        for row in range(begin, end):
            # Without cached norms, each row's norm is computed here, while the row is in
            # cache for its dot products: one pass over the database, as in the C++ kernel.
            factor = np.float32(1.0)
            if metric != _IP:
                if factors.shape[0] > 0:
                    factor = factors[row]
                else:
                    squared = np.float32(0.0)
                    for t in range(dim):
                        squared += database[row, t] * database[row, t]
                    if metric == _L2:
                        factor = squared
                    elif squared > 0:
                        factor = np.float32(1.0) / np.sqrt(squared)
                    else:
                        factor = np.float32(0.0)
            for q in range(n_queries):
                if exclude_self and q == row:
                    continue
                dot = np.float32(0.0)
                for t in range(dim):
                    dot += queries[q, t] * database[row, t]
                if metric == _L2:
                    score = factor - np.float32(2.0) * dot
                elif metric == _IP:
                    score = -dot
                else:
                    score = -dot * factor
                if not np.isfinite(score):
                    bad_rows[chunk] = row  # rows are scanned in order: the chunk's first
                    stop = True
                    break
                if score < scores[q, 0]:  # the root is the worst kept; equal loses (higher index)
                    _heap_replace_top(scores[q], indices[q], score, row)
            if stop:
                break


@njit(types.void(_INPUT_MATRIX, _INPUT_MATRIX, types.int64, types.float32[:, ::1]), parallel=True,
      cache=True, fastmath=_FAST)
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
    threads = min(threads or default_threads(), numba.config.NUMBA_NUM_THREADS)
    with _parallel_lock:
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            kernel(*args)
        finally:
            numba.set_num_threads(previous)


def sqnorms(x, threads=0):
    out = np.empty(x.shape[0], np.float32)
    _run_parallel(threads, _sqnorms_kernel, x, out)
    return out


def _cached_factors(metric, database_sqnorms):
    """Per-row score factors from cached squared norms; empty: the kernel computes them."""
    if metric == "ip" or database_sqnorms is None:
        return np.empty(0, np.float32)
    finite = np.isfinite(database_sqnorms)
    if not finite.all():
        raise ValueError(f"database row {int(np.argmin(finite))} contains NaN or infinity")
    if metric == "l2":
        return np.ascontiguousarray(database_sqnorms, np.float32)
    roots = np.sqrt(database_sqnorms)
    return np.divide(1.0, roots, out=np.zeros_like(roots), where=roots > 0).astype(np.float32)


def knn(queries, database, k, metric, threads, database_sqnorms, exclude_self):
    n_queries, total = queries.shape[0], database.shape[0]
    keep = min(k, total - (1 if exclude_self else 0))
    if keep <= 0:
        return rescore_and_order(queries, database, np.full((n_queries, 0), -1, np.int64), k, metric)
    factors = _cached_factors(metric, database_sqnorms)
    if metric == "cosine":
        norms = np.sqrt(sqnorms(queries, threads))
        queries = np.ascontiguousarray(queries / np.where(norms > 0, norms, 1)[:, None], np.float32)
    n_chunks = max(1, min(4 * (threads or default_threads()), total // 4096))
    chunk_rows = -(-total // n_chunks)
    n_chunks = -(-total // chunk_rows)
    best_scores = np.full((n_chunks, n_queries, keep), np.inf, np.float32)
    best_indices = np.full((n_chunks, n_queries, keep), -1, np.int64)
    bad_rows = np.full(n_chunks, _NO_BAD_ROW, np.int64)
    _run_parallel(threads, _scan_chunks, queries, database, factors, _METRIC_CODES[metric],
                  exclude_self, chunk_rows, best_scores, best_indices, bad_rows)
    if bad_rows.min() != _NO_BAD_ROW:
        raise ValueError(f"database row {int(bad_rows.min())} contains NaN or infinity")
    # Merge the chunks: the best `keep` by (score, index) per query.
    scores = best_scores.transpose(1, 0, 2).reshape(n_queries, -1)
    indices = best_indices.transpose(1, 0, 2).reshape(n_queries, -1)
    order = np.lexsort((indices, scores), axis=-1)[:, :keep]
    merged = np.take_along_axis(indices, order, axis=1)
    return rescore_and_order(queries, database, merged, k, metric)


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
