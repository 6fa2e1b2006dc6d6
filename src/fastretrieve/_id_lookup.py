"""`IdLookup`: which row holds an id, without a Python object per id.

A loaded index of millions of rows must answer "which row is id i" at once, without
building a dict of every id on load (hundreds of MB and a second of Python for ten
million ids). The lookup is a sorted base -- the ids in increasing order and the row of
each, two int64 arrays, read from the file's id order section or sorted once -- searched
with `np.searchsorted`, plus a small dict of the changes made since the base was built
(appended and moved rows, removed ids). When the changes grow past a fraction of the
rows, the base is rebuilt from the live ids (one sort) and the dict emptied, so each
change costs O(log N) amortised and the dict stays small.

Not thread-safe by itself: `Index` calls it under its writer lock.
"""

from __future__ import annotations

import numpy as np

_REMOVED = -1
# Rebuild the base when the changes exceed this many entries and 1/8 of the rows: a
# dict entry costs ~100 bytes, so the dict stays below ~13 bytes per row.
_MIN_CHANGES_BEFORE_REBUILD = 4096
_REBUILD_FRACTION = 8


class IdLookup:
    """id -> row for the live rows of an index."""

    def __init__(self, sorted_ids, rows=None):
        self._sorted_ids = sorted_ids  # strictly increasing int64
        # int64: the row of each of sorted_ids; None when the ids are stored in increasing
        # order (the usual case), so that the ids themselves are the base: no copy.
        self._rows = rows
        self._changes = {}  # id -> row, or _REMOVED, since the base was built

    @classmethod
    def of(cls, ids):
        """The lookup of ``ids`` (unique int64, storage order, never written in place)."""
        if len(ids) < 2 or (ids[1:] > ids[:-1]).all():
            return cls(ids)
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], order)

    def rows_of(self, ids):
        """The row of each of ``ids`` (int64 array), -1 where an id is absent."""
        sorted_ids = self._sorted_ids
        rows = np.full(len(ids), -1, np.int64)
        if len(sorted_ids):
            slots = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
            found = sorted_ids[slots] == ids
            rows[found] = slots[found] if self._rows is None else self._rows[slots[found]]
        if self._changes:
            changes = self._changes
            for position, item_id in enumerate(ids.tolist()):
                row = changes.get(item_id)
                if row is not None:
                    rows[position] = row  # _REMOVED is -1: absent
        return rows

    def row_of(self, item_id):
        """The row of one id, or -1."""
        return int(self.rows_of(np.array([item_id], np.int64))[0])

    def update(self, ids, rows, live_ids):
        """Record that ``ids`` (int64 array) are now at ``rows``; ``live_ids`` are the ids
        of all rows once the change is published (to rebuild from when it is large)."""
        if len(self._changes) + len(ids) > self._rebuild_threshold(len(live_ids)):
            self._rebuild(live_ids)
            return
        self._changes.update(zip(ids.tolist(), rows.tolist()))

    def discard(self, ids, live_ids):
        """Record that ``ids`` are no longer in the index."""
        if len(self._changes) + len(ids) > self._rebuild_threshold(len(live_ids)):
            self._rebuild(live_ids)
            return
        self._changes.update(dict.fromkeys(ids.tolist(), _REMOVED))

    @staticmethod
    def _rebuild_threshold(count):
        return max(_MIN_CHANGES_BEFORE_REBUILD, count // _REBUILD_FRACTION)

    def _rebuild(self, live_ids):
        rebuilt = IdLookup.of(live_ids)
        self._sorted_ids, self._rows = rebuilt._sorted_ids, rebuilt._rows
        self._changes = {}
