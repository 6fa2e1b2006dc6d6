"""``fastretrieve bench``: a short exact-search benchmark against NumPy (and FAISS).

Each engine searches the same random float32 data in this process; a figure is the
median of ``--repeats`` timed runs after one warm-up; ``fastretrieve_speedup`` says how
many times faster fastretrieve was than each engine. It takes a few seconds with the
defaults; ``benchmarks/compare.py`` in the source tree runs the full comparison.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

from .. import capabilities, search
from .errors import UsageError
from .indexing import positive_int
from .output import write_rows

EXAMPLES = """\
examples:
  fastretrieve bench
  fastretrieve bench --rows 1000000 --dim 128 --queries 1
  fastretrieve bench --metric ip --format json
"""


def numpy_search(queries, database, k, metric):
    """The usual NumPy brute force: one matrix product, argpartition, sort the k best."""
    scores = queries @ database.T
    if metric == "l2":  # the ranking only needs |x|^2 - 2<q, x>
        scores = np.einsum("ij,ij->i", database, database)[None, :] - 2 * scores
    else:
        scores = -scores
    best = np.argpartition(scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, best, axis=1).argsort(axis=1)
    return np.take_along_axis(best, order, axis=1)


def faiss_search_or_none(database, metric):
    """A FAISS flat-index search function, or None when FAISS is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    index = faiss.IndexFlatL2(database.shape[1]) if metric == "l2" else faiss.IndexFlatIP(database.shape[1])
    index.add(database)
    return lambda queries, k: index.search(queries, k)


def median_seconds(function, repeats: int) -> float:
    """Median wall time of ``function()`` over ``repeats`` runs, after one warm-up."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_benchmark(rows: int, dim: int, queries: int, k: int, metric: str, repeats: int) -> list[dict]:
    """Time each engine on one shape; rows of engine, milliseconds, queries/s, speed-up."""
    generator = np.random.default_rng(0)
    database = generator.standard_normal((rows, dim), dtype=np.float32)
    query_vectors = generator.standard_normal((queries, dim), dtype=np.float32)
    engines = {
        f"fastretrieve ({capabilities()['backend']})":
            lambda: search(query_vectors, k, database=database, metric=metric),
        "numpy": lambda: numpy_search(query_vectors, database, k, metric),
    }
    faiss_search = faiss_search_or_none(database, metric)
    if faiss_search is not None:
        engines["faiss (IndexFlat)"] = lambda: faiss_search(query_vectors, k)
    times = {name: median_seconds(engine, repeats) for name, engine in engines.items()}
    reference = next(iter(times.values()))
    return [
        {"engine": name, "ms": seconds * 1e3, "queries_per_s": queries / seconds,
         "fastretrieve_speedup": seconds / reference}
        for name, seconds in times.items()
    ]


def add_parser(add_command) -> None:
    """Register the ``bench`` command."""
    parser = add_command(
        "bench", help="time exact search against NumPy (and FAISS)",
        description=__doc__.split("\n\n", 1)[1].strip(),
        epilog=EXAMPLES,
    )
    parser.add_argument("--rows", type=positive_int, default=100_000, help="database vectors (default: 100000)")
    parser.add_argument("--dim", type=positive_int, default=128, help="dimension (default: 128)")
    parser.add_argument("--queries", type=positive_int, default=100, help="queries per search (default: 100)")
    parser.add_argument("-k", type=positive_int, default=10, help="neighbours (default: 10)")
    parser.add_argument("--metric", choices=("l2", "ip"), default="l2",
                        help="l2 or ip (cosine is ip on normalised vectors; FAISS has no cosine index)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs per engine (default: 3)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Run ``fastretrieve bench``."""
    if args.k > args.rows:
        raise UsageError(f"-k {args.k} exceeds --rows {args.rows}")
    results = run_benchmark(args.rows, args.dim, args.queries, args.k, args.metric, args.repeats)
    shape = {"rows": args.rows, "dim": args.dim, "queries": args.queries, "k": args.k, "metric": args.metric}
    if args.format == "json":
        print(json.dumps({**shape, "results": results}, indent=2))
    else:
        print(", ".join(f"{key} {value}" for key, value in shape.items()))
        write_rows(results, ["engine", "ms", "queries_per_s", "fastretrieve_speedup"], "table")
    return 0
