"""Exact scoring of selected neighbours, shared by the Python backends.

The backends select neighbours with fast float32 scores (for l2 the expanded form
|x|^2 - 2 q.x, which loses digits for near-identical vectors). The k neighbours they
return are then rescored exactly in float64 and put in order, so returned distances are
exact to float32 rounding whatever the selection arithmetic. The C++ backend does the
same in csrc/knn.cpp.
"""

from __future__ import annotations

import numpy as np

ASCENDING = {"l2": True, "ip": False, "cosine": False}
PAD_DISTANCE = {"l2": np.inf, "ip": -np.inf, "cosine": -np.inf}


def exact_scores(queries, database, metric):
    """float64 (len(queries), len(database)) distances/similarities, computed directly."""
    q = np.asarray(queries, np.float64)
    x = np.asarray(database, np.float64)
    if metric == "l2":
        return (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * (q @ x.T)
    dots = q @ x.T
    if metric == "ip":
        return dots
    norms = np.sqrt((q * q).sum(1))[:, None] * np.sqrt((x * x).sum(1))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)


def rescore_and_order(queries, database, indices, k, metric):
    """Rescore candidate ``indices`` (n, m) exactly; return (distances, indices) padded to k.

    Candidates equal to -1 are padding. Order: best first, equal distances by lower index.
    """
    n, m = indices.shape
    out_d = np.full((n, k), PAD_DISTANCE[metric], np.float32)
    out_i = np.full((n, k), -1, np.int64)
    for row in range(n):
        cand = indices[row][indices[row] >= 0]
        if cand.size == 0:
            continue
        exact = _row_scores(queries[row], database[cand], metric)
        key = exact if ASCENDING[metric] else -exact
        order = np.lexsort((cand, key))[:k]
        out_d[row, : order.size] = exact[order]
        out_i[row, : order.size] = cand[order]
    return out_d, out_i


def _row_scores(query, rows, metric):
    q = np.asarray(query, np.float64)
    x = np.asarray(rows, np.float64)
    if metric == "l2":
        diff = x - q
        return np.einsum("ij,ij->i", diff, diff)
    dots = x @ q
    if metric == "ip":
        return dots
    norms = np.sqrt(q @ q) * np.sqrt(np.einsum("ij,ij->i", x, x))
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
