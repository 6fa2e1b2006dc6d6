"""The command line on a Ray cluster: ``index --ray``, and manifests for ``search`` and
``dedup``.

``fastretrieve index DIR -o OUT --ray [ADDRESS]`` embeds into the folder OUT with
:func:`fastretrieve.distributed.embed_to_shards` (shard files, ``OUT/manifest.json``,
``OUT/errors.jsonl``); running it again resumes. ``search`` and ``dedup`` accept that
manifest wherever they accept an index file. Ray is imported only when one of these is
used (``pip install "fastretrieve[ray]"``).
"""

from __future__ import annotations

import json

from ..embed import DEFAULT_MODEL
from .errors import EXIT_OK, EXIT_PARTIAL, CommandError
from .files import find_images
from .image_index import load_index, read_model_record

EXAMPLES = """\
on a Ray cluster (pip install "fastretrieve[ray]"):
  fastretrieve index ~/Photos -o photos-shards --ray              # a local Ray cluster
  fastretrieve index /shared/photos -o /shared/out --ray auto     # the cluster of `ray start`
  fastretrieve search photos-shards/manifest.json query.jpg       # search the shards
"""


def add_index_arguments(parser) -> None:
    """The ``index`` options of a Ray run."""
    group = parser.add_argument_group("on a Ray cluster")
    group.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="embed with Ray Data into shard files under OUTPUT (a folder); "
                       "ADDRESS: 'auto', HOST:PORT, or none for a local cluster")
    group.add_argument("--shard-size", type=int, default=100_000, metavar="N",
                       help="images per shard file (default: 100000)")
    group.add_argument("--ray-workers", type=int, default=1, metavar="N",
                       help="embedding actors (default: 1); each takes a GPU when the cluster has one")


def distributed():
    """The `fastretrieve.distributed` package, or a CommandError saying how to get Ray."""
    try:
        import ray  # noqa: F401  (only to tell a missing Ray from other import errors)
    except ImportError:
        raise CommandError('Ray is not installed: pip install "fastretrieve[ray]"') from None
    from .. import distributed as package

    return package


def run_index(args, embedder_options: dict) -> int:
    """``fastretrieve index ... --ray``: embed into shards, print the summary."""
    summary = distributed().embed_to_shards(
        find_images(args.folders, recursive=args.recursive), args.output,
        model=args.model or DEFAULT_MODEL, shard_size=args.shard_size, workers=args.ray_workers,
        batch_size=embedder_options.pop("batch_size", 32), dtype=args.dtype,
        embedder_options={k: v for k, v in embedder_options.items() if k != "progress"},
        address=None if args.ray == "local" else args.ray,
    )
    if args.format == "json":
        print(json.dumps({**summary.__dict__, "images_per_second": round(summary.images_per_second, 2)}))
    else:
        print(f"indexed {summary.manifest}: {summary.images} images in {summary.shards} shards "
              f"({summary.shards_embedded} written now, {summary.shards_skipped} already complete), "
              f"{summary.skipped} skipped; {summary.processed} files in {summary.seconds:.1f} s, "
              f"{summary.images_per_second:.1f} images/s")
    return EXIT_PARTIAL if summary.skipped else EXIT_OK


def open_index(path):
    """``(index, model record)`` of an index file, or of a manifest (a `ShardedIndex`,
    which searches and reads metadata like an `Index`)."""
    from ..distributed import is_manifest  # the manifest reader alone: no Ray imported

    if not is_manifest(path):
        return load_index(path)
    package = distributed()
    manifest = package.read_manifest(path)
    package.connect()
    # One actor per shard where the cluster has a free CPU for each, else fewer actors
    # holding several shards: a laptop's local cluster still opens a 100-shard index.
    import ray

    free_cpus = int(ray.available_resources().get("CPU", 1))
    sharded = package.ShardedIndex(path, actors=max(1, min(len(manifest.shards), free_cpus)))
    return sharded, read_model_record(sharded, path)


def vectors_of_manifest(path):
    """``(paths, vectors, model)`` of every image of a sharded index, in global order."""
    sharded, record = open_index(path)
    ids = [i for shard in range(len(sharded.manifest.shards)) for i in sharded.shard_ids(shard).tolist()]
    paths = [meta["path"] for meta in sharded.get_metadata(ids)]
    return paths, sharded.get(ids), record["model"]
