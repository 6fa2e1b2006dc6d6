"""Embed many image files into shard `Index` files with Ray Data, resumably and exactly once.

The stages of :func:`embed_to_shards`:

1. **Plan.** The paths (sorted) are cut into shards of ``shard_size`` files; a file's
   global id is its position in the plan, so shard ``s`` owns the id range
   ``[s * shard_size, (s + 1) * shard_size)``. The plan (shard size, model
   fingerprint, number and digest of the paths) is written once to ``OUT/plan.json``;
   a re-run must be given the same files.
2. **Decode** (Ray tasks, CPU): each file is read and decoded by fastretrieve's own
   decoder (``fastretrieve.embed.decode.load_rgb``, JPEG draft mode at the size the
   model needs), so a bad file is skipped with the same reason the local
   ``fastretrieve index`` gives. The task also records the file's size, mtime and sha256.
3. **Embed** (a pool of Ray actors, each holding one `Embedder`; ``num_gpus`` per actor
   when the cluster has GPUs): the decoded pixels become vectors, exactly as
   `Embedder.embed` computes them from the file.
4. **Write** (the driver): rows stream back keyed by global id; when every file of a
   shard has arrived, the shard is saved atomically (`Index.save`) with its skipped
   files and the model record in its attributes. At the end ``OUT/manifest.json`` lists
   the shards and ``OUT/errors.jsonl`` the skipped files.

Exactly once: a shard file is written only when it holds every one of its files, each
stored under its own global id, so rows that Ray computes again after a worker died
(a retried task, a restarted actor) replace themselves and can neither be lost nor
doubled. Resume: a shard whose file exists, loads and carries the same plan and model
record is complete and is not embedded again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray

from .. import Embedder, Index, __version__
from ..embed import BUILTIN_MODEL_NAMES, DEFAULT_MODEL
from ..embed.decode import ImageDecodeError, load_rgb
from ..embed.preprocess import draft_size
from .cluster import connect
from .manifest import Manifest, shard_entry, write_manifest

PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"
ERRORS_FILE = "errors.jsonl"
SHARD_ATTRIBUTE = "shard"
MODEL_ATTRIBUTE = "embedder"  # the model record, as `fastretrieve index` writes it
DECODE_BATCH = 16  # files per decode task: small enough to spread over the workers
# Memory a decode task reserves: its batch of decoded images, plus headroom for one large
# photo being decoded (a 24-megapixel JPEG is ~70 MB of RGB before draft mode shrinks it).
DECODE_MEMORY = 256 << 20
# Test-only hook: seconds each embedding actor sleeps after a batch, so that a test can
# kill a worker midway through a job on any machine. Not meant for any other use.
TEST_DELAY_VARIABLE = "FASTRETRIEVE_TEST_EMBED_DELAY"


class PlanMismatchError(ValueError):
    """The output folder was started with other files or another model."""


@dataclass
class ShardingSummary:
    """What one :func:`embed_to_shards` run did."""

    manifest: str
    shards: int  # shards in the plan
    shards_embedded: int  # shards written by this run
    shards_skipped: int  # shards already complete from an earlier run
    images: int  # rows in all shards
    embedded: int  # files embedded by this run
    skipped: int  # files that could not be embedded (all shards)
    processed: int  # files decoded by this run, embedded or skipped
    redelivered: int  # rows Ray delivered again after a retry (kept once)
    seconds: float

    @property
    def images_per_second(self) -> float:
        """Files processed by this run per second."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def model_record(spec: str, embedder: Embedder) -> dict:
    """The record of the model that made the vectors (as `fastretrieve index` stores it)."""
    return {"format": 1, "model": spec, "fingerprint": embedder.fingerprint,
            "settings": embedder.settings, "created_by": f"fastretrieve {__version__}"}


