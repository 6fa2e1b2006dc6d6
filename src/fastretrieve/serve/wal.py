"""The write-ahead log: every acknowledged add or remove, fsynced, until the index file
holds it.

The log is a sequence of segment files next to the index, ``INDEX.wal.00000001``,
``INDEX.wal.00000002``, ... Compaction closes the current segment and opens the next one
(`rotate`), saves the index with its atomic `Index.save`, then deletes the closed
segments (`discard_through`): writes keep going to the new segment while the index is
saved. A crash between the save and the deletion leaves records the saved index already
holds; replaying them is harmless, because each record states the final value of the ids
it touches (an add logs the ids it was given or assigned, a remove logs ids), so
replaying a prefix of the history on top of its own result changes nothing.

Segment file: the 8-byte magic ``FRWAL01\\n``, then records. Record: u32 length of the
body, u32 CRC-32 of the body, then the body: u32 length of a JSON header, the header
(``{"op": "add", "ids": [...], "metadata": [...] | null, "dim": d}`` or
``{"op": "remove", "ids": [...]}``), then for an add the vectors as little-endian float32,
row-major. All integers little-endian.

A crash can tear only the last record of the last segment (records are appended, and an
acknowledgement waits for the fsync that covers its record); replay stops there and
truncates the torn bytes. Damage anywhere else is not a crash's doing and is refused.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"FRWAL01\n"
_RECORD_HEAD = struct.Struct("<II")
_HEADER_LENGTH = struct.Struct("<I")
# A record larger than this cannot come from the service (its body limit is far lower):
# a length field beyond it is damage, not data.
MAX_RECORD_BYTES = 1 << 31


class WalError(ValueError):
    """A log segment that is damaged in a way no crash can explain."""


@dataclass(frozen=True)
class WalRecord:
    """One logged modification: ``op`` is "add" (``vectors``, ``ids``, ``metadata``) or
    "remove" (``ids``)."""

    op: str
    ids: list
    vectors: np.ndarray | None = None
    metadata: list | None = None


def encode_record(record: WalRecord) -> bytes:
    """The bytes of one record, framed and checksummed."""
    header = {"op": record.op, "ids": [int(i) for i in record.ids]}
    vector_bytes = b""
    if record.op == "add":
        vectors = np.ascontiguousarray(record.vectors, "<f4")
        header["dim"] = int(vectors.shape[1])
        header["metadata"] = record.metadata
        vector_bytes = vectors.tobytes()
    header_bytes = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    body = _HEADER_LENGTH.pack(len(header_bytes)) + header_bytes + vector_bytes
    return _RECORD_HEAD.pack(len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes) -> WalRecord:
    (header_length,) = _HEADER_LENGTH.unpack_from(body)
    header = json.loads(body[4 : 4 + header_length])
    if header["op"] == "remove":
        return WalRecord("remove", header["ids"])
    if header["op"] != "add":
        raise WalError(f"unknown operation {header['op']!r}")
    vectors = np.frombuffer(body[4 + header_length :], "<f4").reshape(-1, header["dim"])
    return WalRecord("add", header["ids"], vectors, header["metadata"])


def read_segment(path: Path, *, last: bool) -> tuple[list[WalRecord], int]:
    """The records of one segment and the length of its intact prefix.

    In the ``last`` segment a torn final record (short, or failing its checksum) ends the
    log; elsewhere it raises :class:`WalError`.
    """
    data = path.read_bytes()
    if len(data) < len(MAGIC):
        if last and MAGIC.startswith(data):  # created, then killed before the magic landed
            return [], 0
        raise WalError(f"{path}: not a fastretrieve write-ahead log")
    if data[: len(MAGIC)] != MAGIC:
        raise WalError(f"{path}: not a fastretrieve write-ahead log")
    records, offset = [], len(MAGIC)
    while offset < len(data):
        torn = None
        if offset + _RECORD_HEAD.size > len(data):
            torn = "a truncated record header"
        else:
            length, crc = _RECORD_HEAD.unpack_from(data, offset)
            body = data[offset + _RECORD_HEAD.size : offset + _RECORD_HEAD.size + length]
            if length > MAX_RECORD_BYTES or len(body) < length:
                torn = "a truncated record"
            elif zlib.crc32(body) != crc:
                torn = "a record failing its checksum"
        if torn is not None:
            if last:
                break
            raise WalError(f"{path}: {torn} at byte {offset}")
        try:
            records.append(_decode_body(body))
        except (ValueError, KeyError, TypeError, struct.error) as error:
            raise WalError(f"{path}: unreadable record at byte {offset}: {error}") from None
        offset += _RECORD_HEAD.size + length
    return records, offset


class WriteAheadLog:
    """Appends records to the current segment of the log of ``index_path``; not
    thread-safe (the service's single writer owns it)."""

    def __init__(self, index_path: os.PathLike):
        index_path = Path(index_path)
        self.directory = index_path.parent
        self._prefix = index_path.name + ".wal."
        self._file = None
        self._sequence = 0
        self.unflushed = False

    def segments(self) -> list[tuple[int, Path]]:
        """The existing segments, oldest first, as (sequence number, path)."""
        pattern = re.compile(re.escape(self._prefix) + r"(\d{8})")
        found = []
        for entry in self.directory.iterdir():
            match = pattern.fullmatch(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
        return sorted(found)

    def replay(self):
        """Yield every logged record, oldest first, truncating a torn tail; then the log
        is ready for appends to a new segment."""
        segments = self.segments()
        for position, (sequence, path) in enumerate(segments):
            last = position == len(segments) - 1
            records, intact = read_segment(path, last=last)
            if last and intact < path.stat().st_size:
                with open(path, "r+b") as file:
                    file.truncate(max(intact, 0))
                    os.fsync(file.fileno())
            yield from records
            self._sequence = sequence
        self._open_next()

    @property
    def current_size(self) -> int:
        """Bytes in the current segment (the magic included)."""
        return self._file.tell()

    def append(self, record: WalRecord) -> None:
        """Write a record; it is durable only after the next `flush`."""
        self._file.write(encode_record(record))
        self.unflushed = True

    def flush(self) -> None:
        """Make every appended record durable (write, then fsync)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self.unflushed = False

    def has_records(self) -> bool:
        """Whether any segment holds a record: the current one, or an older one (replayed
        at start, or left by a compaction that did not finish)."""
        return self.current_size > len(MAGIC) or len(self.segments()) > 1

    def rotate(self) -> int:
        """Close the current segment (flushed) and start the next; returns the sequence
        number of the closed one, for `discard_through` once the index file holds it."""
        self.flush()
        closed = self._sequence
        self._file.close()
        self._open_next()
        return closed

    def discard_through(self, sequence: int) -> None:
        """Delete the segments up to ``sequence``: the saved index holds their records."""
        for number, path in self.segments():
            if number <= sequence:
                path.unlink()
        _fsync_directory(self.directory)

    def close(self) -> None:
        """Flush and close the current segment."""
        if self._file is not None and not self._file.closed:
            self.flush()
            self._file.close()

    def _open_next(self) -> None:
        self._sequence += 1
        path = self.directory / f"{self._prefix}{self._sequence:08d}"
        self._file = open(path, "xb")
        self._file.write(MAGIC)
        self.flush()
        _fsync_directory(self.directory)  # the new name itself must survive a crash


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
