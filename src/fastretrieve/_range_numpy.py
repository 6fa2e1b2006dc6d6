"""Range search for the NumPy backend: a float64 screen with an error bound, then every
candidate near the radius rescored directly.

Blocks of queries x database rows are scored in float64 with matrix products (the
expanded form |q|^2 + |x|^2 - 2<q, x> for l2). Its error is below
4 (d + 4) 2^-53 (|q|^2 + |x|^2) for l2, that times |q| |x| for ip and that alone for
cosine; every pair scoring within that bound of the radius, or inside it, is recomputed
directly (squared differences, no cancellation) and kept if within the radius. Blocks are
sized so that no temporary holds more than a few million values.
"""

from __future__ import annotations

import numpy as np

_ROW_BLOCK = 4096
_BLOCK_VALUES = 1 << 22  # float64 values in one block's scores (32 MiB)
_PAIR_VALUES = 1 << 21  # float64 values gathered at once for rescoring


def range_search(queries, database, radius, metric, threads, exclude_self, max_results):
    """Backend contract of ``fastretrieve.range_search``; ``None`` beyond max_results."""
    del threads  # NumPy chooses its own BLAS threads
    dim = queries.shape[1]
    bound = 4.0 * (dim + 4) * 2.0**-53
    q64 = queries.astype(np.float64)
    q_sq = np.einsum("ij,ij->i", q64, q64)
    query_block = max(1, _BLOCK_VALUES // _ROW_BLOCK)
    found_queries, found_rows, found_values = [], [], []
    total = 0
    for start in range(0, database.shape[0], _ROW_BLOCK):
        x64 = database[start:start + _ROW_BLOCK].astype(np.float64)
        finite = np.isfinite(x64).all(axis=1)
        if not finite.all():
            raise ValueError(f"database row {start + int(np.argmin(finite))} contains NaN or infinity")
        x_sq = np.einsum("ij,ij->i", x64, x64)
        for q_start in range(0, len(q64), query_block):
            q_block = q64[q_start:q_start + query_block]
            candidates = _screen(q_block, q_sq[q_start:q_start + len(q_block)], x64, x_sq,
                                 radius, metric, bound)
            if exclude_self:
                diagonal = np.arange(max(start, q_start), min(start + len(x64), q_start + len(q_block)))
                candidates[diagonal - q_start, diagonal - start] = False
            rows_q, rows_x = np.nonzero(candidates)
            values = _exact_pairs(q_block, x64, rows_q, rows_x, metric)
            keep = values <= radius if metric == "l2" else values >= radius
            total += int(keep.sum())
            if total > max_results:
                return None
            found_queries.append(rows_q[keep] + q_start)
            found_rows.append(rows_x[keep] + start)
            found_values.append(values[keep])
    query_of = np.concatenate(found_queries).astype(np.int64)
    rows = np.concatenate(found_rows).astype(np.int64)
    values = np.concatenate(found_values)
    order = np.lexsort((rows, values if metric == "l2" else -values, query_of))
    lims = np.zeros(len(queries) + 1, np.int64)
    np.cumsum(np.bincount(query_of, minlength=len(queries)), out=lims[1:])
    return lims, values[order].astype(np.float32), rows[order]


def _screen(q, q_sq, x, x_sq, radius, metric, bound):
    """Pairs that may lie within the radius: the float64 score within its bound of it."""
    dots = q @ x.T
    if metric == "l2":
        sums = q_sq[:, None] + x_sq[None, :]
        return sums - 2.0 * dots <= radius + bound * sums
    norms = np.sqrt(q_sq)[:, None] * np.sqrt(x_sq)[None, :]
    if metric == "ip":
        return dots >= radius - bound * norms
    cosine = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return cosine >= radius - bound


def _exact_pairs(q, x, rows_q, rows_x, metric):
    """Distances or similarities of the pairs (q[rows_q[i]], x[rows_x[i]]), computed directly."""
    out = np.empty(len(rows_q), np.float64)
    step = max(1, _PAIR_VALUES // q.shape[1])
    for begin in range(0, len(rows_q), step):
        a = q[rows_q[begin:begin + step]]
        b = x[rows_x[begin:begin + step]]
        if metric == "l2":
            diff = a - b
            out[begin:begin + step] = np.einsum("ij,ij->i", diff, diff)
            continue
        dots = np.einsum("ij,ij->i", a, b)
        if metric == "ip":
            out[begin:begin + step] = dots
            continue
        norms = np.sqrt(np.einsum("ij,ij->i", a, a)) * np.sqrt(np.einsum("ij,ij->i", b, b))
        out[begin:begin + step] = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return out
