"""Acknowledged writes are never lost: SIGKILL at random moments during a stream of adds
and removes, graceful shutdown under load; and 64 concurrent clients get answers
consistent with one serial order."""

from __future__ import annotations

import itertools
import json
import random
import socket
import threading
import time

import httpx
import numpy as np
import pytest

import fastretrieve as fr
from serve_fixtures import ServerProcess, vector_index

pytest.importorskip("fastapi")

DIM = 8
KILL_TRIALS = 5
WRITERS = 4


def _vector(item_id):
    return np.random.default_rng(item_id).normal(size=DIM).astype(np.float32)


class WriteStream:
    """Writer threads adding new ids (and removing some they added) until the server
    goes away; records what was acknowledged."""

    def __init__(self, server, first_id):
        self.server = server
        self.ids = itertools.count(first_id)
        self.lock = threading.Lock()
        self.added, self.removed = set(), set()
        # Removals sent but not acknowledged (the server died): they may have happened.
        self.maybe_removed = set()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._write, args=(seed,)) for seed in range(WRITERS)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def wait_for(self, acknowledged, timeout=60):
        """Wait until ``acknowledged`` adds have been answered."""
        deadline = time.monotonic() + timeout
        while len(self.added) < acknowledged and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.added) >= acknowledged, self.server.output.getvalue()

    def _write(self, seed):
        chooser = random.Random(seed)
        with self.server.client() as client:
            while not self.stop.is_set():
                with self.lock:
                    item_id = next(self.ids)
                    doomed = chooser.choice(sorted(self.added)) if self.added and chooser.random() < 0.2 else None
                try:
                    if doomed is not None:
                        with self.lock:
                            self.maybe_removed.add(doomed)
                        answer = client.delete(f"/v1/items/{doomed}")
                        if answer.status_code == 200:
                            with self.lock:
                                self.removed.add(doomed)
                        continue
                    answer = client.post("/v1/items", json={
                        "vectors": [_vector(item_id).tolist()], "ids": [item_id],
                        "metadata": [{"id": item_id}]})
                except httpx.TransportError:
                    return  # the server is gone
                if answer.status_code == 200:
                    with self.lock:
                        self.added.add(item_id)


def _check_saved(path, added, removed, maybe_removed=frozenset()):
    index = fr.Index.load(path, mmap=False, verify=True)
    present = set(index.ids.tolist())
    assert removed.isdisjoint(present), sorted(removed & present)[:10]
    kept = sorted(added - removed - maybe_removed)
    assert set(kept) <= present, sorted(set(kept) - present)[:10]
    if kept:
        np.testing.assert_array_equal(index.get(kept), np.stack([_vector(i) for i in kept]))
        assert index.get_metadata(kept) == [{"id": i} for i in kept]
    return index


def test_kill_at_random_moments_loses_no_acknowledged_write(tmp_path):
    path, _ = vector_index(tmp_path / "v.fri", count=50, dim=DIM)
    timing = random.Random(13)
    added, removed, maybe_removed = set(), set(), set()
    first_id = 1000
    for trial in range(KILL_TRIALS):
        # Compacting every 0.2 s puts some kills inside a save or a log rotation.
        server = ServerProcess(path, "--compact-interval", "0.2")
        with server.client() as client:  # what the last run acknowledged is all there
            kept = sorted(added - maybe_removed)
            sample = random.Random(trial).sample(kept, min(40, len(kept)))
            for item_id in sample:
                answer = client.get(f"/v1/items/{item_id}")
                assert answer.status_code == 200, (trial, item_id, answer.text)
                np.testing.assert_array_equal(np.float32(answer.json()["vector"]), _vector(item_id))
            for item_id in list(removed)[:40]:
                assert client.get(f"/v1/items/{item_id}").status_code == 404
        with WriteStream(server, first_id) as stream:
            stream.wait_for(5)  # the kill lands inside the stream, not before it
            time.sleep(timing.uniform(0.0, 1.0))
            server.kill()
        added |= stream.added
        removed |= stream.removed
        maybe_removed |= stream.maybe_removed
        first_id = next(stream.ids)
        fr.Index.load(path, mmap=False, verify=True)  # the file itself always loads
    assert len(added) >= 5 * KILL_TRIALS
    server = ServerProcess(path)
    assert "replayed" in server.output.getvalue() or not added
    server.stop()
    _check_saved(path, added, removed, maybe_removed)
    assert not list(tmp_path.glob("v.fri.wal.*"))  # compacted at shutdown


def test_sigterm_under_load_loses_no_acknowledged_write(tmp_path):
    path, _ = vector_index(tmp_path / "v.fri", count=50, dim=DIM)
    server = ServerProcess(path, "--compact-interval", "3600")
    with WriteStream(server, 1000) as stream:
        stream.wait_for(10)
        server.stop()  # asserts a graceful exit that saved the index
    assert len(stream.added) >= 10
    _check_saved(path, stream.added, stream.removed, stream.maybe_removed)
    assert not list(tmp_path.glob("v.fri.wal.*"))


