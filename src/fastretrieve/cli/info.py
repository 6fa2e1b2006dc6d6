"""``fastretrieve info``: what an index holds and which model made it."""

from __future__ import annotations

import json
import os

from .image_index import load_index

EXAMPLES = """\
examples:
  fastretrieve info photos.fri
  fastretrieve info photos.fri --format json
"""

LABELS = {"size_bytes": "size on disk"}


def describe_index(index_path) -> dict:
    """Count, dimension, metric, storage dtype, model and size on disk of an index."""
    index, record = load_index(index_path)
    settings = record.get("settings", {})
    preprocessing = settings.get("preprocessing", {})
    return {
        "index": os.fspath(index_path),
        "count": len(index),
        "dim": index.dim,
        "metric": index.metric,
        "dtype": index.dtype,
        "model": record["model"],
        "model_fingerprint": record["fingerprint"],
        "image_size": preprocessing.get("image_size"),
        "whitening": record["whitening"]["dim"] if "whitening" in record else None,
        "created_by": record.get("created_by"),
        "size_bytes": os.path.getsize(index_path),
    }


def add_parser(add_command) -> None:
    """Register the ``info`` command."""
    parser = add_command(
        "info", help="describe an index",
        description="Show an index's image count, dimension, metric, storage dtype, model "
        "and size on disk.",
        epilog=EXAMPLES,
    )
    parser.add_argument("index", metavar="INDEX")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Run ``fastretrieve info``."""
    details = describe_index(args.index)
    if args.format == "json":
        print(json.dumps(details, indent=2))
        return 0
    details["size_bytes"] = _human_size(details["size_bytes"])
    details["model_fingerprint"] = details["model_fingerprint"][:16]
    labels = {key: LABELS.get(key, key.replace("_", " ")) for key in details}
    width = max(map(len, labels.values()))
    for key, value in details.items():
        print(f"{labels[key]:<{width}}  {value}")
    return 0


def _human_size(size: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {units[unit]}"
