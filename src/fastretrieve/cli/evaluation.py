"""``fastretrieve evaluate``: how well a model retrieves images of the same class.

DIR holds one subfolder per class (or per object photographed several times). Every
image queries all the others (leave-one-out, with the exact k-NN graph); a result is
relevant when it belongs to the query's class. Per query, with R relevant images
(the other members of its class) and rel_i = 1 when the i-th result is relevant:

- precision@k = (number of relevant among the first k) / k;
- recall@K (K = 1, 5, 10) = 1 when at least one relevant image is among the first K,
  else 0 -- the Recall@K of image-retrieval benchmarks (SOP, CUB-200);
- AP@k = sum over i <= k of precision@i * rel_i, divided by min(R, k); mAP@k is its mean.

Each figure is averaged over the queries of a class (per class) and over all queries
(overall). Classes with a single image have no relevant image and are left out as
queries (they stay in the ranking: distractors).

With ``--whitening`` the overall figures are also given after PCA whitening learned from
the folder's own vectors, without their labels (what ``fastretrieve fit-whitening`` does
with an index), as "before" and "after".
"""

from __future__ import annotations

import json
import os

import numpy as np

from .. import Embedder, search
from .errors import SkipReport, UsageError
from .files import add_follow_links_argument, find_images
from ..embed import DEFAULT_MODEL, Whitening
from .indexing import MODEL_CHOICES, add_embedder_arguments, embedder_options, positive_int
from .image_index import model_spec
from .output import write_rows
from .progress import ProgressBar

RECALL_AT = (1, 5, 10)

EXAMPLES = """\
examples:
  fastretrieve evaluate labelled/                 # labelled/cats/*.jpg, labelled/dogs/*.jpg ...
  fastretrieve evaluate labelled/ --model my_cnn.onnx -k 20 --format json

Compare models on your own photos: run it once per --model and compare mAP@k.
"""