def test_64_concurrent_clients_see_one_serial_order(tmp_path):
    path, _ = vector_index(tmp_path / "v.fri", count=100, dim=DIM)
    server = ServerProcess(path)
    shared_id = 10**6
    shared_writes, shared_reads, failures = [], [], []
    barrier = threading.Barrier(64)

    def client_work(number):
        value = [float(number)] * DIM
        with server.client() as client:
            barrier.wait()
            for step in range(6):
                own = 100_000 + number * 100 + step
                vector = _vector(own).tolist()
                if client.post("/v1/items", json={"vectors": [vector], "ids": [own]}).status_code != 200:
                    failures.append(("add", own))
                    continue
                # Its own acknowledged write is visible to every later read.
                got = client.get(f"/v1/items/{own}").json()["vector"]
                if not np.array_equal(np.float32(got), np.float32(vector)):
                    failures.append(("read own", own))
                found = client.post("/v1/search", json={"vectors": [vector], "k": 1}).json()
                if found["results"][0]["ids"] != [own] or found["results"][0]["distances"] != [0.0]:
                    failures.append(("search own", own, found))
                if step % 2:
                    client.delete(f"/v1/items/{own}")
                    if client.get(f"/v1/items/{own}").status_code != 404:
                        failures.append(("removed still there", own))
                start = time.monotonic()
                if client.post("/v1/items", json={"vectors": [value], "ids": [shared_id]}).status_code == 200:
                    shared_writes.append((start, time.monotonic(), number))
                start = time.monotonic()
                answer = client.get(f"/v1/items/{shared_id}").json()["vector"]
                shared_reads.append((start, time.monotonic(), answer))

    threads = [threading.Thread(target=client_work, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    with server.client() as client:
        final = client.get(f"/v1/items/{shared_id}").json()["vector"]
        count = client.get("/v1/index").json()["count"]
    server.stop()
    assert not failures, failures[:5]
    assert len(shared_writes) == 64 * 6
    # Every read of the shared item returns a whole written value, from a write that had
    # started before the read ended.
    for start, end, vector in shared_reads:
        assert len(set(vector)) == 1, vector
        assert any(w_start < end and number == vector[0] for w_start, _, number in shared_writes)
    # The final value is from a write that no other write followed entirely.
    (final_number,) = set(final)
    last_candidates = [w for w in shared_writes
                       if not any(other[0] > w[1] for other in shared_writes)]
    assert final_number in {number for _, _, number in last_candidates}
    # 100 initial + 64 x 3 kept + the shared item.
    assert count == 100 + 64 * 3 + 1
    index = fr.Index.load(path)
    assert len(index) == count
    np.testing.assert_array_equal(index.get(shared_id), np.float32(final))


def _wait_for_metric(server, line):
    deadline = time.monotonic() + 30
    with server.client() as client:
        while line not in client.get("/metrics").text:
            assert time.monotonic() < deadline, f"never saw {line}"
            time.sleep(0.02)


def test_full_queue_timeout_and_disconnect_withdraw_queued_work(tmp_path):
    path, _ = vector_index(tmp_path / "v.fri", count=20, dim=DIM)
    # A search waits up to 3 s for a batch of 2 rows; at most 2 rows may wait; 1 s timeout.
    server = ServerProcess(path, "--max-wait-ms", "3000", "--max-batch", "2", "--max-queued", "2",
                           "--timeout", "1")
    one, two = ({"vectors": [[0.5] * DIM] * rows, "k": 1} for rows in (1, 2))
    body = json.dumps(one).encode()
    host, port = server.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        _wait_for_metric(server, 'fastretrieve_queue_depth{queue="search"} 1')
        with server.client() as client:
            full = client.post("/v1/search", json=two)  # 1 + 2 rows > 2
        assert full.status_code == 503 and "full" in full.json()["detail"], full.text
        assert int(full.headers["retry-after"]) >= 1
    # The client left: its search is withdrawn at once.
    _wait_for_metric(server, 'fastretrieve_queue_depth{queue="search"} 0')
    with server.client() as client:
        late = client.post("/v1/search", json=one)  # waits for a second row that never comes
        assert late.status_code == 503 and "longer than 1.0 s" in late.json()["detail"], late.text
        assert "retry-after" in late.headers
        # Two rows fill a batch at once: that batch holds them alone.
        assert client.post("/v1/search", json=two).status_code == 200
        metrics = client.get("/metrics").text
    server.stop()
    assert 'route="/v1/search",method="POST",status="499"' in metrics
    assert 'fastretrieve_batch_size_sum{queue="search"} 2.0' in metrics
    assert 'fastretrieve_batch_size_count{queue="search"} 1' in metrics
