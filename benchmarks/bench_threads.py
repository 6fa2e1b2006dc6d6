"""Thread scaling of the C++ kernels: one bandwidth-bound and two compute-bound shapes.

    PYTHONPATH=src python benchmarks/bench_threads.py [--threads 1 2 4 8 16] [--repeat 5]

Columns (k=10, random normal float32, medians; GB/s and GFLOP/s count the database read
once and 2 N d flops per query):
1. N=1M d=128 l2, 1 query (bandwidth-bound);
2. N=100k d=128 l2, 1000 queries (compute-bound, float32);
3. N=200k d=512 ip, 1000 queries, Index bfloat16 at the default SIMD level, and the same
   search forced to avx512 (float32 arithmetic), where the CPU has AVX-512.
Ends with a check that both levels returned the same neighbours. Prints a Markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np

import fastretrieve
from bench_lowprec import at_simd_level
from fastretrieve import Index
from fastretrieve.cli.bench import median_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    caps = fastretrieve.capabilities()
    has_avx512 = "avx512" in caps.get("simd_levels", [])
    print(f"backend {caps['backend']}, default simd {caps.get('simd')}, "
          f"cores available {caps.get('threads')}\n")

    rng = np.random.default_rng(0)
    big = rng.standard_normal((1_000_000, 128), dtype=np.float32)
    one = rng.standard_normal((1, 128), dtype=np.float32)
    mid, many = big[:100_000], rng.standard_normal((1000, 128), dtype=np.float32)
    wide = rng.standard_normal((200_000, 512), dtype=np.float32)
    wide_queries = rng.standard_normal((1000, 512), dtype=np.float32)
    bf16 = Index(512, metric="ip", dtype="bfloat16")
    bf16.add(wide)

    print("| threads | 1M x 128 l2, 1 query: ms (GB/s) | 100k x 128 l2, 1000 queries: ms "
          "(GFLOP/s) | 200k x 512 ip, 1000 queries, bfloat16 Index: ms (GFLOP/s) | "
          "same, forced to avx512: ms |\n|---|---|---|---|---|")
    for threads in args.threads:
        a = median_seconds(lambda: fastretrieve.search(one, 10, database=big, threads=threads),
                           args.repeat)
        b = median_seconds(lambda: fastretrieve.search(many, 10, database=mid, threads=threads),
                           args.repeat)
        c = median_seconds(lambda: bf16.search(wide_queries, 10, threads=threads), args.repeat)
        d = (median_seconds(at_simd_level("avx512", lambda: bf16.search(
            wide_queries, 10, threads=threads)), args.repeat) if has_avx512 else float("nan"))
        print(f"| {threads} | {a * 1e3:.2f} ({big.nbytes / a / 1e9:.0f}) | "
              f"{b * 1e3:.1f} ({2 * mid.size * 1000 / b / 1e9:.0f}) | "
              f"{c * 1e3:.1f} ({2 * wide.size * 1000 / c / 1e9:.0f}) | {d * 1e3:.1f} |")
    if has_avx512:
        _, default_ids = bf16.search(wide_queries[:50], 10)
        _, float32_ids = at_simd_level("avx512", lambda: bf16.search(wide_queries[:50], 10))()
        print("\nsame neighbours at the default level and at avx512 (50 queries):",
              bool((default_ids == float32_ids).all()))


if __name__ == "__main__":
    main()
