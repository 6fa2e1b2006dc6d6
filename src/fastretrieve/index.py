"""`Index`: vectors with int64 ids, JSON metadata and attributes, exact search, safe
persistence.

Storage
    Rows live in one contiguous buffer per column (codes, squared norms, ids). When a
    buffer is full it is reallocated to ``n + n // 10`` rows for ``n`` live rows, never
    doubled, so the vector storage stays within 1.1 x N x dim x itemsize bytes (plus
    12 bytes per row for the id and the norm cache, 16 for the id lookup unless the
    ids are stored in increasing order, plus metadata). Growing by 10 % copies each row about ten times over the life of an index
    built one row at a time; a batch ``add`` allocates once. While a buffer is being
    replaced the old and the new one exist together.

    Ids are found by binary search over sorted arrays (`fastretrieve._id_lookup`), not
    a dict of every id. Metadata loaded from a file stays in the file's encoded form
    (memory-mapped with ``mmap=True``) and is decoded per id when read; values set by
    `add` (encoded to compact JSON there, once) and masks for removed ids are held in
    a dict layered over it, and `save` copies the unchanged values' bytes without
    decoding them. So loading costs no Python object per row.

Concurrency
    Any number of threads may call `search`, `get`, `get_metadata`, `save`, ``len``,
    ``in`` and read `attributes` while one thread calls `add` and `remove` or sets
    `attributes` (writers are serialised by a lock, so several writer threads are safe
    too, one after the other). Every modification publishes a new immutable snapshot (a
    view of the live rows, their norms and ids) by a single reference assignment; a
    search works on the snapshot it picked up, so it sees the index before or after each
    `add`/`remove`, never in between. Appends write rows beyond the published count and
    then publish; removals and replacements build new buffers (copy-on-write), so rows a
    reader can see are never written. Searches run without the GIL in the kernels, in
    parallel with each other and with writers.
    `get`, `get_metadata` and ``in`` take the writer lock briefly (they wait for a
    modification in progress); `search`, ``len`` and reading `attributes` never wait
    (the attributes are replaced whole, never changed in place, so a reader sees the old
    dict or the new one). `version` counts modifications: each `add` or `remove` call
    that changes the index, and each assignment to `attributes`, increments it by
    exactly one.

Low precision
    float16, bfloat16 and int8 storage (see :mod:`fastretrieve.quantize`) is searched
    exactly with respect to the stored, decoded vectors -- the vectors `get` returns --
    with float32 queries. Their distance to the original float32 vectors is the codec's
    rounding. The C++ backend scans the stored rows directly (widening each element to
    float32 in its kernels, so the memory read per row shrinks by 2x or 4x); the Numba and
    NumPy backends decode a bounded block of rows at a time to float32 and search it.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import _backend
from ._id_lookup import IdLookup
from ._stored_rows import DECODE_BLOCK_BYTES
from .index_format import (
    IndexFormatError,
    encode_attributes,
    encode_item,
    first_duplicate,
    read_index,
    write_index,
)
from .quantize import make_codec, storage_dtype_name
from .search import (
    as_float32_matrix,
    check_dim,
    check_finite_rows,
    check_k,
    check_metric,
    check_threads,
    knn,
    pad_distance,
)

__all__ = ["Index", "IndexFormatError"]

_MAX_ID = int(np.iinfo(np.int64).max)
_UNCHANGED = object()  # get_metadata: no value set since the load (read the file's)

@dataclass(frozen=True)
class _Snapshot:
    """What one search sees: immutable views of the live rows, published atomically."""

    codes: np.ndarray  # (count, dim) in the storage dtype
    norms: np.ndarray  # (count,) float32 squared norms of the decoded rows
    ids: np.ndarray  # (count,) int64
    version: int
    codec: object  # the storage codec the codes were made with (int8: its quantiser)


def _read_only(array):
    view = array.view()
    view.flags.writeable = False
    return view


def _capacity_for(rows):
    return rows + rows // 10


class Index:
    """Vectors with int64 ids and optional JSON metadata, searched exactly, plus
    index-level `attributes`.

    Parameters
    ----------
    dim : int
        Dimension of the vectors, >= 1.
    metric : {"cosine", "l2", "ip"}
        As in :func:`fastretrieve.search`. Cosine indexes store unit-normalised vectors
        (a zero vector stays zero and has similarity 0 with everything); `get` returns
        the normalised vectors and the search returns cosine similarities.
    dtype : {"float32", "float16", "bfloat16", "int8"}
        Storage precision; see :mod:`fastretrieve.quantize`. For int8 the quantiser is
        fitted on the first `add`.

    Ids are non-negative int64 (-1 marks padding in search results). Re-adding an id
    that is already present replaces its vector and metadata. Automatically assigned ids
    continue after the largest id the index has ever held, so they never collide with
    an existing id, nor reuse a removed one.
    """

    def __init__(self, dim, metric="cosine", dtype="float32"):
        if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"dim must be an integer, got {type(dim).__name__}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self._dim = int(dim)
        self._metric = check_metric(metric)
        self._dtype = storage_dtype_name(dtype)
        self._codec = make_codec(self._dtype)
        self._write_lock = threading.Lock()
        self._next_auto_id = 0
        # Metadata: the values of a loaded file (`StoredItems`, found by the file's own
        # id lookup, both immutable), under a dict of the values set since -- id -> the
        # value's compact JSON bytes (encoded once, by `add`), or None masking a stored
        # value -- which is all there is for a new index. (A version 1 file's values
        # are held there decoded, as its reader parsed them: `_decoded` tells them apart.)
        self._stored_items = None
        self._stored_lookup = None
        self._metadata_changes = {}
        self._attributes = {}  # replaced whole on assignment, never changed in place
        no_ids = np.empty(0, np.int64)
        self._lookup = IdLookup(no_ids)  # id -> row of the live rows
        empty = np.empty((0, self._dim), self._codec.stored_dtype)
        self._buffers = (empty, np.empty(0, np.float32), no_ids)
        self._publish(0, version=0)

    # -- properties -----------------------------------------------------------------

    @property
    def dim(self):
        """Dimension of the vectors."""
        return self._dim

    @property
    def metric(self):
        """``"l2"``, ``"ip"`` or ``"cosine"``."""
        return self._metric

    @property
    def dtype(self):
        """Storage precision: ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"int8"``."""
        return self._dtype

    @property
    def ids(self):
        """The ids in storage order, a read-only int64 array (a snapshot)."""
        return self._snapshot.ids

    @property
    def version(self):
        """Number of modifications so far; increases by one with each `add` or `remove`
        that changes the index and with each assignment to `attributes`."""
        return self._snapshot.version

    @property
    def attributes(self):
        """Index-level values, a dict of JSON values saved in the index file with the
        vectors: e.g. which model and preprocessing produced the vectors, so that the
        file alone says how to query it. Empty for a new index.

        Reading returns a copy: changing it changes nothing. To change the attributes,
        assign a whole new dict (``index.attributes = {**index.attributes, "k": v}``),
        which is a modification like `add`: it waits for the writer lock and increments
        `version`. The dict is stored as its JSON round trip (tuples become lists, keys
        strings); anything JSON cannot represent, NaN and infinities included, raises
        TypeError and leaves the attributes unchanged.
        """
        return copy.deepcopy(self._attributes)

    @attributes.setter
    def attributes(self, attributes):
        stored = _json_attributes(attributes)
        with self._write_lock:
            self._attributes = stored
            self._publish(len(self._snapshot.ids))

    def __len__(self):
        return len(self._snapshot.ids)

    def __contains__(self, item_id):
        item_id = int(item_id)
        if not 0 <= item_id <= _MAX_ID:
            return False
        with self._write_lock:
            return self._lookup.row_of(item_id) >= 0

    def __repr__(self):
        return (
            f"Index(dim={self._dim}, metric={self._metric!r}, dtype={self._dtype!r}, "
            f"count={len(self)})"
        )

    # -- modification -----------------------------------------------------------------

    def add(self, vecs, ids=None, metadata=None):
        """Add vectors, replacing those whose id is already present.

        Parameters
        ----------
        vecs : array-like, shape (n, dim) or (dim,)
            Real numbers, finite (a NaN or infinity raises ValueError naming the row).
        ids : array-like of int, optional
            Non-negative, unique within the call. Default: new ids after the largest
            the index has ever held.
        metadata : sequence, optional
            One JSON-serialisable value per vector (e.g. the source file path), or None
            for none. Values are stored as their JSON round trip (tuples become lists,
            dict keys strings), exactly what a saved and loaded index returns.

        Returns
        -------
        ndarray of int64
            The ids of the added vectors, in order.

        Replacing ids copies the whole storage (copy-on-write, for concurrent readers);
        add replacements in batches rather than one at a time.
        """
        rows, _ = as_float32_matrix(vecs, "vecs", allow_1d=True)
        check_dim(rows, self._dim, names=("vecs", "index"))
        check_finite_rows(rows, "vecs")
        values = _encoded_values(metadata, len(rows))
        if self._metric == "cosine":
            rows = _normalised(rows)
        given_ids = None if ids is None else _id_array(ids, "ids", count=len(rows))[0]
        if given_ids is not None:
            _reject_duplicates(given_ids, "ids")
        with self._write_lock:
            if given_ids is None:
                given_ids = self._auto_ids(len(rows))
            if len(rows) == 0:
                return given_ids
            codec, reencoded = self._codec, None
            if not codec.fitted:
                codec = codec.fitted_to(rows)
            elif not codec.covers(rows):
                # int8 values beyond the fitted range: widen it and re-encode what is
                # stored, rather than clip (which would silently merge distinct values).
                codec = codec.widened_to(rows)
                reencoded = self._reencoded(codec)
            codes = codec.encode(rows)
            with np.errstate(over="ignore"):  # an overflow is reported just below
                norms = _sqnorms(codec.decode(codes))
            overflow = ~np.isfinite(norms)
            if overflow.any():
                raise ValueError(
                    f"vecs row {int(np.argmax(overflow))} has a squared norm beyond the "
                    "float32 range"
                )
            if reencoded is not None:
                self._buffers = reencoded
            self._codec = codec
            self._store(codes, norms, given_ids)
            self._set_metadata(given_ids, values)
            self._next_auto_id = max(self._next_auto_id, int(given_ids.max()) + 1)
            return given_ids

    def remove(self, ids):
        """Remove vectors by id. An unknown id raises KeyError naming it (and nothing is
        removed). The storage is compacted: a copy of the remaining rows replaces it
        (copy-on-write, for concurrent readers), so remove in batches."""
        doomed, _ = _id_array(ids, "ids")
        _reject_duplicates(doomed, "ids")
        if doomed.size == 0:
            return
        with self._write_lock:
            rows = self._rows_of(doomed)
            count = len(self._snapshot.ids)
            remaining = count - len(rows)
            # Fill each hole below the new end with a surviving row from the tail, so only
            # the moved rows change position (and the id table is updated for them alone).
            removed = np.zeros(count, bool)
            removed[rows] = True
            holes = np.flatnonzero(removed[:remaining])
            movers = remaining + np.flatnonzero(~removed[remaining:])
            codes, norms, item_ids = self._allocate(_capacity_for(remaining))
            snapshot = self._snapshot
            current = (snapshot.codes, snapshot.norms, snapshot.ids)
            for new, old in zip((codes, norms, item_ids), current):
                new[:remaining] = old[:remaining]
                new[holes] = old[movers]
            self._buffers = (codes, norms, item_ids)
            live_ids = item_ids[:remaining]
            self._lookup.discard(doomed, live_ids)
            self._lookup.update(snapshot.ids[movers], holes, live_ids)
            self._set_metadata(doomed, [None] * len(doomed))
            self._publish(remaining)

    # -- queries ------------------------------------------------------------------------

    def search(self, vecs, k, *, threads=None):
        """The k nearest stored vectors of each query, exactly.

        Returns ``(distances, ids)``: float32 and int64 arrays of shape (n, k), best
        first, with the metric's conventions of :func:`fastretrieve.search` (equal
        distances: the row stored first wins). Missing neighbours (k > len(index)) are
        padded with id -1 and distance +inf (l2) or -inf (ip, cosine). A 1-D query
        gives 1-D results. ``threads`` as in :func:`fastretrieve.search`.
        """
        k = check_k(k)
        threads = check_threads(threads)
        queries, single = as_float32_matrix(vecs, "vecs", allow_1d=True)
        check_dim(queries, self._dim, names=("vecs", "index"))
        check_finite_rows(queries, "vecs")
        snapshot = self._snapshot
        n = len(queries)
        if n == 0 or len(snapshot.ids) == 0:
            distances = np.full((n, k), pad_distance(self._metric), np.float32)
            found_ids = np.full((n, k), -1, np.int64)
            return (distances[0], found_ids[0]) if single else (distances, found_ids)
        codec = snapshot.codec
        distances, positions = knn(
            queries, snapshot.codes, k, self._metric, threads,
            database_sqnorms=snapshot.norms, storage=self._dtype,
            quantiser=(codec.low, codec.step) if self._dtype == "int8" else None,
        )
        found_ids = snapshot.ids[positions]
        if k > len(snapshot.ids):  # padded: position -1 read the last id, which it is not
            found_ids[positions < 0] = -1
        if single:
            return distances[0], found_ids[0]
        return distances, found_ids

    def get(self, ids):
        """The stored vectors (decoded to float32; normalised for cosine) of ``ids``, in
        order: shape (len(ids), dim), or (dim,) for one id. KeyError for an unknown id."""
        wanted, single = _id_array(ids, "ids")
        with self._write_lock:
            codes = self._snapshot.codes[self._rows_of(wanted)]
            codec = self._snapshot.codec
        vectors = codec.decode(codes)
        return vectors[0] if single else vectors

    def get_metadata(self, ids):
        """The metadata of one id (a value, or None when it has none), or a list of them
        for a sequence of ids. KeyError for an unknown id. Returns copies.

        Metadata loaded from a file is decoded here, for these ids only: a malformed
        stored value raises IndexFormatError naming its id (``Index.load(...,
        verify=True)`` checks them all at load instead).
        """
        wanted, single = _id_array(ids, "ids")
        with self._write_lock:
            self._rows_of(wanted)  # KeyError for an unknown id
            changes, stored = self._metadata_changes, self._stored_items
            values = [changes[i] if i in changes else _UNCHANGED for i in wanted.tolist()]
            file_rows = None if stored is None else self._stored_lookup.rows_of(wanted)
        if file_rows is not None:  # immutable: decoded outside the lock
            values = [stored.value(row) if value is _UNCHANGED and row >= 0 else value
                      for value, row in zip(values, file_rows.tolist())]
        values = [None if value is _UNCHANGED else _decoded(value) for value in values]
        return values[0] if single else values

    # -- persistence ----------------------------------------------------------------------

    def save(self, path):
        """Write the index to ``path`` atomically (see :mod:`fastretrieve.index_format`).

        A crash or kill at any moment leaves either the previous file or the new one.
        Works for memory-mapped indexes too, including saving over the file mapped.
        Concurrent searches continue; modifications wait until the snapshot is taken.
        """
        with self._write_lock:
            snapshot = self._snapshot
            quantizer = self._codec.state()
            next_auto_id = self._next_auto_id
            attributes_json = encode_attributes(self._attributes)
            item_offsets, item_chunks = self._items_to_save(snapshot.ids)
        write_index(
            path, dim=self._dim, metric=self._metric, dtype=self._dtype,
            next_auto_id=next_auto_id, vectors=snapshot.codes, norms=snapshot.norms,
            ids=snapshot.ids, id_order=np.argsort(snapshot.ids, kind="stable"),
            quantizer=quantizer, attributes_json=attributes_json,
            item_offsets=item_offsets, item_chunks=item_chunks,
        )

    @classmethod
    def load(cls, path, mmap=True, *, verify=False):
        """Load an index saved by `save`.

        With ``mmap=True`` the vectors and the per-id metadata are memory-mapped
        read-only: loading reads only the header, ids, norms, the id order, the
        metadata offsets and the attributes -- no Python object per row -- so a
        multi-GB index opens in a fraction of a second with little resident memory;
        pages are read as searches and `get_metadata` touch them.
        The first `add` or `remove` copies the vectors into memory (the file is never
        written). The checksums of the vectors and the metadata are verified only with
        ``verify=True`` (which reads them all); every other section is always verified.
        Keep a mapped file in place: replacing it with `save` is safe, truncating it in
        place is not.

        With ``mmap=False`` everything is read into memory and its checksums verified.
        Either way, each metadata value is decoded (strictly) when first read, or all
        of them at load with ``verify=True``. Files of format version 1 load too; `save`
        writes the current version.

        Raises IndexFormatError (a ValueError) when the file is not a valid index.
        """
        stored = read_index(path, mmap=mmap, verify=verify)
        index = cls(stored.dim, stored.metric, stored.dtype)
        index._codec = make_codec(stored.dtype, stored.quantizer)
        index._next_auto_id = stored.next_auto_id
        index._attributes = stored.attributes
        index._metadata_changes = stored.legacy_metadata  # version 1: every value, decoded
        if stored.sorted_ids is None:  # version 1 stores no id order
            index._lookup = IdLookup.of(stored.ids)
        else:
            index._lookup = IdLookup(stored.sorted_ids, stored.id_order)
        if not stored.items.empty:
            index._stored_items = stored.items
            index._stored_lookup = IdLookup(stored.sorted_ids, stored.id_order)
        index._buffers = (stored.vectors, stored.norms, stored.ids)
        index._publish(len(stored.ids), version=0)
        return index

    # -- internals ------------------------------------------------------------------------

    def _publish(self, count, *, version=None):
        codes, norms, ids = self._buffers
        if version is None:
            version = self._snapshot.version + 1
        self._snapshot = _Snapshot(
            _read_only(codes[:count]), _read_only(norms[:count]), _read_only(ids[:count]), version,
            self._codec,
        )

    def _allocate(self, capacity):
        return (
            np.empty((capacity, self._dim), self._codec.stored_dtype),
            np.empty(capacity, np.float32),
            np.empty(capacity, np.int64),
        )

    def _rows_of(self, ids):
        """The rows of ``ids``; KeyError naming the first unknown one."""
        rows = self._lookup.rows_of(ids)
        missing = rows < 0
        if missing.any():
            raise KeyError(f"id {int(ids[np.argmax(missing)])} is not in the index")
        return rows

    def _stored_has_metadata(self, ids):
        """Which of ``ids`` have a value in the loaded file's metadata."""
        rows = self._stored_lookup.rows_of(ids)
        return (rows >= 0) & self._stored_items.has_value(np.maximum(rows, 0))

    def _set_metadata(self, ids, values):
        """Set the metadata of ``ids`` (None: none), masking their stored values."""
        changes = self._metadata_changes
        if self._stored_items is None:
            if not changes and all(value is None for value in values):
                return  # the common case, an index without metadata: nothing to update
            stored = np.zeros(len(ids), bool)
        else:
            stored = self._stored_has_metadata(ids)
        for item_id, value, masks in zip(ids.tolist(), values, stored.tolist()):
            if value is not None or masks:
                changes[item_id] = value
            else:
                changes.pop(item_id, None)

    def _items_to_save(self, ids):
        """``(offsets, chunks)`` of the items section for the rows with ``ids``: the
        changed values encoded, the others copied from the loaded file in runs of
        consecutive rows."""
        changes, stored = self._metadata_changes, self._stored_items
        offsets = np.zeros(len(ids) + 1, np.int64)
        if stored is None:
            if not changes:
                return offsets, []
            encoded = [_encoded(changes.get(i)) for i in ids.tolist()]
            np.cumsum([len(value) for value in encoded], out=offsets[1:])
            return offsets, [b"".join(encoded)]
        source = self._stored_lookup.rows_of(ids)  # the row in the file, or -1
        if changes:
            source[np.isin(ids, np.fromiter(changes, np.int64, len(changes)))] = -1
        kept = source >= 0
        lengths = np.zeros(len(ids), np.int64)
        stored_offsets = stored.offsets
        lengths[kept] = stored_offsets[source[kept] + 1] - stored_offsets[source[kept]]
        encoded = {row: _encoded(changes.get(item_id)) for row, item_id in
                   zip(np.flatnonzero(~kept).tolist(), ids[~kept].tolist())}
        for row, value in encoded.items():
            lengths[row] = len(value)
        np.cumsum(lengths, out=offsets[1:])
        # A chunk starts at every changed row and wherever the file rows stop being
        # consecutive: an index loaded and appended to is copied in one piece.
        starts = np.ones(len(ids), bool)
        starts[1:] = ~(kept[1:] & kept[:-1] & (source[1:] == source[:-1] + 1))
        starts = np.flatnonzero(starts).tolist()
        chunks = []
        for start, stop in zip(starts, starts[1:] + [len(ids)]):
            if kept[start]:
                chunks.append(stored.raw(int(source[start]), int(source[stop - 1]) + 1))
            else:
                chunks.append(encoded[start])
        return offsets, chunks

    def _auto_ids(self, count):
        if self._next_auto_id + count - 1 > _MAX_ID:
            raise OverflowError("no automatic ids left: the index has held id 2**63 - 1")
        return np.arange(self._next_auto_id, self._next_auto_id + count, dtype=np.int64)

    def _store(self, codes, norms, new_ids):
        """Write rows for ``new_ids`` (replacing present ones) and publish."""
        count = len(self._snapshot.ids)
        existing = self._lookup.rows_of(new_ids)
        replaced = existing >= 0
        appended = ~replaced
        total = count + int(appended.sum())
        buffers = self._buffers
        in_place = (
            not replaced.any() and total <= len(buffers[2]) and buffers[0].flags.writeable
        )
        if not in_place:
            # Copy-on-write: readers of the current snapshot keep the old buffers intact.
            buffers = self._allocate(_capacity_for(total))
            for new, old in zip(buffers, self._buffers):
                new[:count] = old[:count]
        targets = existing.copy()
        targets[appended] = np.arange(count, total)
        # Pure appends fill one contiguous range: a slice copy, much faster than scattering.
        rows = slice(count, total) if not replaced.any() else targets
        for stored, values in zip(buffers, (codes, norms, new_ids)):
            stored[rows] = values
        self._buffers = buffers
        self._lookup.update(new_ids[appended], targets[appended], buffers[2][:total])
        self._publish(total)

    def _reencoded(self, codec):
        """New buffers holding the live rows re-encoded with ``codec`` (and their norms),
        converted one bounded block at a time. Private until published: readers keep the
        old buffers and the old codec together in their snapshot."""
        snapshot = self._snapshot
        count = len(snapshot.ids)
        codes, norms, ids = self._allocate(_capacity_for(count))
        block_rows = max(1, DECODE_BLOCK_BYTES // (4 * self._dim))
        for start in range(0, count, block_rows):
            stop = min(start + block_rows, count)
            rows = codec.encode(snapshot.codec.decode(snapshot.codes[start:stop]))
            codes[start:stop] = rows
            norms[start:stop] = _sqnorms(codec.decode(rows))
        ids[:count] = snapshot.ids
        return codes, norms, ids


def _sqnorms(rows):
    """Squared row norms by the active backend: the cache its kernels expect."""
    return _backend.active_backend().sqnorms(np.ascontiguousarray(rows, np.float32), 0)


def _normalised(rows):
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    return (rows / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32)


def _id_array(ids, name, *, count=None):
    """Validate ids: (int64 1-D array, whether a scalar was given)."""
    array = np.asarray(ids)
    single = array.ndim == 0
    if array.size == 0 and array.dtype.kind == "f":  # np.asarray([]) is float64
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {array.dtype}")
    array = array.reshape(1) if single else array
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if count is not None and len(array) != count:
        raise ValueError(f"{name} has {len(array)} entries for {count} vectors")
    if array.size and (array.dtype.kind == "u" and int(array.max()) > _MAX_ID):
        raise ValueError(f"{name} holds {int(array.max())}, beyond the int64 range")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be >= 0 (-1 marks padding), got {int(array.min())}")
    return array, single


def _reject_duplicates(ids, name):
    duplicate = first_duplicate(ids)
    if duplicate is not None:
        raise ValueError(f"{name} holds id {duplicate} more than once")


def _json_attributes(attributes):
    """Attributes as their JSON round trip; TypeError for anything else."""
    if not isinstance(attributes, Mapping):
        raise TypeError(
            f"attributes must be a dict of JSON values, got {type(attributes).__name__}"
        )
    try:
        return json.loads(json.dumps(dict(attributes), allow_nan=False))
    except (TypeError, ValueError) as error:  # ValueError: NaN, infinity, a cycle
        raise TypeError(f"attributes are not JSON-serialisable: {error}") from None


def _encoded_values(metadata, count):
    """Metadata as `encode_item` stores it, one compact JSON bytes value (or None) per
    vector: encoded once here, so that saving only copies bytes, and a value is read
    back as its JSON round trip."""
    if metadata is None:
        return [None] * count
    if isinstance(metadata, (str, bytes)) or not isinstance(metadata, Sequence):
        raise TypeError(
            "metadata must be a sequence with one JSON value per vector, "
            f"got {type(metadata).__name__}"
        )
    values = list(metadata)
    if len(values) != count:
        raise ValueError(f"metadata has {len(values)} entries for {count} vectors")
    encoded = []
    for row, value in enumerate(values):
        try:
            encoded.append(None if value is None else encode_item(value))
        except (TypeError, ValueError) as error:  # ValueError: NaN, a cycle, a lone surrogate
            raise TypeError(f"metadata for row {row} is not JSON-serialisable: {error}") from None
    return encoded


def _encoded(value):
    """A metadata value held in memory as the items section stores it."""
    return value if type(value) is bytes else encode_item(value)


def _decoded(value):
    """A metadata value held in memory, as a fresh object (None stays None)."""
    return json.loads(value.decode("utf-8")) if type(value) is bytes else copy.deepcopy(value)
