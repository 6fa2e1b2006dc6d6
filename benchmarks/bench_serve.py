"""Load test of `fastretrieve serve` on loopback: requests/s, p50 and p99 latency.

    python benchmarks/bench_serve.py                       # everything below, ~10 min
    python benchmarks/bench_serve.py --shapes 100000x128 --duration 3 --skip-image

- search by vector (1M x 128 l2 and 200k x 512 ip by default), 1/16/64 concurrent
  clients, batching on (the service's defaults) and off (one search per request, 40
  worker threads: what a plain FastAPI endpoint calling `Index.search` would do);
- search by image with the built-in model: images/s through the service against
  `Embedder.embed` offline on the same images;
- the same search-by-vector load against Chroma's HTTP server (`chroma run`) and Milvus
  Lite (FLAT, exact), with recall@10 against the exact answer (``--competitors``; they
  run from the interpreter given by ``--competitor-python``, which must have chromadb,
  milvus-lite and pymilvus; the `bench` extra installs them).

The load generator is a closed loop: each client has its own keep-alive connection and
sends its next request when the previous answer is read; requests are encoded once up
front and sent over raw asyncio streams, so the client costs little CPU. Client and
server share the machine's cores (``--pin`` puts them on separate cores with taskset).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fastretrieve as fr

QUERIES = 256
K = 10
UNBATCHED = ["--max-batch", "1", "--max-wait-ms", "0", "--search-workers", "40"]


# -- the load generator -------------------------------------------------------------------


def http_post(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    """One encoded HTTP/1.1 keep-alive POST request."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode() + body


