"""``fastretrieve demo``: the whole job on photos shipped with the package, offline.

Indexes the sample photos (``fastretrieve/samples``, public domain and CC0, see
``samples/LICENSES.md``) with the built-in CNN, then asks two questions: an edited copy
of one of them (cropped, brightened, resized, re-compressed) must find its original, and
a photo that is not in the index (``samples/queries/grace_hopper.jpg``, a portrait) finds
what it looks like: the other portraits. It prints both rankings and writes the contact
sheet. Everything goes to a new folder that is kept for a look.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageEnhance

from .contact_sheet import write_contact_sheet
from .errors import EXIT_FAILURE, EXIT_OK, SkipReport
from .image_index import load_index, open_embedder
from .indexing import update_index
from .output import write_rows
from .query import COLUMNS, answer_rows, search_images

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
QUERY_SAMPLE = "chelsea.jpg"
# Not indexed (a subfolder): a portrait whose neighbours are the samples' portraits.
SEMANTIC_QUERY = SAMPLES / "queries" / "grace_hopper.jpg"
RESULTS = 5

EXAMPLES = """\
examples:
  fastretrieve demo
  fastretrieve demo --output-dir demo/
"""


def edited_copy(source: Path, target: Path) -> None:
    """Save an edited copy of ``source``: 85 % centre crop, 15 % brighter, 80 % size, JPEG q70."""
    with Image.open(source) as image:
        image = image.convert("RGB")
        width, height = image.size
        margin_x, margin_y = round(width * 0.04), round(height * 0.04)
        image = image.crop((margin_x, margin_y, width - margin_x, height - margin_y))
        image = ImageEnhance.Brightness(image).enhance(1.15)
        image = image.resize((round(image.width * 0.8), round(image.height * 0.8)), Image.Resampling.BILINEAR)
        image.save(target, "JPEG", quality=70)


def add_parser(add_command) -> None:
    """Register the ``demo`` command."""
    parser = add_command(
        "demo", help="index the bundled sample photos and search them",
        description=__doc__.split("\n\n", 1)[1].strip(),
        epilog=EXAMPLES,
    )
    parser.add_argument("--output-dir", metavar="DIR",
                        help="where to write the index, the query and the contact sheet "
                        "(default: a new temporary folder)")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Run ``fastretrieve demo``."""
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        folder = Path(args.output_dir)
    else:
        folder = Path(tempfile.mkdtemp(prefix="fastretrieve-demo-"))
    index_path = folder / "samples.fri"
    summary = update_index([SAMPLES], index_path, show_progress=not args.quiet)
    print(summary.line())
    query_path = folder / f"edited-{QUERY_SAMPLE}"
    edited_copy(SAMPLES / QUERY_SAMPLE, query_path)

    index, record = load_index(index_path)
    embedder = open_embedder(record, index_path)
    answers = search_images(index, embedder, [query_path, SEMANTIC_QUERY], RESULTS, SkipReport(None))
    if len(answers) != 2:
        return EXIT_FAILURE
    print(f"\nquery: {query_path} (an edited copy of {QUERY_SAMPLE})")
    write_rows(answer_rows(answers[:1]), COLUMNS, "table")
    best = os.path.basename(answers[0][1][0][2])
    verdict = "found first" if best == QUERY_SAMPLE else f"ranked below {best}"
    print(f"the original, {QUERY_SAMPLE}, is {verdict}")
    print(f"\nquery: {SEMANTIC_QUERY} (not in the index: a portrait)")
    write_rows(answer_rows(answers[1:]), COLUMNS, "table")
    print("its neighbours are what it looks like, not copies of it")
    sheet_path = folder / "contact-sheet.png"
    write_contact_sheet(answers, sheet_path, columns=RESULTS)
    print(f"contact sheet: {sheet_path}")
    print(f"try your own: fastretrieve search {index_path} YOUR_PHOTO.jpg --grid results.png",
          file=sys.stderr)
    return EXIT_OK
