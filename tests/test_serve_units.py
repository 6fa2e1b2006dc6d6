"""The service's parts in process: batching queues, the write-ahead log, configuration
checks and the command line's refusals (no server process needed)."""

from __future__ import annotations

import asyncio
import shutil
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")

import fastretrieve as fr  # noqa: E402
from fastretrieve.cli import main  # noqa: E402
from fastretrieve.serve import BatchSettings, ConfigError, ServeConfig  # noqa: E402
from fastretrieve.serve.batching import BatchQueue, QueueFull  # noqa: E402
from fastretrieve.serve.config import is_loopback, model_to_serve  # noqa: E402
from fastretrieve.serve.metrics import Metrics  # noqa: E402
from fastretrieve.serve.store import AddVectors, RemoveIds, ServedIndex  # noqa: E402
from fastretrieve.serve.wal import MAGIC, WalError, WalRecord, WriteAheadLog  # noqa: E402
from serve_fixtures import vector_index  # noqa: E402


class GatedBatches:
    """A batched call that blocks until released, recording each batch it got."""

    def __init__(self):
        self.batches, self.release, self.entered = [], threading.Event(), threading.Event()

    def __call__(self, items):
        self.batches.append(list(items))
        self.entered.set()
        self.release.wait(10)
        return [item * 10 for item in items]


def test_queued_requests_are_coalesced_into_one_call():
    async def scenario():
        run = GatedBatches()
        queue = BatchQueue("t", run, BatchSettings(max_batch=8, max_wait_s=0, max_pending=100), Metrics())
        queue.start()
        first = asyncio.ensure_future(queue.submit(0))
        await asyncio.to_thread(run.entered.wait, 10)  # the first batch is running alone
        rest = [asyncio.ensure_future(queue.submit(i)) for i in range(1, 11)]
        await asyncio.sleep(0.05)
        assert queue.depth == 10
        run.release.set()
        results = await asyncio.gather(first, *rest)
        await queue.close()
        return run.batches, results

    batches, results = asyncio.run(scenario())
    assert results == [i * 10 for i in range(11)]
    assert batches == [[0], list(range(1, 9)), [9, 10]]  # at most max_batch per call


def test_a_full_queue_refuses_and_a_withdrawn_item_is_never_run():
    async def scenario():
        run = GatedBatches()
        queue = BatchQueue("t", run, BatchSettings(max_batch=4, max_wait_s=0, max_pending=3), Metrics())
        queue.start()
        first = asyncio.ensure_future(queue.submit(0))
        await asyncio.to_thread(run.entered.wait, 10)
        waiting = [asyncio.ensure_future(queue.submit(i, size=1)) for i in (1, 2, 3)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match="full"):
            await queue.submit(4)
        waiting[1].cancel()  # its client went away
        await asyncio.sleep(0.01)
        run.release.set()
        results = await asyncio.gather(first, waiting[0], waiting[2])
        await queue.close()
        return run.batches, results

    batches, results = asyncio.run(scenario())
    assert results == [0, 10, 30]
    assert batches == [[0], [1, 3]]


def test_a_batch_waits_up_to_max_wait_for_more():
    async def scenario():
        seen = []
        queue = BatchQueue("t", lambda items: seen.append(list(items)) or list(items),
                           BatchSettings(max_batch=3, max_wait_s=5.0, max_pending=10), Metrics())
        queue.start()
        # Three items arriving apart still make one call: the batch fills before the wait ends.
        tasks = []
        for i in range(3):
            tasks.append(asyncio.ensure_future(queue.submit(i)))
            await asyncio.sleep(0.02)
        await asyncio.gather(*tasks)
        await queue.close()
        return seen

    assert asyncio.run(scenario()) == [[0, 1, 2]]


