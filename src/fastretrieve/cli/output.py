"""Writing results as an aligned table, JSON or CSV."""

from __future__ import annotations

import csv
import json
import sys

FORMATS = ("table", "json", "csv")


def write_rows(rows: list[dict], columns: list[str], fmt: str, *, document=None, stream=None) -> None:
    """Write ``rows`` (dicts keyed by ``columns``) in ``fmt``.

    ``table`` aligns the columns (floats with 4 decimals), ``csv`` writes a header and
    one line per row, ``json`` writes ``document`` when given (a nested structure is
    often clearer in JSON than flat rows), else the rows.
    """
    stream = stream or sys.stdout
    if fmt == "json":
        json.dump(rows if document is None else document, stream, indent=2, ensure_ascii=False)
        stream.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif fmt == "table":
        cells = [columns] + [[_cell(row.get(column)) for column in columns] for row in rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
        for line in cells:
            # Numbers right-aligned, text left-aligned; the last column is not padded.
            parts = [
                text.rjust(width) if _is_number(text) else text.ljust(width)
                for text, width in zip(line, widths)
            ]
            stream.write("  ".join(parts).rstrip() + "\n")
    else:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
