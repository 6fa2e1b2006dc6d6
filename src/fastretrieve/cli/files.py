"""Finding image files in folders, and the file state that makes re-indexing incremental."""

from __future__ import annotations

import os
from pathlib import Path

from ..embed.download import file_sha256
from .errors import CommandError

# Formats Pillow decodes without plugins. A file with another extension is ignored when a
# folder is scanned; a file named explicitly is always tried.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff",
    ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2",
})


def find_images(roots, *, recursive: bool) -> list[str]:
    """Absolute paths of the image files under ``roots`` (folders or files), sorted.

    Folders are scanned for files with an image extension, their subfolders too when
    ``recursive``. A folder whose name ends in ``.jpg`` is a folder, never an image.
    Paths are made absolute without resolving symbolic links, so results show the path
    the user knows.
    """
    found = set()
    for root in roots:
        root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        if os.path.isdir(root):
            found.update(_scan(root, recursive))
        elif os.path.exists(root):
            found.add(root)
        else:
            raise CommandError(f"{root}: no such file or folder")
    return sorted(found)


def _scan(folder: str, recursive: bool):
    try:
        entries = list(os.scandir(folder))
    except OSError as error:
        raise CommandError(f"{folder}: cannot list the folder ({error.strerror})") from None
    for entry in entries:
        if entry.is_dir():
            if recursive:
                yield from _scan(entry.path, recursive)
        elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
            yield entry.path


def file_state(path: str) -> dict:
    """``{"path", "size", "mtime_ns"}`` of a file; raises OSError when it cannot be read."""
    info = os.stat(path)
    return {"path": path, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def content_hash(path: str) -> str:
    """Hex sha256 of the file's bytes: tells a touched file from a changed one."""
    return file_sha256(Path(path))
