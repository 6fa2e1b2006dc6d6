"""Loading a million-entry index with per-entry metadata, and ``fastretrieve search``
against a million-image index, end to end.

    python benchmarks/bench_index_load.py [--rows 1000000] [--dim 64] [--repeats 5]
        [--folder DIR] [--compare-src OTHER_CHECKOUT/src] [--cli-dtype float32] [--skip-cli]

1. Load. Writes one index of ``--rows`` random ``--dim``-dimensional float32 vectors,
   each with metadata shaped as ``fastretrieve index`` stores it (path, size, mtime_ns,
   sha256), in format version 2 and, with the same contents, in format version 1. Each
   is loaded with ``Index.load(path, mmap=True)`` in a fresh process, ``--repeats``
   times (the file in the page cache: written just before); reported are the median
   load time, the resident memory the load added (``VmRSS`` of /proc/self/status
   before and after) and the time of ``get_metadata`` of 10 random ids. With
   ``--compare-src`` the version 1 file is also loaded by another checkout's package
   (e.g. the code before version 2) in the same run.

2. Search. Writes a ``--rows``-entry image index exactly as ``fastretrieve index``
   writes one with the default model (efficientnet-lite0, 1280 dimensions, cosine,
   ``--cli-dtype`` storage; the model record from `new_image_index`, metadata per
   entry), without embedding a million images: the vectors are random unit vectors.
   Then runs ``python -m fastretrieve search INDEX QUERY.jpg -k 10 --format json`` as
   a subprocess, ``--repeats`` times after one warm-up, and reports the median wall
   time, plus a breakdown of one in-process run (import, load, model, embed, search,
   metadata of the results).

The vectors are written through a temporary memory-mapped file, so building a 5 GB
index needs little memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from embed_fixtures import photo  # noqa: E402

from fastretrieve import Embedder  # noqa: E402
from fastretrieve import index_format  # noqa: E402
from fastretrieve.cli.image_index import new_image_index  # noqa: E402
from fastretrieve.quantize import make_codec  # noqa: E402
from fastretrieve.search import as_float32_matrix  # noqa: E402

CHUNK_ROWS = 65_536

_LOADER = """
import json, sys, time
import numpy as np

def resident():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

from fastretrieve import Index
np.ones(4).sum()  # let NumPy settle its own allocations before measuring
before = resident()
start = time.perf_counter()
index = Index.load(sys.argv[1], mmap=True)
load = time.perf_counter() - start
after = resident()
ids = index.ids[np.random.default_rng(0).choice(len(index), 10, replace=False)].tolist()
start = time.perf_counter()
values = index.get_metadata(ids)
metadata = time.perf_counter() - start
assert all(value["path"].endswith(".jpg") for value in values)
print(json.dumps({"load_s": load, "new_rss_bytes": after - before, "metadata_s": metadata}))
"""

_SEARCH_BREAKDOWN = """
import sys, time
start = time.perf_counter()
from fastretrieve import Embedder, Index
imported = time.perf_counter()
index = Index.load(sys.argv[1], mmap=True)
loaded = time.perf_counter()
embedder = Embedder(index.attributes["embedder"]["model"])
model = time.perf_counter()
query = embedder.embed([sys.argv[2]])
embedded = time.perf_counter()
_, ids = index.search(query, 10)
searched = time.perf_counter()
index.get_metadata(ids[0].tolist())
done = time.perf_counter()
print(f"import {imported - start:.3f} s, load {loaded - imported:.3f} s, "
      f"model {model - loaded:.3f} s, embed {embedded - model:.3f} s, "
      f"search {searched - embedded:.3f} s, metadata of 10 {done - searched:.3f} s")
