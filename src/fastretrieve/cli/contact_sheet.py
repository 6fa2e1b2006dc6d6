"""Contact sheets: each query followed by its results as thumbnails, one row per query.

Every cell is ``thumb`` pixels square plus a margin all round and two lines of label
below: the query cell (tinted) says "query" and its file name; each result cell its rank,
score and file name. A sheet of ``q`` queries with ``k`` results each is
``(k + 1) * cell_width`` by ``q * cell_height`` pixels (see `cell_size`).
"""

from __future__ import annotations

import os

from PIL import Image, ImageDraw, ImageFont

from ..embed.decode import ImageDecodeError, load_rgb
from ..embed.embedder import DEFAULT_MAX_PIXELS

DEFAULT_THUMB = 160
MARGIN = 6
LABEL_HEIGHT = 28  # two lines of Pillow's default font
BACKGROUND = (255, 255, 255)
QUERY_BACKGROUND = (214, 230, 250)
MISSING_FILL = (200, 200, 200)
TEXT = (0, 0, 0)


def cell_size(thumb: int = DEFAULT_THUMB) -> tuple[int, int]:
    """(width, height) of one cell for thumbnails of ``thumb`` pixels."""
    return thumb + 2 * MARGIN, thumb + 2 * MARGIN + LABEL_HEIGHT


def write_contact_sheet(rows, out_path, *, columns: int, thumb: int = DEFAULT_THUMB) -> tuple[int, int]:
    """Draw a contact sheet and save it as PNG; returns its (width, height).

    ``rows`` holds one ``(query_path, results)`` per query, ``results`` a list of
    ``(rank, score, path)``; ``columns`` is the number of result cells per row (k), so
    that every row has the same width even when an index has fewer than k images.
    """
    cell_width, cell_height = cell_size(thumb)
    sheet = Image.new("RGB", ((columns + 1) * cell_width, len(rows) * cell_height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for row, (query_path, results) in enumerate(rows):
        top = row * cell_height
        draw.rectangle((0, top, cell_width - 1, top + cell_height - 1), fill=QUERY_BACKGROUND)
        cells = [(query_path, "query")] + [(path, f"#{rank}  {score:.4f}") for rank, score, path in results]
        for column, (path, caption) in enumerate(cells):
            left = column * cell_width
            _paste_thumbnail(sheet, draw, path, (left + MARGIN, top + MARGIN), thumb)
            label_top = top + MARGIN + thumb + 2
            name = _fit(draw, font, os.path.basename(os.fspath(path)), thumb)
            draw.text((left + MARGIN, label_top), caption, fill=TEXT, font=font)
            draw.text((left + MARGIN, label_top + LABEL_HEIGHT // 2), name, fill=TEXT, font=font)
    sheet.save(out_path, "PNG")
    return sheet.size


def _paste_thumbnail(sheet, draw, path, corner, thumb) -> None:
    """Paste the image at ``path`` centred in the ``thumb`` box at ``corner``."""
    left, top = corner
    try:
        image = load_rgb(path, max_pixels=DEFAULT_MAX_PIXELS, draft_size=(thumb, thumb))
    except ImageDecodeError as error:
        draw.rectangle((left, top, left + thumb - 1, top + thumb - 1), fill=MISSING_FILL)
        draw.text((left + 4, top + thumb // 2), str(error)[:24], fill=TEXT)
        return
    image.thumbnail((thumb, thumb), Image.Resampling.BICUBIC)
    sheet.paste(image, (left + (thumb - image.width) // 2, top + (thumb - image.height) // 2))


def _fit(draw, font, text: str, width: int) -> str:
    """``text`` shortened with an ellipsis in the middle until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 4:
        keep -= 1
        shortened = text[: keep // 2] + "..." + text[len(text) - keep // 2:]
        if draw.textlength(shortened, font=font) <= width:
            return shortened
    return text[:4]
