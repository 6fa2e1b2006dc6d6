"""Plain NumPy backend: the slow, obviously-correct reference with the kernels' semantics.

Queries and database rows are processed in tiles whose temporaries fit in
``TILE_BYTES`` (the full distance matrix is never built, and a self-join of 100k rows
needs no more memory than a search of a few queries). Each tile is screened in float32
with BLAS, every candidate inside the screen's error bound is rescored exactly in
float64, and the running best-k per query is updated with a partition (see ``_exact``
for the method and its proof).
"""

from __future__ import annotations

import numpy as np

from ._exact import (
    best_columns,
    centre,
    exact_keys,
    finish,
    screen_error_coefficient,
    screen_queries,
    underflow_bound,
)
from ._stored_rows import decoded_blocks

NAME = "numpy"

# Bytes of temporaries per tile (queries x rows): about 64 bytes per pair (float32 screen,
# bounds, float64 keys, the merge) and 16 bytes per row element (centred rows, the float64
# copies of candidate rows).
TILE_BYTES = 32 << 20
_BYTES_PER_PAIR = 64
_MAX_QUERY_BLOCK = 1024


def describe():
    return {}


def sqnorms(x, threads=0):
    return np.einsum("ij,ij->i", x, x, dtype=np.float64).astype(np.float32)


def check_block_finite(block, start):
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        row = start + int(np.argmin(finite))
        raise ValueError(f"database row {row} contains NaN or infinity")


