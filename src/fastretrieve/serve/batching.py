"""Dynamic batching: concurrent requests of one kind coalesced into one batched call.

A :class:`BatchQueue` holds submitted items (each with a size: query rows, images, or 1
for a write). Its worker takes the oldest item, waits at most ``max_wait_s`` for more
while fewer than ``max_batch`` are queued, then takes items up to ``max_batch`` in
total size and makes one call, ``run_batch(items)``, on its own thread: the event loop
only queues and answers, it never searches, decodes or embeds. While a batch runs new
items queue up, so under load batches fill without waiting at all.

The queue is bounded (``max_pending`` in total size): a submit that would pass the bound
raises :class:`QueueFull` at once (the service answers 503 with Retry-After), so memory
stays bounded under overload. A caller that goes away (its task is cancelled: the client
disconnected, or the request timed out) withdraws its item if it is still queued.

``workers`` > 1 runs that many batches at once (with ``max_batch=1`` that is the
unbatched baseline: each request its own call, in a pool of threads).
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .metrics import Metrics


class QueueFull(Exception):
    """The queue cannot take the item now; retry after ``retry_after_s`` seconds."""

    def __init__(self, queue: str, retry_after_s: int):
        super().__init__(f"the {queue} queue is full; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class BatchSettings:
    """How one queue batches: at most ``max_batch`` (total item size) per call, waiting at
    most ``max_wait_s`` for a batch to fill, at most ``max_pending`` queued, ``workers``
    batches at once."""

    max_batch: int
    max_wait_s: float
    max_pending: int
    workers: int = 1


class _Entry:
    __slots__ = ("item", "size", "future", "taken")

    def __init__(self, item, size, future):
        self.item, self.size, self.future = item, size, future
        self.taken = False


class BatchQueue:
    """A bounded queue of ``name`` items drained in batches by ``run_batch``, a function
    from a list of items to a list of results (an exception instance as a result is
    raised to that item's caller alone)."""

    def __init__(self, name: str, run_batch, settings: BatchSettings, metrics: Metrics):
        self.name = name
        self.settings = settings
        self._run_batch = run_batch
        self._metrics = metrics
        self._entries: collections.deque[_Entry] = collections.deque()
        self._pending_size = 0
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(settings.workers, thread_name_prefix=f"fr-{name}")
        self._workers: list[asyncio.Task] = []
        self._closing = False

    def start(self) -> None:
        """Start the workers (inside the running event loop)."""
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.settings.workers)]

    @property
    def depth(self) -> int:
        """Total size of the items waiting (not yet taken into a batch)."""
        return self._pending_size

    async def submit(self, item, size: int = 1):
        """Queue ``item`` and wait for its result."""
        if self._closing:
            raise QueueFull(self.name, 1)
        if self._pending_size + size > self.settings.max_pending and self._entries:
            raise QueueFull(self.name, 1)
        entry = _Entry(item, size, asyncio.get_running_loop().create_future())
        self._entries.append(entry)
        self._pending_size += size
        self._metrics.set_queue_depth(self.name, self._pending_size)
        self._arrived.set()
        try:
            return await entry.future
        except asyncio.CancelledError:
            if not entry.taken:  # still queued: the worker will skip it
                entry.future.cancel()
                self._pending_size -= entry.size
                entry.size = 0
                self._metrics.set_queue_depth(self.name, self._pending_size)
            raise

    async def run_exclusive(self, function):
        """Run ``function()`` on the queue's thread, between two batches (with one worker,
        nothing else runs on that thread meanwhile)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def close(self) -> None:
        """Refuse new items, finish the queued ones, stop the workers and their threads."""
        self._closing = True
        while self._entries:
            await asyncio.sleep(0.01)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            self._metrics.observe_batch(self.name, sum(e.size for e in batch))
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run_batch, [e.item for e in batch]
                )
            except Exception as error:  # the whole call failed: every caller hears why
                results = [error] * len(batch)
            for entry, result in zip(batch, results):
                if entry.future.done():  # the caller went away meanwhile
                    continue
                if isinstance(result, BaseException):
                    entry.future.set_exception(result)
                else:
                    entry.future.set_result(result)

    async def _next_batch(self) -> list[_Entry]:
        while not self._entries:
            self._arrived.clear()
            await self._arrived.wait()
        settings = self.settings
        if settings.max_wait_s > 0 and self._pending_size < settings.max_batch:
            deadline = time.monotonic() + settings.max_wait_s
            while self._pending_size < settings.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
        batch, total = [], 0
        while self._entries:
            entry = self._entries[0]
            if entry.future.done():  # withdrawn by its caller
                self._take()
                continue
            if batch and total + entry.size > settings.max_batch:
                break
            self._take()
            batch.append(entry)
            total += entry.size
        self._metrics.set_queue_depth(self.name, self._pending_size)
        return batch

    def _take(self) -> None:
        entry = self._entries.popleft()
        entry.taken = True
        self._pending_size -= entry.size
