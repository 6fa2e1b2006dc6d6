"""Data far from the origin: recall against a float64 brute force, and what exactness costs.

Rows are 1,000 + 0.05 x noise (unnormalised features, coordinates, sensor readings) and the
queries near-copies of the first rows. Part 1 prints recall@10 of fastretrieve and of
FAISS's flat index against the float64 oracle. Part 2 times the same search at offset 0 and
at offset 1,000 (median of the repeats after a warm-up): the second, centred scan that data
far from the origin needs is the difference.

    python benchmarks/bench_far_from_origin.py
"""

from __future__ import annotations

import argparse

import numpy as np

import fastretrieve as fr
from fastretrieve.cli.bench import median_seconds


def far_data(rng, rows, queries, dim, offset, spread=0.05):
    base = rng.standard_normal((rows, dim))
    database = (offset + spread * base).astype(np.float32)
    near = (database[:queries] + 0.2 * spread * rng.standard_normal((queries, dim)))
    return near.astype(np.float32), database


def recall_table(rng):
    try:
        import faiss
    except ImportError:
        faiss = None
    print("rows | queries | FAISS recall@10 | fastretrieve recall@10 | fastretrieve = oracle order")
    for rows, n_queries in [(5_000, 20), (200_000, 1), (200_000, 50)]:
        queries, database = far_data(rng, rows, n_queries, 64, 1000.0)
        exact = np.stack([((database.astype(np.float64) - q) ** 2).sum(1) for q in queries])
        truth = np.argsort(exact, axis=1, kind="stable")[:, :10]

        def recall(found):
            return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])

        _, ours = fr.search(queries, 10, database=database)
        theirs = "not installed"
        if faiss is not None:
            index = faiss.IndexFlatL2(64)
            index.add(database)
            theirs = f"{recall(index.search(queries, 10)[1]):.3f}"
        print(f"{rows} | {n_queries} | {theirs} | {recall(ours):.3f} | {np.array_equal(ours, truth)}")


def cost_table(rng, repeats):
    print("shape | offset 0 ms | offset 1000 ms | ratio")
    for rows, dim, n_queries in [(200_000, 64, 1), (200_000, 64, 16), (200_000, 64, 1000)]:
        base = rng.standard_normal((rows, dim)).astype(np.float32)
        nudged = base[:n_queries] + 0.2 * rng.standard_normal((n_queries, dim)).astype(np.float32)
        times = []
        for offset in (0.0, 1000.0):
            database = (offset + 0.05 * base).astype(np.float32)
            queries = (offset + 0.05 * nudged).astype(np.float32)
            times.append(median_seconds(lambda: fr.search(queries, 10, database=database), repeats))
        print(f"{rows} x {dim}, {n_queries} queries | {times[0] * 1e3:.2f} | {times[1] * 1e3:.2f} | "
              f"{times[1] / times[0]:.2f}x", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    recall_table(rng)
    cost_table(rng, args.repeats)


if __name__ == "__main__":
    main()
