"""The on-disk format of an `Index`: writing it atomically, reading it defensively.

Format version 2, all integers little-endian. A file is a 256-byte header followed by
eight sections in this order, each starting at the next multiple of 64 bytes (the gaps
are zero bytes), and ends exactly where the last section ends:

====  ======  ===========================================================================
off   size    header field
====  ======  ===========================================================================
0     8       magic ``b"\\x89FRINDX\\n"``
8     u32     format version (2; version 1 files are still read, see below)
12    u32     header size in bytes (256)
16    u32     dim (>= 1)
20    u32     flags (0; a reader rejects unknown bits)
24    8       metric, ASCII, NUL-padded: ``l2``, ``ip`` or ``cosine``
32    8       storage dtype, ASCII, NUL-padded: ``float32``, ``float16``, ``bfloat16``,
              ``int8``
40    u64     count: number of vectors
48    u64     next automatically assigned id (greater than every id in the file)
56    8x24    section table, in section order: u64 offset, u64 length, u32 CRC-32
              (zlib) of the section's bytes, u32 zero
248   4       zero
252   u32     CRC-32 of header bytes 0..251
====  ======  ===========================================================================

Sections:

1. vectors: count x dim codes, row-major. float32 ``<f4``, float16 ``<f2``, bfloat16
   ``<u2`` (upper 16 bits of a float32), int8 ``i1`` (decoded by the quantiser).
2. norms: count float32 ``<f4``, the squared L2 norm of each decoded row (a search cache).
3. ids: count int64 ``<i8``, unique and >= 0.
4. id order: count int64 ``<i8``, the rows in increasing order of their ids (a
   permutation of 0..count-1 with ``ids[order]`` strictly increasing): finding an id
   is a binary search over it, with no table built on load.
5. quantizer: for int8 (once fitted) a float32 (2, dim) array ``[low, step]``, with
   ``x = low[j] + (code + 128) * step[j]`` in float32; empty for the other dtypes.
6. attributes: a UTF-8 JSON object of index-level values (`Index.attributes`).
7. item offsets: count + 1 u64 ``<u8``, non-decreasing, the first 0 and the last the
   length of the items section: row ``r``'s metadata is ``items[offsets[r]:offsets[r+1]]``
   (zero length: the row has none).
8. items: the per-row metadata, each one compact UTF-8 JSON value, concatenated.

Every JSON text is strict: no ``NaN`` or ``Infinity``, no object with a repeated member
name (Python's parser would keep the last silently, so two readers could disagree).

Cosine indexes store unit-normalised rows (zero rows stay zero).

What a load checks. Every size and offset is checked against the file's real size
before anything is allocated or mapped, the section layout is exact, the ids are unique
and the id order is a valid permutation, the item offsets are monotonic and end at the
items section's length, and the attributes are parsed. Every checksum is verified,
except, when the file is memory-mapped, those of the two big sections that are mapped
rather than read (the vectors and the items: verifying would read the whole file);
``verify=True`` checks those too. Per-row metadata is decoded lazily, when it is read:
a malformed value raises IndexFormatError then (naming the id), not at load, unless
``verify=True``, which decodes every value at load. CRC-32 detects accidental
corruption, not deliberate tampering. Safety against untrusted files comes from the
format itself: no code is ever deserialised, and nothing is read outside its section.

Version 1 (still read; saving writes version 2) had five sections -- vectors, norms,
ids, quantizer, and one metadata section: a UTF-8 JSON object with exactly two members,
``"attributes"`` and ``"items"``, the latter mapping decimal id strings (no sign, no
leading zeros) of ids in the file to JSON values -- in a 56 + 5x24 byte table, then 76
zero bytes and the header CRC. Reading it parses the whole metadata document at load.
"""

from __future__ import annotations

import json
import mmap as mmap_module
import os
import secrets
import stat
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .quantize import STORAGE_DTYPES
from .search import METRICS

MAGIC = b"\x89FRINDX\n"
FORMAT_VERSION = 2
HEADER_SIZE = 256
ALIGNMENT = 64
SECTIONS = (
    "vectors", "norms", "ids", "id_order", "quantizer", "attributes", "item_offsets", "items",
)
SECTIONS_V1 = ("vectors", "norms", "ids", "quantizer", "metadata")
SECTIONS_OF_VERSION = {1: SECTIONS_V1, 2: SECTIONS}
# The big sections: memory-mapped, not read, when loading with mmap=True (their checksums
# are then verified only with verify=True). The others are always read and verified.
_MAPPED = ("vectors", "items")

