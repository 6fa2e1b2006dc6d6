"""The Ray Data pipeline: the same vectors and skip reasons as the local `fastretrieve
index`, every image exactly once when a worker is killed, resume without re-embedding,
and the command line (``index --ray``, ``search`` and ``dedup`` on a manifest)."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import psutil
import pytest
from PIL import Image

from fastretrieve import Index
from fastretrieve.embed import DEFAULT_MODEL
from fastretrieve.cli import main
from fastretrieve.cli.indexing import update_index
from fastretrieve.distributed import embed_to_shards, read_manifest

# Ray Data's DataContext sets deprecated fields of its own when first created.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

IMAGES = 150  # and a byte-for-byte copy of one of them, DUPLICATE
SHARD_SIZE = 40  # 4 shards: 40, 40, 40, 34 files
DUPLICATE = ("img0007.png", "img0007-copy.png")
BAD_FILES = {"empty.jpg": b"", "random.png": bytes(range(256)) * 3}
CPUS = {"num_cpus_per_worker": 0.5, "num_cpus_per_decode": 0.5}  # fits the 2-CPU cluster


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of generated JPEG and PNG images of various sizes, with bad files."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for number in range(IMAGES):
        height, width = rng.integers(40, 120, size=2)
        xx = np.arange(width)[None, :, None]
        pixels = (rng.integers(0, 256, 3) + 60 * np.sin(xx / rng.uniform(3, 20) + rng.uniform(0, 6, 3))
                  + rng.normal(0, 12, (height, width, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{number:04d}.{('jpg', 'png')[number % 2]}")
    (folder / DUPLICATE[1]).write_bytes((folder / DUPLICATE[0]).read_bytes())
    for name, data in BAD_FILES.items():
        (folder / name).write_bytes(data)
    whole = (folder / "img0000.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    return folder


@pytest.fixture(scope="module")
def local_index(photos, tmp_path_factory):
    """``{path: vector}``, ``{path: reason}`` and the index file of the local
    ``fastretrieve index``."""
    out = tmp_path_factory.mktemp("local") / "local.fri"
    update_index([photos], out, show_progress=False)
    index = Index.load(out)
    paths = [meta["path"] for meta in index.get_metadata(index.ids.tolist())]
    vectors = dict(zip(paths, index.get(index.ids)))
    with open(f"{out}.errors.jsonl", encoding="utf-8") as report:
        reasons = {entry["path"]: entry["reason"] for entry in map(json.loads, report)}
    return vectors, reasons, out


def image_paths(folder):
    return sorted(str(path) for path in folder.iterdir())


def shard_contents(manifest_path):
    """``{path: vector}`` of every row of every shard, and the list of ids (duplicates kept)."""
    vectors, ids = {}, []
    for entry in read_manifest(manifest_path).shards:
        index = Index.load(entry.file)
        ids += index.ids.tolist()
        for meta, vector in zip(index.get_metadata(index.ids.tolist()), index.get(index.ids)):
            assert meta["path"] not in vectors, f"{meta['path']} stored twice"
            vectors[meta["path"]] = vector
    return vectors, ids


def check_same_as_local(out, local_index):
    """Every good image exactly once with the local vector, every bad one reported."""
    expected_vectors, expected_reasons, _ = local_index
    vectors, ids = shard_contents(out / "manifest.json")
    assert len(ids) == len(set(ids)) == IMAGES + 1
    assert sorted(vectors) == sorted(expected_vectors)
    for path, vector in vectors.items():
        np.testing.assert_array_equal(vector, expected_vectors[path], err_msg=path)
    with open(out / "errors.jsonl", encoding="utf-8") as report:
        reasons = {entry["path"]: entry["reason"] for entry in map(json.loads, report)}
    assert reasons == expected_reasons and len(reasons) == 3


def test_same_vectors_and_reasons_as_local_index(ray_cluster, photos, local_index, tmp_path):
    summary = embed_to_shards(image_paths(photos), tmp_path, shard_size=SHARD_SIZE, workers=2, **CPUS)
    assert (summary.shards, summary.shards_embedded, summary.shards_skipped) == (4, 4, 0)
    assert (summary.images, summary.embedded, summary.skipped) == (IMAGES + 1, IMAGES + 1, 3)
    check_same_as_local(tmp_path, local_index)
    manifest = read_manifest(tmp_path / "manifest.json")
    # Sorted paths: empty.jpg first, random.png and truncated.jpg last.
    assert [s.rows for s in manifest.shards] == [39, 40, 40, 32]
    assert manifest.attributes["embedder"]["model"] == DEFAULT_MODEL
    assert manifest.errors == {"skipped": 3, "report": "errors.jsonl"}


def embedding_worker_pids():
    """Process ids of the live embedding actors of Ray Data (found by process title)."""
    pids = []
    for process in psutil.process_iter(["cmdline"]):
        if any("EmbedWorker" in part for part in process.info["cmdline"] or ()):
            pids.append(process.pid)
    return pids


def test_worker_killed_mid_job_exactly_once(ray_cluster, photos, local_index, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTRETRIEVE_TEST_EMBED_DELAY", "0.3")  # each batch takes a while
    killed = []

    def kill_a_worker(shard, rows):
        if not killed:  # after the first shard: the others are still being embedded
            pids = embedding_worker_pids()
            assert pids, "no embedding worker process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    summary = embed_to_shards(image_paths(photos), tmp_path, shard_size=SHARD_SIZE, batch_size=8,
                              on_shard=kill_a_worker, **CPUS)
    assert killed and summary.shards_embedded == 4
    assert not psutil.pid_exists(killed[0])
    check_same_as_local(tmp_path, local_index)


def test_interrupted_run_resumes_without_embedding_a_shard_twice(ray_cluster, photos, local_index, tmp_path):
    first_run = []

    def stop_after_one(shard, rows):
        first_run.append(shard)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_to_shards(image_paths(photos), tmp_path, shard_size=SHARD_SIZE, on_shard=stop_after_one, **CPUS)
    assert len(first_run) == 1 and not (tmp_path / "manifest.json").exists()
    kept = tmp_path / "shards" / f"shard-{first_run[0]:05d}.fri"
    before = os.stat(kept)

    second_run = []
    summary = embed_to_shards(image_paths(photos), tmp_path, shard_size=SHARD_SIZE,
                              on_shard=lambda shard, rows: second_run.append(shard), **CPUS)
    assert sorted(first_run + second_run) == [0, 1, 2, 3]  # each shard embedded once
    assert (summary.shards_skipped, summary.shards_embedded) == (1, 3)
    assert summary.processed == IMAGES + 4 - SHARD_SIZE  # the kept shard's files: not decoded again
    after = os.stat(kept)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    check_same_as_local(tmp_path, local_index)
    # A third run finds everything complete and embeds nothing.
    again = embed_to_shards(image_paths(photos), tmp_path, shard_size=SHARD_SIZE, **CPUS)
    assert (again.shards_skipped, again.shards_embedded, again.processed) == (4, 0, 0)


def test_command_line_index_search_dedup_on_a_manifest(ray_cluster, photos, local_index, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["index", str(photos), "-o", str(out), "--ray", "--shard-size", "64",
                 "--format", "json", "-q"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1 and summary["skipped"] == 3 and summary["shards"] == 3  # 1: files skipped
    check_same_as_local(out, local_index)
    manifest = str(out / "manifest.json")
    query = photos / "img0011.png"
    assert main(["search", manifest, str(query), "-k", "3", "--format", "json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer[0]["results"][0]["path"] == str(query) and len(answer[0]["results"]) == 3
    assert main(["dedup", manifest, "--format", "json", "-q"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert sorted(str(photos / name) for name in DUPLICATE) in [sorted(g["paths"]) for g in groups]
    assert main(["dedup", str(local_index[2]), "--format", "json", "-q"]) == 0
    assert groups == json.loads(capsys.readouterr().out)["groups"]  # as the local index's
