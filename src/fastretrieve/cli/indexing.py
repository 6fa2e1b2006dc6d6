"""``fastretrieve index``: embed a folder of images into an index, incrementally.

Re-running on the same folder compares each file with its entry (path, size, mtime):
equal -- unchanged, nothing to do; different size -- changed; same size but another
mtime -- the content hash decides (a touched file only gets its mtime refreshed). Files
that disappeared are dropped. Only new and changed files are embedded.

Interruption: the index is saved atomically (`Index.save`) at checkpoints -- at most
every ``--checkpoint-every`` seconds, and never more often than ten times the last
save's duration, so saving a large index stays a small fraction of the run -- and once
more on Ctrl-C. A kill at any moment leaves the last saved index, which loads; the next
run finds the files embedded so far unchanged and embeds only the rest.

Test-only hook: the environment variable ``FASTRETRIEVE_TEST_BATCH_DELAY`` (seconds)
sleeps after each batch is added, so that tests can kill a run midway on any machine.
It is not meant for any other use.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field

from .. import Embedder, Index
from ..quantize import STORAGE_DTYPES
from ..embed import BUILTIN_MODEL_NAMES, DEFAULT_MODEL
from . import distributed
from .errors import EXIT_OK, EXIT_PARTIAL, SkipReport
from .files import add_follow_links_argument, content_hash, file_state, find_images
from .image_index import entries_by_path, load_index, model_spec, new_image_index, open_embedder, whitening_of
from .progress import ProgressBar

DEFAULT_CHECKPOINT_SECONDS = 60.0
SAVE_TIME_FRACTION = 0.1  # checkpoints may take at most this share of the run
TEST_DELAY_VARIABLE = "FASTRETRIEVE_TEST_BATCH_DELAY"
INT8_FIT_ROWS = 1024  # images embedded before a new int8 index's quantiser is fitted

EXAMPLES = """\
examples:
  fastretrieve index ~/Photos -o photos.fri --recursive
  fastretrieve index ~/Photos -o photos.fri -r          # again: embeds only new or changed files
  fastretrieve index shots/ -o shots.fri --model classic   # fixed filters: fast, for copies
  fastretrieve index shots/ -o shots.fri --model my_cnn.onnx --device cuda
  fastretrieve index shots/ -o shots.fri --format json  # machine-readable summary