async def _read_response(reader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while True:  # chunked
        size = int((await reader.readline()).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, body
        body += chunk[:-2]


async def _client(port, requests, offset, stop_at, latencies, statuses):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(requests[i % len(requests)])
            status, _ = await _read_response(reader)
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1
            i += 1
    finally:
        writer.close()


async def _load(port, requests, clients, seconds):
    latencies, statuses = [], {}
    stop_at = time.perf_counter() + seconds
    start = time.perf_counter()
    await asyncio.gather(*(_client(port, requests, c * 7, stop_at, latencies, statuses)
                           for c in range(clients)))
    return latencies, statuses, time.perf_counter() - start


def run_load(port, requests, clients, seconds, warmup=1.0) -> dict:
    """Closed-loop load: requests/s, p50 and p99 latency in ms, and the status counts."""
    asyncio.run(_load(port, requests, clients, warmup))
    latencies, statuses, elapsed = asyncio.run(_load(port, requests, clients, seconds))
    latencies = np.array(latencies) * 1000
    return {"clients": clients, "rps": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "statuses": statuses}


# -- our service ---------------------------------------------------------------------------


class Server:
    """`fastretrieve serve INDEX` in a subprocess (optionally pinned to cores)."""

    def __init__(self, index_path, *options, cores=None):
        command = [sys.executable, "-m", "fastretrieve", "serve", str(index_path), "--port", "0",
                   "--read-only", *options]
        if cores:
            command = ["taskset", "-c", cores, *command]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        for line in self.process.stdout:
            if line.startswith("listening on "):
                self.port = int(line.rsplit(":", 1)[1])
                break
        else:
            raise RuntimeError("the service did not start")
        import httpx
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the service never became ready")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)
        self.process.stdout.close()


def make_index(directory, count, dim, metric, seed=0):
    """A saved random index and its vectors."""
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    index = fr.Index(dim, metric=metric)
    index.add(vectors)
    path = Path(directory) / f"bench-{count}x{dim}.fri"
    index.save(path)
    return path, vectors


def search_requests(queries):
    return [http_post("/v1/search", json.dumps({"vectors": [q.tolist()], "k": K}).encode())
            for q in queries]


def bench_vectors(args, directory, report):
    for shape in args.shapes:
        count, dim = map(int, shape.split("x"))
        metric = "l2" if dim <= 128 else "ip"
        path, vectors = make_index(directory, count, dim, metric)
        queries = np.random.default_rng(1).normal(size=(QUERIES, dim)).astype(np.float32)
        requests = search_requests(queries)
        for mode, options in (("batched", []), ("unbatched", UNBATCHED)):
            server = Server(path, *options, cores=args.server_cores)
            try:
                for clients in args.clients:
                    row = run_load(server.port, requests, clients, args.duration)
                    row.update(shape=shape, metric=metric, mode=mode)
                    report["vector"].append(row)
                    print(json.dumps(row), flush=True)
            finally:
                server.stop()
        del vectors
        path.unlink()


def bench_wait_sweep(args, directory, report):
    """The search queue's max wait, measured at 1 and 64 clients (its default's basis)."""
    count, dim = map(int, args.sweep_shape.split("x"))
    path, _ = make_index(directory, count, dim, "l2")
    queries = np.random.default_rng(1).normal(size=(QUERIES, dim)).astype(np.float32)
    requests = search_requests(queries)
    for wait_ms in args.sweep_waits:
        for max_batch in args.sweep_batches:
            server = Server(path, "--max-wait-ms", str(wait_ms), "--max-batch", str(max_batch),
                            cores=args.server_cores)
            try:
                for clients in (1, 16, 64):
                    row = run_load(server.port, requests, clients, args.duration)
                    row.update(shape=args.sweep_shape, max_wait_ms=wait_ms, max_batch=max_batch)
                    report["sweep"].append(row)
                    print(json.dumps(row), flush=True)
            finally:
                server.stop()
    path.unlink()


def bench_images(args, directory, report):
    """Search by image through the service against `Embedder.embed` offline. The machine
    is shared, so the offline rate is measured right before and right after each service
    measurement and the ratio uses their mean."""
    embedder = fr.Embedder("classic")
    samples = sorted(Path(fr.__file__).with_name("samples").glob("*.jpg"))
    images = [p.read_bytes() for p in samples]
    embedder.embed(images)  # warm up

    def offline_rate():
        batch = images * 8
        start = time.perf_counter()
        embedder.embed(batch)
        return len(batch) / (time.perf_counter() - start)

    index = fr.Index(embedder.dim, metric="cosine")
    index.attributes = {"embedder": {"format": 1, "model": "classic",
                                     "fingerprint": embedder.fingerprint}}
    index.add(embedder.embed(images))
    path = Path(directory) / "images.fri"
    index.save(path)
    requests = [http_post(f"/v1/search/image?k={K}", image, "application/octet-stream")
                for image in images]
    server = Server(path, cores=args.server_cores)
    try:
        for clients in (1, 16, 64):
            before = offline_rate()
            row = run_load(server.port, requests, clients, args.duration)
            after = offline_rate()
            offline = (before + after) / 2
            row.update(offline_before=before, offline_after=after, ratio=row["rps"] / offline)
            report["image"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.stop()


# -- competitors ----------------------------------------------------------------------------


def recall_at_k(found_ids, exact_ids):
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found_ids, exact_ids)]))


