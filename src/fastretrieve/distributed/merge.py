"""The exact k-way merge of per-shard top-k lists.

Each shard answers with its own k best, best first, equal distances in storage order
(`Index.search`'s tie rule). Laid side by side in shard order, the candidates of one
query are in the global storage order wherever distances tie, so a *stable* sort on the
distance alone gives the global order: equal distances keep the lower shard first, and
within a shard the row stored first. The first k of it are exactly what one `Index`
holding shard 0's rows, then shard 1's, ... would return: every row of the global top k
is in its own shard's top k.
"""

from __future__ import annotations

import numpy as np

_DESCENDING = {"l2": False, "ip": True, "cosine": True}
_PAD_DISTANCE = {"l2": np.inf, "ip": -np.inf, "cosine": -np.inf}


def pad_distance(metric: str) -> float:
    """The distance of a missing neighbour (id -1): +inf for l2, -inf for ip and cosine."""
    return _PAD_DISTANCE[metric]


def merge_topk(per_shard, k: int, metric: str, queries: int):
    """Merge ``[(distances, ids), ...]`` (each (queries, k), in shard order) into the
    global ``(distances, ids)`` of shape (queries, k). No shards: all padding."""
    if not per_shard:
        return (np.full((queries, k), pad_distance(metric), np.float32),
                np.full((queries, k), -1, np.int64))
    distances = np.concatenate([d for d, _ in per_shard], axis=1)
    ids = np.concatenate([i for _, i in per_shard], axis=1)
    key = -distances if _DESCENDING[metric] else distances.copy()
    # Padding goes last whatever its distance, so a real neighbour at an infinite distance
    # is never displaced by a pad of an earlier shard.
    order = np.argsort(key, axis=1, kind="stable")
    padded = np.take_along_axis(ids, order, axis=1) < 0
    order = np.take_along_axis(order, np.argsort(padded, axis=1, kind="stable"), axis=1)[:, :k]
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(ids, order, axis=1)
