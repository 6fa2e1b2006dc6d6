"""Plain NumPy backend: the slow, obviously-correct reference with the kernels' semantics.

Database rows are processed in blocks (the full distance matrix is never built); each
block's float32 scores are merged into a running best-k by a stable sort, which keeps
equal scores in index order.
"""

from __future__ import annotations

import numpy as np

from ._exact import exact_scores, rescore_and_order

NAME = "numpy"
_BLOCK_ROWS = 4096


def describe():
    return {}


def sqnorms(x, threads=0):
    return np.einsum("ij,ij->i", x, x, dtype=np.float64).astype(np.float32)


def selection_scores(queries, block, metric, block_sqnorms):
    """Smaller-is-better float32 scores of one database block (rank-equivalent to the metric)."""
    dots = queries @ block.T
    if metric == "l2":
        return block_sqnorms[None, :] - 2.0 * dots
    if metric == "ip":
        return -dots
    norms = np.sqrt(block_sqnorms)
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return -dots * inverse[None, :]


def check_block_finite(block, start):
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        row = start + int(np.argmin(finite))
        raise ValueError(f"database row {row} contains NaN or infinity")


def knn(queries, database, k, metric, threads, database_sqnorms, exclude_self):
    n, total = queries.shape[0], database.shape[0]
    keep = min(k, total - (1 if exclude_self else 0))
    if keep <= 0:
        return rescore_and_order(queries, database, np.full((n, 0), -1, np.int64), k, metric)
    if metric == "cosine":
        norms = np.sqrt(sqnorms(queries))
        queries = queries / np.where(norms > 0, norms, 1)[:, None]
    best_scores = np.empty((n, 0), np.float32)
    best_indices = np.empty((n, 0), np.int64)
    for start in range(0, total, _BLOCK_ROWS):
        block = database[start : start + _BLOCK_ROWS]
        check_block_finite(block, start)
        block_sqnorms = (
            database_sqnorms[start : start + len(block)]
            if database_sqnorms is not None
            else sqnorms(block)
        )
        scores = selection_scores(queries, block, metric, block_sqnorms).astype(np.float32)
        if exclude_self:
            rows = np.arange(start, min(start + len(block), n))
            scores[rows, rows - start] = np.inf
        indices = np.broadcast_to(np.arange(start, start + len(block)), scores.shape)
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_indices = np.concatenate([best_indices, indices], axis=1)
        order = np.argsort(merged_scores, axis=1, kind="stable")[:, :keep]
        best_scores = np.take_along_axis(merged_scores, order, axis=1)
        best_indices = np.take_along_axis(merged_indices, order, axis=1)
    if exclude_self:  # a query whose only candidates were itself keeps none
        best_indices = np.where(np.isinf(best_scores), -1, best_indices)
    return rescore_and_order(queries, database, best_indices, k, metric)


def distances(a, b, metric, threads):
    scores = exact_scores(a, b, metric)
    if metric == "l2":
        np.maximum(scores, 0.0, out=scores)  # the expanded float64 form can dip below 0
    return scores.astype(np.float32)
