"""Exit codes, the command line's own exceptions, and the report of skipped files."""

from __future__ import annotations

import json
import os
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

    Lines go to ``path`` (created on the first skipped file, so a clean run leaves no
    report; a report from an earlier run is removed at the start) or, when ``path`` is
    None, to stderr. Each line is flushed at once, so a killed run keeps its report.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.count = 0
        self._file = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def add(self, path, reason: str) -> None:
        """Record one skipped file."""
        if self._file is None:
            self._file = open(self.path, "w", encoding="utf-8") if self.path else sys.stderr
        line = json.dumps({"path": os.fspath(path), "reason": reason}, ensure_ascii=False)
        print(line, file=self._file, flush=True)
        self.count += 1

    def close(self) -> None:
        """Close the report file (stderr stays open)."""
        if self._file is not None and self._file is not sys.stderr:
            self._file.close()
        self._file = None

    def exit_code(self) -> int:
        """0 when nothing was skipped, else 1 (partial success)."""
        return EXIT_PARTIAL if self.count else EXIT_OK
