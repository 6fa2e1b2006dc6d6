"""fastretrieve.sklearn.NearestNeighbors against sklearn.neighbors.NearestNeighbors with
algorithm="brute", "kd_tree" and "ball_tree", in one run.

Each estimator is fitted once (tree builds are timed and reported apart); then the calls
are interleaved -- fastretrieve, brute, kd_tree, ball_tree, again -- and each figure is the
median of the repeats (fast calls repeat for two seconds at least). Wrapper overhead is included on both sides (input validation, the
float64 distances scikit-learn returns, graph and object-array construction). Both sides
use every core (n_jobs=-1; scikit-learn's brute force uses its BLAS threads). The ratio
column is the fastest scikit-learn algorithm's time over fastretrieve's. "agree" is the
fraction of result rows whose neighbour set equals scikit-learn brute force's.

Trees are slow on these random-normal shapes (their strength is data of low intrinsic
dimension), so beyond --tree-queries queries a tree is timed on the first --tree-queries
of them and its time scaled by the query count (query time is linear in it); such cells
are marked "~". A self-join graph is then timed as kneighbors of that many fitted rows.

    python benchmarks/bench_sklearn.py            # the shapes of BENCHMARKS.md
    python benchmarks/bench_sklearn.py --quick    # smaller shapes, about a minute
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
from sklearn import neighbors as sk

import fastretrieve as fr
from fastretrieve.sklearn import NearestNeighbors

SKLEARN_ALGORITHMS = ("brute", "kd_tree", "ball_tree")

# (label, kind, database rows, dim, queries); kind: "kneighbors" (k=10) against the
# database, "graph" (kneighbors_graph of the fitted data itself, k=10, self excluded),
# "radius" (radius_neighbors, radius set for about 20 neighbours per query).
FULL_SHAPES = [
    ("kneighbors 100k x 128, 1 query", "kneighbors", 100_000, 128, 1),
    ("kneighbors 100k x 128, 16 queries", "kneighbors", 100_000, 128, 16),
    ("kneighbors 100k x 128, 256 queries", "kneighbors", 100_000, 128, 256),
    ("kneighbors 100k x 128, 1000 queries", "kneighbors", 100_000, 128, 1000),
    ("kneighbors_graph self-join 20k x 64", "graph", 20_000, 64, None),
    ("kneighbors_graph self-join 50k x 16", "graph", 50_000, 16, None),
    ("radius_neighbors 100k x 32, 16 queries", "radius", 100_000, 32, 16),
    ("radius_neighbors 100k x 32, 1000 queries", "radius", 100_000, 32, 1000),
]
QUICK_SHAPES = [
    ("kneighbors 20k x 128, 1 query", "kneighbors", 20_000, 128, 1),
    ("kneighbors 20k x 128, 256 queries", "kneighbors", 20_000, 128, 256),
    ("kneighbors_graph self-join 5k x 16", "graph", 5_000, 16, None),
    ("radius_neighbors 20k x 32, 100 queries", "radius", 20_000, 32, 100),
]
K = 10
MIN_SECONDS = 2.0  # per engine and shape, for fast calls
MAX_RUNS = 41
TARGET_NEIGHBOURS = 20  # radius shapes: about this many neighbours per query


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def radius_for(database, queries, neighbours):
    """A Euclidean radius with about `neighbours` rows inside, from a sample of queries."""
    sample = queries[: min(len(queries), 32)].astype(np.float64)
    rows = database.astype(np.float64)
    squared = (sample**2).sum(1)[:, None] + (rows**2).sum(1)[None, :] - 2 * sample @ rows.T
    return float(np.sqrt(np.median(np.sort(squared, axis=1)[:, neighbours - 1])))


def call_for(kind, model, queries, radius):
    if kind == "kneighbors":
        return lambda: model.kneighbors(queries, K)
    if kind == "graph":
        return lambda: model.kneighbors_graph(None, K, mode="distance")
    return lambda: model.radius_neighbors(queries, radius)


def sampled_tree_call(kind, model, database, queries, radius, cap):
    """(call, scale): the tree's call on the first `cap` queries and the factor to the full
    count, or the full call and 1 when there are no more than `cap` queries."""
    total = len(database) if kind == "graph" else len(queries)
    if total <= cap:
        return call_for(kind, model, queries, radius), 1.0
    if kind == "graph":  # the first rows as queries; one more neighbour stands for the self
        return (lambda: model.kneighbors(database[:cap], K + 1)), total / cap
    return call_for(kind, model, queries[:cap], radius), total / cap


def neighbour_sets(kind, result):
    """One frozenset of indices per result row, to compare engines."""
    if kind == "graph":
        return [frozenset(result.indices[a:b]) for a, b in zip(result.indptr, result.indptr[1:])]
    return [frozenset(row.tolist()) for row in result[1]]


def run_shape(label, kind, rows, dim, n_queries, repeats, budget_seconds, tree_queries):
    rng = np.random.default_rng(0)
    database = rng.standard_normal((rows, dim), dtype=np.float32)
    queries = None if n_queries is None else rng.standard_normal((n_queries, dim), dtype=np.float32)
    radius = radius_for(database, queries, TARGET_NEIGHBOURS) if kind == "radius" else None
    models = {"fastretrieve": NearestNeighbors(n_jobs=-1)}
    for algorithm in SKLEARN_ALGORITHMS:
        models[algorithm] = sk.NearestNeighbors(algorithm=algorithm, n_jobs=-1)
    fit_seconds, calls, scales = {}, {}, {}
    for name, model in models.items():
        fit_seconds[name], _ = timed(lambda model=model: model.fit(database))
        if name in ("kd_tree", "ball_tree"):
            calls[name], scales[name] = sampled_tree_call(kind, model, database, queries, radius,
                                                          tree_queries)
        else:
            calls[name], scales[name] = call_for(kind, model, queries, radius), 1.0
    # Rounds interleave the engines. Each engine repeats until it has `repeats` runs and
    # MIN_SECONDS of them (so that fast calls get many runs and a robust median on a busy
    # machine), or until it has spent `budget_seconds`; a first run under a second is a
    # warm-up.
    times = {name: [] for name in models}
    spent = {name: 0.0 for name in models}
    results = {}

    def wants_more(name):
        enough = len(times[name]) >= repeats and spent[name] >= MIN_SECONDS
        return not enough and spent[name] < budget_seconds and len(times[name]) < MAX_RUNS

    first = True
    while first or any(wants_more(name) for name in models):
        for name, call in calls.items():
            if not first and not wants_more(name):
                continue
            seconds, result = timed(call)
            if first:
                results[name] = result
                if seconds < 1.0:
                    continue  # warm-up only
            spent[name] += seconds
            times[name].append(seconds)
        first = False
    medians = {name: statistics.median(values) * scales[name] for name, values in times.items()}
    reference = neighbour_sets(kind, results["brute"])
    agree = np.mean([a == b for a, b in zip(neighbour_sets(kind, results["fastretrieve"]),
                                            reference)])
    fastest = min(SKLEARN_ALGORITHMS, key=medians.get)
    return {
        "label": label, "medians": medians, "runs": {n: len(t) for n, t in times.items()},
        "fit": fit_seconds, "fastest": fastest, "ratio": medians[fastest] / medians["fastretrieve"],
        "agree": agree, "radius": radius, "scaled": {n: scales[n] != 1.0 for n in models},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds per engine and shape after which repeats stop")
    parser.add_argument("--tree-queries", type=int, default=200,
                        help="queries timed per tree call; more are extrapolated")
    args = parser.parse_args()
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    caps = fr.capabilities()
    print(f"# {platform.processor() or platform.machine()}, backend {caps['backend']}, "
          f"SIMD {caps['simd']}, {caps['threads']} threads; repeats {args.repeats}")
    print("| shape | fastretrieve ms | brute ms | kd_tree ms | ball_tree ms | fastest sklearn "
          "| ratio | agree | tree fits (kd / ball) s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        row = run_shape(*shape, args.repeats, args.budget, args.tree_queries)
        cell = {name: ("~" if row["scaled"][name] else "") + f"{seconds * 1e3:.1f}"
                for name, seconds in row["medians"].items()}
        print(f"| {row['label']} | {cell['fastretrieve']} | {cell['brute']} | "
              f"{cell['kd_tree']} | {cell['ball_tree']} | {row['fastest']} | "
              f"{row['ratio']:.2f}x | {row['agree']:.3f} | "
              f"{row['fit']['kd_tree']:.2f} / {row['fit']['ball_tree']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
