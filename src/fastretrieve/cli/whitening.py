"""``fastretrieve fit-whitening``: learn PCA whitening from an index's own vectors,
validate it on a held-out split, and apply it only if it helps.

Train: a whitening (`fastretrieve.embed.Whitening`) is fitted on the vectors of all
entries but a held-out sample (20 %, at most ``--validate`` images).
Validate: each held-out image is edited hard (`hard_edit`: a 60 % crop off-centre,
rotated 8 degrees, 30 % less contrast, half size, JPEG quality 40), embedded, and
searched among all the index's vectors, once as they are and once whitened; the edited
copy should find its own original first. Reported: recall@1 and the mean reciprocal
rank (MRR) of the original, before and after. (Mild edits are found first either way,
which would tell nothing.)
Apply: only when whitening raises the MRR without lowering recall@1, every stored vector
is whitened (and reduced to ``--dims``), the whitening is saved in the index's model
record, and from then on every query (``search``) and every newly indexed image
(``index``) goes through it. Otherwise the index is left untouched, and the command
says why.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .. import Index
from ..embed import Whitening
from ..embed.whitening import DEFAULT_DIMS, DEFAULT_SHRINKAGE
from PIL import Image, ImageEnhance

from .errors import CommandError, UsageError
from .image_index import MODEL_ATTRIBUTE, load_index, open_embedder
from .indexing import add_embedder_arguments, embedder_options, positive_int

HOLDOUT_FRACTION = 0.2
DEFAULT_VALIDATE = 200
MIN_IMAGES = 50

EXAMPLES = """\
examples:
  fastretrieve fit-whitening photos.fri
  fastretrieve fit-whitening photos.fri --dims 128 --format json
