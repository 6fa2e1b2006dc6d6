"""An image index on disk: one `Index` file holding the vectors, the file metadata and
the record of the model that filled it.

Each vector's metadata describes its file: ``{"path", "size", "mtime_ns", "sha256"}``,
which is what re-indexing compares to find new, changed and deleted files.

The model record -- which model and preprocessing produced the vectors, and the
whitening applied to them if any (``"whitening"``, see `whitening_of`) -- is the index
attribute ``"embedder"`` (`Index.attributes`), so it is saved atomically with the
vectors by the same `Index.save`, and copying the index file copies it too. It is set
only when an index is created; an existing index is never switched to another model
(`index` refuses), so the record and the vectors always agree.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import Embedder, Index, __version__
from ..embed import BUILTIN_MODEL_NAMES, Whitening
from .errors import CommandError

MODEL_ATTRIBUTE = "embedder"
RECORD_FORMAT = 1


def model_spec(model: str) -> str:
    """The model as recorded: a built-in name ("efficientnet-lite0", "classic", ...), a
    URL, or an absolute path (so that the index can be queried from any working directory)."""
    if model in BUILTIN_MODEL_NAMES or "://" in model:
        return model
    return os.path.abspath(os.path.expanduser(model))


def new_image_index(spec: str, embedder: Embedder, dtype: str) -> Index:
    """An empty cosine index for ``embedder``'s vectors, recording the model (``spec``)
    and its preprocessing, so that every save of it carries the record."""
    index = Index(embedder.dim, metric="cosine", dtype=dtype)
    index.attributes = {
        MODEL_ATTRIBUTE: {
            "format": RECORD_FORMAT,
            "model": spec,
            "fingerprint": embedder.fingerprint,
            "settings": embedder.settings,
            "created_by": f"fastretrieve {__version__}",
        }
    }
    return index


def read_model_record(index: Index, index_path) -> dict:
    """The model record of an index; a CommandError says what to do when it is missing."""
    record = index.attributes.get(MODEL_ATTRIBUTE)
    if record is None:
        raise CommandError(
            f"{index_path} has no model record (it was not made by `fastretrieve index`), "
            "so the model that made it is unknown; re-create the index with `fastretrieve index`"
        )
    if not (isinstance(record, dict) and isinstance(record.get("model"), str)
            and isinstance(record.get("fingerprint"), str)):
        raise CommandError(f"{index_path}: malformed model record in attribute {MODEL_ATTRIBUTE!r}")
    return record


def load_index(index_path, *, mmap: bool = True) -> tuple[Index, dict]:
    """The index at ``index_path`` and its model record."""
    if not Path(index_path).is_file():
        raise CommandError(
            f"{index_path}: no such index (create one with `fastretrieve index DIR -o {index_path}`)"
        )
    index = Index.load(index_path, mmap=mmap)
    return index, read_model_record(index, index_path)


def open_embedder(record: dict, index_path, model: str | None = None, **options) -> Embedder:
    """An embedder for querying or updating an index: the model it was built with, or
    ``model`` if given -- refused unless it produces exactly the same vectors (same
    fingerprint).

    An index file is not trusted to choose what runs: without ``model`` only a built-in
    model it names is used. A URL or a file path it names must be given on the command
    line (``--model``); a URL given there is downloaded over https and must match the
    sha256 the index records before anything parses it.
    """
    if model:
        spec = model_spec(model)
        pin = _recorded_sha256(record, index_path) if "://" in spec else None
    elif record["model"] in BUILTIN_MODEL_NAMES:
        spec, pin = record["model"], None
    else:
        raise CommandError(
            f"{index_path} was built with model {record['model']!r}; an index file never "
            "decides which model file is fetched or run: pass it yourself with --model "
            "(a local copy of that file, or its https URL, checked against the sha256 the "
            "index records)"
        )
    embedder = Embedder(spec, sha256=pin, **options)
    if embedder.fingerprint != record["fingerprint"]:
        raise CommandError(
            f"{index_path} was built with model {record['model']!r} "
            f"(fingerprint {record['fingerprint'][:12]}), but {spec!r} with these options "
            f"has fingerprint {embedder.fingerprint[:12]}: vectors of different models cannot "
            "be compared; query with the index's model, or re-index into a new index "
            "with `fastretrieve index DIR -o NEW_INDEX --model ...`"
        )
    return embedder


def whitening_of(record: dict, index_path) -> Whitening | None:
    """The whitening recorded with the model (``fastretrieve fit-whitening``), or None.
    Every vector entering the index, and every query, goes through it."""
    stored = record.get("whitening")
    if stored is None:
        return None
    try:
        return Whitening.from_record(stored)
    except ValueError as error:
        raise CommandError(f"{index_path}: {error}") from None


def _recorded_sha256(record: dict, index_path) -> str:
    """The model file's sha256 that the index records: the pin of a downloaded model."""
    settings = record.get("settings")
    pin = settings.get("model_sha256") if isinstance(settings, dict) else None
    if not (isinstance(pin, str) and len(pin) == 64
            and all(c in "0123456789abcdef" for c in pin)):
        raise CommandError(
            f"{index_path} records no sha256 of its model file, so a model URL cannot be "
            "checked against it: download the model yourself and pass its local path with --model"
        )
    return pin


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
