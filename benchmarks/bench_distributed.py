"""fastretrieve.distributed on this machine: pipeline images/s and ShardedIndex latency.

    PYTHONPATH=src python benchmarks/bench_distributed.py [--images 1000] [--rows 200000]

1. Embedding: ``--images`` JPEG photos (800 px, as ``bench_cli_index.py`` writes them)
   indexed by the local command line (``fastretrieve index``, a subprocess), then by
   :func:`fastretrieve.distributed.embed_to_shards` with 1 and 2 embedding actors on a
   local Ray cluster of all the CPUs (Ray already started: its start-up is reported
   apart). Each pipeline run writes into a fresh folder, so everything is embedded.
2. Search: ``--rows`` random unit vectors of 576 dimensions (the classic model's) in one
   `Index` and in `ShardedIndex`es of 1, 2 and 4 shards (one actor per shard, one search
   thread per actor), cosine, k=10, 1 and 16 queries; median of ``--repeats`` calls after
   a warm-up call. The one `Index` is searched with 1 thread and with all the cores.
   The fan-out floor: the same number of shards of 1,000 rows (the scan costs ~nothing,
   leaving the Ray round trip and the merge); and the merge alone for 64 shards.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli_index import run_index, write_images  # noqa: E402

from fastretrieve.cli.bench import median_seconds  # noqa: E402

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def median_ms(call, repeats):
    return 1000 * median_seconds(call, repeats)


def bench_embedding(scratch: Path, images: int) -> None:
    from fastretrieve.distributed import embed_to_shards

    folder = scratch / "images"
    folder.mkdir()
    write_images(folder, images, 800)
    summary, wall = run_index(folder, scratch / "local.fri")
    print(f"local fastretrieve index: {summary['images_per_second']:.1f} images/s "
          f"(command's own figure; process wall time {wall:.2f} s)")
    paths = sorted(str(p) for p in folder.iterdir())
    cpus = os.cpu_count()
    for workers in (1, 2):
        # The actors share all the CPUs but half of one, left to the decoding tasks; each
        # runs ceil(its CPUs) ONNX Runtime threads.
        per_worker = (cpus - 0.5) / workers
        start = time.perf_counter()
        result = embed_to_shards(paths, scratch / f"shards-{workers}", shard_size=250, workers=workers,
                                 num_cpus_per_worker=per_worker, num_cpus_per_decode=0.5)
        wall = time.perf_counter() - start
        print(f"pipeline, {workers} embedding actor(s) of {per_worker:g} CPU: "
              f"{result.images_per_second:.1f} images/s ({result.processed} files in {wall:.2f} s, "
              "Ray Data and actor start-up included)")


def bench_search(scratch: Path, rows: int, repeats: int) -> None:
    from fastretrieve import Index
    from fastretrieve.distributed import ShardedIndex, manifest_from_shards, write_manifest
    from fastretrieve.distributed.merge import merge_topk

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rows, 576)).astype(np.float32)
    queries = {n: rng.standard_normal((n, 576)).astype(np.float32) for n in (1, 16)}
    whole = Index(576, metric="cosine")
    whole.add(vectors)
    for n, q in queries.items():
        for threads in (1, None):
            ms = median_ms(lambda: whole.search(q, 10, threads=threads), repeats)
            print(f"one Index, {rows} rows, {n} queries, threads={threads or os.cpu_count()}: {ms:.2f} ms")
    for shards in (1, 2, 4):
        folder = scratch / f"search-{shards}"
        folder.mkdir()
        files = []
        for number, part in enumerate(np.array_split(np.arange(rows), shards)):
            shard = Index(576, metric="cosine")
            shard.add(vectors[part], ids=part)
            files.append(folder / f"shard-{number}.fri")
            shard.save(files[-1])
        write_manifest(folder / "manifest.json", manifest_from_shards(files))
        with ShardedIndex(folder / "manifest.json", num_cpus=0.25) as sharded:
            for n, q in queries.items():
                assert np.array_equal(sharded.search(q, 10)[1], whole.search(q, 10)[1])
                ms = median_ms(lambda: sharded.search(q, 10), repeats)
                print(f"ShardedIndex, {shards} shard(s) x {rows // shards} rows, {n} queries: {ms:.2f} ms")
        # The fan-out's own cost: the same shards cut to 1,000 rows each, where the
        # scan costs ~nothing, leave the Ray round trip and the merge.
        tiny = scratch / f"tiny-{shards}"
        tiny.mkdir()
        files = []
        for number in range(shards):
            shard = Index(576, metric="cosine")
            shard.add(vectors[number * 1000:(number + 1) * 1000], ids=np.arange(number * 1000, (number + 1) * 1000))
            files.append(tiny / f"shard-{number}.fri")
            shard.save(files[-1])
        write_manifest(tiny / "manifest.json", manifest_from_shards(files))
        with ShardedIndex(tiny / "manifest.json", num_cpus=0.25) as sharded:
            ms = median_ms(lambda: sharded.search(queries[16], 10), repeats)
            print(f"fan-out floor: ShardedIndex, {shards} shard(s) x 1000 rows, 16 queries: {ms:.2f} ms")
    per_shard = [whole.search(queries[16], 10)] * 64
    ms = median_ms(lambda: merge_topk(per_shard, 10, "cosine", 16), repeats)
    print(f"merge alone: 64 shards' top 10 of 16 queries: {ms:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--skip-embedding", action="store_true")
    args = parser.parse_args()
    import ray

    start = time.perf_counter()
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    print(f"ray {ray.__version__}: local cluster of {os.cpu_count()} CPUs started in "
          f"{time.perf_counter() - start:.1f} s")
    try:
        with tempfile.TemporaryDirectory(prefix="fastretrieve-bench-") as scratch:
            if not args.skip_embedding:
                bench_embedding(Path(scratch), args.images)
            bench_search(Path(scratch), args.rows, args.repeats)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
