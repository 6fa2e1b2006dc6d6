"""Index under concurrent use: 8 searching threads and 1 writer adding, replacing, removing.

Each modification increments `Index.version` by one, and a search uses one snapshot, so
a search that began at version v0 and ended at v1 must be exactly right for one of the
states v0..v1. The writer records every state from its own model of the index (a dict,
independent of the index), and every answer is checked against them afterwards.
"""

import threading
import time

import numpy as np
import pytest

from fastretrieve import Index
from test_index import assert_exact_topk

READERS = 8
DIM = 16
K = 10


def run_writer(index, stop, states, errors, seed):
    rng = np.random.default_rng(seed)
    model = {}
    next_id = 0
    try:
        while not stop.is_set():
            operation = rng.integers(3) if model else 0
            if operation == 0:
                vectors = rng.standard_normal((int(rng.integers(1, 40)), DIM)).astype(np.float32)
                ids = np.arange(next_id, next_id + len(vectors))
                next_id += len(vectors)
            elif operation == 1:  # replace existing ids (copy-on-write path)
                ids = rng.choice(np.array(list(model)), size=min(len(model), 5), replace=False)
                vectors = rng.standard_normal((len(ids), DIM)).astype(np.float32)
            else:
                doomed = rng.choice(np.array(list(model)), size=min(len(model), 15), replace=False)
                index.remove(doomed)
                for item_id in doomed.tolist():
                    del model[item_id]
            if operation != 2:
                index.add(vectors, ids=ids)
                model.update(zip(ids.tolist(), index.get(ids)))
            live = np.array(list(model), np.int64)
            states[index.version] = (live, np.array([model[i] for i in live.tolist()]))
            time.sleep(0.002)  # let readers see many versions, each for a while
    except BaseException as error:  # reported by the test, not lost in the thread
        errors.append(error)


def run_reader(index, stop, answers, errors, seed):
    rng = np.random.default_rng(seed)
    try:
        while not stop.is_set():
            queries = rng.standard_normal((int(rng.integers(1, 3)), DIM)).astype(np.float32)
            before = index.version
            distances, ids = index.search(queries, K)
            after = index.version
            answers.append((queries, distances, ids, before, after))
            time.sleep(0.001)  # bounds the number of answers to check afterwards
    except BaseException as error:
        errors.append(error)


def matches_some_state(answer, states, metric):
    queries, distances, ids, before, after = answer
    for version in range(before, after + 1):
        live_ids, live_vectors = states[version]
        try:
            assert_exact_topk(distances, ids, queries, live_ids, live_vectors, metric, K)
        except AssertionError:
            continue
        return True
    return False


@pytest.mark.parametrize("dtype, seconds", [("float32", 2.0), ("bfloat16", 1.0)])
def test_searches_during_writes_always_see_one_consistent_state(dtype, seconds):
    index = Index(DIM, metric="l2", dtype=dtype)
    states = {0: (np.empty(0, np.int64), np.empty((0, DIM), np.float32))}
    answers, errors = [], []
    stop = threading.Event()
    threads = [threading.Thread(target=run_writer, args=(index, stop, states, errors, 0))]
    threads += [
        threading.Thread(target=run_reader, args=(index, stop, answers, errors, seed))
        for seed in range(1, READERS + 1)
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(states) > 50, "the writer barely ran: the test proved little"
    assert len({answer[3] for answer in answers}) > 20, "readers saw too few versions"
    wrong = [answer for answer in answers if not matches_some_state(answer, states, "l2")]
    assert not wrong, f"{len(wrong)} of {len(answers)} answers match no state of the index"


def test_attributes_are_read_whole_while_a_writer_replaces_them():
    index = Index(DIM)
    index.add(np.ones((3, DIM)))
    index.attributes = {"generation": 0, "copy": 0}
    generations = 2000
    stop = threading.Event()
    torn, errors = [], []

    def write():
        try:
            for generation in range(1, generations + 1):
                index.attributes = {"generation": generation, "steps": list(range(50)),
                                    "copy": generation}
        except BaseException as error:
            errors.append(error)
        finally:
            stop.set()

    def read():
        try:
            while not stop.is_set():
                seen = index.attributes
                if seen["generation"] != seen["copy"]:
                    torn.append(seen)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and not torn
    assert index.attributes["generation"] == generations
    assert index.version == 2 + generations  # the add, the first assignment, then each one
    assert len(index) == 3
