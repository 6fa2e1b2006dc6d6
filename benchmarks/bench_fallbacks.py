"""The Numba and NumPy backends: search times on ordinary and far-from-origin data, and
concurrent Numba searches from several Python threads.

    PYTHONPATH=src python benchmarks/bench_fallbacks.py [--repeat 5] [--skip-concurrency]
        [--skip-shapes]

Each figure is the median of ``--repeat`` runs after one warm-up. The concurrency table
times one search alone, then the same search started at once by 4 Python threads (each
with threads=1, and each with the default thread count), without the lock (a thread-safe
threading layer) and with searches taking turns (as under the workqueue layer):
"4 at once / 1 alone" is 1.0 for perfect overlap and 4.0 for searches that run one after
another; "cores busy" is the process's CPU time over the wall time.
"""

from __future__ import annotations

import argparse
import threading
import time

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
    """Median wall time of ``n_threads`` Python threads each making ``call`` at once, and
    the process's CPU time over that wall time (cores kept busy) in the median run."""
    runs = []
    for _ in range(repeat + 1):  # the first is a warm-up
        barrier = threading.Barrier(n_threads)

        def worker():
            barrier.wait()
            call()

        workers = [threading.Thread(target=worker) for _ in range(n_threads)]
        cpu, wall = time.process_time(), time.perf_counter()
        for worker_thread in workers:
            worker_thread.start()
        for worker_thread in workers:
            worker_thread.join()
        wall = time.perf_counter() - wall
        runs.append((wall, (time.process_time() - cpu) / wall))
    return sorted(runs[1:])[len(runs[1:]) // 2]


def concurrency(repeat):
    _backend._active = _numba
    queries, database = data(200_000, 128, 16, 0.0)
    fr.search(queries, 10, database=database)  # the first launch settles the layer
    print(f"\nNumba threading layer: {_numba.describe()['numba_threading_layer']}")
    print("| 200k x 128 l2, 16 queries | 1 alone | 4 at once | 4 at once / 1 alone "
          "| cores busy, 1 / 4 |")
    print("|---|---|---|---|---|")
    thread_safe_layers = _numba._THREADSAFE_LAYERS
    for threads in (1, None):
        for locked in (False, True):
            # locked: searches take turns, as they must under the workqueue layer.
            _numba._THREADSAFE_LAYERS = () if locked else thread_safe_layers

            def call():
                return fr.search(queries, 10, database=database, threads=threads)

            alone, alone_busy = concurrent_seconds(call, 1, repeat)
            together, together_busy = concurrent_seconds(call, 4, repeat)
            label = f"threads={threads or 'default'}, {'one at a time' if locked else 'no lock'}"
            print(f"| {label} | {alone * 1e3:.1f} ms | {together * 1e3:.1f} ms | "
                  f"{together / alone:.2f} | {alone_busy:.2f} / {together_busy:.2f} |")
    _numba._THREADSAFE_LAYERS = thread_safe_layers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-concurrency", action="store_true")
    parser.add_argument("--skip-shapes", action="store_true",
                        help="only the concurrency table (it needs the cores idle)")
    args = parser.parse_args()
    backends = [b for b in (_numba, _numpy) if b is not None]
    print(f"cores available: {_backend.default_threads()}")
    if not args.skip_shapes:
        search_times(backends, args.repeat)
    if _numba is not None and not args.skip_concurrency:
        concurrency(args.repeat)


if __name__ == "__main__":
    main()
