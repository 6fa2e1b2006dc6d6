"""`ShardedIndex`: exact search over shard `Index` files held by Ray actors.

Each shard is served by one actor that memory-maps its file (`Index.load(mmap=True)`),
so a shard costs its node page cache, not a copy per process. A search sends each batch
of queries once to the object store, every actor searches it, and the driver merges the
per-shard top k exactly (:mod:`.merge`): the answer is the one a single `Index` holding
the shards' rows in manifest order would give, ties included.

Faults: actors are restarted by Ray (``max_restarts``) and a search task that was
running on an actor that died is retried on the restarted actor. When a shard stays
unavailable, the search raises :class:`ShardUnavailableError` -- never a silently
partial answer. ``allow_partial=True`` returns what the other shards found instead, in
a :class:`PartialSearchResult` that names the missing shards.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from .. import Index
from .cluster import connect
from .manifest import ManifestError, read_manifest
from .merge import merge_topk

DEFAULT_BATCH = 4096  # queries per actor call: big enough to amortise a call, bounded memory


class ShardUnavailableError(RuntimeError):
    """A shard could not answer (its actor died and could not be restarted, or timed out)."""


class PartialSearchResult(NamedTuple):
    """A search answer that may lack some shards (only with ``allow_partial=True``).

    ``distances`` and ``ids`` are the exact merge of the shards that answered;
    ``missing_shards`` lists the positions of those that did not (empty: complete).
    """

    distances: np.ndarray
    ids: np.ndarray
    missing_shards: tuple[int, ...]

    @property
    def complete(self) -> bool:
        """True when every shard answered."""
        return not self.missing_shards


class ShardServer:
    """Serves one or more shard files; runs as a Ray actor (see `ShardedIndex`)."""

    def __init__(self, paths: list[str], threads: int | None):
        self._indexes = [Index.load(path, mmap=True) for path in paths]
        self._threads = threads

    def describe(self) -> tuple[int, list[dict]]:
        """The actor's process id (for operators and fault tests) and what each of its
        shards holds."""
        shards = []
        for index in self._indexes:
            ids = index.ids
            shards.append({
                "rows": len(ids), "dim": index.dim, "metric": index.metric, "dtype": index.dtype,
                "first_id": int(ids.min()) if len(ids) else None,
                "last_id": int(ids.max()) if len(ids) else None,
            })
        return os.getpid(), shards

    def search(self, queries: np.ndarray, k: int) -> list:
        """Each shard's top k of each query, as `Index.search` returns them."""
        return [index.search(queries, k, threads=self._threads) for index in self._indexes]

    def get(self, slot: int, ids):
        """Stored vectors of ``ids`` (all in the actor's shard number ``slot``)."""
        return self._indexes[slot].get(ids)

    def get_metadata(self, slot: int, ids):
        """Metadata of ``ids`` (all in the actor's shard number ``slot``)."""
        return self._indexes[slot].get_metadata(ids)

    def ids(self, slot: int) -> np.ndarray:
        """The ids of the actor's shard number ``slot``, in storage order."""
        return np.array(self._indexes[slot].ids)


_ShardActor = ray.remote(ShardServer)


