"""The manifest of a sharded index: one JSON file naming the shard `Index` files.

A manifest lists its shards in order. The order is the index's global storage order:
a `ShardedIndex` answers exactly as one `Index` holding shard 0's rows, then shard 1's,
and so on (equal distances: the row stored first wins, so the lower shard first).

Fields::

    {"format": "fastretrieve-shards", "version": 1,
     "dim": 576, "metric": "cosine", "dtype": "float32",
     "attributes": {...},          # e.g. the model record, as in an Index's attributes
     "shards": [{"file": "shard-00000.fri", "rows": 1000, "first_id": 0, "last_id": 999},
                ...],              # file relative to the manifest's folder
     "errors": {...}}              # optional: a report of the files that were skipped

``first_id``/``last_id`` bound the ids of a shard (null for an empty shard). The id
ranges of the shards never overlap, so an id names one row of one shard, and looking
up an id's shard needs only the manifest. The manifest is written atomically (a
temporary file, fsynced, renamed over the old one).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import Index

FORMAT = "fastretrieve-shards"
VERSION = 1


class ManifestError(ValueError):
    """A manifest that cannot be read, or shards that disagree with it."""


@dataclass(frozen=True)
class ShardEntry:
    """One shard: its file (absolute once read), row count and id range."""

    file: str
    rows: int
    first_id: int | None
    last_id: int | None

    def as_dict(self, folder: Path) -> dict:
        """The JSON form, with the file relative to ``folder`` when it lies inside it."""
        path = Path(self.file)
        try:
            name = os.fspath(path.relative_to(folder))
        except ValueError:
            name = os.fspath(path)
        return {"file": name, "rows": self.rows, "first_id": self.first_id, "last_id": self.last_id}


@dataclass(frozen=True)
class Manifest:
    """A sharded index's description; see the module docstring."""

    dim: int
    metric: str
    dtype: str
    shards: tuple[ShardEntry, ...]
    attributes: dict = field(default_factory=dict)
    errors: dict | None = None

    @property
    def rows(self) -> int:
        """Rows of all shards together."""
        return sum(shard.rows for shard in self.shards)


def is_manifest(path) -> bool:
    """True when ``path`` is a file that starts like a JSON manifest (an Index file is
    binary, so its first byte is never ``{``)."""
    try:
        with open(path, "rb") as file:
            return file.read(1) == b"{"
    except OSError:
        return False


def shard_entry(path) -> ShardEntry:
    """The entry of an existing shard file, from its ids (the file is memory-mapped)."""
    index = Index.load(path, mmap=True)
    ids = index.ids
    if len(ids) == 0:
        return ShardEntry(os.path.abspath(path), 0, None, None)
    return ShardEntry(os.path.abspath(path), len(ids), int(ids.min()), int(ids.max()))


def manifest_from_shards(shard_files, *, attributes=None, errors=None) -> Manifest:
    """A manifest for existing `Index` files, in the order given. They must agree on
    dimension, metric and dtype, and their id ranges must not overlap."""
    shard_files = [os.fspath(path) for path in shard_files]
    if not shard_files:
        raise ManifestError("a sharded index needs at least one shard")
    first = Index.load(shard_files[0], mmap=True)
    for path in shard_files[1:]:
        other = Index.load(path, mmap=True)
        if (other.dim, other.metric, other.dtype) != (first.dim, first.metric, first.dtype):
            raise ManifestError(
                f"{path} is an index of dim={other.dim}, metric={other.metric}, "
                f"dtype={other.dtype}, but {shard_files[0]} has dim={first.dim}, "
                f"metric={first.metric}, dtype={first.dtype}"
            )
    manifest = Manifest(first.dim, first.metric, first.dtype,
                        tuple(shard_entry(path) for path in shard_files),
                        dict(attributes or {}), errors)
    check_disjoint(manifest.shards)
    return manifest


def check_disjoint(shards) -> None:
    """ManifestError unless the id ranges of ``shards`` are pairwise disjoint."""
    ranges = sorted((s.first_id, s.last_id, s.file) for s in shards if s.rows)
    for (_, last, name), (first, _, other) in zip(ranges, ranges[1:]):
        if first <= last:
            raise ManifestError(f"the ids of {name} and {other} overlap; a sharded index "
                                "needs each id in one shard only")


def write_manifest(path, manifest: Manifest) -> None:
    """Write ``manifest`` to ``path`` atomically."""
    path = Path(path)
    folder = path.parent.resolve()
    document = {
        "format": FORMAT, "version": VERSION,
        "dim": manifest.dim, "metric": manifest.metric, "dtype": manifest.dtype,
        "attributes": manifest.attributes,
        "shards": [shard.as_dict(folder) for shard in manifest.shards],
    }
    if manifest.errors is not None:
        document["errors"] = manifest.errors
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(document, file, indent=1)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_manifest(path) -> Manifest:
    """Read and check a manifest; shard files become absolute paths."""
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: not a readable manifest ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ManifestError(f"{path}: not a fastretrieve shard manifest")
    if document.get("version") != VERSION:
        raise ManifestError(f"{path}: manifest version {document.get('version')!r} is not "
                            f"supported (this fastretrieve reads version {VERSION})")
    folder = Path(path).resolve().parent
    try:
        shards = tuple(
            ShardEntry(os.fspath(folder / entry["file"]), _count(entry["rows"]),
                       _optional_id(entry["first_id"]), _optional_id(entry["last_id"]))
            for entry in document["shards"]
        )
        manifest = Manifest(int(document["dim"]), str(document["metric"]),
                            str(document["dtype"]), shards,
                            dict(document.get("attributes") or {}), document.get("errors"))
    except (KeyError, TypeError, ValueError) as error:
        raise ManifestError(f"{path}: malformed manifest ({type(error).__name__}: {error})") from None
    if not shards:
        raise ManifestError(f"{path}: the manifest lists no shards")
    check_disjoint(shards)
    return manifest


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"bad row count {value!r}")
    return value


def _optional_id(value) -> int | None:
    if value is None:
        return None
    return _count(value)