"""


def entry_metadata(row: int) -> dict:
    """What ``fastretrieve index`` stores for one file."""
    return {"path": f"/home/user/Pictures/{row // 1000:04d}/IMG_{row:07d}.jpg",
            "size": 2_000_000 + row, "mtime_ns": 1_700_000_000_000_000_000 + row,
            "sha256": f"{row * 2654435761 % 2**256:064x}"}


def random_codes(path: Path, rows: int, dim: int, dtype: str, metric: str):
    """(codes memory-mapped from ``path``, norms, codec state): random vectors encoded
    for storage, unit-normalised for cosine, written one chunk at a time."""
    generator = np.random.default_rng(0)
    codec = make_codec(dtype)
    codes = np.lib.format.open_memmap(path, "w+", codec.stored_dtype, (rows, dim))
    norms = np.empty(rows, np.float32)
    for start in range(0, rows, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, rows)
        chunk = generator.standard_normal((stop - start, dim), dtype=np.float32)
        if metric == "cosine":
            chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        if not codec.fitted:
            codec = codec.fitted_to(chunk)
        chunk = codec.encode(np.clip(chunk, *(
            (codec.low, codec.low + 255 * codec.step) if dtype == "int8" else (-np.inf, np.inf))))
        codes[start:stop] = chunk
        decoded, _ = as_float32_matrix(codec.decode(chunk), "rows")
        norms[start:stop] = np.einsum("ij,ij->i", decoded, decoded)
    codes.flush()
    return codes, norms, codec.state()


def write_version_2(path, *, dim, metric, dtype, codes, norms, quantizer, attributes, values):
    encoded = [index_format.encode_item(value) for value in values]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(item) for item in encoded], out=offsets[1:])
    ids = np.arange(len(codes), dtype=np.int64)
    index_format.write_index(
        path, dim=dim, metric=metric, dtype=dtype, next_auto_id=len(ids), vectors=codes,
        norms=norms, ids=ids, id_order=ids, quantizer=quantizer,
        attributes_json=index_format.encode_attributes(attributes),
        item_offsets=offsets, item_chunks=[b"".join(encoded)],
    )


def write_version_1(path, *, dim, metric, dtype, codes, norms, quantizer, attributes, values):
    """The same index as format version 1 stored it: one metadata JSON document."""
    ids = np.arange(len(codes), dtype=np.int64)
    document = {"attributes": attributes, "items": {str(i): v for i, v in enumerate(values)}}
    metadata = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    payloads = [memoryview(codes.reshape(-1).view(np.uint8)), memoryview(norms.view(np.uint8)),
                memoryview(ids.view(np.uint8)), memoryview(quantizer.view(np.uint8)),
                memoryview(metadata)]
    offsets, _ = index_format._layout([len(payload) for payload in payloads])
    table = []
    with open(path, "wb") as file:
        file.write(bytes(index_format.HEADER_SIZE))
        for offset, payload in zip(offsets, payloads):
            file.write(bytes(offset - file.tell()))
            crc = 0
            for start in range(0, len(payload), 1 << 24):
                crc = zlib.crc32(payload[start : start + (1 << 24)], crc)
                file.write(payload[start : start + (1 << 24)])
            table.append((offset, len(payload), crc))
        file.seek(0)
        file.write(index_format._header(dim, metric, dtype, len(ids), len(ids), table, version=1))


def environment(source: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    return env


def measure_loads(path: Path, repeats: int, source: Path) -> dict:
    runs = []
    for _ in range(repeats):
        output = subprocess.run([sys.executable, "-c", _LOADER, str(path)], env=environment(source),
                                capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(output))
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def report_load(name: str, figures: dict) -> None:
    print(f"  {name:<34} load {figures['load_s'] * 1000:8.1f} ms   "
          f"new RSS {figures['new_rss_bytes'] / 2**20:7.1f} MiB   "
          f"get_metadata(10 ids) {figures['metadata_s'] * 1000:6.2f} ms")


def bench_load(folder: Path, rows: int, dim: int, repeats: int, compare_src: Path | None) -> None:
    values = [entry_metadata(row) for row in range(rows)]
    codes, norms, quantizer = random_codes(folder / "codes.npy", rows, dim, "float32", "l2")
    contents = dict(dim=dim, metric="l2", dtype="float32", codes=codes, norms=norms,
                    quantizer=quantizer, attributes={"note": "bench_index_load"}, values=values)
    paths = {2: folder / "load-v2.fridx", 1: folder / "load-v1.fridx"}
    write_version_2(paths[2], **contents)
    write_version_1(paths[1], **contents)
    del codes
    os.unlink(folder / "codes.npy")
    print(f"Index.load(mmap=True), {rows} entries x {dim} float32 with metadata "
          f"(v2 file {paths[2].stat().st_size / 2**20:.0f} MiB), median of {repeats} fresh processes:")
    report_load("format version 2", measure_loads(paths[2], repeats, ROOT / "src"))
    report_load("format version 1 (this reader)", measure_loads(paths[1], repeats, ROOT / "src"))
    if compare_src:
        report_load(f"format version 1 ({compare_src})", measure_loads(paths[1], repeats, compare_src))
    for path in paths.values():
        os.unlink(path)


def bench_search(folder: Path, rows: int, dtype: str, repeats: int) -> None:
    embedder = Embedder("efficientnet-lite0")
    record = new_image_index("efficientnet-lite0", embedder, dtype)
    codes, norms, quantizer = random_codes(folder / "codes.npy", rows, embedder.dim, dtype, "cosine")
    index_path = folder / "photos.fri"
    write_version_2(index_path, dim=embedder.dim, metric="cosine", dtype=dtype, codes=codes,
                    norms=norms, quantizer=quantizer, attributes=record.attributes,
                    values=[entry_metadata(row) for row in range(rows)])
    del codes
    os.unlink(folder / "codes.npy")
    query = folder / "query.jpg"
    photo("chelsea").save(query, "JPEG", quality=90)
    command = [sys.executable, "-m", "fastretrieve", "search", str(index_path), str(query),
               "-k", "10", "--format", "json"]
    times = []
    for _ in range(repeats + 1):  # the first run warms the page cache
        start = time.perf_counter()
        subprocess.run(command, env=environment(ROOT / "src"), check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    print(f"fastretrieve search, {rows} images x {embedder.dim} {dtype} "
          f"({index_path.stat().st_size / 2**30:.2f} GiB index), one query image, -k 10:")
    print(f"  end to end (subprocess wall time): first {times[0]:.3f} s, "
          f"median of the next {repeats} {statistics.median(times[1:]):.3f} s")
    breakdown = subprocess.run([sys.executable, "-c", _SEARCH_BREAKDOWN, str(index_path), str(query)],
                               env=environment(ROOT / "src"), check=True, capture_output=True,
                               text=True).stdout.strip()
    print(f"  one run in process: {breakdown}")
    os.unlink(index_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64, help="dimension of the load benchmark")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder", type=Path, help="where to write the files (default: a temporary folder)")
    parser.add_argument("--compare-src", type=Path, help="another checkout's src/ to load version 1 with")
    parser.add_argument("--cli-dtype", default="float32", help="storage of the search benchmark's index")
    parser.add_argument("--skip-cli", action="store_true", help="only the load benchmark")
    parser.add_argument("--skip-load", action="store_true", help="only the search benchmark")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        if not args.skip_load:
            bench_load(Path(folder), args.rows, args.dim, args.repeats, args.compare_src)
        if not args.skip_cli:
            bench_search(Path(folder), args.rows, args.cli_dtype, args.repeats)


if __name__ == "__main__":
    main()