"""


def add_parser(add_command) -> None:
    """Register the ``fit-whitening`` command."""
    parser = add_command(
        "fit-whitening", help="learn whitening from an index's photos; apply it if it helps",
        description=__doc__.split("\n\n", 1)[1].strip(), epilog=EXAMPLES,
    )
    parser.add_argument("index", metavar="INDEX", help="an index made by `fastretrieve index`")
    parser.add_argument("--dims", type=positive_int, default=DEFAULT_DIMS,
                        help=f"dimensions kept (default: {DEFAULT_DIMS}, at most the training images - 1)")
    parser.add_argument("--shrinkage", type=float, default=DEFAULT_SHRINKAGE,
                        help=f"variance shrinkage towards the mean, 0-1 (default: {DEFAULT_SHRINKAGE})")
    parser.add_argument("--validate", type=positive_int, default=DEFAULT_VALIDATE, metavar="N",
                        help=f"held-out images used to validate (default: {DEFAULT_VALIDATE})")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    add_embedder_arguments(parser)
    parser.set_defaults(run=run)


def original_ranks(queries: np.ndarray, database: np.ndarray, own_rows: np.ndarray) -> np.ndarray:
    """The rank (1 = first) of each query's own row among the cosine scores of all rows;
    a tie with another row counts against it (a tie is not a success)."""
    database = database / np.maximum(np.linalg.norm(database, axis=1, keepdims=True), 1e-12)
    queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    scores = queries @ database.T
    own = scores[np.arange(len(queries)), own_rows]
    return (scores >= own[:, None]).sum(axis=1)


def _summary(ranks: np.ndarray) -> dict:
    return {"recall@1": float(np.mean(ranks == 1)), "mrr": float(np.mean(1.0 / ranks))}


def hard_edit(source: Path, target: Path) -> None:
    """Save a hard edit of ``source``: 60 % of the area cropped from the upper left,
    rotated 8 degrees, 30 % less contrast, half size, JPEG quality 40."""
    with Image.open(source) as image:
        image = image.convert("RGB")
        width, height = image.size
        side = 0.6**0.5
        image = image.crop((0, 0, max(1, round(width * side)), max(1, round(height * side))))
        image = image.rotate(8, resample=Image.Resampling.BILINEAR)
        image = ImageEnhance.Contrast(image).enhance(0.7)
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.BILINEAR)
        image.save(target, "JPEG", quality=40)


def _edited_queries(embedder, paths: list[str]) -> tuple[np.ndarray, list[int]]:
    """Embeddings of hard edits of ``paths`` and the positions that could be read."""
    with tempfile.TemporaryDirectory(prefix="fastretrieve-whitening-") as folder:
        copies, kept = [], []
        for position, path in enumerate(paths):
            target = Path(folder) / f"{position}.jpg"
            try:
                hard_edit(Path(path), target)
            except (OSError, ValueError, Image.DecompressionBombError):  # gone or unreadable since indexing
                continue
            copies.append(target)
            kept.append(position)
        results = list(embedder.embed_paths(copies))
    vectors = [r.vector for r in results if r.ok]
    kept = [position for position, r in zip(kept, results) if r.ok]
    return (np.stack(vectors) if vectors else np.zeros((0, embedder.dim), np.float32)), kept


def run(args) -> int:
    """Run ``fastretrieve fit-whitening``."""
    index, record = load_index(args.index, mmap=False)
    if "whitening" in record:
        raise UsageError(f"{args.index} is already whitened; re-create it with `fastretrieve index` to refit")
    if len(index) < MIN_IMAGES:
        raise UsageError(f"{args.index} holds {len(index)} images; whitening needs at least {MIN_IMAGES}")
    if not 0 <= args.shrinkage <= 1:
        raise UsageError(f"--shrinkage must be in [0, 1], got {args.shrinkage}")
    ids = index.ids
    vectors = index.get(ids)
    paths = [meta["path"] for meta in index.get_metadata(ids.tolist())]
    order = np.random.default_rng(0).permutation(len(ids))
    held_out = np.sort(order[: min(args.validate, max(1, round(HOLDOUT_FRACTION * len(ids))))])
    training = np.setdiff1d(np.arange(len(ids)), held_out)
    whitening = Whitening.fit(vectors[training], dims=args.dims, shrinkage=args.shrinkage)

    embedder = open_embedder(record, args.index, **embedder_options(args))
    queries, readable = _edited_queries(embedder, [paths[row] for row in held_out])
    if len(readable) < 10:
        raise CommandError(f"only {len(readable)} held-out images could be read back: cannot validate")
    own_rows = held_out[readable]
    whitened = whitening.transform(vectors)
    before = _summary(original_ranks(queries, vectors, own_rows))
    after = _summary(original_ranks(whitening.transform(queries), whitened, own_rows))
    helps = after["mrr"] > before["mrr"] and after["recall@1"] >= before["recall@1"]
    validation = {"held_out": len(readable), "trained_on": len(training), "dims": whitening.dim,
                  "before": before, "after": after}
    if helps:
        _apply(index, record, whitening, validation, whitened, ids, args.index)
    report = {"index": os.fspath(args.index), "applied": helps, **validation}
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(f"held-out edited copies: {len(readable)}; whitening learned from {len(training)} images, "
              f"{whitening.dim} dimensions")
        print(f"  recall@1 {before['recall@1']:.3f} -> {after['recall@1']:.3f}, "
              f"MRR {before['mrr']:.3f} -> {after['mrr']:.3f}")
        print(f"applied: {args.index} now holds whitened vectors" if helps else
              "not applied: whitening did not help on the held-out images; the index is unchanged")
    return 0


def _apply(index, record, whitening, validation, whitened, ids, index_path) -> None:
    """Rewrite the index with whitened vectors and the whitening in its model record."""
    result = Index(whitening.dim, metric=index.metric, dtype=index.dtype)
    result.add(whitened, ids=ids, metadata=index.get_metadata(ids.tolist()))
    stored = {**whitening.to_record(), "validation": validation}
    result.attributes = {**index.attributes, MODEL_ATTRIBUTE: {**record, "whitening": stored}}
    result.save(index_path)  # atomic: a crash leaves the unwhitened index whole
