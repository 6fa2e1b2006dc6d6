"""A one-line progress bar on stderr with a rate and an ETA."""

from __future__ import annotations

import sys
import time

REDRAW_SECONDS = 0.1  # redrawing more often costs time and nobody can read it
BAR_WIDTH = 24


class ProgressBar:
    """``label  45% |##########          | 450/1000  123.4 images/s  ETA 0:04``.

    Drawn only when ``enabled`` and ``stream`` is a terminal (a redirected stderr gets
    no carriage-return noise). Use as a context manager, or call `close`.
    """

    def __init__(self, total: int, label: str, *, enabled: bool = True, stream=None, unit="images"):
        self.total = total
        self.label = label
        self.unit = unit
        self.done = 0
        self._stream = stream or sys.stderr
        self._enabled = enabled and total > 0 and self._stream.isatty()
        self._start = time.monotonic()
        self._last_draw = 0.0

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more items done, redrawing at most every REDRAW_SECONDS."""
        self.done += count
        now = time.monotonic()
        if self._enabled and (now - self._last_draw >= REDRAW_SECONDS or self.done >= self.total):
            self._last_draw = now
            self._draw(now)

    def close(self) -> None:
        """End the bar's line."""
        if self._enabled:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()
            self._enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        fraction = min(self.done / self.total, 1.0)
        filled = round(fraction * BAR_WIDTH)
        eta = (self.total - self.done) / rate if rate > 0 else None
        self._stream.write(
            f"\r{self.label} {fraction:4.0%} |{'#' * filled}{' ' * (BAR_WIDTH - filled)}| "
            f"{self.done}/{self.total}  {rate:.1f} {self.unit}/s  ETA {_clock(eta)}  "
        )
        self._stream.flush()


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
