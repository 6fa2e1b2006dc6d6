"""Limits of the search entry points: the thread count's bound and the private kernel's
refusal of an empty query set."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from conftest import _core, _cpp, _numba

import fastretrieve as fr
from fastretrieve import _backend

THREADED_BACKENDS = [
    pytest.param(_cpp, id="cpp", marks=[] if _cpp else pytest.mark.skip(reason="no extension")),
    pytest.param(_numba, id="numba", marks=[] if _numba else pytest.mark.skip(reason="no numba")),
]


def os_thread_count():
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/task")
@pytest.mark.parametrize("backend", THREADED_BACKENDS)
def test_a_huge_thread_count_starts_no_more_threads_than_cores(backend, monkeypatch):
    # 300 queries over 50,000 rows make hundreds of tasks for threads=300: the answer is
    # the same, and the process holds no more threads afterwards than a default search left.
    monkeypatch.setattr(_backend, "_active", backend)
    rng = np.random.default_rng(4)
    database = rng.standard_normal((50_000, 8)).astype(np.float32)
    queries = rng.standard_normal((300, 8)).astype(np.float32)
    expected = fr.search(queries, 4, database=database)  # the pool at its full size
    settled = os_thread_count()
    for few in (queries[:2], queries):
        got = fr.search(few, 4, database=database, threads=300)
        np.testing.assert_array_equal(got[1], fr.search(few, 4, database=database)[1])
    np.testing.assert_array_equal(got[1], expected[1])
    assert os_thread_count() == settled


@pytest.mark.parametrize("threads", [0, 65537, 10**30])
def test_thread_counts_outside_the_bound_are_refused(threads):
    vectors = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match="threads must be between 1 and 65536"):
        fr.search(vectors, 1, threads=threads)
    with pytest.raises(ValueError, match="threads must be between 1 and 65536"):
        fr.Index(2).search(vectors, 1, threads=threads)


@pytest.mark.skipif(_core is None, reason="extension not built")
def test_private_knn_refuses_zero_queries():
    # A division by zero (SIGFPE, the interpreter killed) before the check existed.
    database = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="queries is empty"):
        _core.knn(np.empty((0, 3), np.float32), database, 2, "l2", 1)
