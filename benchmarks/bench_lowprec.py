"""Low-precision Index storage: search time against float32 and FAISS, and recall@10.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_lowprec.py [--repeat 7] [--quick]

1. N=1M d=128 l2, 1 query, k=10: Index float32 / float16 / bfloat16 / int8, median search
   time of the same run (the searches interleave, so drift hits every dtype alike).
2. N=200k d=512 ip, 1000 queries, k=10: Index bfloat16 against FAISS IndexFlatIP (fp32),
   and, where the CPU has AVX512-BF16, the same Index search forced to the avx512 level
   (float32 arithmetic instead of the bfloat16 screen).
3. recall@10 of each dtype against the exact float32 answer, on random normal data and on
   unit-normalised clustered data (a mixture of Gaussians, queries from the same mixture).
Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import fastretrieve
from fastretrieve import Index

DTYPES = ("float32", "float16", "bfloat16", "int8")


def random_normal(rows, dim, seed):
    return np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)


def clustered_unit(rows, dim, seed, clusters=100, spread=0.35):
    """A mixture of Gaussians around random unit centres, each row normalised to unit length."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((rows, dim), dtype=np.float32) * (spread / np.sqrt(dim))
    data = centres[rng.integers(0, clusters, rows)] + noise
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def build(vectors, metric, dtype):
    index = Index(vectors.shape[1], metric=metric, dtype=dtype)
    index.add(vectors)
    return index


def median_times(searches, repeat):
    """{name: median seconds}, the callables interleaved round by round."""
    times = {name: [] for name in searches}
    for name, run in searches.items():  # warm-up: page faults, first-use dispatch
        run(0)
    for round_ in range(repeat):
        for name, run in searches.items():
            start = time.perf_counter()
            run(round_ + 1)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def recall_at_10(truth, found):
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth.tolist(), found.tolist())]))


def single_query_speed(rows, repeat):
    data = random_normal(rows, 128, seed=1)
    queries = random_normal(repeat + 1, 128, seed=2)
    indexes = {dtype: build(data, "l2", dtype) for dtype in DTYPES}
    searches = {dtype: (lambda i, ix=ix: ix.search(queries[i], 10)) for dtype, ix in indexes.items()}
    times = median_times(searches, repeat)
    print(f"\n## 1. N={rows} d=128 l2, 1 query, k=10 (median of {repeat})\n")
    print("| storage | median ms | speed-up vs float32 |\n|---|---|---|")
    for dtype in DTYPES:
        print(f"| {dtype} | {times[dtype] * 1e3:.2f} | {times['float32'] / times[dtype]:.2f}x |")
    recall_queries = random_normal(100, 128, seed=3)
    _, truth = indexes["float32"].search(recall_queries, 10)
    print("\nrecall@10 against float32 (random normal, l2, 100 queries): " + ", ".join(
        f"{dtype} {recall_at_10(truth, indexes[dtype].search(recall_queries, 10)[1]):.4f}"
        for dtype in DTYPES[1:]))


def at_simd_level(level, search):
    """`search` wrapped to run with the C++ kernels forced to `level` (restored after)."""
    from fastretrieve import _core

    def run(*args):
        previous = _core.simd_level()
        _core.force_simd_level(level)
        try:
            return search(*args)
        finally:
            _core.force_simd_level(previous)

    return run


def many_queries_vs_faiss(rows, n_queries, repeat):
    import faiss

    data = random_normal(rows, 512, seed=4)
    queries = random_normal(n_queries, 512, seed=5)
    bf16 = build(data, "ip", "bfloat16")
    flat = faiss.IndexFlatIP(512)
    flat.add(data)
    searches = {"fastretrieve Index bfloat16": lambda i: bf16.search(queries, 10)}
    levels = fastretrieve.capabilities().get("simd_levels", [])
    if "avx512_bf16" in levels:  # the same search in float32 arithmetic, for the screen's gain
        searches["... forced to avx512 (float32 arithmetic)"] = at_simd_level(
            "avx512", lambda i: bf16.search(queries, 10))
    searches["FAISS IndexFlatIP float32"] = lambda i: flat.search(queries, 10)
    times = median_times(searches, repeat)
    base = times["FAISS IndexFlatIP float32"]
    flops = 2.0 * rows * 512 * n_queries
    print(f"\n## 2. N={rows} d=512 ip, {n_queries} queries, k=10 (median of {repeat}, "
          f"faiss threads {faiss.omp_get_max_threads()})\n")
    print("| search | median s | speed-up vs FAISS | GFLOP/s (2 N d per query) |\n|---|---|---|---|")
    for name, value in times.items():
        print(f"| {name} | {value:.3f} | {base / value:.2f}x | {flops / value / 1e9:.0f} |")
    _, truth = flat.search(queries, 10)
    _, found = bf16.search(queries, 10)
    print(f"\nrecall@10 of bfloat16 against FAISS fp32 (exact): {recall_at_10(truth, found):.4f}")


def clustered_recall(rows):
    data = clustered_unit(rows + 100, 128, seed=6)
    data, queries = data[:rows], data[rows:]
    print(f"\n## 3. recall@10, unit-normalised mixture of 100 Gaussians, N={rows} d=128, "
          "100 held-out queries\n")
    print("| metric | " + " | ".join(DTYPES[1:]) + " |\n|---|---|---|---|")
    for metric in ("ip", "l2"):
        _, truth = build(data, metric, "float32").search(queries, 10)
        values = [recall_at_10(truth, build(data, metric, dtype).search(queries, 10)[1])
                  for dtype in DTYPES[1:]]
        print(f"| {metric} | " + " | ".join(f"{v:.4f}" for v in values) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    caps = fastretrieve.capabilities()
    print(f"# fastretrieve low-precision storage\n\nbackend {caps['backend']}, "
          f"simd {caps.get('simd')}, threads {caps.get('threads')}")
    single_query_speed(1_000_000 // scale, args.repeat)
    many_queries_vs_faiss(200_000 // scale, 1000, max(3, args.repeat // 2))
    clustered_recall(200_000 // scale)


if __name__ == "__main__":
    main()
