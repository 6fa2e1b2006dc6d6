"""Range search for the Numba backend: every pair computed directly in float64.

Two passes over the database, split into chunks scanned in parallel: the first counts
each query's neighbours per chunk (so the result is allocated once, at its exact size,
and ``max_results`` is enforced before any of it is), the second writes them; then each
query's neighbours are sorted. Both passes call the same float64 pair function without
``fastmath`` (strict IEEE order), so they agree on every pair. Squared differences are
summed directly: no cancellation however far the data sits from the origin.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types

from ._backend import default_threads
from ._numba import _run_parallel

_L2, _IP, _COSINE = 0, 1, 2
_METRIC_CODES = {"l2": _L2, "ip": _IP, "cosine": _COSINE}
_NO_BAD_ROW = np.iinfo(np.int64).max
_MIN_CHUNK_ROWS = 1024

_MATRIX = types.Array(types.float32, 2, "C", readonly=True)
_VECTOR64 = types.Array(types.float64, 1, "C", readonly=True)


@njit(types.float64(_MATRIX, types.int64, _MATRIX, types.int64, types.int64, types.float64,
                    types.float64), cache=True, nogil=True)
def _pair_value(queries, query, database, row, metric, query_sq, row_sq):
    acc = 0.0
    if metric == _L2:
        for t in range(queries.shape[1]):
            diff = np.float64(queries[query, t]) - np.float64(database[row, t])
            acc += diff * diff
        return acc
    for t in range(queries.shape[1]):
        acc += np.float64(queries[query, t]) * np.float64(database[row, t])
    if metric == _IP:
        return acc
    if query_sq > 0 and row_sq > 0:
        return acc / (np.sqrt(query_sq) * np.sqrt(row_sq))
    return 0.0


@njit(types.float64(_MATRIX, types.int64), cache=True, nogil=True)
def _row_sq(matrix, row):
    acc = 0.0
    for t in range(matrix.shape[1]):
        acc += np.float64(matrix[row, t]) * np.float64(matrix[row, t])
    return acc  # float32 values squared cannot overflow float64: NaN/inf only from the row


@njit(types.boolean(types.float64, types.int64, types.float64), cache=True, nogil=True)
def _within(value, metric, radius):
    return value <= radius if metric == _L2 else value >= radius


@njit(types.void(_MATRIX, _VECTOR64, _MATRIX, types.float64, types.int64, types.boolean,
                 types.int64, types.int64[:, ::1], types.int64[::1]),
      parallel=True, cache=True)
def _count(queries, query_sq, database, radius, metric, exclude_self, chunk_rows, counts,
           bad_rows):
    for chunk in prange(counts.shape[0]):
        begin = chunk * chunk_rows
        for row in range(begin, min(database.shape[0], begin + chunk_rows)):
            row_sq = _row_sq(database, row)
            if not np.isfinite(row_sq):
                bad_rows[chunk] = row  # rows in order: the chunk's first bad one
                break
            for query in range(queries.shape[0]):
                if exclude_self and query == row:
                    continue
                value = _pair_value(queries, query, database, row, metric, query_sq[query], row_sq)
                if _within(value, metric, radius):
                    counts[chunk, query] += 1


@njit(types.void(_MATRIX, _VECTOR64, _MATRIX, types.float64, types.int64, types.boolean,
                 types.int64, types.int64[:, ::1], types.float64[::1], types.int64[::1]),
      parallel=True, cache=True)
def _fill(queries, query_sq, database, radius, metric, exclude_self, chunk_rows, offsets,
          values, indices):
    for chunk in prange(offsets.shape[0]):
        position = offsets[chunk].copy()
        begin = chunk * chunk_rows
        for row in range(begin, min(database.shape[0], begin + chunk_rows)):
            row_sq = _row_sq(database, row)
            for query in range(queries.shape[0]):
                if exclude_self and query == row:
                    continue
                value = _pair_value(queries, query, database, row, metric, query_sq[query], row_sq)
                if _within(value, metric, radius):
                    values[position[query]] = value
                    indices[position[query]] = row
                    position[query] += 1


@njit(types.void(types.int64[::1], types.float64[::1], types.int64[::1], types.boolean),
      parallel=True, cache=True)
def _sort_each(lims, values, indices, ascending):
    # Within a query the rows are in increasing order: a stable sort by value keeps the
    # lower index first among equal values.
    for query in prange(lims.shape[0] - 1):
        begin, end = lims[query], lims[query + 1]
        keys = values[begin:end] if ascending else -values[begin:end]
        order = np.argsort(keys, kind="mergesort")
        values[begin:end] = values[begin:end][order]
        indices[begin:end] = indices[begin:end][order]


def range_search(queries, database, radius, metric, threads, exclude_self, max_results):
    """Backend contract of ``fastretrieve.range_search``; ``None`` beyond max_results."""
    code = _METRIC_CODES[metric]
    query_sq = np.einsum("ij,ij->i", queries, queries, dtype=np.float64)
    total_rows = database.shape[0]
    n_chunks = max(1, min(4 * (threads or default_threads()), total_rows // _MIN_CHUNK_ROWS))
    chunk_rows = -(-total_rows // n_chunks)
    n_chunks = -(-total_rows // chunk_rows)
    counts = np.zeros((n_chunks, len(queries)), np.int64)
    bad_rows = np.full(n_chunks, _NO_BAD_ROW, np.int64)
    _run_parallel(threads, _count, queries, query_sq, database, radius, code, exclude_self,
                  chunk_rows, counts, bad_rows)
    if bad_rows.min() != _NO_BAD_ROW:
        raise ValueError(f"database row {int(bad_rows.min())} contains NaN or infinity")
    lims = np.zeros(len(queries) + 1, np.int64)
    np.cumsum(counts.sum(axis=0), out=lims[1:])
    if lims[-1] > max_results:
        return None
    # Chunk c of query q writes from lims[q] plus the counts of the chunks before it.
    offsets = np.ascontiguousarray(lims[:-1][None, :] + np.cumsum(counts, axis=0) - counts)
    values = np.empty(lims[-1], np.float64)
    indices = np.empty(lims[-1], np.int64)
    _run_parallel(threads, _fill, queries, query_sq, database, radius, code, exclude_self,
                  chunk_rows, offsets, values, indices)
    _run_parallel(threads, _sort_each, lims, values, indices, metric == "l2")
    return lims, values.astype(np.float32), indices