def _decode_batch(batch: dict, *, max_pixels: int, draft: tuple[int, int]) -> dict:
    """Ray Data map function: read and decode the files of a batch (a CPU task)."""
    pixels, heights, widths, errors, sizes, mtimes, digests = [], [], [], [], [], [], []
    for path in batch["path"].tolist():
        height = width = size = mtime = 0
        data, digest, error = b"", "", ""
        try:
            image = load_rgb(path, max_pixels=max_pixels, draft_size=draft)
            info = os.stat(path)
            digest = _sha256(path)
            data, (width, height) = image.tobytes(), image.size
            size, mtime = info.st_size, info.st_mtime_ns
        except ImageDecodeError as failure:
            error = str(failure)
        except OSError as failure:  # deleted or made unreadable since it was decoded
            error = failure.strerror or str(failure)
        except Exception as failure:  # one odd file must not stop a 100M-file job
            error = f"unexpected {type(failure).__name__}: {failure}"
        pixels.append(data)
        heights.append(height)
        widths.append(width)
        errors.append(error)
        sizes.append(size)
        mtimes.append(mtime)
        digests.append(digest)
    return {
        "id": batch["id"], "shard": batch["shard"], "path": batch["path"],
        "pixels": np.array(pixels, dtype=object), "height": np.array(heights, np.int64),
        "width": np.array(widths, np.int64), "error": np.array(errors, dtype=object),
        "size": np.array(sizes, np.int64), "mtime_ns": np.array(mtimes, np.int64),
        "sha256": np.array(digests, dtype=object),
    }


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class EmbedWorker:
    """Ray Data callable class: one `Embedder` per actor, decoded pixels in, vectors out."""

    def __init__(self, model: str, options: dict, delay: float):
        self.embedder = Embedder(model, **options)
        self.delay = delay

    def __call__(self, batch: dict) -> dict:
        count = len(batch["id"])
        vectors = np.zeros((count, self.embedder.dim), np.float32)
        good = [row for row in range(count) if not batch["error"][row]]
        if good:
            images = [
                np.frombuffer(batch["pixels"][row], np.uint8).reshape(
                    int(batch["height"][row]), int(batch["width"][row]), 3)
                for row in good
            ]
            vectors[good] = self.embedder.embed(images)
        if self.delay:
            time.sleep(self.delay)
        out = {name: batch[name] for name in ("id", "shard", "path", "error", "size", "mtime_ns", "sha256")}
        out["vector"] = vectors
        return out


class _ShardWriter:
    """Collects rows per shard and saves each shard once all of its files are in."""

    def __init__(self, out: Path, plan: list[list[str]], shard_size: int, dim: int,
                 dtype: str, record: dict, on_shard):
        self.out, self.plan, self.shard_size = out, plan, shard_size
        self.dim, self.dtype, self.record, self.on_shard = dim, dtype, record, on_shard
        self.pending: dict[int, dict[int, dict]] = {}
        self.done: set[int] = set()
        self.written = 0
        self.embedded = 0
        self.processed = 0
        self.redelivered = 0

    def take(self, batch: dict) -> None:
        for row in range(len(batch["id"])):
            shard, item_id = int(batch["shard"][row]), int(batch["id"][row])
            rows = self.pending.setdefault(shard, {})
            if item_id in rows or shard in self.done:
                # Computed again after a retry: deterministic, and stored once already.
                self.redelivered += 1
                if shard in self.done:
                    del self.pending[shard]
                    continue
            rows[item_id] = {
                "path": str(batch["path"][row]), "error": str(batch["error"][row]),
                "vector": np.array(batch["vector"][row], np.float32),
                "size": int(batch["size"][row]), "mtime_ns": int(batch["mtime_ns"][row]),
                "sha256": str(batch["sha256"][row]),
            }
            if len(rows) == len(self.plan[shard]):
                self.write(shard, self.pending.pop(shard))

    def write(self, shard: int, rows: dict[int, dict]) -> None:
        """Save one complete shard atomically."""
        index = Index(self.dim, metric="cosine", dtype=self.dtype)
        ordered = sorted(rows.items())
        good = [(item_id, row) for item_id, row in ordered if not row["error"]]
        skipped = [{"path": row["path"], "reason": row["error"]} for _, row in ordered if row["error"]]
        index.attributes = {MODEL_ATTRIBUTE: self.record,
                            SHARD_ATTRIBUTE: _shard_record(shard, self.plan[shard], self.shard_size, skipped)}
        if good:
            index.add(np.stack([row["vector"] for _, row in good]),
                      ids=[item_id for item_id, _ in good],
                      metadata=[{key: row[key] for key in ("path", "size", "mtime_ns", "sha256")}
                                for _, row in good])
        index.save(shard_path(self.out, shard))
        self.done.add(shard)
        self.written += 1
        self.embedded += len(good)
        self.processed += len(rows)
        if self.on_shard is not None:
            self.on_shard(shard, len(good))


