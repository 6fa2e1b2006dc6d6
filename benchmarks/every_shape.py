"""Exact k-NN on every shape: fastretrieve against FAISS's flat index, d x N x queries.

For each dimension d, database size N and query count, both engines search the same
random-normal float32 data with the same thread count, k=10, l2; each time is the median
of the repeats after one warm-up (more repeats than --repeats where a call is short, up to
about 0.3 s of calls per engine and cell), interleaved (fastretrieve, FAISS, fastretrieve, ...) so
that a noisy machine slows both alike. Printed per cell: both times, the ratio FAISS /
fastretrieve, and the share of a roofline: at 1 query the read bandwidth reached (bytes of
the database / time) against the read bandwidth this script measures first, from 4
queries on the arithmetic rate (2 N d q flop / time).

    python benchmarks/every_shape.py                       # the full table of BENCHMARKS.md
    python benchmarks/every_shape.py --max-bytes 300e6     # skip databases above 300 MB
    python benchmarks/every_shape.py --order blocked       # each engine's calls in a run

``--order blocked`` times each engine's calls one after another (ours, then FAISS's, in
two rounds) instead of alternating them. It matters for sub-millisecond cells: after each
call FAISS's OpenMP threads keep spinning for a while, and an alternating run hands the
next call of ours two cores that are still busy (10k x 512, 4 queries: 594 us alone,
1122 us alternating with FAISS, while FAISS's own time did not change).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

import fastretrieve as fr

DIMS = [32, 48, 64, 96, 128, 200, 384, 512, 768, 1000, 1536, 2048]
ROWS = [10_000, 100_000, 1_000_000, 4_000_000]
QUERIES = [1, 4, 16, 256]


def read_bandwidth(threads, n_bytes=1 << 30, repeats=5):
    """Bytes per second of `threads` threads each summing its share of one array."""
    data = np.ones(n_bytes // 4, np.float32)
    parts = np.array_split(data, threads)

    def one_pass():
        workers = [threading.Thread(target=np.add.reduce, args=(part,)) for part in parts]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.perf_counter() - start

    one_pass()
    return n_bytes / min(one_pass() for _ in range(repeats))


# Sub-millisecond cells get more repeats than --repeats, up to about this many seconds of
# calls per engine: a median of 5 calls of 50 us is mostly scheduler noise.
MIN_SECONDS_PER_CELL = 0.3
MAX_REPEATS = 500


def engine_medians(calls, repeats, blocked=False):
    """Median seconds of each of ``calls``: alternated, or with ``blocked`` each in runs of
    its own; at least ``repeats`` calls each, more for short ones (MIN_SECONDS_PER_CELL)."""
    slowest = 0.0
    for call in calls:  # the warm-up, which also sizes the repeats
        start = time.perf_counter()
        call()
        slowest = max(slowest, time.perf_counter() - start)
    repeats = max(repeats, min(MAX_REPEATS, int(MIN_SECONDS_PER_CELL / max(slowest, 1e-6))))
    times = [[] for _ in calls]
    if blocked:  # each engine's calls in a run of their own, twice
        for _ in range(2):
            for call, bucket in zip(calls, times):
                call()  # its first call after the other engine's is a warm-up
                for _ in range(max(1, repeats // 2)):
                    start = time.perf_counter()
                    call()
                    bucket.append(time.perf_counter() - start)
        return [float(np.median(bucket)) for bucket in times]
    for _ in range(repeats):
        for call, bucket in zip(calls, times):
            start = time.perf_counter()
            call()
            bucket.append(time.perf_counter() - start)
    return [float(np.median(bucket)) for bucket in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=fr.capabilities()["threads"])
    parser.add_argument("--max-bytes", type=float, default=4e9,
                        help="skip databases larger than this (default 4e9)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dims", type=int, nargs="*", default=DIMS)
    parser.add_argument("--rows", type=int, nargs="*", default=ROWS)
    parser.add_argument("--queries", type=int, nargs="*", default=QUERIES)
    parser.add_argument("--order", choices=("interleaved", "blocked"), default="interleaved",
                        help="alternate the engines' calls, or time each engine's in a run")
    args = parser.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    bandwidth = read_bandwidth(args.threads)
    print(f"threads {args.threads}, order {args.order}, "
          f"measured read bandwidth {bandwidth / 1e9:.1f} GB/s, "
          f"faiss {faiss.__version__}, fastretrieve {fr.__version__} {fr.capabilities()['simd']}")
    print("d | N | queries | fastretrieve ms | FAISS ms | FAISS / fastretrieve | roofline share")
    rng = np.random.default_rng(0)
    for dim in args.dims:
        for rows in args.rows:
            n_bytes = rows * dim * 4
            if n_bytes > args.max_bytes:
                continue
            database = rng.standard_normal((rows, dim), dtype=np.float32)
            index = faiss.IndexFlatL2(dim)
            index.add(database)
            for n_queries in args.queries:
                queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
                ours, theirs = engine_medians(
                    [lambda: fr.search(queries, 10, database=database, threads=args.threads),
                     lambda: index.search(queries, 10)],
                    args.repeats, blocked=args.order == "blocked")
                if n_queries == 1:
                    share = f"{n_bytes / ours / bandwidth:.0%} of bandwidth"
                else:
                    share = f"{2 * rows * dim * n_queries / ours / 1e9:.0f} GFLOP/s"
                print(f"{dim} | {rows} | {n_queries} | {ours * 1e3:.3f} | {theirs * 1e3:.3f} | "
                      f"{theirs / ours:.2f} | {share}", flush=True)
            del database, index


if __name__ == "__main__":
    main()
