"""Exact selection shared by the Python backends: screen bounds, exact keys, ordering.

Both Python backends select neighbours in two steps:

1. A float32 **screen** ranks every row by a fast score (l2: |x'|^2 - 2<q',x'> on rows
   and queries centred on the queries' mean; ip: -<q, x'>; cosine: -<q/|q|, x>/|x|).
   For each (query, row) the screen's rounding error has a proven bound ``E`` (below):
   the exact value of the screened expression lies in [s - E, s + E], and it ranks rows
   as the metric does (up to a per-query constant). Each query keeps the k smallest
   *upper* bounds ``s + E`` seen so far; their largest, ``U``, is at least the k-th
   smallest exact value. A row whose *lower* bound ``s - E`` exceeds ``U`` cannot be
   among the k best and is skipped; every other row is a candidate.
2. Every candidate is **rescored exactly** in float64 from the rows and queries
   themselves (l2 as the sum of squared differences, never the expanded form), and the
   k best by (exact key, index) are kept: ties by the lower index.

Why a screen with a bound rather than float64 throughout: the screen keeps the Numba
kernels' float32 speed on ordinary data, where a handful of rows per query fall inside
the bound; and float64 alone would not be exact either (the expanded form in float64
still loses the digits of near-duplicates far from the origin). Correctness never
depends on the bound being tight: where it is wide (data far from the origin in cosine,
where float32 cannot tell the angles apart) more rows are candidates and the search
degrades to exact float64 scoring of those rows, never to a wrong answer. Centring on
the queries' mean (l2 and ip rank the same after a translation, up to a per-query
constant) keeps the l2 and ip bounds proportional to the spread of the data, not to its
distance from the origin; one query is its own centre, so its screen is the direct
distance.

The bounds (u = 2^-24; x' = fl(x - c), q' = fl(q - c) in float32): a float32 dot product
or squared norm of length d is within gamma_d = d u / (1 - d u) of the exact one times
the product of the norms, in any summation order and with or without FMA; centring
rounds each element by at most u of its result, which moves |q - x|^2 by at most
2u (|q'| + |x'|)^2. Hence (with margins for the float64 comparisons and the norms
themselves being computed)

- l2:     E = (d + 8) u' (|q'| + |x'|)^2
- ip:     E = (d + 8) u' |q| |x'|
- cosine: E = (2d + 16) u'    (the query normalised in float64 then rounded, the row
  norms cached in float32 or computed in float64)

with u' = 1.05 u / (1 - (d + 2) u), plus ``underflow_bound(d)`` for what products
lost to underflow (at most 2^-150 each; scaled by the row's inverse norm for cosine).
The row norms in the bounds are upper bounds of the computed ones, underflow included.
The Numba and NumPy backends compute exactly these quantities.
"""

from __future__ import annotations

import numpy as np

ASCENDING = {"l2": True, "ip": False, "cosine": False}
PAD_DISTANCE = {"l2": np.inf, "ip": -np.inf, "cosine": -np.inf}

UNIT_ROUNDOFF = 2.0**-24
# The smallest float32 subnormal: twice what one product can lose to underflow.
UNDERFLOW = 2.0**-149


def screen_error_coefficient(dim, metric):
    """The factor of the screen's error bound (see the module docstring)."""
    rounding = 1.05 * UNIT_ROUNDOFF / (1.0 - (dim + 2) * UNIT_ROUNDOFF)
    if metric == "cosine":
        return (2 * dim + 16) * rounding
    return (dim + 8) * rounding


def underflow_bound(dim):
    """What subnormal products can lose in one screened score (before any scaling)."""
    return (3 * dim + 8) * UNDERFLOW


def centre(queries, metric):
    """float32 centre of the queries (their mean) for l2 and ip; zeros for cosine."""
    if metric == "cosine":
        return np.zeros(queries.shape[1], np.float32)
    return queries.mean(axis=0, dtype=np.float64).astype(np.float32)


def screen_queries(queries, metric, centre_point):
    """(float32 queries the screen uses, float64 norms its bound uses).

    l2: the centred queries and their norms; ip: the queries and their norms; cosine:
    the queries normalised in float64 then rounded (zero stays zero), and their float64
    norms (what the exact cosine divides by).
    """
    q64 = queries.astype(np.float64)
    if metric == "l2":
        centred = np.ascontiguousarray(queries - centre_point, np.float32)
        c64 = centred.astype(np.float64)
        return centred, np.sqrt(np.einsum("ij,ij->i", c64, c64))
    norms = np.sqrt(np.einsum("ij,ij->i", q64, q64))
    if metric == "ip":
        return np.ascontiguousarray(queries, np.float32), norms
    unit = q64 / np.where(norms > 0, norms, 1.0)[:, None]
    return np.ascontiguousarray(unit, np.float32), norms


def exact_keys(queries64, query_norms, rows, query_rows, metric):
    """Exact float64 keys (smaller is better) of pairs (queries64[query_rows[i]], rows[i]).

    ``query_norms``: float64 norms of the queries (cosine only). l2 sums the squared
    differences, so near-identical vectors keep all their digits.
    """
    x = rows.astype(np.float64)
    q = queries64[query_rows]
    if metric == "l2":
        diff = x - q
        return np.einsum("ij,ij->i", diff, diff)
    dots = np.einsum("ij,ij->i", x, q)
    if metric == "ip":
        return -dots
    norms = query_norms[query_rows] * np.sqrt(np.einsum("ij,ij->i", x, x))
    return -np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def best_columns(keys, keep):
    """Column positions of the ``keep`` smallest keys per row, ties by the lower column.

    ``keys``: (n, m) float64, m >= keep, no NaN. A partition, not a sort: O(n m). The
    positions come back in column order.
    """
    n, m = keys.shape
    if m == keep:
        return np.broadcast_to(np.arange(m), (n, m))
    kth = np.partition(keys, keep - 1, axis=1)[:, keep - 1 : keep]
    chosen = keys < kth
    tied = keys == kth
    missing = keep - chosen.sum(axis=1, keepdims=True)
    chosen |= tied & (np.cumsum(tied, axis=1) <= missing)
    return np.nonzero(chosen)[1].reshape(n, keep)


def finish(keys, indices, k, metric):
    """(distances float32, indices int64) of shape (n, k), best first, padded.

    ``keys``: exact float64 keys, smaller is better, +inf where nothing was found;
    ``indices``: their rows. Equal keys are ordered by the lower index.
    """
    n = keys.shape[0]
    out_d = np.full((n, k), PAD_DISTANCE[metric], np.float32)
    out_i = np.full((n, k), -1, np.int64)
    if keys.shape[1] == 0:
        return out_d, out_i
    order = np.lexsort((indices, keys), axis=-1)[:, :k]
    keys = np.take_along_axis(keys, order, axis=1)
    indices = np.take_along_axis(indices, order, axis=1)
    found = np.isfinite(keys) & (indices >= 0)
    values = keys if ASCENDING[metric] else -keys
    width = keys.shape[1]
    with np.errstate(over="ignore"):  # beyond float32's range the rounding is infinity
        out_d[:, :width] = np.where(found, values, PAD_DISTANCE[metric]).astype(np.float32)
    out_i[:, :width] = np.where(found, indices, -1)
    return out_d, out_i
