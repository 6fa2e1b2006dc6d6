"""A/B of two builds of the C++ extension: which one is faster, shape by shape.

Loads two `_core` shared objects side by side in one process (under different module
names) and times the same `knn` call on each, alternating A, B, A, B, ... on the same
data, so that a noisy machine slows both alike (every_shape.py's timing: at least 3 calls
each, up to about 0.3 s of calls for short ones). Prints per shape both medians and the
ratio A / B (above 1: B is faster), and checks that both builds return the same
neighbours and distances.

    # before: build the old commit's extension somewhere, e.g.
    #   git worktree add /tmp/old OLD && cmake -S /tmp/old -B /tmp/old/build ... && ninja -C /tmp/old/build
    python benchmarks/ab_cores.py OLD/_core*.so NEW/_core*.so --shapes compare --threads 2
    python benchmarks/ab_cores.py OLD/_core*.so NEW/_core*.so --shapes few-queries --threads 1

``compare``: the shapes of the performance table (compare.py) plus short rows at few
queries; ``few-queries``: 10k rows, d from 32 to 768, 1 to 16 queries.
"""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np
from every_shape import engine_medians  # benchmarks/ is the script's folder, on sys.path

# (rows, dim, metric, queries, k)
COMPARE_SHAPES = [
    (1_000_000, 128, "l2", 1, 10), (1_000_000, 128, "l2", 16, 10),
    (1_000_000, 128, "l2", 256, 10), (100_000, 128, "l2", 1000, 10),
    (200_000, 512, "ip", 1, 10), (200_000, 512, "ip", 16, 10), (200_000, 512, "ip", 1000, 10),
    (100_000, 128, "l2", 100, 100), (100_000, 128, "l2", 100, 1000),
    (1000, 128, "l2", 1, 10), (250_000, 40, "l2", 2, 10), (100_000, 100, "l2", 4, 10),
]
FEW_QUERY_SHAPES = [(10_000, dim, "l2", queries, 10)
                    for dim in (32, 48, 64, 96, 128, 200, 384, 512, 768)
                    for queries in (1, 2, 4, 7, 8, 16)]
SHAPES = {"compare": COMPARE_SHAPES, "few-queries": FEW_QUERY_SHAPES}


def load_core(path, name):
    spec = importlib.util.spec_from_file_location(f"{name}._core", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_a", help="path of the first _core shared object")
    parser.add_argument("build_b", help="path of the second _core shared object")
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="compare")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    builds = {"A": load_core(args.build_a, "build_a"), "B": load_core(args.build_b, "build_b")}
    rng = np.random.default_rng(0)
    ratios = []
    print(f"threads {args.threads}; A = {args.build_a}; B = {args.build_b}")
    print("| shape | A ms | B ms | A / B |")
    print("|---|---|---|---|")
    for rows, dim, metric, n_queries, k in SHAPES[args.shapes]:
        database = rng.standard_normal((rows, dim), dtype=np.float32)
        queries = rng.standard_normal((n_queries, dim), dtype=np.float32)

        def call(build):
            return build.knn(queries, database, k, metric, args.threads)

        results = [call(build) for build in builds.values()]
        if not all(np.array_equal(a, b) for a, b in zip(*results)):
            raise SystemExit(f"the builds disagree on {rows}x{dim} {metric} nq={n_queries}")
        a, b = engine_medians([lambda build=build: call(build) for build in builds.values()],
                              repeats=3)
        ratios.append(a / b)
        print(f"| {rows}x{dim} {metric} nq={n_queries} k={k} | {a * 1e3:.3f} | {b * 1e3:.3f} | "
              f"{a / b:.3f} |", flush=True)
    print(f"geometric mean of A / B: {float(np.exp(np.mean(np.log(ratios)))):.3f}")


if __name__ == "__main__":
    main()