Skipped files (unreadable, truncated, not images) are listed as JSON lines
{"path": ..., "reason": ...} in INDEX.errors.jsonl, and the exit code is 1.
The model and its preprocessing are recorded inside the index file; searching or
updating the index with another model is refused.
"""


@dataclass
class UpdatePlan:
    """What a run has to do to bring an index up to date with the files."""

    to_embed: list[dict] = field(default_factory=list)  # file states of new and changed files
    stale_ids: list[int] = field(default_factory=list)  # entries of deleted and changed files
    refreshed: list[tuple[int, dict]] = field(default_factory=list)  # same content, new mtime
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0


@dataclass
class IndexSummary:
    """The outcome of one `update_index` run."""

    index: str
    images: int  # entries in the index after the run
    new: int
    changed: int
    unchanged: int
    refreshed: int  # unchanged content whose mtime was updated
    removed: int
    embedded: int
    skipped: int
    errors_file: str | None
    seconds: float

    @property
    def images_per_second(self) -> float:
        """Embedding throughput of the run (embedded + skipped files over the run time)."""
        return (self.embedded + self.skipped) / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        """The summary as a JSON-ready dict."""
        return {**asdict(self), "images_per_second": round(self.images_per_second, 2)}

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        skipped = ""
        if self.skipped:
            skipped = f", {self.skipped} skipped (reasons in {self.errors_file})"
        return (
            f"indexed {self.index}: {self.images} images ({self.new} new, {self.changed} changed, "
            f"{self.unchanged} unchanged, {self.removed} removed){skipped}; embedded "
            f"{self.embedded} in {self.seconds:.1f} s, {self.images_per_second:.1f} images/s"
        )


def plan_update(paths: list[str], known: dict[str, tuple[int, dict]], skips: SkipReport) -> UpdatePlan:
    """Compare the files found with the index entries ``{path: (id, metadata)}``."""
    plan = UpdatePlan()
    remaining = dict(known)
    for path in paths:
        entry = remaining.pop(path, None)
        try:
            state = file_state(path)
            if entry is None:
                plan.new += 1
                plan.to_embed.append(state)
                continue
            item_id, stored = entry
            if state["size"] == stored["size"] and state["mtime_ns"] == stored["mtime_ns"]:
                plan.unchanged += 1
            elif state["size"] == stored["size"] and content_hash(path) == stored["sha256"]:
                plan.unchanged += 1
                plan.refreshed.append((item_id, {**stored, **state}))
            else:
                plan.changed += 1
                plan.stale_ids.append(item_id)
                plan.to_embed.append(state)
        except OSError as error:
            skips.add(path, error.strerror or str(error))
            if entry is not None:  # unreadable now: its old vector no longer describes it
                plan.stale_ids.append(entry[0])
    plan.removed = len(remaining)
    plan.stale_ids.extend(item_id for item_id, _ in remaining.values())
    return plan


class Checkpoints:
    """Saves the index atomically when a checkpoint is due (see the module docstring)."""

    def __init__(self, index: Index, path, every_seconds: float, skips: SkipReport):
        self.index = index
        self.path = path
        self.skips = skips
        self.every_seconds = every_seconds
        self._last_save = time.monotonic()
        self._last_duration = 0.0
        self._saved_version = index.version  # as loaded: a run that changes nothing saves nothing

    def save_if_due(self) -> None:
        """Save when the interval has passed (and saving stays a small share of the run)."""
        interval = max(self.every_seconds, self._last_duration / SAVE_TIME_FRACTION)
        if time.monotonic() - self._last_save >= interval:
            self.save()

    def save(self) -> None:
        """Save the index (unless nothing changed since the last save) and the report of
        skipped files, each atomically."""
        self.skips.save()
        if self.index.version == self._saved_version:
            return
        start = time.monotonic()
        self.index.save(self.path)
        self._last_save = time.monotonic()
        self._last_duration = self._last_save - start
        self._saved_version = self.index.version


def update_index(
    roots,
    index_path,
    *,
    model: str | None = None,
    recursive: bool = False,
    follow_links: bool = False,
    dtype: str = "float32",
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
    errors_path=None,
    show_progress: bool = True,
    embedder_options: dict | None = None,
) -> IndexSummary:
    """Create or update the index at ``index_path`` from the images under ``roots``.

    ``model`` defaults to the index's own model, or the built-in CNN
    (``fastretrieve.embed.DEFAULT_MODEL``) for a new index; an
    existing index is never switched to another model. ``errors_path`` (default
    ``INDEX.errors.jsonl``) receives the skipped files. ``embedder_options`` go to
    :class:`fastretrieve.Embedder` (batch_size, device, decode_threads, threads).
    """
    start = time.monotonic()
    index_path = os.fspath(index_path)
    options = embedder_options or {}
    skips = SkipReport(errors_path or index_path + ".errors.jsonl")
    try:
        paths = find_images(roots, recursive=recursive, follow_links=follow_links, skips=skips)
        if os.path.exists(index_path):
            index, record = load_index(index_path)
            embedder = open_embedder(record, index_path, model, **options)
            whitening = whitening_of(record, index_path)
            known = entries_by_path(index)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(index_path)), exist_ok=True)
            spec = model_spec(model or DEFAULT_MODEL)
            embedder = Embedder(spec, **options)
            index = new_image_index(spec, embedder, dtype)
            whitening, known = None, {}
        plan = plan_update(paths, known, skips)
        checkpoints = Checkpoints(index, index_path, checkpoint_seconds, skips)
        if plan.stale_ids:
            index.remove(plan.stale_ids)
        if plan.refreshed:
            refreshed_ids = [item_id for item_id, _ in plan.refreshed]
            index.add(index.get(refreshed_ids), ids=refreshed_ids,
                      metadata=[meta for _, meta in plan.refreshed])
        embedded = _embed_into(index, embedder, plan.to_embed, skips, checkpoints, show_progress, whitening)
        checkpoints.save()
        if not os.path.exists(index_path):  # an empty folder still gives a valid index
            index.save(index_path)
    finally:
        skips.close()
    return IndexSummary(
        index=index_path, images=len(index), new=plan.new, changed=plan.changed,
        unchanged=plan.unchanged, refreshed=len(plan.refreshed), removed=plan.removed,
        embedded=embedded, skipped=skips.count,
        errors_file=os.fspath(skips.path) if skips.count else None,
        seconds=time.monotonic() - start,
    )


def _embed_into(index, embedder, states, skips, checkpoints, show_progress, whitening=None) -> int:
    """Embed the files ``states`` describe and add them to ``index`` (whitened if the
    index is); returns how many."""
    delay = float(os.environ.get(TEST_DELAY_VARIABLE, "0") or 0)
    vectors, metadata = [], []
    embedded = 0
    # An int8 index fits its quantiser on its first add: make that add a broad sample of
    # the folder, not one inference batch.
    first_add_rows = INT8_FIT_ROWS if index.dtype == "int8" and len(index) == 0 else 0

    def add_pending(final=False):
        nonlocal embedded, first_add_rows
        if not vectors or (len(vectors) < first_add_rows and not final):
            return
        first_add_rows = 0
        # Taken out of the pending lists first: a Ctrl-C inside add() loses this batch
        # (the next run embeds it again) rather than adding it twice.
        batch, batch_metadata = vectors[:], metadata[:]
        vectors.clear()
        metadata.clear()
        index.add(whitening.transform(batch) if whitening else batch, metadata=batch_metadata)
        embedded += len(batch)
        if delay:
            time.sleep(delay)

    results = embedder.embed_paths((state["path"] for state in states), sha256=True)
    with ProgressBar(len(states), "indexing", enabled=show_progress) as bar:
        try:
            for state, result in zip(states, results):
                bar.advance()
                if not result.ok:
                    skips.add(state["path"], result.error)
                    continue
                vectors.append(result.vector)
                metadata.append({**state, "sha256": result.sha256})
                if len(vectors) >= embedder.batch_size:
                    add_pending()
                    checkpoints.save_if_due()
        except KeyboardInterrupt:
            add_pending(final=True)  # keep what was embedded: the next run resumes from here
            checkpoints.save()
            raise
        add_pending(final=True)
    return embedded


def add_parser(add_command) -> None:
    """Register the ``index`` command."""
    parser = add_command(
        "index", help="embed the images of a folder into an index",
        description="Embed the images of one or more folders into an index file. Re-running "
        "embeds only new or changed files and drops deleted ones.",
        epilog=EXAMPLES + "\n" + distributed.EXAMPLES,
    )
    parser.add_argument("folders", nargs="+", metavar="DIR", help="folders (or single image files) to index")
    parser.add_argument("-o", "--output", required=True, metavar="INDEX", help="the index file to create or update")
    parser.add_argument("--model", help=f"{MODEL_CHOICES}; default for a new index: {DEFAULT_MODEL}, "
                        "for an existing index: its own model")
    parser.add_argument("-r", "--recursive", action="store_true", help="include subfolders")
    add_follow_links_argument(parser)
    add_embedder_arguments(parser)
    parser.add_argument("--dtype", choices=STORAGE_DTYPES, default="float32",
                        help="storage precision of a new index (default: float32)")
    parser.add_argument("--checkpoint-every", type=float, default=DEFAULT_CHECKPOINT_SECONDS,
                        metavar="SECONDS", help="save progress at most this often "
                        f"(default: {DEFAULT_CHECKPOINT_SECONDS:g})")
    parser.add_argument("--errors", metavar="PATH", help="report of skipped files, JSON lines "
                        "(default: INDEX.errors.jsonl)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="summary as a line of text or a JSON object (default: text)")
    distributed.add_index_arguments(parser)
    parser.set_defaults(run=run)


def add_embedder_arguments(parser) -> None:
    """Options of every command that embeds images."""
    parser.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                        help="images per inference batch (default: the embedder's)")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="image decoding threads (default: half the cores)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the model runs (default: auto, a GPU when ONNX Runtime has one)")


def embedder_options(args) -> dict:
    """Embedder keyword arguments from the options of `add_embedder_arguments`."""
    # progress=None: a model download shows its bar when stderr is a terminal.
    options = {"device": args.device, "progress": False if args.quiet else None}
    if args.batch_size:
        options["batch_size"] = args.batch_size
    if args.workers:
        options["decode_threads"] = args.workers
    return options


MODEL_CHOICES = ("a built-in model (" + ", ".join(BUILTIN_MODEL_NAMES)
                 + "), an .onnx path, a URL or hf://owner/repo/file.onnx")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def run(args) -> int:
    """Run ``fastretrieve index``."""
    if args.ray is not None:
        return distributed.run_index(args, embedder_options(args))
    summary = update_index(
        args.folders, args.output, model=args.model, recursive=args.recursive,
        follow_links=args.follow_links,
        dtype=args.dtype, checkpoint_seconds=args.checkpoint_every, errors_path=args.errors,
        show_progress=not args.quiet, embedder_options=embedder_options(args),
    )
    if args.format == "json":
        print(json.dumps(summary.as_dict()))
    else:
        print(summary.line())
    return EXIT_PARTIAL if summary.skipped else EXIT_OK
