"""The Numba and NumPy backends: search times on ordinary and far-from-origin data, and
concurrent Numba searches from several Python threads.

    PYTHONPATH=src python benchmarks/bench_fallbacks.py [--repeat 5] [--skip-concurrency]

Each figure is the median of ``--repeat`` runs after one warm-up. The concurrency table
times one search alone, then the same search started at once by 4 Python threads (each
with threads=1, and each with the default thread count): "4 at once / 1 alone" is 1.0 for
perfect overlap and 4.0 for searches that run one after another.
"""

from __future__ import annotations

import argparse
import threading

import numpy as np

import fastretrieve as fr
from fastretrieve import _backend, _numpy
from fastretrieve.cli.bench import median_seconds

try:
    from fastretrieve import _numba
except ImportError:
    _numba = None

# (label, rows, dim, metric, queries, k, offset)
SHAPES = [
    ("200k x 128 l2, 1 query", 200_000, 128, "l2", 1, 10, 0.0),
    ("200k x 128 l2, 16 queries", 200_000, 128, "l2", 16, 10, 0.0),
    ("50k x 512 ip, 256 queries", 50_000, 512, "ip", 256, 10, 0.0),
    ("50k x 128 cosine, 100 queries, k=100", 50_000, 128, "cosine", 100, 100, 0.0),
    ("200k x 64 l2, 16 queries, offset 1e3", 200_000, 64, "l2", 16, 10, 1e3),
]


def data(rows, dim, n_queries, offset, seed=0):
    rng = np.random.default_rng(seed)
    database = (offset + rng.standard_normal((rows, dim))).astype(np.float32)
    queries = (offset + rng.standard_normal((n_queries, dim))).astype(np.float32)
    return queries, database


def search_times(backends, repeat):
    print("| shape | " + " | ".join(b.NAME for b in backends) + " |")
    print("|---|" + "---|" * len(backends))
    for label, rows, dim, metric, n_queries, k, offset in SHAPES:
        queries, database = data(rows, dim, n_queries, offset)
        cells = []
        for backend in backends:
            _backend._active = backend
            seconds = median_seconds(
                lambda: fr.search(queries, k, database=database, metric=metric), repeat)
            cells.append(f"{seconds * 1e3:.1f} ms")
        print(f"| {label} | " + " | ".join(cells) + " |")


def concurrent_seconds(call, n_threads, repeat):
    def once():
        barrier = threading.Barrier(n_threads)

        def worker():
            barrier.wait()
            call()

        workers = [threading.Thread(target=worker) for _ in range(n_threads)]
        for worker_thread in workers:
            worker_thread.start()
        for worker_thread in workers:
            worker_thread.join()

    return median_seconds(once, repeat)


def concurrency(repeat):
    _backend._active = _numba
    queries, database = data(200_000, 128, 16, 0.0)
    print(f"\nNumba threading layer: {_numba.describe()}")
    print("| search (200k x 128 l2, 16 queries) | 1 alone | 4 at once | 4 at once / 1 alone |")
    print("|---|---|---|---|")
    for threads, label in ((1, "threads=1"), (None, "default threads")):
        def call():
            return fr.search(queries, 10, database=database, threads=threads)

        alone = median_seconds(call, repeat)
        together = concurrent_seconds(call, 4, repeat)
        print(f"| {label} | {alone * 1e3:.1f} ms | {together * 1e3:.1f} ms | "
              f"{together / alone:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-concurrency", action="store_true")
    args = parser.parse_args()
    backends = [b for b in (_numba, _numpy) if b is not None]
    print(f"cores available: {_backend.default_threads()}")
    search_times(backends, args.repeat)
    if _numba is not None and not args.skip_concurrency:
        concurrency(args.repeat)


if __name__ == "__main__":
    main()
