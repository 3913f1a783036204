"""Append-only evidence logs: one `<ISO UTC wall clock> <monotonic s> <text>` line per event.

CLOCK_MONOTONIC is system-wide, so the second column lines up with the harness history across
processes; the wall clock is for people. Each line is flushed as it is written: a log that is
evidence must not lose its last lines when the process dies.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO


def now_wall() -> str:
    """Wall clock (UTC: cheap on the data path) for display only; ordering uses monotonic."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class StampedLog:
    """A thread-safe append-only log file; a None path discards lines (unit tests)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def write(self, text: str) -> str:
        """Append one stamped line and flush it; returns the line. OSError propagates."""
        line = f"{now_wall()} {time.monotonic():.6f} {text}"
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
        return line

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
