"""int8 storage: recall@10 against float32 when the quantiser's first add is small.

The data imitates image descriptors: non-negative, sparse per cluster (each of 100
clusters uses a random third of the dimensions, so a batch of a few images leaves many
dimensions at zero; dimensions weighted unequally, over a ~30x range), square-rooted and
unit-normalised like the classic model's blocks.
Vectors are added as the command line adds them: a first add of ``--first`` vectors, then
batches of 32. Strategies:

- ``clip``: the quantiser fitted on the first add and never changed; later values
  outside its range clipped (fastretrieve before this change);
- ``widen m``: the range widened (and the stored vectors re-encoded) whenever an add
  falls outside it, by a margin m of the new width;
- ``fit on all``: one add of everything (the best a per-dimension fit can do).

    python benchmarks/bench_int8_fit.py --rows 20000 --dim 576
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from fastretrieve import Index, quantize


def clustered(rows, dim, seed, clusters=100):
    rng = np.random.default_rng(seed)
    # Dimensions of unequal weight (like the classic model's blocks): scales over ~30x.
    weights = np.random.default_rng(99).lognormal(0.0, 1.0, dim)
    centres = rng.gamma(1.0, 1.0, (clusters, dim)) * (rng.random((clusters, dim)) < 1 / 3) * weights
    labels = rng.integers(0, clusters, rows)
    data = centres[labels] * rng.lognormal(0.0, 0.3, (rows, dim))
    data = np.sqrt(data)
    return (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)


def build(vectors, first, batch=32):
    index = Index(vectors.shape[1], metric="cosine", dtype="int8")
    index.add(vectors[:first])
    for start in range(first, len(vectors), batch):
        index.add(vectors[start:start + batch])
    return index


def recall(index, exact, queries, k=10):
    _, truth = exact.search(queries, k)
    _, found = index.search(queries, k)
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(truth.tolist(), found.tolist())])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--first", type=int, nargs="+", default=[1, 32, 1000])
    parser.add_argument("--margins", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--floor", type=float, default=None, help="STEP_FLOOR override")
    args = parser.parse_args()
    vectors = clustered(args.rows, args.dim, seed=0)
    queries = clustered(200, args.dim, seed=1)
    exact = Index(args.dim, metric="cosine")
    exact.add(vectors)
    warnings.simplefilter("ignore", UserWarning)
    if args.floor is not None:
        quantize.STEP_FLOOR = args.floor
    real_covers, real_margin = quantize.Int8Codec.covers, quantize.WIDEN_MARGIN
    print(f"{args.rows} x {args.dim} clustered, recall@10 against float32, 200 queries")
    print("first add | strategy | recall@10 | widenings | build s")
    strategies = [("clip", None)] + [(f"widen {m}", m) for m in args.margins]
    real_widened = quantize.Int8Codec.widened_to
    widenings = []

    def counting_widened_to(self, rows):
        widenings.append(1)
        return real_widened(self, rows)

    quantize.Int8Codec.widened_to = counting_widened_to
    for first in args.first:
        for name, margin in strategies:
            if margin is None:
                quantize.Int8Codec.covers = lambda self, rows: True
            else:
                quantize.Int8Codec.covers, quantize.WIDEN_MARGIN = real_covers, margin
            widenings.clear()
            start = time.perf_counter()
            index = build(vectors, first)
            seconds = time.perf_counter() - start
            print(f"{first} | {name} | {recall(index, exact, queries):.3f} | {len(widenings)} "
                  f"| {seconds:.1f}", flush=True)
    quantize.Int8Codec.covers, quantize.WIDEN_MARGIN = real_covers, real_margin
    whole = Index(args.dim, metric="cosine", dtype="int8")
    whole.add(vectors)
    print(f"all | fit on all | {recall(whole, exact, queries):.3f} | 0 |")


if __name__ == "__main__":
    main()
