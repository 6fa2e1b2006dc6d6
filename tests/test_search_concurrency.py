"""Searches from many Python threads, the GIL released during work, fork safety."""

from __future__ import annotations

import os
import threading
import time
import warnings

import numpy as np
import pytest

import fastretrieve as fr


def test_eight_threads_get_the_serial_answers(kernel_path):
    rng = np.random.default_rng(1)
    database = rng.standard_normal((12_000, 32)).astype(np.float32)
    batches = [rng.standard_normal((n, 32)).astype(np.float32) for n in (1, 5, 70, 3, 16, 2, 90, 8)]
    metrics = ["l2", "ip", "cosine"]
    serial = {(b, m): fr.search(batches[b], 7, database=database, metric=m)
              for b in range(len(batches)) for m in metrics}
    failures = []

    def worker(b):
        for _ in range(3):
            for m in metrics:
                d, i = fr.search(batches[b], 7, database=database, metric=m)
                if not (np.array_equal(i, serial[b, m][1]) and np.array_equal(d, serial[b, m][0])):
                    failures.append((b, m))

    threads = [threading.Thread(target=worker, args=(b,)) for b in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_long_search_does_not_block_other_python_threads():
    rng = np.random.default_rng(2)
    database = rng.standard_normal((400_000, 64)).astype(np.float32)
    queries = rng.standard_normal((1000, 64)).astype(np.float32)  # ~0.3 s on one core
    done = threading.Event()
    heartbeats = []

    def search():
        fr.search(queries, 10, database=database, threads=1)
        done.set()

    searcher = threading.Thread(target=search)
    started = time.perf_counter()
    searcher.start()
    while not done.is_set():
        heartbeats.append(time.perf_counter())
        time.sleep(0.001)
    searcher.join()
    elapsed = time.perf_counter() - started
    # With the GIL held the main thread would get no turn until the search returned.
    assert elapsed > 0.05, "search too short to tell"
    gaps = np.diff(heartbeats)
    assert len(heartbeats) > 10 and gaps.max() < elapsed / 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_search_works_in_a_forked_child():
    rng = np.random.default_rng(3)
    database = rng.standard_normal((20_000, 16)).astype(np.float32)
    queries = rng.standard_normal((4, 16)).astype(np.float32)
    expected = fr.search(queries, 5, database=database)  # starts the pool's threads
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:
        try:
            got = fr.search(queries, 5, database=database)
            os._exit(0 if np.array_equal(got[1], expected[1]) else 1)
        finally:
            os._exit(2)
    deadline = time.monotonic() + 60
    while (result := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    if result == (0, 0):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("search in the forked child hung")
    assert os.waitstatus_to_exitcode(result[1]) == 0
