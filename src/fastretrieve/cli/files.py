"""Finding image files in folders, and the file state that makes re-indexing incremental."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..embed.download import file_sha256
from .errors import CommandError

# Formats Pillow decodes without plugins. A file with another extension is ignored when a
# folder is scanned; a file named explicitly is always tried.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff",
    ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2",
})


def find_images(roots, *, recursive: bool, follow_links: bool = False, skips=None) -> list[str]:
    """Absolute paths of the image files under ``roots`` (folders or files), sorted.

    Folders are scanned for files with an image extension, their subfolders too when
    ``recursive``. A folder whose name ends in ``.jpg`` is a folder, never an image.
    Paths are made absolute without resolving symbolic links, so results show the path
    the user knows.

    What a real disk holds never stops the scan; each is reported to ``skips`` (an
    object with ``add(path, reason)``, e.g. a `SkipReport`) and the scan goes on: a
    subfolder that cannot be listed (a root-only ``lost+found``); a symbolic link to a
    folder, which is followed only with ``follow_links``; with it, a link leading back
    to a folder already walked (a loop, found by device and inode) or out of the folder
    being scanned (reported, not walked). A root that cannot be listed is an error.
    """
    report = skips.add if skips is not None else (lambda path, reason: None)
    found = set()
    for root in roots:
        root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        if os.path.isdir(root):
            try:
                entries = _list(root)
            except OSError as error:
                raise CommandError(f"{root}: cannot list the folder ({error.strerror})") from None
            walk = _FolderWalk(root, recursive, follow_links, report)
            found.update(walk.scan(root, entries))
        elif os.path.exists(root):
            found.add(root)
        else:
            raise CommandError(f"{root}: no such file or folder")
    return sorted(found)


def _list(folder: str) -> list:
    with os.scandir(folder) as entries:
        return list(entries)


class _FolderWalk:
    """One root's scan: an explicit stack (no recursion limit on deep trees) and the
    (device, inode) of every folder walked, which is what recognises a loop."""

    def __init__(self, root: str, recursive: bool, follow_links: bool, report):
        self.root_real = os.path.realpath(root)
        self.recursive = recursive
        self.follow_links = follow_links
        self.report = report
        info = os.stat(root)
        self.walked = {(info.st_dev, info.st_ino): root}

    def scan(self, root: str, root_entries: list):
        pending = [(root, root_entries)]
        while pending:
            folder, entries = pending.pop()
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if self.recursive:
                        pending.extend(self._enter(entry.path))
                elif entry.is_symlink() and self._links_to_folder(entry.path):
                    if self.recursive:
                        pending.extend(self._follow(entry.path))
                elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                    yield entry.path

    @staticmethod
    def _links_to_folder(path: str) -> bool:
        try:
            return stat.S_ISDIR(os.stat(path).st_mode)
        except OSError:  # dangling or a loop of links: a file name, reported when decoded
            return False

    def _follow(self, link: str):
        if not self.follow_links:
            self.report(link, "symbolic link to a folder, not followed (pass --follow-links "
                        "to follow links)")
            return
        target = os.path.realpath(link)
        if os.path.commonpath([target, self.root_real]) != self.root_real:
            self.report(link, f"symbolic link leads out of {self.root_real} (to {target}); "
                        "not followed")
            return
        yield from self._enter(link)

    def _enter(self, folder: str):
        """The folder and its entries, once per (device, inode); skipped with a reason
        when it was walked already or cannot be listed."""
        try:
            info = os.stat(folder)
            key = (info.st_dev, info.st_ino)
            if key in self.walked:
                earlier = self.walked[key]
                if os.path.commonpath([earlier, folder]) == earlier:
                    self.report(folder, f"symlink loop: leads back to {earlier}")
                else:
                    self.report(folder, f"the same folder as {earlier}, already scanned")
                return
            self.walked[key] = folder
            entries = _list(folder)
        except OSError as error:
            self.report(folder, f"cannot list the folder ({error.strerror or error})")
            return
        yield folder, entries


def file_state(path: str) -> dict:
    """``{"path", "size", "mtime_ns"}`` of a file; raises OSError when it cannot be read."""
    info = os.stat(path)
    return {"path": path, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def content_hash(path: str) -> str:
    """Hex sha256 of the file's bytes: tells a touched file from a changed one."""
    return file_sha256(Path(path))


def add_follow_links_argument(parser) -> None:
    """The ``--follow-links`` option of every command that scans folders."""
    parser.add_argument("--follow-links", action="store_true",
                        help="follow symbolic links to folders (loops and links leading out "
                        "of the folder are reported, not walked)")
