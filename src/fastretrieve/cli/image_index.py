"""An image index on disk: the `Index` file plus the record of the model that filled it.

Each vector's metadata describes its file: ``{"path", "size", "mtime_ns", "sha256"}``,
which is what re-indexing compares to find new, changed and deleted files.

The model record -- which model and preprocessing produced the vectors -- lives in a
JSON file next to the index, ``INDEX.model.json``, because `Index` has no place for
index-level metadata and a reserved metadata entry would need a vector of its own (which
searches would find). The record is written atomically, and only when an index is
created; an existing index is never switched to another model (`index` refuses), so the
record and the vectors always agree.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .. import Embedder, Index, __version__
from .errors import CommandError

RECORD_SUFFIX = ".model.json"
RECORD_FORMAT = 1


def record_path(index_path) -> Path:
    """Where the model record of ``index_path`` lives."""
    index_path = Path(index_path)
    return index_path.with_name(index_path.name + RECORD_SUFFIX)


def model_spec(model: str) -> str:
    """The model as recorded: "classic", a URL, or an absolute path (so that the index
    can be queried from any working directory)."""
    if model == "classic" or "://" in model:
        return model
    return os.path.abspath(os.path.expanduser(model))


def model_record(spec: str, embedder: Embedder) -> dict:
    """What the index records about the model that fills it."""
    return {
        "format": RECORD_FORMAT,
        "model": spec,
        "fingerprint": embedder.fingerprint,
        "settings": embedder.settings,
        "created_by": f"fastretrieve {__version__}",
    }


def write_record(index_path, record: dict) -> None:
    """Write the model record atomically: a crash leaves the old record or the new one."""
    target = record_path(index_path)
    handle, temporary = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(record, file, indent=2, ensure_ascii=False)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_record(index_path) -> dict:
    """The model record of an index; a CommandError says what to do when it is missing."""
    path = record_path(index_path)
    try:
        with open(path, encoding="utf-8") as file:
            record = json.load(file)
    except FileNotFoundError:
        raise CommandError(
            f"{index_path} has no model record ({path} is missing), so the model that made "
            "it is unknown; re-create the index with `fastretrieve index`"
        ) from None
    except (OSError, ValueError) as error:
        raise CommandError(f"{path}: unreadable model record ({error})") from None
    if not isinstance(record, dict) or "fingerprint" not in record or "model" not in record:
        raise CommandError(f"{path}: not a fastretrieve model record")
    return record


def load_index(index_path, *, mmap: bool = True) -> tuple[Index, dict]:
    """The index at ``index_path`` and its model record."""
    if not Path(index_path).is_file():
        raise CommandError(
            f"{index_path}: no such index (create one with `fastretrieve index DIR -o {index_path}`)"
        )
    return Index.load(index_path, mmap=mmap), read_record(index_path)


def open_embedder(record: dict, index_path, model: str | None = None, **options) -> Embedder:
    """An embedder for querying an index: the model it was built with, or ``model`` if
    given -- refused unless it produces exactly the same vectors (same fingerprint)."""
    spec = model_spec(model) if model else record["model"]
    embedder = Embedder(spec, **options)
    if embedder.fingerprint != record["fingerprint"]:
        raise CommandError(
            f"{index_path} was built with model {record['model']!r} "
            f"(fingerprint {record['fingerprint'][:12]}), but {spec!r} with these options "
            f"has fingerprint {embedder.fingerprint[:12]}: vectors of different models cannot "
            "be compared; query with the index's model, or re-index into a new index "
            "with `fastretrieve index DIR -o NEW_INDEX --model ...`"
        )
    return embedder


def entries_by_path(index: Index) -> dict[str, tuple[int, dict]]:
    """``{path: (id, metadata)}`` for every entry of the index."""
    ids = index.ids.tolist()
    return {meta["path"]: (item_id, meta) for item_id, meta in zip(ids, index.get_metadata(ids))}


def paths_of(index: Index, ids) -> list[str | None]:
    """The file path of each id (None for the padding id -1)."""
    ids = [int(i) for i in ids]
    known = [i for i in ids if i >= 0]
    paths = dict(zip(known, (meta["path"] for meta in index.get_metadata(known))))
    return [paths.get(i) for i in ids]