def test_log_replay_truncates_a_torn_tail_and_refuses_damage_elsewhere(tmp_path):
    log = WriteAheadLog(tmp_path / "x.fri")
    assert list(log.replay()) == []
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    log.append(WalRecord("add", [4, 7], vectors, [{"a": 1}, None]))
    log.append(WalRecord("remove", [4]))
    log.flush()
    first = log.rotate()
    log.append(WalRecord("remove", [7]))
    log.close()
    (_, segment_one), (_, segment_two) = log.segments()
    intact = segment_two.stat().st_size
    with open(segment_two, "ab") as file:
        file.write(b"\x10\x00\x00\x00garbage")  # a record cut short by a crash
    reopened = WriteAheadLog(tmp_path / "x.fri")
    records = list(reopened.replay())
    reopened.close()
    assert [(r.op, r.ids) for r in records] == [("add", [4, 7]), ("remove", [4]), ("remove", [7])]
    np.testing.assert_array_equal(records[0].vectors, vectors)
    assert records[0].metadata == [{"a": 1}, None]
    assert segment_two.stat().st_size == intact
    assert first == 1
    data = bytearray(segment_one.read_bytes())
    data[len(MAGIC) + 12] ^= 0xFF  # damage inside an older segment: no crash does that
    segment_one.write_bytes(bytes(data))
    with pytest.raises(WalError, match="checksum"):
        list(WriteAheadLog(tmp_path / "x.fri").replay())


def test_served_index_replays_what_it_logged(tmp_path):
    path, _ = vector_index(tmp_path / "v.fri", count=10, dim=4)
    store = ServedIndex(path)
    results = store.apply_batch([
        AddVectors(np.ones((2, 4), np.float32), metadata=["p", "q"]),
        RemoveIds([3]),
        RemoveIds([999]),  # unknown: refused alone, not logged
        AddVectors(np.full((1, 4), np.nan, np.float32)),  # refused by the index
    ])
    assert results[:2] == [[10, 11], [3]]
    assert isinstance(results[2], KeyError) and isinstance(results[3], ValueError)
    # What a kill leaves: the old index file and the log. Copied aside, then replayed.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for file in tmp_path.glob("v.fri*"):
        shutil.copy(file, crashed / file.name)
    store.close()
    with pytest.raises(RuntimeError, match="write-ahead log"):
        ServedIndex(crashed / "v.fri", read_only=True)  # would answer from stale data
    expected = [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    reopened = ServedIndex(crashed / "v.fri")
    assert reopened.replayed == 2
    assert sorted(reopened.index.ids.tolist()) == expected
    assert reopened.index.get_metadata([10, 11]) == ["p", "q"]
    reopened.close()
    for saved in (path, crashed / "v.fri"):
        assert sorted(fr.Index.load(saved).ids.tolist()) == expected
    assert not list(tmp_path.rglob("v.fri.wal.*"))


def test_configuration_refusals(tmp_path):
    with pytest.raises(ConfigError, match="not a loopback address"):
        ServeConfig(tmp_path, host="0.0.0.0").check()
    ServeConfig(tmp_path, host="0.0.0.0", read_only=True).check()
    ServeConfig(tmp_path, host="0.0.0.0", token="x" * 16).check()
    with pytest.raises(ConfigError, match="at least 16"):
        ServeConfig(tmp_path, token="short").check()
    with pytest.raises(ConfigError, match="not a URL"):
        ServeConfig(tmp_path, model="https://example.com/m.onnx").check()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.1") and not is_loopback("example.com")


def test_the_model_comes_from_the_operator_never_from_a_path_in_the_index(tmp_path):
    assert model_to_serve({}, None) == (None, None)
    assert model_to_serve({"embedder": {"model": "classic", "fingerprint": "f"}}, None) == ("classic", "f")
    with pytest.raises(ConfigError, match="not built in"):
        model_to_serve({"embedder": {"model": "/somewhere/model.onnx", "fingerprint": "f"}}, None)
    with pytest.raises(ConfigError, match="neither a built-in model nor a file"):
        model_to_serve({}, str(tmp_path / "missing.onnx"))


def test_cli_refuses_writes_on_a_public_address_without_a_token(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FASTRETRIEVE_TOKEN", raising=False)
    path, _ = vector_index(tmp_path / "v.fri", count=5, dim=4)
    assert main(["serve", str(path), "--host", "0.0.0.0"]) == 2
    assert "without a token" in capsys.readouterr().err
    empty = tmp_path / "token"
    empty.write_text("\n")
    assert main(["serve", str(path), "--token-file", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "nope.fri")]) == 3