def shard_path(out: Path, shard: int) -> Path:
    """Where shard number ``shard`` is stored."""
    return out / "shards" / f"shard-{shard:05d}.fri"


def _shard_record(shard: int, paths: list[str], shard_size: int, skipped: list[dict]) -> dict:
    digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()
    return {"number": shard, "first_id": shard * shard_size, "files": len(paths),
            "files_sha256": digest, "skipped": skipped}


def _is_complete(out: Path, shard: int, paths: list[str], shard_size: int, record: dict) -> bool:
    """True when the shard's file exists and was written for these files and this model."""
    path = shard_path(out, shard)
    if not path.is_file():
        return False
    try:
        attributes = Index.load(path, mmap=True).attributes
    except (OSError, ValueError):
        return False  # unreadable: embed it again, the save replaces it atomically
    stored = attributes.get(SHARD_ATTRIBUTE) or {}
    expected = _shard_record(shard, paths, shard_size, stored.get("skipped"))
    return stored == expected and (attributes.get(MODEL_ATTRIBUTE) or {}).get("fingerprint") == record["fingerprint"]


def _load_or_write_plan(out: Path, paths: list[str], shard_size: int, record: dict) -> list[list[str]]:
    plan_file = out / PLAN_FILE
    # The paths' digest, not the paths: a re-run lists the files again anyway.
    document = {"shard_size": shard_size, "fingerprint": record["fingerprint"], "files": len(paths),
                "paths_sha256": hashlib.sha256("\n".join(paths).encode()).hexdigest()}
    if plan_file.is_file():
        stored = json.loads(plan_file.read_text(encoding="utf-8"))
        if stored != document:
            raise PlanMismatchError(
                f"{out} was started with other files, another shard size or another model; "
                "resume with the same arguments, or write to a new output folder"
            )
    else:
        temporary = plan_file.with_name(f".{PLAN_FILE}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(document), encoding="utf-8")
        os.replace(temporary, plan_file)
    return [paths[start:start + shard_size] for start in range(0, len(paths), shard_size)] or [[]]


def embed_to_shards(paths, out, *, model: str = DEFAULT_MODEL, shard_size: int = 100_000,
                    workers: int = 1, batch_size: int = 32, dtype: str = "float32",
                    num_cpus_per_worker: float = 1.0, num_cpus_per_decode: float = 1.0,
                    num_gpus_per_worker: float | None = None, embedder_options: dict | None = None,
                    address: str | None = None, on_shard=None) -> ShardingSummary:
    """Embed the image files ``paths`` into shard indexes under the folder ``out``.

    Writes ``out/shards/shard-NNNNN.fri`` (cosine `Index` files, ids = positions in the
    sorted paths, metadata ``{"path", "size", "mtime_ns", "sha256"}`` per image as the
    local ``fastretrieve index`` stores it), ``out/manifest.json`` (open it with
    `ShardedIndex`) and ``out/errors.jsonl`` (skipped files with their reasons).

    ``workers`` embedding actors run ``batch_size`` images per call; each reserves
    ``num_cpus_per_worker`` CPUs and ``num_gpus_per_worker`` GPUs (default: 1 when the
    cluster has GPUs, else 0); decoding tasks reserve ``num_cpus_per_decode``.
    ``model`` and ``embedder_options`` go to `Embedder` (in every actor; the record of
    the model goes in every shard and in the manifest). ``on_shard(number, rows)`` is
    called after each shard is saved. Running it again on the same paths resumes: the
    shards already complete are kept, not embedded again. See the module docstring.
    """
    start = time.monotonic()
    if shard_size < 1 or workers < 1 or batch_size < 1:
        raise ValueError("shard_size, workers and batch_size must be >= 1")
    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    paths = sorted({os.path.abspath(os.fspath(p)) for p in paths})
    options = dict(embedder_options or {})
    threads = max(1, math.ceil(num_cpus_per_worker))
    options.setdefault("threads", threads)
    options.setdefault("decode_threads", threads)
    probe = Embedder(model, **{**options, "device": "cpu"})  # the record only: same fingerprint
    spec = model if model in BUILTIN_MODEL_NAMES or "://" in str(model) else os.path.abspath(model)
    record = model_record(spec, probe)
    plan = _load_or_write_plan(out, paths, shard_size, record)
    todo = [s for s, files in enumerate(plan) if not _is_complete(out, s, files, shard_size, record)]
    writer = _ShardWriter(out, plan, shard_size, probe.dim, dtype, record, on_shard)
    if todo == [0] and not plan[0]:  # no files at all: an empty shard, nothing for Ray
        writer.write(0, {})
    elif todo:
        connect(address)
        _run_pipeline(plan, todo, shard_size, writer, spec, options, probe, workers, batch_size,
                      num_cpus_per_worker, num_cpus_per_decode, num_gpus_per_worker)
    return _finish(out, plan, record, probe.dim, dtype, writer, len(plan) - len(todo),
                   time.monotonic() - start)


def _run_pipeline(plan, todo, shard_size, writer, spec, options, probe, workers, batch_size,
                  num_cpus_per_worker, num_cpus_per_decode, num_gpus_per_worker) -> None:
    import ray.data  # the heavy part of Ray (Arrow), only for a pipeline

    if num_gpus_per_worker is None:
        num_gpus_per_worker = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # stdout carries the command line's summary
    items = [{"id": s * shard_size + i, "shard": s, "path": path}
             for s in todo for i, path in enumerate(plan[s])]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // DECODE_BATCH)))
    # Decoding is a plain task (Ray Data runs it again if its worker dies). It reserves
    # memory for its decoded images, which also keeps Ray Data from fusing it into the
    # embedding actors (different resources): decoding scales on CPUs of its own,
    # beside (GPU) embedding actors.
    dataset = dataset.map_batches(
        _decode_batch, batch_size=DECODE_BATCH, batch_format="numpy", num_cpus=num_cpus_per_decode,
        memory=DECODE_MEMORY,
        fn_kwargs={"max_pixels": probe.max_pixels, "draft": draft_size(probe.preprocessing)},
    )
    delay = float(os.environ.get(TEST_DELAY_VARIABLE, "0") or 0)
    dataset = dataset.map_batches(
        EmbedWorker, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        # Ray Data restarts a dead embedding actor and retries its lost calls (its
        # defaults: max_restarts=-1, max_task_retries=-1).
        num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker,
        fn_constructor_kwargs={"model": spec, "options": options, "delay": delay},
    )
    # Closed at once when the loop stops early (an on_shard callback or Ctrl-C raising):
    # closing the iterator shuts Ray Data's executor down, instead of leaving it running,
    # and its dataset registered, until the traceback that holds the iterator is freed.
    batches = iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    try:
        for batch in batches:
            writer.take(batch)
    finally:
        batches.close()
    if writer.pending:
        missing = {s: len(plan[s]) - len(rows) for s, rows in writer.pending.items()}
        raise RuntimeError(f"the pipeline ended with incomplete shards {missing} (files missing "
                           "per shard); nothing of them was written, run again to resume")


def _finish(out, plan, record, dim, dtype, writer, skipped_shards, seconds) -> ShardingSummary:
    entries, errors = [], []
    for shard in range(len(plan)):
        path = shard_path(out, shard)
        errors.extend(Index.load(path, mmap=True).attributes[SHARD_ATTRIBUTE]["skipped"])
        entries.append(shard_entry(path))
    errors_path = out / ERRORS_FILE
    temporary = errors_path.with_name(f".{ERRORS_FILE}.tmp-{os.getpid()}")
    temporary.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors), encoding="utf-8")
    os.replace(temporary, errors_path)
    manifest_path = out / MANIFEST_FILE
    write_manifest(manifest_path, Manifest(
        dim, "cosine", dtype, tuple(entries), {MODEL_ATTRIBUTE: record},
        {"skipped": len(errors), "report": ERRORS_FILE},
    ))
    return ShardingSummary(
        manifest=os.fspath(manifest_path), shards=len(plan), shards_embedded=writer.written,
        shards_skipped=skipped_shards, images=sum(e.rows for e in entries),
        embedded=writer.embedded, skipped=len(errors), processed=writer.processed,
        redelivered=writer.redelivered, seconds=seconds,
    )