class ShardedIndex:
    """An exact index split into shard `Index` files, searched by Ray actors.

    Parameters
    ----------
    manifest : path
        A manifest (:mod:`fastretrieve.distributed.manifest`), e.g. written by
        :func:`fastretrieve.distributed.embed_to_shards` or `write_manifest`.
    address : str, optional
        The Ray cluster to use when this process is not connected yet (see
        :func:`fastretrieve.distributed.connect`).
    actors : int, optional
        Actors serving the shards (default: one per shard). Fewer actors each hold
        several consecutive shards, searched one after the other.
    threads : int, optional
        Search threads per actor (default: 1, matching ``num_cpus``).
    num_cpus : float
        CPUs Ray reserves for each actor.
    max_restarts : int
        How often Ray may restart a dead actor; a search running on it is retried as
        often. 0: the first death makes its shards unavailable.
    batch_size : int
        Queries sent to the actors per call.
    timeout : float, optional
        Seconds a search waits for its shards; past it, ShardUnavailableError.
    open_timeout : float
        Seconds to wait for every actor to start (e.g. while the cluster lacks the CPUs
        they reserve); past it, ShardUnavailableError.

    Search results are those of one `Index` holding shard 0's rows, then shard 1's, and
    so on: same distances, same ids, same order (exact duplicates: the lower shard
    first), same padding (id -1, distance +inf for l2 and -inf for ip and cosine) when k
    exceeds the total row count. One caveat, inherited from the kernel: distinct rows
    whose distances differ by less than its selection tolerance (about 1e-6 relative;
    see "Exact distances" in the README) may come in either order.
    """

    def __init__(self, manifest, *, address=None, actors=None, threads=1, num_cpus=1.0,
                 max_restarts=3, batch_size=DEFAULT_BATCH, timeout=None, open_timeout=120.0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.manifest_path = os.fspath(manifest)
        self.manifest = read_manifest(manifest)
        for entry in self.manifest.shards:
            if not os.path.isfile(entry.file):
                raise ManifestError(f"{self.manifest_path}: shard file {entry.file} is missing")
        shards = len(self.manifest.shards)
        actors = shards if actors is None else max(1, min(int(actors), shards))
        # Consecutive shards per actor, as even as possible.
        self._groups = [list(group) for group in np.array_split(np.arange(shards), actors)]
        self._slot = {int(s): (a, slot) for a, group in enumerate(self._groups)
                      for slot, s in enumerate(group)}
        connect(address)
        self.batch_size = int(batch_size)
        self._actors = [
            _ShardActor.options(num_cpus=num_cpus, max_restarts=max_restarts,
                                max_task_retries=max_restarts).remote(
                [self.manifest.shards[s].file for s in group], threads)
            for group in self._groups
        ]
        self.timeout = open_timeout
        try:
            self._check_shards(self._gather([a.describe.remote() for a in self._actors], "open"))
        except BaseException:
            self.close()
            raise
        self.timeout = timeout
        self._id_order = sorted(
            (entry.first_id, entry.last_id, shard)
            for shard, entry in enumerate(self.manifest.shards) if entry.rows
        )

    # -- description --------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        return self.manifest.dim

    @property
    def metric(self) -> str:
        """``"l2"``, ``"ip"`` or ``"cosine"``."""
        return self.manifest.metric

    @property
    def attributes(self) -> dict:
        """The manifest's attributes (e.g. the model record of an embedded folder)."""
        return dict(self.manifest.attributes)

    def __len__(self) -> int:
        return self.manifest.rows

    def __repr__(self) -> str:
        return (f"ShardedIndex({self.manifest_path!r}, shards={len(self.manifest.shards)}, "
                f"actors={len(self._actors)}, count={len(self)}, metric={self.metric!r})")

    def actor_pids(self) -> list[int]:
        """The process id of each actor (changes when Ray restarts one)."""
        return [pid for pid, _ in self._gather([a.describe.remote() for a in self._actors], "describe")]

    def actor_of_shard(self, shard: int) -> int:
        """Which actor (a position in `actor_pids`) serves shard number ``shard``."""
        return self._slot[shard][0]

    # -- queries ------------------------------------------------------------------------

    def search(self, vecs, k, *, allow_partial=False):
        """The k nearest stored vectors of each query, exactly, over every shard.

        Returns ``(distances, ids)`` as `Index.search` does (a 1-D query gives 1-D
        results). A shard that cannot answer raises ShardUnavailableError, unless
        ``allow_partial=True``: then a :class:`PartialSearchResult` comes back, with
        the shards that did not answer in ``missing_shards``.
        """
        queries, single, k = self._check_queries(vecs, k)
        starts = range(0, len(queries), self.batch_size)
        pending = []
        for start in starts:
            batch = ray.put(queries[start:start + self.batch_size])
            pending.append([actor.search.remote(batch, k) for actor in self._actors])
        answers = [self._gather(refs, "search", allow_missing=allow_partial) for refs in pending]
        # An actor that failed on any batch is left out of every batch, so a partial
        # answer is the exact answer of one well-defined set of shards.
        failed = {a for batch in answers for a, answer in enumerate(batch) if answer is None}
        blocks = [
            merge_topk([per_shard for a, answer in enumerate(batch) if a not in failed
                        for per_shard in answer],
                       k, self.metric, min(self.batch_size, len(queries) - start))
            for start, batch in zip(starts, answers)
        ] or [merge_topk([], k, self.metric, 0)]
        distances = np.concatenate([d for d, _ in blocks])
        ids = np.concatenate([i for _, i in blocks])
        if single:
            distances, ids = distances[0], ids[0]
        if allow_partial:
            missing = tuple(s for a in sorted(failed) for s in self._groups[a])
            return PartialSearchResult(distances, ids, missing)
        return distances, ids

    def get(self, ids) -> np.ndarray:
        """The stored vectors of ``ids`` (float32, as `Index.get`), in order."""
        wanted, grouped = self._group_by_shard(ids)
        out = np.empty((len(wanted), self.dim), np.float32)
        for shard, rows in grouped.items():
            out[rows] = self._call(shard, "get", wanted[rows])
        return out

    def get_metadata(self, ids) -> list:
        """The metadata of each of ``ids`` (as `Index.get_metadata` with a sequence)."""
        wanted, grouped = self._group_by_shard(ids)
        out = [None] * len(wanted)
        for shard, rows in grouped.items():
            for row, value in zip(rows.tolist(), self._call(shard, "get_metadata", wanted[rows].tolist())):
                out[row] = value
        return out

    def shard_ids(self, shard: int) -> np.ndarray:
        """The ids of one shard, in its storage order."""
        return self._call(shard, "ids")

    def close(self) -> None:
        """Stop the actors."""
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _call(self, shard, method, *args):
        actor, slot = self._slot[shard]
        ref = getattr(self._actors[actor], method).remote(slot, *args)
        return self._gather([None] * actor + [ref], method)[actor]

    def _check_queries(self, vecs, k):
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an integer, got {type(k).__name__}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = np.asarray(vecs, dtype=np.float32)
        single = queries.ndim == 1
        if single:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n, {self.dim}), got {np.shape(vecs)}")
        finite = np.isfinite(queries).all(axis=1)
        if not finite.all():
            raise ValueError(f"vecs row {int(np.argmin(finite))} contains NaN or infinity")
        return np.ascontiguousarray(queries), single, int(k)

    def _gather(self, refs, what, *, allow_missing=False):
        """``ray.get`` each actor's ref (None: nothing asked of that actor); a dead or
        late actor raises, or gives None if allowed."""
        answers = []
        for actor, ref in enumerate(refs):
            if ref is None:
                answers.append(None)
                continue
            try:
                answers.append(ray.get(ref, timeout=self.timeout))
            except (RayActorError, GetTimeoutError) as error:
                if not allow_missing:
                    files = ", ".join(self.manifest.shards[s].file for s in self._groups[actor])
                    raise ShardUnavailableError(
                        f"{what}: shard {', '.join(map(str, self._groups[actor]))} ({files}) did "
                        f"not answer ({type(error).__name__}); no partial answer is returned "
                        "(pass allow_partial=True to search to accept one, flagged)"
                    ) from error
                answers.append(None)
        return answers

    def _check_shards(self, described) -> None:
        infos = [info for _, shards in described for info in shards]
        for entry, info in zip(self.manifest.shards, infos):
            expected = (entry.rows, self.dim, self.metric, self.manifest.dtype, entry.first_id, entry.last_id)
            found = (info["rows"], info["dim"], info["metric"], info["dtype"], info["first_id"], info["last_id"])
            if expected != found:
                raise ManifestError(
                    f"{entry.file} does not match {self.manifest_path}: the manifest says "
                    f"rows, dim, metric, dtype, first and last id = {expected}, the file has {found}"
                )

    def _group_by_shard(self, ids):
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
        firsts = np.array([first for first, _, _ in self._id_order], np.int64)
        slots = np.searchsorted(firsts, wanted, side="right") - 1
        grouped: dict[int, list[int]] = {}
        for row, (item_id, slot) in enumerate(zip(wanted.tolist(), slots.tolist())):
            if slot < 0 or item_id > self._id_order[slot][1]:
                raise KeyError(item_id)
            grouped.setdefault(self._id_order[slot][2], []).append(row)
        return wanted, {s: np.array(rows, np.int64) for s, rows in grouped.items()}
