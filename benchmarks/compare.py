"""Side-by-side exact k-NN timings: fastretrieve against FAISS, NumPy and usearch.

Every engine searches the same random-normal float32 data in the same process, with the
same thread count; each figure is the median of several repeats after one warm-up, and
the table reports ratios (FAISS time / fastretrieve time), which survive the noise of a
shared machine better than absolute times. FAISS and usearch are optional: an engine
that is not installed is skipped with a note.

    python benchmarks/compare.py              # the shapes of BENCHMARKS.md
    python benchmarks/compare.py --quick      # smaller shapes, a few seconds
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

import fastretrieve as fr
from fastretrieve.cli.bench import median_seconds, numpy_search

# (label, database rows, dim, metric, queries, k)
FULL_SHAPES = [
    ("1M x 128 l2, 1 query", 1_000_000, 128, "l2", 1, 10),
    ("1M x 128 l2, 16 queries", 1_000_000, 128, "l2", 16, 10),
    ("1M x 128 l2, 256 queries", 1_000_000, 128, "l2", 256, 10),
    ("100k x 128 l2, 1000 queries", 100_000, 128, "l2", 1000, 10),
    ("200k x 512 ip, 1 query", 200_000, 512, "ip", 1, 10),
    ("200k x 512 ip, 16 queries", 200_000, 512, "ip", 16, 10),
    ("200k x 512 ip, 1000 queries", 200_000, 512, "ip", 1000, 10),
    ("100k x 128 l2, 100 queries, k=100", 100_000, 128, "l2", 100, 100),
    ("100k x 128 l2, 100 queries, k=1000", 100_000, 128, "l2", 100, 1000),
    ("1k x 128 l2, 1 query (call overhead)", 1_000, 128, "l2", 1, 10),
]
QUICK_SHAPES = [
    ("100k x 128 l2, 1 query", 100_000, 128, "l2", 1, 10),
    ("100k x 128 l2, 16 queries", 100_000, 128, "l2", 16, 10),
    ("20k x 512 ip, 100 queries", 20_000, 512, "ip", 100, 10),
    ("1k x 128 l2, 1 query (call overhead)", 1_000, 128, "l2", 1, 10),
]


def engines(threads):
    """name -> factory(database, metric) returning search(queries, k), or a skip note."""
    found = {}

    def fastretrieve_engine(database, metric):
        return lambda q, k: fr.search(q, k, database=database, metric=metric, threads=threads)

    found["fastretrieve"] = fastretrieve_engine

    def numpy_engine(database, metric):
        return lambda q, k: numpy_search(q, database, k, metric)

    found["numpy"] = numpy_engine
    try:
        from usearch.index import MetricKind
        from usearch.index import search as usearch_search

        kinds = {"l2": MetricKind.L2sq, "ip": MetricKind.IP}

        def usearch_engine(database, metric):
            return lambda q, k: usearch_search(database, q, k, kinds[metric], exact=True,
                                               threads=threads)

        found["usearch"] = usearch_engine
    except ImportError:
        found["usearch"] = "not installed (pip install usearch)"
    try:
        import faiss

        faiss.omp_set_num_threads(threads)

        def faiss_engine(database, metric):
            index = (faiss.IndexFlatL2 if metric == "l2" else faiss.IndexFlatIP)(database.shape[1])
            index.add(database)
            return lambda q, k: index.search(q, k)

        found["faiss"] = faiss_engine
    except ImportError:
        found["faiss"] = "not installed (pip install faiss-cpu)"
    return found


def describe_machine(threads):
    caps = fr.capabilities()
    features = ", ".join(name for name, on in caps["cpu_features"].items() if on) or "none"
    return (f"{platform.processor() or platform.machine()}; fastretrieve backend "
            f"{caps['backend']}, SIMD {caps['simd']}; CPU features: {features}; "
            f"threads used: {threads}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, a few seconds")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per figure")
    parser.add_argument("--threads", type=int, default=fr.capabilities()["threads"])
    parser.add_argument("--only", help="run only the shapes whose label contains this text")
    args = parser.parse_args(argv)

    available = engines(args.threads)
    print(describe_machine(args.threads))
    for name, engine in available.items():
        if isinstance(engine, str):
            print(f"note: {name} skipped: {engine}")
    runnable = {n: e for n, e in available.items() if not isinstance(e, str)}
    names = list(runnable)
    header = f"| shape | {' | '.join(n + ' ms' for n in names)} |"
    ratio_names = [n for n in names if n != "fastretrieve"]
    header += "".join(f" {n} / fastretrieve |" for n in ratio_names)
    print(header)
    print("|" + "---|" * (1 + len(names) + len(ratio_names)))
    rng = np.random.default_rng(0)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    for label, rows, dim, metric, n_queries, k in shapes:
        if args.only and args.only not in label:
            continue
        database = rng.standard_normal((rows, dim), dtype=np.float32)
        queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
        repeats = args.repeats if rows * n_queries <= 50_000_000 else max(3, args.repeats // 2)
        medians = {}
        for name in names:
            search = runnable[name](database, metric)
            medians[name] = median_seconds(lambda: search(queries, k), repeats)
            # FAISS's OpenMP threads keep spinning after a call and would slow whatever is
            # timed next: every engine gets a pause to go idle, and FAISS runs last.
            time.sleep(0.5)
        cells = [f"{medians[n] * 1e3:.3f}" if medians[n] < 0.01 else f"{medians[n] * 1e3:.1f}"
                 for n in names]
        ratios = [f"{medians[n] / medians['fastretrieve']:.2f}" for n in ratio_names]
        print(f"| {label} | {' | '.join(cells)} | {' | '.join(ratios)} |", flush=True)


if __name__ == "__main__":
    main()