def tile_shape(n_queries, dim, keep):
    """(queries, rows) per tile so that its temporaries stay within TILE_BYTES."""
    query_block = min(n_queries, _MAX_QUERY_BLOCK)
    pairs = TILE_BYTES // _BYTES_PER_PAIR
    rows = min(pairs // query_block, TILE_BYTES // (16 * dim))
    return query_block, max(rows, keep, 1)


def knn(queries, database, k, metric, threads, database_sqnorms, exclude_self,
        storage="float32", quantiser=None):
    n, total = queries.shape[0], database.shape[0]
    keep = min(k, total - (1 if exclude_self else 0))
    if keep <= 0:
        return finish(np.empty((n, 0)), np.empty((n, 0), np.int64), k, metric)
    query_block, block_rows = tile_shape(n, queries.shape[1], keep)
    keys = np.empty((n, keep))
    indices = np.empty((n, keep), np.int64)
    for begin in range(0, n, query_block):
        stop = min(n, begin + query_block)
        blocks = decoded_blocks(database, storage, quantiser, block_rows)
        keys[begin:stop], indices[begin:stop] = _search_query_block(
            queries[begin:stop], begin, blocks, keep, metric, database_sqnorms, exclude_self)
    return finish(keys, indices, k, metric)


def _search_query_block(queries, first_query, blocks, keep, metric, database_sqnorms,
                        exclude_self):
    """Exact (keys, indices) of the best ``keep`` per query over every block, by
    (exact key, index); both (n, keep)."""
    n, dim = queries.shape
    queries64 = queries.astype(np.float64)
    centre_point = centre(queries, metric)
    screened, query_norms = screen_queries(queries, metric, centre_point)
    coefficient = screen_error_coefficient(dim, metric)
    underflow = underflow_bound(dim)
    # Running state, columns in index order: exact keys and rows of the best so far, and
    # the `keep` smallest upper bounds of the screen.
    best_keys = np.empty((n, 0))
    best_rows = np.empty((n, 0), np.int64)
    upper_bounds = np.empty((n, 0))
    for start, block in blocks:
        check_block_finite(block, start)
        scores, errors = _screen(screened, query_norms, block, metric, centre_point,
                                 database_sqnorms, start, coefficient, underflow)
        with np.errstate(invalid="ignore", over="ignore"):  # overflowing screens: below
            upper = scores + errors
            lower = scores - errors
        upper[np.isnan(upper)] = np.inf  # an overflowing screen bounds nothing
        if exclude_self:  # a query's own row is neither a bound nor a candidate
            own = np.arange(max(start, first_query), min(start + len(block), first_query + n))
            upper[own - first_query, own - start] = np.inf
        merged = np.concatenate([upper_bounds, upper], axis=1)
        if merged.shape[1] > keep:
            merged = np.partition(merged, keep - 1, axis=1)[:, :keep]
        upper_bounds = merged
        threshold = merged.max(axis=1) if merged.shape[1] == keep else np.full(n, np.inf)
        # `not >`: a NaN (overflowing) screen makes a candidate, rescored in float64.
        candidate = ~(lower > threshold[:, None])
        if exclude_self:
            candidate[own - first_query, own - start] = False
        block_keys = np.full(scores.shape, np.inf)
        query_rows, block_rows = np.nonzero(candidate)
        block_keys[query_rows, block_rows] = _exact_in_pieces(
            queries64, query_norms, block, query_rows, block_rows, metric)
        keys = np.concatenate([best_keys, block_keys], axis=1)
        kept = min(keep, keys.shape[1])
        columns = best_columns(keys, kept)
        old = best_keys.shape[1]
        best_keys = np.take_along_axis(keys, columns, axis=1)
        best_rows = np.where(columns < old,
                             np.take_along_axis(best_rows, np.minimum(columns, old - 1), axis=1)
                             if old else 0,
                             start + columns - old)
    best_rows = np.where(np.isfinite(best_keys), best_rows, -1)
    return best_keys, best_rows


def _screen(screened, query_norms, block, metric, centre_point, database_sqnorms, start,
            coefficient, underflow):
    """float32 screen scores (smaller is better) of a tile and their error bounds."""
    with np.errstate(over="ignore", invalid="ignore"):
        if metric == "cosine":
            if database_sqnorms is not None:
                norms = np.sqrt(database_sqnorms[start : start + len(block)].astype(np.float64))
            else:
                norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
            inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
            scores = -(screened @ block.T).astype(np.float64) * inverse[None, :]
            errors = np.broadcast_to(coefficient + underflow * inverse[None, :], scores.shape)
            return scores, errors.copy()
        centred = block - centre_point
        squared = np.einsum("ij,ij->i", centred, centred)  # float32, as the bound assumes
        # Upper bounds of |x'| (squares lost to underflow included).
        row_norms = np.sqrt(squared.astype(np.float64) * (1 + 2 * coefficient) + underflow)
        dots = (screened @ centred.T).astype(np.float64)
        if metric == "l2":
            scores = squared.astype(np.float64)[None, :] - 2.0 * dots
            errors = coefficient * (query_norms[:, None] + row_norms[None, :]) ** 2
        else:
            scores = -dots
            errors = coefficient * query_norms[:, None] * row_norms[None, :]
        errors += underflow
        return scores, errors


def _exact_in_pieces(queries64, query_norms, block, query_rows, block_rows, metric):
    """Exact keys of candidate pairs, a bounded number of pairs at a time."""
    out = np.empty(len(query_rows))
    step = max(1, TILE_BYTES // (16 * block.shape[1]))
    for begin in range(0, len(query_rows), step):
        piece = slice(begin, begin + step)
        out[piece] = exact_keys(queries64, query_norms, block[block_rows[piece]],
                                query_rows[piece], metric)
    return out


def _exact_scores(a, b, metric):
    """float64 (len(a), len(b)) distances/similarities for ``distances``."""
    q = np.asarray(a, np.float64)
    x = np.asarray(b, np.float64)
    if metric == "l2":
        return (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * (q @ x.T)
    dots = q @ x.T
    if metric == "ip":
        return dots
    norms = np.sqrt((q * q).sum(1))[:, None] * np.sqrt((x * x).sum(1))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)


def distances(a, b, metric, threads):
    scores = _exact_scores(a, b, metric)
    if metric == "l2":
        np.maximum(scores, 0.0, out=scores)  # the expanded float64 form can dip below 0
    return scores.astype(np.float32)