_FIXED = struct.Struct("<8sIIII8s8sQQ")  # magic .. next id: bytes 0..55
_SECTION = struct.Struct("<QQII")
_TABLE_START = _FIXED.size
_CRC_OFFSET = HEADER_SIZE - 4
_MAX_ID = np.iinfo(np.int64).max
_CHUNK_BYTES = 16 << 20  # checksum and write big sections piecewise, never a full copy

_CODE_DTYPES = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "int8": np.dtype("i1"),
}


class IndexFormatError(ValueError):
    """A file is not a valid fastretrieve index: the message says what is wrong."""


@dataclass(frozen=True)
class StoredIndex:
    """The contents of an index file, validated."""

    dim: int
    metric: str
    dtype: str
    next_auto_id: int
    vectors: np.ndarray  # (count, dim) codes; read-only and file-backed when mapped
    norms: np.ndarray  # (count,) float32
    ids: np.ndarray  # (count,) int64
    id_order: np.ndarray | None  # (count,) int64: the rows sorted by id; None: in order
    sorted_ids: np.ndarray | None  # ids[id_order], strictly increasing; None: version 1
    quantizer: np.ndarray  # float32, (2, dim) or empty
    attributes: dict  # index-level JSON values
    items: StoredItems  # per-row metadata, decoded when read (empty for version 1)
    legacy_metadata: dict  # version 1: {id: JSON value}, all decoded at load; else empty


class StoredItems:
    """The per-row metadata of an index file: an offsets table over a blob of compact
    JSON values, each decoded (strictly) only when it is read. Immutable; the blob may be
    a read-only memory map of the file."""

    def __init__(self, offsets, blob, ids):
        self._offsets = offsets  # (count + 1,) int64, validated
        self._blob = blob  # uint8, len == offsets[-1]
        self._ids = ids  # to name the id in an error

    @property
    def offsets(self):
        """(count + 1,) int64: row r's bytes are ``offsets[r]:offsets[r + 1]``."""
        return self._offsets

    @property
    def empty(self):
        """True when no row has metadata."""
        return len(self._blob) == 0

    def has_value(self, rows):
        """A boolean array: which of ``rows`` have metadata."""
        return self._offsets[rows + 1] > self._offsets[rows]

    def raw(self, start_row, stop_row):
        """The stored bytes of rows ``start_row:stop_row``, without a copy."""
        return memoryview(self._blob[self._offsets[start_row] : self._offsets[stop_row]])

    def value(self, row):
        """Row ``row``'s metadata decoded (a fresh object), or None when it has none."""
        start, stop = int(self._offsets[row]), int(self._offsets[row + 1])
        if start == stop:
            return None
        try:
            return strict_json_loads(bytes(self._blob[start:stop]))
        except ValueError as error:
            raise IndexFormatError(
                f"the metadata of id {int(self._ids[row])} (row {row}) is not valid JSON: "
                f"{error}"
            ) from None

    def validate(self):
        """Decode every value once: IndexFormatError for the first malformed one."""
        for row in np.flatnonzero(self._offsets[1:] > self._offsets[:-1]).tolist():
            self.value(row)


# One encoder for every value: json.dumps with options builds a new one per call, which
# doubles the cost of encoding a million small values.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode_item(value):
    """One row's metadata as the items section stores it (None: no bytes)."""
    if value is None:
        return b""
    return _ENCODER.encode(value).encode("utf-8")


def encode_attributes(attributes):
    """The attributes section: the index-level values as a UTF-8 JSON object."""
    return encode_item(attributes)