def retrieval_metrics(labels: np.ndarray, neighbours: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-query metrics (see the module docstring) from ranked neighbour rows.

    ``labels``: the class of each image, shape (n,). ``neighbours``: shape (n, K) with
    K >= max(k, 10), best first, each query's own row excluded, -1 for padding.
    Returns arrays of shape (n,) keyed ``map@k``, ``recall@1``, ``recall@5``,
    ``recall@10``, ``precision@k`` (NaN for queries without a relevant image).
    """
    labels = np.asarray(labels)
    relevant = (neighbours >= 0) & (labels[np.maximum(neighbours, 0)] == labels[:, None])
    class_sizes = dict(zip(*np.unique(labels, return_counts=True)))
    total_relevant = np.array([class_sizes[label] - 1 for label in labels])
    top = relevant[:, :k].astype(np.float64)
    precision_at_rank = np.cumsum(top, axis=1) / np.arange(1, k + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        average_precision = (precision_at_rank * top).sum(axis=1) / np.minimum(total_relevant, k)
    metrics = {f"map@{k}": average_precision}
    for cutoff in RECALL_AT:
        metrics[f"recall@{cutoff}"] = relevant[:, :cutoff].any(axis=1).astype(np.float64)
    metrics[f"precision@{k}"] = top.sum(axis=1) / k
    has_relevant = total_relevant > 0
    return {name: np.where(has_relevant, values, np.nan) for name, values in metrics.items()}


def summarise(labels, metrics: dict[str, np.ndarray]) -> list[dict]:
    """One row per class, then the overall row ("all"), each with its query count."""
    labels = np.asarray(labels)
    # Every metric is NaN for the same queries: those without a relevant image.
    answerable = ~np.isnan(next(iter(metrics.values())))
    rows = []
    for label in sorted(set(labels.tolist())) + [None]:
        chosen = answerable if label is None else answerable & (labels == label)
        row = {"class": "all" if label is None else label, "queries": int(chosen.sum())}
        row.update({name: float(values[chosen].mean()) if chosen.any() else None
                    for name, values in metrics.items()})
        rows.append(row)
    return rows


def _labelled_images(folder, follow_links: bool, skips):
    """(paths, class names) of the images in the class subfolders of ``folder``.

    A class folder that is a symbolic link is used only with ``follow_links``, and never
    when it leads back to ``folder`` or above it (a loop); odd subfolders inside a class
    are handled by `find_images` and reported to ``skips``."""
    if not os.path.isdir(folder):
        raise UsageError(f"{folder} is not a folder of class subfolders")
    top = os.path.realpath(folder)
    classes = []
    for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
        if entry.is_dir(follow_symlinks=False):
            classes.append(entry.name)
        elif entry.is_symlink() and os.path.isdir(entry.path):
            target = os.path.realpath(entry.path)
            if not follow_links:
                skips.add(entry.path, "symbolic link to a folder, not followed (pass "
                          "--follow-links to follow links)")
            elif os.path.commonpath([target, top]) == target:
                skips.add(entry.path, f"symlink loop: leads back to {target}")
            else:
                classes.append(entry.name)
    paths, labels = [], []
    for name in classes:
        found = find_images([os.path.join(folder, name)], recursive=True,
                            follow_links=follow_links, skips=skips)
        paths += found
        labels += [name] * len(found)
    if len(paths) < 2:
        raise UsageError(f"{folder} needs class subfolders holding at least two images")
    return paths, labels


def add_parser(add_command) -> None:
    """Register the ``evaluate`` command."""
    parser = add_command(
        "evaluate", help="measure retrieval quality on a labelled folder",
        description="Every image of DIR (one subfolder per class) queries all the others; "
        "report mAP@k, recall@1/5/10 and precision@k per class and overall.",
        epilog=EXAMPLES + "\n" + __doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("folder", metavar="DIR", help="one subfolder of images per class")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"{MODEL_CHOICES} (default: {DEFAULT_MODEL})")
    parser.add_argument("-k", type=positive_int, default=10, help="cut-off of mAP@k and precision@k (default: 10)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--whitening", action="store_true",
                        help="also report the figures after whitening learned from the folder's vectors")
    add_follow_links_argument(parser)
    add_embedder_arguments(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    """Run ``fastretrieve evaluate``."""
    skips = SkipReport(None)
    paths, labels = _labelled_images(args.folder, args.follow_links, skips)
    embedder = Embedder(model_spec(args.model), **embedder_options(args))
    kept_labels, vectors = [], []
    with ProgressBar(len(paths), "embedding", enabled=not args.quiet) as bar:
        for label, result in zip(labels, embedder.embed_paths(paths)):
            bar.advance()
            if result.ok:
                kept_labels.append(label)
                vectors.append(result.vector)
            else:
                skips.add(result.source, result.error)
    if len(vectors) < 2:
        raise UsageError("fewer than two images could be read: nothing to evaluate")
    vectors = np.stack(vectors)
    rows = _ranked_summary(vectors, kept_labels, args.k)
    whitened = None
    if args.whitening:
        whitened = _ranked_summary(Whitening.fit(vectors).transform(vectors), kept_labels, args.k)[-1]
    if args.format == "json":
        document = {"model": args.model, "k": args.k, "images": len(vectors), "overall": rows[-1],
                    "classes": rows[:-1]}
        if whitened is not None:
            document["whitening"] = {"before": rows[-1], "after": whitened}
        print(json.dumps(document, indent=2))
    else:
        write_rows(rows, list(rows[0]), "table")
        if whitened is not None:
            print()
            write_rows([{"vectors": "before", **rows[-1]}, {"vectors": "whitened", **whitened}],
                       ["vectors", *rows[-1]], "table")
    return skips.exit_code()


def _ranked_summary(vectors: np.ndarray, labels: list, k: int) -> list[dict]:
    _, neighbours = search(vectors, max(k, max(RECALL_AT)), metric="cosine")
    return summarise(labels, retrieval_metrics(np.array(labels), neighbours, k))
