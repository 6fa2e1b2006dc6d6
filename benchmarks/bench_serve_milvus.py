"""Milvus Lite under the closed-loop search load of bench_serve.py (run by it, in an
interpreter with milvus-lite and pymilvus): FLAT index (exact), L2, one pymilvus client
per thread over Milvus Lite's local gRPC server.

    python bench_serve_milvus.py DIRECTORY CLIENTS SECONDS K

DIRECTORY holds vectors.npy and queries.npy; prints one JSON line: rps, p50_ms, p99_ms,
load_s and the ids found for each query ("found").
"""

import sys
import threading
import time
from pathlib import Path

import numpy as np
from pymilvus import MilvusClient


def main():
    directory, clients, seconds, k = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    vectors = np.load(directory / "vectors.npy")
    queries = np.load(directory / "queries.npy")
    uri = str(directory / "milvus.db")
    client = MilvusClient(uri)
    start = time.perf_counter()
    if not client.has_collection("bench"):
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", datatype=5, is_primary=True)  # INT64
        schema.add_field("vector", datatype=101, dim=vectors.shape[1])  # FLOAT_VECTOR
        index = client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="L2")
        client.create_collection("bench", schema=schema, index_params=index)
        for first in range(0, len(vectors), 10_000):
            block = vectors[first:first + 10_000]
            client.insert("bench", [{"id": first + i, "vector": row} for i, row in enumerate(block.tolist())])
        client.flush("bench")
    client.load_collection("bench")
    load_s = time.perf_counter() - start
    found = [[hit["id"] for hit in hits]
             for hits in client.search("bench", queries[:100].tolist(), limit=k)]
    latencies = []
    lock = threading.Lock()

    def work(offset, stop_at):
        mine = []
        i = offset
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            client.search("bench", [queries[i % len(queries)].tolist()], limit=k)
            mine.append(time.perf_counter() - t)
            i += 1
        with lock:
            latencies.extend(mine)

    for phase_seconds in (1.0, seconds):  # warm-up, then the measurement
        latencies.clear()
        stop_at = time.perf_counter() + phase_seconds
        began = time.perf_counter()
        threads = [threading.Thread(target=work, args=(c * 7, stop_at)) for c in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
    values = np.array(latencies) * 1000
    print({"rps": len(values) / elapsed, "p50_ms": float(np.percentile(values, 50)),
           "p99_ms": float(np.percentile(values, 99)), "load_s": load_s, "found": found}.__repr__()
          .replace("'", '"'))


if __name__ == "__main__":
    main()