def _aligned(offset):
    return -(-offset // ALIGNMENT) * ALIGNMENT


def _layout(lengths):
    """Offsets of the sections when each starts at the next aligned position."""
    offsets, position = [], HEADER_SIZE
    for length in lengths:
        position = _aligned(position)
        offsets.append(position)
        position += length
    return offsets, position


def _as_bytes(array):
    """A flat byte view of a C-contiguous array (no copy, works for read-only maps)."""
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _checksum(data):
    crc = 0
    for start in range(0, len(data), _CHUNK_BYTES):
        crc = zlib.crc32(data[start : start + _CHUNK_BYTES], crc)
    return crc


def write_index(path, *, dim, metric, dtype, next_auto_id, vectors, norms, ids, id_order,
                quantizer, attributes_json, item_offsets, item_chunks):
    """Write an index file atomically: a temporary file in the same directory, flushed and
    fsynced, renamed over ``path``, then the directory fsynced. A crash at any moment
    leaves either the previous file or the new one at ``path`` (plus, at worst, a stray
    ``.<name>.*.tmp`` file next to it). ``attributes_json`` is `encode_attributes`'s
    output; ``item_chunks`` are bytes-like pieces that, concatenated, make the items
    section that ``item_offsets`` describes (unchanged rows are copied as slices of the
    file they were loaded from, never decoded)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    payloads = [
        [_as_bytes(vectors.astype(_CODE_DTYPES[dtype], copy=False))],
        [_as_bytes(norms.astype("<f4", copy=False))],
        [_as_bytes(ids.astype("<i8", copy=False))],
        [_as_bytes(id_order.astype("<i8", copy=False))],
        [_as_bytes(quantizer.astype("<f4", copy=False))],
        [memoryview(attributes_json)],
        [_as_bytes(item_offsets.astype("<u8", copy=False))],
        [memoryview(chunk).cast("B") for chunk in item_chunks],
    ]
    lengths = [sum(len(piece) for piece in pieces) for pieces in payloads]
    if lengths[-1] != int(item_offsets[-1]):
        raise ValueError("the item chunks do not add up to the last item offset")
    offsets, _ = _layout(lengths)
    temporary = os.path.join(
        directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    )
    # O_EXCL: never follow or clobber someone else's file; mode 0o666 lets the umask decide
    # permissions as for any file the user creates.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            _keep_permissions(file.fileno(), path)
            table = []
            file.write(bytes(HEADER_SIZE))  # placeholder until the checksums are known
            for offset, length, pieces in zip(offsets, lengths, payloads):
                file.write(bytes(offset - file.tell()))
                crc = 0
                for piece in pieces:
                    for start in range(0, len(piece), _CHUNK_BYTES):
                        chunk = piece[start : start + _CHUNK_BYTES]
                        crc = zlib.crc32(chunk, crc)
                        file.write(chunk)
                table.append((offset, length, crc))
            file.seek(0)
            file.write(_header(dim, metric, dtype, len(ids), next_auto_id, table))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _keep_permissions(descriptor, path):
    """Give the new file the permission bits of the file it replaces, so that re-saving a
    private (0600) index never makes it readable by others."""
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(existing.st_mode):
        os.fchmod(descriptor, stat.S_IMODE(existing.st_mode))


def _header(dim, metric, dtype, count, next_auto_id, table, version=FORMAT_VERSION):
    header = bytearray(HEADER_SIZE)
    _FIXED.pack_into(
        header, 0, MAGIC, version, HEADER_SIZE, dim, 0,
        metric.encode("ascii"), dtype.encode("ascii"), count, next_auto_id,
    )
    for number, (offset, length, crc) in enumerate(table):
        _SECTION.pack_into(header, _TABLE_START + number * _SECTION.size, offset, length, crc, 0)
    struct.pack_into("<I", header, _CRC_OFFSET, zlib.crc32(header[:_CRC_OFFSET]))
    return bytes(header)


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); directories cannot be opened on Windows."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def read_index(path, *, mmap, verify):
    """Read and validate an index file (format version 1 or 2); raise IndexFormatError
    for anything wrong.

    With ``mmap`` the vectors and the per-row metadata are mapped read-only, not read;
    their checksums are verified only when ``verify`` is true. Without ``mmap``
    everything is read and its checksums verified. With ``verify`` every per-row
    metadata value is also decoded once (otherwise each is checked when first read).
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        file_size = os.fstat(file.fileno()).st_size
        header = _read_exact(file, 0, min(file_size, HEADER_SIZE), "header")
        fields = _parse_header(header, file_size)
        dim, dtype, count = fields["dim"], fields["dtype"], fields["count"]
        table = fields["table"]
        _check_gaps(file, table)

        norms = _read_section(file, table, "norms", np.dtype("<f4"))
        ids = _read_section(file, table, "ids", np.dtype("<i8"))
        quantizer = _read_section(file, table, "quantizer", np.dtype("<f4"))
        if not (np.isfinite(norms).all() and (norms >= 0).all()):
            raise IndexFormatError(f"{path}: the norms section holds negative or non-finite values")
        quantizer = _check_quantizer(quantizer, dtype, dim, count)
        mapping = None
        if mmap and any(table[name][1] for name in _MAPPED if name in table):
            mapping = mmap_module.mmap(file.fileno(), 0, access=mmap_module.ACCESS_READ)

        if fields["version"] == 1:
            _check_ids(ids, fields["next_auto_id"])
            metadata_bytes = bytes(_read_section(file, table, "metadata", np.dtype("u1")))
            attributes, legacy_metadata = _parse_metadata_v1(metadata_bytes, ids)
            items = StoredItems(np.zeros(count + 1, np.int64), np.empty(0, np.uint8), ids)
            id_order, sorted_ids = None, None  # no stored order: the reader sorts
        else:
            id_order = _read_section(file, table, "id_order", np.dtype("<i8"))
            id_order, sorted_ids = _check_id_order(ids, id_order, fields["next_auto_id"])
            attributes = _json_object_section(bytes(_read_section(
                file, table, "attributes", np.dtype("u1"))), "attributes")
            offsets = _read_section(file, table, "item_offsets", np.dtype("<u8"))
            offsets = _check_item_offsets(offsets, table["items"][1])
            blob = _section(file, table, "items", np.dtype("u1"), mapping, verify)
            items = StoredItems(offsets, blob, ids)
            legacy_metadata = {}
            if verify:
                items.validate()

        vectors = _section(file, table, "vectors", _CODE_DTYPES[dtype], mapping, verify)
    return StoredIndex(
        dim=dim,
        metric=fields["metric"],
        dtype=dtype,
        next_auto_id=fields["next_auto_id"],
        vectors=vectors.reshape(count, dim),
        norms=norms,
        ids=ids,
        id_order=id_order,
        sorted_ids=sorted_ids,
        quantizer=quantizer,
        attributes=attributes,
        items=items,
        legacy_metadata=legacy_metadata,
    )


def _section(file, table, name, dtype, mapping, verify):
    """A big section: read and verified without a mapping; with one, a read-only view of
    it, verified only when ``verify``."""
    offset, length, crc = table[name]
    if mapping is None or length == 0:
        return _read_section(file, table, name, dtype)
    array = np.frombuffer(mapping, dtype, length // dtype.itemsize, offset)
    if verify and _checksum(_as_bytes(array)) != crc:
        raise IndexFormatError(f"checksum mismatch in the {name} section: the file is corrupt")
    return array


def _read_exact(file, offset, length, what):
    file.seek(offset)
    data = file.read(length)
    if len(data) != length:
        raise IndexFormatError(f"the file is truncated: the {what} is incomplete")
    return data


def _parse_header(header, file_size):
    if len(header) < len(MAGIC) or header[: len(MAGIC)] != MAGIC:
        raise IndexFormatError("not a fastretrieve index file (wrong magic bytes)")
    if len(header) < 16:
        raise IndexFormatError("the file is truncated: the header is incomplete")
    version, header_size = struct.unpack_from("<II", header, 8)
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"index format version {version} is newer than this fastretrieve supports "
            f"({FORMAT_VERSION}); upgrade fastretrieve to read it"
        )
    if version < 1:
        raise IndexFormatError(f"invalid index format version {version}")
    if header_size != HEADER_SIZE:
        raise IndexFormatError(f"invalid header size {header_size} for format version {version}")
    if len(header) < HEADER_SIZE:
        raise IndexFormatError("the file is truncated: the header is incomplete")
    (stored_crc,) = struct.unpack_from("<I", header, _CRC_OFFSET)
    if zlib.crc32(header[:_CRC_OFFSET]) != stored_crc:
        raise IndexFormatError("checksum mismatch in the header: the file is corrupt")

    _, _, _, dim, flags, metric, dtype, count, next_auto_id = _FIXED.unpack_from(header, 0)
    metric, dtype = _ascii_field(metric, "metric"), _ascii_field(dtype, "dtype")
    sections = SECTIONS_OF_VERSION[version]
    table_end = _TABLE_START + len(sections) * _SECTION.size
    if flags != 0:
        raise IndexFormatError(f"unknown header flags {flags:#x}")
    if any(header[table_end:_CRC_OFFSET]):
        raise IndexFormatError("reserved header bytes are not zero")
    if metric not in METRICS:
        raise IndexFormatError(f"unknown metric {metric!r} in the header")
    if dtype not in STORAGE_DTYPES:
        raise IndexFormatError(f"unknown storage dtype {dtype!r} in the header")
    if dim < 1:
        raise IndexFormatError("dimension 0 in the header")

    table = {}
    for number, name in enumerate(sections):
        offset, length, crc, reserved = _SECTION.unpack_from(
            header, _TABLE_START + number * _SECTION.size
        )
        if reserved:
            raise IndexFormatError(f"reserved field of the {name} section entry is not zero")
        table[name] = (offset, length, crc)

    # Python integers: a forged count or dim cannot overflow these products.
    quantizer_length = 8 * dim if dtype == "int8" and table["quantizer"][1] else 0
    expected = {
        "vectors": count * dim * _CODE_DTYPES[dtype].itemsize,
        "norms": 4 * count,
        "ids": 8 * count,
        "quantizer": quantizer_length,
    }
    if version >= 2:
        expected.update(id_order=8 * count, item_offsets=8 * (count + 1))
    for name, length in expected.items():
        if table[name][1] != length:
            raise IndexFormatError(
                f"dimension/count mismatch: the {name} section holds {table[name][1]} bytes, "
                f"but dim={dim}, count={count}, dtype={dtype} need {length}"
            )
    offsets, end = _layout([table[name][1] for name in sections])
    for name, offset in zip(sections, offsets):
        if table[name][0] != offset:
            raise IndexFormatError(
                f"the {name} section is at offset {table[name][0]}, expected {offset}"
            )
    if file_size < end:
        raise IndexFormatError(
            f"the file is truncated: {file_size} bytes, but its header describes {end} "
            f"(dim={dim}, count={count})"
        )
    if file_size > end:
        raise IndexFormatError(f"{file_size - end} unexpected bytes after the last section")
    return {
        "version": version, "dim": dim, "metric": metric, "dtype": dtype, "count": count,
        "next_auto_id": next_auto_id, "table": table,
    }


def _ascii_field(raw, name):
    text = raw.rstrip(b"\0")
    if b"\0" in text:
        raise IndexFormatError(f"malformed {name} field in the header")
    try:
        return text.decode("ascii")
    except UnicodeDecodeError:
        raise IndexFormatError(f"malformed {name} field in the header") from None


def _check_gaps(file, table):
    position = HEADER_SIZE
    for name, (offset, length, _) in table.items():  # in file order
        if any(_read_exact(file, position, offset - position, "padding")):
            raise IndexFormatError(f"non-zero padding bytes before the {name} section")
        position = offset + length


def _read_section(file, table, name, dtype):
    offset, length, crc = table[name]
    array = np.empty(length // dtype.itemsize, dtype)
    file.seek(offset)
    if file.readinto(memoryview(array).cast("B")) != length:
        raise IndexFormatError(f"the file is truncated: the {name} section is incomplete")
    if _checksum(_as_bytes(array)) != crc:
        raise IndexFormatError(f"checksum mismatch in the {name} section: the file is corrupt")
    return array


def _check_next_auto_id(ids, next_auto_id, largest):
    if ids.size == 0:
        if next_auto_id > _MAX_ID + 1:
            raise IndexFormatError(f"next automatic id {next_auto_id} is out of range")
        return
    if not largest < next_auto_id <= _MAX_ID + 1:
        raise IndexFormatError(
            f"next automatic id {next_auto_id} does not exceed the largest id {largest}"
        )


def _check_ids(ids, next_auto_id):
    if ids.size and ids.min() < 0:
        raise IndexFormatError("the ids section holds a negative id")
    duplicate = first_duplicate(ids)
    if duplicate is not None:
        raise IndexFormatError(f"the ids section holds id {duplicate} more than once")
    _check_next_auto_id(ids, next_auto_id, int(ids.max()) if ids.size else -1)


def _check_id_order(ids, id_order, next_auto_id):
    """``(id_order, ids[id_order])`` once the id order is known to be a permutation
    sorting the ids strictly (then the ids are unique too: a repeated row or id breaks
    the strict order); ``(None, ids)`` when it is the identity, saving both copies."""
    if ids.size == 0:
        _check_next_auto_id(ids, next_auto_id, -1)
        return None, ids
    if (ids[1:] > ids[:-1]).all():  # stored in increasing order: the order is the identity
        if not _is_identity(id_order):
            raise IndexFormatError("the id order section does not sort the ids")
        if ids[0] < 0:
            raise IndexFormatError("the ids section holds a negative id")
        _check_next_auto_id(ids, next_auto_id, int(ids[-1]))
        return None, ids
    if id_order.min() < 0 or id_order.max() >= len(ids):
        raise IndexFormatError("the id order section holds a row outside the index")
    ordered = ids[id_order]
    increasing = ordered[1:] > ordered[:-1]
    if not increasing.all():
        row = int(np.argmin(increasing))
        if ordered[row] == ordered[row + 1] and id_order[row] != id_order[row + 1]:
            raise IndexFormatError(f"the ids section holds id {int(ordered[row])} more than once")
        raise IndexFormatError("the id order section does not sort the ids")
    if ordered[0] < 0:
        raise IndexFormatError("the ids section holds a negative id")
    _check_next_auto_id(ids, next_auto_id, int(ordered[-1]))
    return id_order, ordered


def _is_identity(order):
    """Whether ``order`` is 0, 1, 2, ...: compared a block at a time (no full arange)."""
    block = 1 << 20
    for start in range(0, len(order), block):
        part = order[start : start + block]
        if not np.array_equal(part, np.arange(start, start + len(part))):
            return False
    return True


def first_duplicate(ids):
    """An id occurring more than once in the int64 array ``ids``, or None."""
    # Ids are usually stored in increasing order: one comparison pass settles it. (Sorting
    # beats np.unique, which hashes and is several times slower on millions of ids.)
    if (ids[1:] > ids[:-1]).all():
        return None
    ordered = np.sort(ids)
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    return int(ordered[repeated[0]]) if repeated.size else None


def _check_quantizer(quantizer, dtype, dim, count):
    if dtype != "int8":
        return quantizer
    if quantizer.size == 0:
        if count:
            raise IndexFormatError("an int8 index with vectors has no quantiser section")
        return quantizer
    quantizer = quantizer.reshape(2, dim)
    if not (np.isfinite(quantizer).all() and (quantizer[1] > 0).all()):
        raise IndexFormatError("the int8 quantiser holds non-finite values or a step <= 0")
    return quantizer


def _check_item_offsets(offsets, items_length):
    """The offsets as int64 once they are known to be monotonic and inside the items."""
    if offsets[0] != 0:
        raise IndexFormatError("the item offsets do not start at 0")
    if not (offsets[1:] >= offsets[:-1]).all():
        raise IndexFormatError("the item offsets are not monotonic")
    if offsets[-1] != items_length:
        raise IndexFormatError(
            f"the item offsets end at {int(offsets[-1])}, but the items section holds "
            f"{items_length} bytes"
        )
    return offsets.view(np.int64)  # all <= the file size: no value changes


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON value")


def _object_without_duplicate_keys(pairs):
    """A JSON object as a dict, refusing repeated member names: Python's parser keeps the
    last one silently, so two readers of one file could disagree about its content."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r} in a JSON object")
            seen.add(key)
    return obj


def strict_json_loads(raw):
    """UTF-8 JSON text decoded strictly: ValueError for invalid UTF-8 or JSON, ``NaN`` and
    ``Infinity`` (accepted by Python's parser but not JSON: a file holding them could be
    loaded but never saved again), repeated member names and runaway nesting."""
    try:
        return json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant,
            object_pairs_hook=_object_without_duplicate_keys,
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _json_object_section(raw, name):
    """A section holding one JSON object, decoded strictly."""
    try:
        decoded = strict_json_loads(raw)
    except ValueError as error:  # includes JSON and UTF-8 errors
        raise IndexFormatError(f"the {name} section is not valid JSON: {error}") from None
    if not isinstance(decoded, dict):
        raise IndexFormatError(f"the {name} section is not a JSON object")
    return decoded


def _parse_metadata_v1(raw, ids):
    """A version 1 metadata section decoded and validated: ``(attributes, {id: value})``."""
    decoded = _json_object_section(raw, "metadata")
    if decoded.keys() != {"attributes", "items"}:
        found = ", ".join(map(repr, sorted(decoded))) or "none"
        raise IndexFormatError(
            f"the metadata section must hold exactly 'attributes' and 'items', found {found}"
        )
    attributes, items = decoded["attributes"], decoded["items"]
    if not isinstance(attributes, dict):
        raise IndexFormatError("the attributes in the metadata section are not a JSON object")
    if not isinstance(items, dict):
        raise IndexFormatError("the items in the metadata section are not a JSON object")
    known = set(ids.tolist()) if items else set()
    metadata = {}
    for key, value in items.items():
        # At most 19 digits: every int64 fits, and int() never sees a huge digit string.
        if not (key.isascii() and key.isdecimal() and len(key) <= 19 and str(int(key)) == key):
            raise IndexFormatError(f"metadata key {key!r} is not a decimal id")
        if int(key) not in known:
            raise IndexFormatError(f"metadata for id {key}, which is not in the index")
        metadata[int(key)] = value
    return attributes, metadata
