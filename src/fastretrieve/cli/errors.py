"""Exit codes, the command line's own exceptions, and the report of skipped files."""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_PARTIAL = 1  # the command did its job but skipped some files
EXIT_USAGE = 2  # argparse's own code for bad arguments
EXIT_FAILURE = 3
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT


class CommandError(Exception):
    """A failure the user can act on; printed as one line, exit code 3."""


class UsageError(Exception):
    """Arguments that parse but make no sense together; exit code 2."""


class SkipReport:
    """Files that could not be used, one JSON line each: ``{"path": ..., "reason": ...}``.

    With ``path`` None, each line goes to stderr at once. With a ``path``, the report is
    written atomically (a temporary file renamed over it) by `save` -- the index command
    saves it at every checkpoint and at the end -- so a killed run leaves the report of
    its last checkpoint, never a half-written one. Nothing at ``path`` is removed when a
    run starts: a file there that is not a report of skipped files is refused up front
    (`UsageError`), an earlier report is replaced by this run's (empty when nothing was
    skipped), and a clean run where no report existed writes none.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.count = 0
        self._lines: list[str] = []
        self._saved = 0  # lines in the report file so far
        self._replace_existing = self.path is not None and self.path.exists()
        if self._replace_existing:
            _check_is_report(self.path)

    def add(self, path, reason: str) -> None:
        """Record one skipped file."""
        line = json.dumps({"path": os.fspath(path), "reason": reason}, ensure_ascii=False)
        self.count += 1
        if self.path is None:
            print(line, file=sys.stderr, flush=True)
        else:
            self._lines.append(line)

    def save(self) -> None:
        """Write the report file atomically, if it has changed since the last save."""
        if self.path is None or (self._saved == len(self._lines) and not self._replace_existing):
            return
        text = "".join(line + "\n" for line in self._lines)
        write_text_atomically(self.path, text)
        self._saved = len(self._lines)
        self._replace_existing = False

    def close(self) -> None:
        """Save the final report."""
        self.save()

    def exit_code(self) -> int:
        """0 when nothing was skipped, else 1 (partial success)."""
        return EXIT_PARTIAL if self.count else EXIT_OK


def _check_is_report(path: Path) -> None:
    """Refuse to overwrite a file that is not a report of skipped files."""
    try:
        with open(path, encoding="utf-8") as file:
            for line in file:
                entry = json.loads(line)
                if not (isinstance(entry, dict) and entry.keys() == {"path", "reason"}):
                    raise ValueError(line)
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON lines of reports
        detail = f" ({error.strerror})" if isinstance(error, OSError) and error.strerror else ""
        raise UsageError(
            f"{path} exists and is not a report of skipped files{detail}; it is left as it "
            "is: choose another path for the report (--errors PATH)"
        ) from None


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: a temporary file next to it, flushed,
    fsynced and renamed over it (a crash leaves the old content or the new). A file it
    replaces keeps its permission bits; a new one gets the umask's."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            if path.is_file():
                os.fchmod(file.fileno(), stat.S_IMODE(path.stat().st_mode))
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
