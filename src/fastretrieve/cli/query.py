"""``fastretrieve search``: rank an index's images by similarity to query images."""

from __future__ import annotations

import os
import sys

import numpy as np

from .contact_sheet import DEFAULT_THUMB, write_contact_sheet
from .distributed import open_index
from .errors import EXIT_FAILURE, SkipReport
from .image_index import open_embedder, paths_of, whitening_of
from .indexing import add_embedder_arguments, embedder_options, positive_int
from .output import FORMATS, write_rows

EXAMPLES = """\
examples:
  fastretrieve search photos.fri query.jpg
  fastretrieve search photos.fri a.jpg b.jpg -k 5 --format csv > results.csv
  fastretrieve search photos.fri query.jpg -k 8 --grid results.png   # look at the answer

Scores are cosine similarities (1.0 = the same vector, higher is more similar).
The queries are embedded with the model recorded in the index; --model is refused
unless it produces the same vectors.
"""

COLUMNS = ["query", "rank", "score", "path"]


def search_images(index, embedder, images, k: int, skips: SkipReport, whitening=None) -> list[tuple[str, list]]:
    """``[(query, [(rank, score, path), ...]), ...]`` for the queries that could be
    embedded (and whitened, when the index's vectors are); the others go to ``skips``."""
    queries, vectors = [], []
    for result in embedder.embed_paths(os.fspath(image) for image in images):
        if result.ok:
            queries.append(result.source)
            vectors.append(result.vector)
        else:
            skips.add(result.source, result.error)
    if not vectors:
        return []
    vectors = np.stack(vectors)
    if whitening is not None:
        vectors = whitening.transform(vectors)
    scores, ids = index.search(vectors, k)
    answers = []
    for query, row_scores, row_ids in zip(queries, scores, ids):
        paths = paths_of(index, row_ids)
        found = [(rank, float(score), path)
                 for rank, (score, path) in enumerate(zip(row_scores, paths), start=1)
                 if path is not None]
        answers.append((query, found))
    return answers


def answer_rows(answers) -> list[dict]:
    """One flat row per (query, result)."""
    return [
        {"query": query, "rank": rank, "score": score, "path": path}
        for query, found in answers for rank, score, path in found
    ]


def answer_document(answers) -> list[dict]:
    """The JSON form: one object per query with its ranked results."""
    return [
        {"query": query, "results": [{"rank": r, "score": s, "path": p} for r, s, p in found]}
        for query, found in answers
    ]


def add_parser(add_command) -> None:
    """Register the ``search`` command."""
    parser = add_command(
        "search", help="find the indexed images most similar to query images",
        description="Rank the images of an index by similarity to each query image.",
        epilog=EXAMPLES,
    )
    parser.add_argument("index", metavar="INDEX", help="an index made by `fastretrieve index`")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="query images")
    parser.add_argument("-k", type=positive_int, default=10, help="results per query (default: 10)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--grid", metavar="OUT.png",
                        help="also write a contact sheet: each query and its results as thumbnails")
    parser.add_argument("--thumb-size", type=positive_int, default=DEFAULT_THUMB, metavar="PIXELS",
                        help=f"thumbnail size in the contact sheet (default: {DEFAULT_THUMB})")
    parser.add_argument("--model", help="the model to embed queries with (default: the index's)")
    add_embedder_arguments(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    """Run ``fastretrieve search``."""
    index, record = open_index(args.index)
    embedder = open_embedder(record, args.index, args.model, **embedder_options(args))
    skips = SkipReport(None)
    answers = search_images(index, embedder, args.images, args.k, skips, whitening_of(record, args.index))
    if not answers:
        print("fastretrieve: error: none of the query images could be read", file=sys.stderr)
        return EXIT_FAILURE
    write_rows(answer_rows(answers), COLUMNS, args.format, document=answer_document(answers))
    if args.grid:
        width, height = write_contact_sheet(answers, args.grid, columns=args.k, thumb=args.thumb_size)
        if not args.quiet:
            print(f"contact sheet: {args.grid} ({width} x {height} pixels)", file=sys.stderr)
    return skips.exit_code()