def bench_competitors(args, directory, report):
    count, dim = map(int, args.competitor_shape.split("x"))
    path, vectors = make_index(directory, count, dim, "l2")
    queries = np.random.default_rng(1).normal(size=(QUERIES, dim)).astype(np.float32)
    _, exact = fr.search(queries[:100], K, database=vectors)
    np.save(Path(directory) / "vectors.npy", vectors)
    np.save(Path(directory) / "queries.npy", queries)
    import httpx

    # Ours, on the same vectors.
    server = Server(path, cores=args.server_cores)
    try:
        found = [httpx.post(f"http://127.0.0.1:{server.port}/v1/search",
                            json={"vectors": [q.tolist()], "k": K}).json()["results"][0]["ids"]
                 for q in queries[:100]]
        for clients in args.clients:
            row = run_load(server.port, search_requests(queries), clients, args.duration)
            row.update(engine="fastretrieve serve", recall=recall_at_k(found, exact))
            report["competitors"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.stop()
    if "chroma" in args.competitors:
        bench_chroma(args, directory, vectors, queries, exact, report)
    if "milvus" in args.competitors:
        helper = Path(__file__).with_name("bench_serve_milvus.py")
        for clients in args.clients:
            output = subprocess.run(
                [args.competitor_python, str(helper), str(directory), str(clients),
                 str(args.duration), str(K)], capture_output=True, text=True, timeout=3600)
            if output.returncode != 0:
                print("milvus lite failed:", output.stderr[-2000:], flush=True)
                break
            row = json.loads(output.stdout.strip().splitlines()[-1])
            row["recall"] = recall_at_k(row.pop("found")[:100], exact)
            row.update(engine="Milvus Lite (FLAT, pymilvus gRPC threads)", clients=clients)
            report["competitors"].append(row)
            print(json.dumps(row), flush=True)
    path.unlink()


def bench_chroma(args, directory, vectors, queries, exact, report):
    import httpx

    chroma = Path(args.competitor_python).with_name("chroma")
    port = 18765
    process = subprocess.Popen([str(chroma), "run", "--path", str(Path(directory) / "chroma"),
                                "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api/v2/tenants/default_tenant/databases/default_database"
    try:
        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        with httpx.Client(timeout=600) as client:
            collection = client.post(f"{base}/collections", json={
                "name": "bench", "metadata": {"hnsw:space": "l2"}}).json()
            cid = collection["id"]
            start = time.perf_counter()
            for first in range(0, len(vectors), 5000):
                block = vectors[first:first + 5000]
                answer = client.post(f"{base}/collections/{cid}/add", json={
                    "ids": [str(i) for i in range(first, first + len(block))],
                    "embeddings": block.tolist()})
                answer.raise_for_status()
            load_s = time.perf_counter() - start
            query_path = f"/api/v2/tenants/default_tenant/databases/default_database/collections/{cid}/query"
            found = []
            for q in queries[:100]:
                answer = client.post(f"http://127.0.0.1:{port}{query_path}", json={
                    "query_embeddings": [q.tolist()], "n_results": K, "include": ["distances"]})
                found.append([int(i) for i in answer.json()["ids"][0]])
        requests = [http_post(query_path, json.dumps({
            "query_embeddings": [q.tolist()], "n_results": K, "include": ["distances"]}).encode())
            for q in queries]
        for clients in args.clients:
            row = run_load(port, requests, clients, args.duration)
            row.update(engine="Chroma HTTP server (HNSW)", recall=recall_at_k(found, exact),
                       load_s=load_s)
            report["competitors"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        process.terminate()
        process.wait(60)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="*", default=["1000000x128", "200000x512"])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--skip-image", action="store_true")
    parser.add_argument("--sweep-shape", help="measure max-wait/max-batch on this shape")
    parser.add_argument("--sweep-waits", nargs="+", type=float, default=[0, 0.5, 2])
    parser.add_argument("--sweep-batches", nargs="+", type=int, default=[64])
    parser.add_argument("--competitors", nargs="*", default=[], choices=["chroma", "milvus"])
    parser.add_argument("--competitor-shape", default="100000x128")
    parser.add_argument("--competitor-python", default=sys.executable)
    parser.add_argument("--server-cores", help="taskset core list for the server (e.g. 1)")
    parser.add_argument("--client-cores", help="taskset core list for this load generator")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()
    if args.client_cores:
        os.sched_setaffinity(0, {int(c) for c in args.client_cores.split(",")})
    report = {"machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0))},
              "vector": [], "image": [], "competitors": [], "sweep": []}
    directory = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        if args.sweep_shape:
            bench_wait_sweep(args, directory, report)
        bench_vectors(args, directory, report)
        if not args.skip_image:
            bench_images(args, directory, report)
        if args.competitors:
            bench_competitors(args, directory, report)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
