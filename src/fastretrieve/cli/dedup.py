"""``fastretrieve dedup``: groups of near-duplicate images, from the k-NN graph.

Two images are near-duplicates when the cosine similarity of their vectors is at least
the threshold. Each image's ``--neighbors`` nearest images are found with
:func:`fastretrieve.search` (no database: the k-NN graph, each image's own match
excluded), the pairs at or above the threshold are kept, and a group is a connected
component of those pairs -- so copies of copies join one group, and a group may grow
beyond ``neighbors + 1`` images through chains. Memory is the vectors plus ``N x
neighbors`` results: no N x N matrix, and no copy of the vectors: the self-join runs one
block of `QUERY_BLOCK_ROWS` queries at a time against the stored rows (an index's are
memory-mapped, normalised and possibly int8; folder vectors are unit rows searched by
inner product in place). Measured peak resident memory (benchmarks/bench_dedup_memory.py)
at 576 dimensions: 1M images 3.0-3.2 GiB, about 1.45 x the float32 vectors; 100k images
0.41 GiB, where the interpreter and libraries (~80 MB) and the parsed metadata weigh more.

The threshold depends on the model; `DEFAULT_THRESHOLDS` holds one per built-in model,
each measured by ``benchmarks/bench_cli_dedup_threshold.py MODEL`` (BENCHMARKS.md has
the figures of the CNNs). For the built-in "classic" model the default, 0.98, comes from
``benchmarks/bench_cli_dedup_threshold.py`` (15
photos and 73 distractor images of scikit-image's data, 3,828 distinct pairs): at 0.98
every JPEG re-compression (quality 30-90), 50 % resize and brightness or contrast change
of 20 % of every photo is found, and 14 of 15 copies resized to 25 % or cropped to 85 %
of the area; the only distinct pair above it is two grey close-ups of grass and gravel
(0.992). At 0.975 two more distinct pairs (face crops, Hubble quadrants) pass; at 0.97,
twenty-one. Rotations and grayscale copies fall below it.

For the default CNN, "efficientnet-lite0", 0.97 is the lowest round value above every
distinct pair of the same 88 images (the most similar: two quadrants of the Hubble Deep
Field, 0.969). It finds 113 of the 210 edited copies: every JPEG q90 copy and contrast
change, 14 of 15 darkened and 12 of 15 brightened or JPEG q60 copies, 9 of 15 grayscale
or half-size copies, few crops and no rotation. A CNN places a copy near its original but
also near photos of the same kind, so its margin between the two is narrower than
classic's: for strict copy detection, ``--model classic`` finds more at no false pair.
Its int8 variant, "efficientnet-lite0-int8", measured the same way, also gets 0.97: its
most similar distinct pair is the same Hubble pair, at 0.969.
Other models have no default: pass ``--threshold``.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from .. import Embedder, search
from ..embed import DEFAULT_MODEL
from ..distributed import is_manifest
from .distributed import vectors_of_manifest
from .errors import SkipReport, UsageError
from .files import add_follow_links_argument, find_images
from .image_index import load_index, model_spec
from .indexing import add_embedder_arguments, embedder_options, positive_int
from .output import FORMATS, write_rows
from .progress import ProgressBar

# Measured per built-in model (see the module docstring); other models need --threshold.
DEFAULT_THRESHOLDS = {"efficientnet-lite0": 0.97, "efficientnet-lite0-int8": 0.97, "classic": 0.98}
DEFAULT_NEIGHBORS = 10

EXAMPLES = f"""\
examples:
  fastretrieve dedup photos.fri                    # an index made by `fastretrieve index`
  fastretrieve dedup ~/Photos --recursive          # a folder, embedded on the fly
  fastretrieve dedup photos.fri --threshold 0.98 --format json

