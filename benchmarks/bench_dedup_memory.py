"""Peak resident memory of ``fastretrieve dedup INDEX`` against the index's float32 size.

Builds a cosine index of N random 576-d vectors with the metadata the command line stores
(path, size, mtime_ns, sha256), saves it, then runs ``fastretrieve dedup`` on it in a
subprocess, sampling its resident set size every 0.1 s. With ``--max-seconds`` the run is
stopped after that long (a 1M-image self-join takes tens of minutes on 2 cores); the peak
is then the peak so far: the vectors are mapped and fully touched by the first block of
queries, so what remains to grow is the preallocated result arrays (N x 10 x 12 bytes).

    python benchmarks/bench_dedup_memory.py --rows 100000
    python benchmarks/bench_dedup_memory.py --rows 1000000 --max-seconds 120
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil

from fastretrieve import Index

DIM = 576


def build(path, rows, chunk=100_000):
    index = Index(DIM, metric="cosine")
    rng = np.random.default_rng(0)
    for start in range(0, rows, chunk):
        count = min(chunk, rows - start)
        index.add(
            rng.standard_normal((count, DIM), dtype=np.float32),
            metadata=[{"path": f"/photos/2024/album-{i // 1000:04d}/IMG_{i:07d}.jpg",
                       "size": 2_000_000 + i, "mtime_ns": 1_700_000_000_000_000_000 + i,
                       "sha256": f"{i:064x}"} for i in range(start, start + count)],
        )
    index.attributes = {"embedder": {"model": "classic", "fingerprint": "0" * 64}}
    index.save(path)


def peak_rss(command, max_seconds):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(process.pid)
    peak, start, finished = 0, time.monotonic(), True
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if max_seconds and time.monotonic() - start > max_seconds:
            process.kill()
            finished = False
            break
        time.sleep(0.1)
    process.wait()
    return peak, time.monotonic() - start, finished


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bench.fri")
        build(path, args.rows)
        command = [sys.executable, "-m", "fastretrieve", "dedup", path, "--threshold", "0.98",
                   "--format", "json", "-q"]
        peak, seconds, finished = peak_rss(command, args.max_seconds)
        float32_bytes = args.rows * DIM * 4
        state = "finished" if finished else "stopped early (peak so far)"
        print(f"N={args.rows} d={DIM}: peak RSS {peak / 2**20:.0f} MiB = "
              f"{peak / float32_bytes:.2f} x the float32 vectors ({float32_bytes / 2**20:.0f} MiB); "
              f"{seconds:.0f} s, {state}; index file {os.path.getsize(path) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
