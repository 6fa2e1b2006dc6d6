"""Index persistence and search benchmark: save, load (mapped and read), resident memory,
search latency through `Index` against `fastretrieve.search` on the same vectors.

    PYTHONPATH=src python benchmarks/bench_index.py --rows 1000000 --dim 128

Prints a Markdown table. Loading is measured in a fresh subprocess, so its resident
memory is not mixed with the memory of the index that was just built.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def _best_of(repeats, function):
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return min(timings)


def measure_load(path):
    """Run in a subprocess: load timings and resident-memory growth, as JSON."""
    import psutil

    from fastretrieve import Index

    process = psutil.Process()
    results = {}
    before = process.memory_info().rss
    start = time.perf_counter()
    mapped = Index.load(path, mmap=True)
    results["load_mmap_s"] = time.perf_counter() - start
    results["load_mmap_rss_mib"] = (process.memory_info().rss - before) / 2**20
    query = np.random.default_rng(1).standard_normal((1, mapped.dim)).astype(np.float32)
    start = time.perf_counter()
    mapped.search(query, 10)
    results["first_search_after_mmap_s"] = time.perf_counter() - start
    results["rss_after_first_search_mib"] = (process.memory_info().rss - before) / 2**20
    del mapped
    start = time.perf_counter()
    Index.load(path, mmap=True, verify=True)
    results["load_mmap_verify_s"] = time.perf_counter() - start
    start = time.perf_counter()
    Index.load(path, mmap=False)
    results["load_read_s"] = time.perf_counter() - start
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--metric", default="l2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--directory", default=None, help="where to write the index file")
    parser.add_argument("--measure-load", metavar="PATH", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.measure_load:
        print(json.dumps(measure_load(arguments.measure_load)))
        return

    import fastretrieve
    from fastretrieve import Index

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((arguments.rows, arguments.dim), dtype=np.float32)
    index = Index(arguments.dim, metric=arguments.metric)
    start = time.perf_counter()
    index.add(vectors)
    add_s = time.perf_counter() - start

    rows = {}
    for batch in (1, 100):
        queries = rng.standard_normal((batch, arguments.dim), dtype=np.float32)
        rows[f"search {batch} quer{'y' if batch == 1 else 'ies'}, k=10: Index"] = _best_of(
            arguments.repeats, lambda: index.search(queries, 10)
        )
        rows[f"search {batch} quer{'y' if batch == 1 else 'ies'}, k=10: fastretrieve.search"] = (
            _best_of(arguments.repeats, lambda: fastretrieve.search(
                queries, 10, database=vectors, metric=arguments.metric))
        )

    with tempfile.TemporaryDirectory(dir=arguments.directory) as directory:
        path = os.path.join(directory, "bench.fridx")
        start = time.perf_counter()
        index.save(path)
        save_s = time.perf_counter() - start
        size_mib = os.path.getsize(path) / 2**20
        del index, vectors
        loaded = json.loads(subprocess.run(
            [sys.executable, __file__, "--measure-load", path],
            check=True, capture_output=True, text=True, env=os.environ,
        ).stdout)

    backend = fastretrieve.capabilities()["backend"]
    print(f"Index {arguments.rows} x {arguments.dim} float32, metric {arguments.metric}, "
          f"backend {backend}, {os.cpu_count()} cores; file {size_mib:.0f} MiB\n")
    print("| measurement | value |\n|---|---|")
    print(f"| add (one batch) | {add_s:.3f} s |")
    print(f"| save (atomic, fsync) | {save_s:.3f} s |")
    print(f"| load(mmap=True) | {loaded['load_mmap_s'] * 1000:.1f} ms |")
    print(f"| resident memory growth after load(mmap=True) | {loaded['load_mmap_rss_mib']:.1f} MiB |")
    print(f"| first search after load(mmap=True), 1 query | {loaded['first_search_after_mmap_s']:.3f} s |")
    print(f"| resident memory growth after that search | {loaded['rss_after_first_search_mib']:.0f} MiB |")
    print(f"| load(mmap=True, verify=True) | {loaded['load_mmap_verify_s']:.3f} s |")
    print(f"| load(mmap=False) | {loaded['load_read_s']:.3f} s |")
    for name, seconds in rows.items():
        print(f"| {name} (best of {arguments.repeats}) | {seconds * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