Threshold: cosine similarity in [-1, 1]; pairs at or above it are duplicates. Defaults
(measured): {", ".join(f"{model} {value}" for model, value in DEFAULT_THRESHOLDS.items())};
required for any other model.
Higher finds fewer, closer copies; lower also finds looser edits (and more false pairs).
"""

COLUMNS = ["group", "size", "path", "similarity"]


QUERY_BLOCK_ROWS = 4096  # queries per search call: the only copy of vectors dedup makes


def nearest_others(search_block, count: int, neighbors: int):
    """The k-NN graph of ``count`` stored vectors, each row's own match excluded, computed
    one block of query rows at a time so that no copy of the whole database is made.

    ``search_block(start, stop, k)`` returns ``(similarities, rows)`` of the k nearest
    stored rows to rows ``start:stop``, best first, ties by lower row (as every search
    here does). Returns ``(similarities, rows)`` of shape (count, neighbors).
    """
    similarities = np.empty((count, neighbors), np.float32)
    found = np.empty((count, neighbors), np.int64)
    for start in range(0, count, QUERY_BLOCK_ROWS):
        stop = min(start + QUERY_BLOCK_ROWS, count)
        block_similarities, block_rows = search_block(start, stop, neighbors + 1)
        own = block_rows == np.arange(start, stop)[:, None]
        # Drop each row's own match; a row tied with more than k others ahead of it (equal
        # vectors, lower rows first) has no own match among k + 1: drop its last instead.
        own[~own.any(axis=1), -1] = True
        keep = ~own
        similarities[start:stop] = block_similarities[keep].reshape(stop - start, neighbors)
        found[start:stop] = block_rows[keep].reshape(stop - start, neighbors)
    return similarities, found


def duplicate_groups(similarities: np.ndarray, neighbours: np.ndarray, threshold: float):
    """Groups of rows whose similarity chains reach ``threshold``, from the k-NN graph
    (`nearest_others`): a list of lists of row numbers (each of two or more rows, largest
    group first)."""
    count = len(similarities)
    parent = np.arange(count)

    def root(row):
        while parent[row] != row:
            parent[row] = parent[parent[row]]  # path halving keeps the trees shallow
            row = parent[row]
        return row

    rows, columns = np.nonzero((similarities >= threshold) & (neighbours >= 0))
    for row, other in zip(rows.tolist(), neighbours[rows, columns].tolist()):
        parent[root(row)] = root(other)
    members: dict[int, list[int]] = {}
    for row in sorted(set(rows.tolist()) | set(neighbours[rows, columns].tolist())):
        members.setdefault(root(row), []).append(row)
    return sorted((rows for rows in members.values() if len(rows) > 1), key=lambda g: (-len(g), g[0]))


def _graph_of_vectors(vectors: np.ndarray, neighbors: int):
    """The k-NN graph of rows held in memory, by cosine similarity: a search with an
    explicit database reads the float32 matrix in place (only the block of queries is
    normalised), and reports the exact cosine, as an index search does."""
    def search_block(start, stop, k):
        return search(vectors[start:stop], k, database=vectors, metric="cosine")
    return nearest_others(search_block, len(vectors), neighbors)


def _graph_of_index(index, neighbors: int):
    """The k-NN graph of a cosine index, searching its stored (normalised, possibly
    memory-mapped, possibly int8) rows in place; only a block of queries is decoded."""
    ids = index.ids
    order = np.argsort(ids, kind="stable")

    def search_block(start, stop, k):
        similarities, found_ids = index.search(index.get(ids[start:stop]), k)
        rows = order[np.searchsorted(ids, found_ids, sorter=order)] if len(ids) else found_ids
        return similarities, np.where(found_ids >= 0, rows, -1)
    return nearest_others(search_block, len(ids), neighbors)


def _graph_of_folder(args, skips):
    paths = find_images(args.source, recursive=args.recursive, follow_links=args.follow_links,
                        skips=skips)
    embedder = Embedder(model_spec(args.model or DEFAULT_MODEL), **embedder_options(args))
    kept, vectors = [], []
    with ProgressBar(len(paths), "embedding", enabled=not args.quiet) as bar:
        for result in embedder.embed_paths(paths):
            bar.advance()
            if result.ok:
                kept.append(result.source)
                vectors.append(result.vector)
            else:
                skips.add(result.source, result.error)
    matrix = np.stack(vectors) if vectors else np.zeros((0, embedder.dim), np.float32)
    return _graph_of_matrix(kept, matrix, args.model or DEFAULT_MODEL, args.neighbors)


def _graph_of_matrix(paths, matrix, model, neighbors):
    """(count, k-NN graph or None, path of a row, model) of unit rows held in memory."""
    neighbors = min(neighbors, len(paths) - 1)
    graph = _graph_of_vectors(matrix, neighbors) if neighbors >= 1 else None
    return len(paths), graph, paths.__getitem__, model


def _graph_of_index_file(args):
    if is_manifest(args.source[0]):
        return _graph_of_matrix(*vectors_of_manifest(args.source[0]), args.neighbors)
    index, record = load_index(args.source[0])
    ids = index.ids
    neighbors = min(args.neighbors, len(ids) - 1)
    graph = _graph_of_index(index, neighbors) if neighbors >= 1 else None

    def path_of(row):
        return index.get_metadata(int(ids[row]))["path"]
    # A whitened index has other similarities: no measured default threshold applies.
    model = record["model"] + (" (whitened)" if "whitening" in record else "")
    return len(ids), graph, path_of, model


def add_parser(add_command) -> None:
    """Register the ``dedup`` command."""
    parser = add_command(
        "dedup", help="find groups of near-duplicate images",
        description="Find groups of near-duplicate images in an index or in folders.",
        epilog=EXAMPLES,
    )
    parser.add_argument("source", nargs="+", metavar="DIR|INDEX",
                        help="an index file, or folders of images to embed")
    parser.add_argument("--threshold", type=float, metavar="T",
                        help="cosine similarity for a duplicate (default: measured per built-in model)")
    parser.add_argument("--neighbors", type=positive_int, default=DEFAULT_NEIGHBORS, metavar="K",
                        help=f"neighbours examined per image (default: {DEFAULT_NEIGHBORS})")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("-r", "--recursive", action="store_true", help="include subfolders of DIR")
    add_follow_links_argument(parser)
    parser.add_argument("--model", help=f"model for folders (default: {DEFAULT_MODEL}); an index uses its own")
    add_embedder_arguments(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    """Run ``fastretrieve dedup``."""
    skips = SkipReport(None)
    from_index = len(args.source) == 1 and os.path.isfile(args.source[0])
    if from_index and args.model:
        raise UsageError("--model applies to folders; an index is compared with its own model")
    count, graph, path_of, model = _graph_of_index_file(args) if from_index else _graph_of_folder(args, skips)
    threshold = args.threshold
    if threshold is None:
        if model not in DEFAULT_THRESHOLDS:
            raise UsageError(
                f"no default threshold for model {model!r}: pass --threshold (cosine similarity; "
                "measure it on a few known duplicates)"
            )
        threshold = DEFAULT_THRESHOLDS[model]
    groups = duplicate_groups(*graph, threshold) if graph is not None else []
    best = graph[0][:, 0] if graph is not None else None
    rows = [
        {"group": number, "size": len(group), "path": path_of(row), "similarity": float(best[row])}
        for number, group in enumerate(groups, start=1) for row in group
    ]
    document = {
        "threshold": threshold,
        "images": count,
        "groups": [
            {"group": number, "paths": [path_of(row) for row in group],
             "similarities": [float(best[row]) for row in group]}
            for number, group in enumerate(groups, start=1)
        ],
    }
    write_rows(rows, COLUMNS, args.format, document=document)
    if not args.quiet:
        duplicates = sum(len(group) - 1 for group in groups)
        print(f"{len(groups)} groups, {duplicates} duplicates among {count} images "
              f"(threshold {threshold})", file=sys.stderr)
    return skips.exit_code()
