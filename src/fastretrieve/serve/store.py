"""The served index: an `Index` file plus its write-ahead log, with group commit and
compaction.

Writes are applied by one writer thread, a batch at a time (see `apply_batch`): each
operation is applied to the in-memory `Index` (which validates it: an invalid one fails
alone and is not logged), logged, and when the whole batch is applied the log is fsynced
once (group commit); only then are the callers answered. A search may therefore see a
write a few milliseconds before it is acknowledged -- always between the request and its
answer, so every history stays consistent with one serial order -- and a crash in that
window loses only writes that were never acknowledged.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from .. import Index
from .wal import WalRecord, WriteAheadLog

log = logging.getLogger("fastretrieve.serve")


class AddVectors:
    """A write: add (or replace) ``vectors`` with optional ``ids`` and ``metadata``."""

    def __init__(self, vectors: np.ndarray, ids=None, metadata=None):
        self.vectors, self.ids, self.metadata = vectors, ids, metadata

    def apply(self, index: Index) -> WalRecord:
        assigned = index.add(self.vectors, ids=self.ids, metadata=self.metadata)
        return WalRecord("add", assigned.tolist(), self.vectors, self.metadata)


class RemoveIds:
    """A write: remove ``ids`` (all of them, or none when one is unknown)."""

    def __init__(self, ids):
        self.ids = [int(i) for i in ids]

    def apply(self, index: Index) -> WalRecord:
        index.remove(np.asarray(self.ids, np.int64))
        return WalRecord("remove", self.ids)


class ServedIndex:
    """The index at ``path`` with its log replayed; writable unless ``read_only``."""

    def __init__(self, path: os.PathLike, *, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self.index = Index.load(self.path, mmap=True)
        self._wal = None
        self._compaction_lock = threading.Lock()
        self.replayed = 0
        if not read_only:
            self._wal = WriteAheadLog(self.path)
            for record in self._wal.replay():
                _replay(self.index, record)
                self.replayed += 1
        elif WriteAheadLog(self.path).segments():
            # Serving without the logged writes would silently answer from stale data.
            raise RuntimeError(
                f"{self.path} has a write-ahead log with writes not yet saved in the index "
                "file; serve it once without --read-only to compact them"
            )

    def apply_batch(self, operations) -> list:
        """Apply, log and fsync a batch of writes, in order; returns, for each, its
        result (the ids added or removed) or the exception that refused it."""
        results = []
        for operation in operations:
            try:
                record = operation.apply(self.index)
            except (ValueError, TypeError, KeyError, OverflowError) as error:
                results.append(error)
                continue
            self._wal.append(record)
            results.append(record.ids)
        if self._wal.unflushed:
            self._wal.flush()
        return results

    @property
    def log_bytes(self) -> int:
        """Bytes in the current log segment (0 when read-only)."""
        return 0 if self._wal is None else self._wal.current_size

    def start_compaction(self) -> int | None:
        """In the writer thread, between batches: close the current segment if the log
        holds records (in it, or in older segments). Returns the closed segment for
        `finish_compaction`, or None."""
        if self._wal is None or not self._wal.has_records():
            return None
        return self._wal.rotate()

    def finish_compaction(self, closed_segment: int) -> None:
        """Save the index atomically, then drop the log segments it now holds. Runs
        beside the writer: writes go on into the new segment during the save."""
        with self._compaction_lock:
            self.index.save(self.path)
            self._wal.discard_through(closed_segment)
        log.info("compacted the write-ahead log into %s (%d items)", self.path, len(self.index))

    def close(self) -> None:
        """Compact whatever is logged and close the log (at shutdown, writes stopped)."""
        if self._wal is None:
            return
        closed = self.start_compaction()
        if closed is not None:
            self.finish_compaction(closed)
        self._wal.close()
        # The segment opened by the last rotation (or at start) is empty: remove it.
        for _, path in self._wal.segments():
            path.unlink()


def _replay(index: Index, record: WalRecord) -> None:
    if record.op == "add":
        index.add(record.vectors, ids=np.asarray(record.ids, np.int64), metadata=record.metadata)
    else:
        # The saved index may already hold this removal (a crash after a compaction's
        # save, before its log was deleted): remove what is still there.
        present = [i for i in record.ids if i in index]
        if present:
            index.remove(np.asarray(present, np.int64))
