"""The work behind the routes: three batching queues (search, embed, write) over one
served index and one embedder, and the periodic compaction of the write-ahead log.

Batched calls, all on worker threads:

- search: the query rows of every queued request stacked into one `Index.search` (the
  multi-query kernel), with the largest k asked for; each request gets its rows, cut to
  its own k (exact search returns the same first k whatever the k asked);
- embed: the images of every queued request through one `Embedder.embed_paths` stream
  (ONNX Runtime batches of up to the embedder's batch size; decoding in its threads);
- write: the writes of every queued request applied in order, then one fsync.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from .. import Embedder
from .batching import BatchQueue
from .config import ServeConfig
from .metrics import Metrics
from .store import ServedIndex

log = logging.getLogger("fastretrieve.serve")


class RejectedInput(ValueError):
    """A request whose content cannot be used (answered 422 with the message)."""


class NoModel(Exception):
    """An image request to a service that has no embedder (409)."""


class Service:
    """The state of one running service."""

    def __init__(self, config: ServeConfig, store: ServedIndex, embedder: Embedder | None,
                 model: str | None, whitening=None):
        self.config = config
        self.store = store
        self.index = store.index
        self.embedder = embedder
        self.whitening = whitening  # the index's recorded Whitening, applied to embeddings
        self.model = model
        self.metrics = Metrics()
        self.ready = False
        self.search_queue = BatchQueue("search", self._search_batch, config.search, self.metrics)
        self.embed_queue = BatchQueue("embed", self._embed_batch, config.embed, self.metrics)
        self.write_queue = BatchQueue("write", store.apply_batch, config.write, self.metrics)
        self._compactor: asyncio.Task | None = None
        self.metrics.gauge("fastretrieve_index_items", lambda: len(self.index))
        self.metrics.gauge("fastretrieve_wal_bytes", lambda: self.store.log_bytes)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the queues' workers and the compaction timer."""
        for queue in (self.search_queue, self.embed_queue, self.write_queue):
            queue.start()
        if not self.store.read_only:
            self._compactor = asyncio.create_task(self._compact_periodically())
        self.ready = True

    async def stop(self) -> None:
        """Finish queued work, then compact the log into the index file (at shutdown,
        once the server has stopped accepting and in-flight requests have finished)."""
        self.ready = False
        if self._compactor is not None:
            self._compactor.cancel()
            await asyncio.gather(self._compactor, return_exceptions=True)
        for queue in (self.search_queue, self.embed_queue, self.write_queue):
            await queue.close()
        await asyncio.to_thread(self.store.close)
        log.info("index saved to %s (%d items)", self.store.path, len(self.index))

    async def compact(self) -> None:
        """Compact the log now: rotate it between two write batches, then save."""
        closed = await self.write_queue.run_exclusive(self.store.start_compaction)
        if closed is not None:
            await asyncio.to_thread(self.store.finish_compaction, closed)

    async def _compact_periodically(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            due = time.monotonic() - last >= self.config.compact_interval_s
            if due or self.store.log_bytes >= self.config.compact_log_bytes:
                try:
                    await self.compact()
                except Exception:  # a failed save keeps the log: nothing is lost
                    log.exception("compaction failed; the write-ahead log is kept")
                last = time.monotonic()

    # -- requests -----------------------------------------------------------------------

    def query_matrix(self, vectors: list, name: str = "vectors") -> np.ndarray:
        """Vectors from JSON as a float32 matrix of the index's dimension, all finite."""
        try:
            matrix = np.asarray(vectors, np.float32)
        except (ValueError, TypeError):
            raise RejectedInput(f"{name} must all have the same length, {self.index.dim}") from None
        if matrix.ndim != 2 or matrix.shape[1] != self.index.dim:
            lengths = sorted({len(v) for v in vectors})
            raise RejectedInput(
                f"{name} must have {self.index.dim} components each (the index's dimension), "
                f"got {', '.join(map(str, lengths))}"
            )
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite))
            raise RejectedInput(
                f"{name}[{row}] holds NaN, an infinity or a value beyond the float32 range"
            )
        return matrix

    async def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest stored items of each query: (distances, ids), via the batch
        (k is checked by the request's schema: 1..MAX_K)."""
        return await self.search_queue.submit((queries, k), size=len(queries))

    async def embed(self, images: list[bytes]) -> np.ndarray:
        """The embeddings of encoded images, via the batch; RejectedInput names a bad one."""
        if self.embedder is None:
            raise NoModel(
                "this index has no built-in model recorded and none was given with --model: "
                "it serves vectors only"
            )
        if not images:
            raise RejectedInput("no image in the request")
        return await self.embed_queue.submit(images, size=len(images))

    async def write(self, operation):
        """Apply a write durably (logged and fsynced before this returns). The index's
        own refusals (an unknown id: KeyError; anything else: RejectedInput) are raised."""
        try:
            return await self.write_queue.submit(operation)
        except (ValueError, TypeError, OverflowError) as error:
            if isinstance(error, RejectedInput):
                raise
            raise RejectedInput(str(error)) from None

    def _search_batch(self, items):
        queries = np.concatenate([q for q, _ in items]) if len(items) > 1 else items[0][0]
        k = max(k for _, k in items)
        distances, ids = self.index.search(queries, k)
        results, start = [], 0
        for rows, item_k in items:
            stop = start + len(rows)
            results.append((distances[start:stop, :item_k], ids[start:stop, :item_k]))
            start = stop
        return results

    def _embed_batch(self, items):
        flat = [image for images in items for image in images]
        embedded = list(self.embedder.embed_paths(flat))
        results, start = [], 0
        for images in items:
            mine = embedded[start : start + len(images)]
            start += len(images)
            failed = [(i, r.error) for i, r in enumerate(mine) if not r.ok]
            if failed:
                position, reason = failed[0]
                what = "the image" if len(images) == 1 else f"image {position}"
                results.append(RejectedInput(f"{what} cannot be used: {reason}"))
            else:
                vectors = np.stack([r.vector for r in mine])
                if self.whitening is not None:
                    vectors = self.whitening.transform(vectors)
                results.append(vectors)
        return results
