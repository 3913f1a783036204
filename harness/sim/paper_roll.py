"""The simulated printer's paper roll: what physically came out of the printer, as JSON lines.

`<state_dir>/printer/paper-roll.jsonl` stands for the paper itself and is the receipts oracle
of the simulated bench. The one thing to know: each event is one unbuffered `write()` of one
whole line, appended as it physically happens, so the roll survives the printer process being
SIGKILLed at a power cut (a torn last line, if the kernel ever produced one, is ignored).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from harness.closing import Closing

log = logging.getLogger(__name__)

EndedBy = Literal["cut", "torn", "power_loss", "open"]


def roll_path(state_dir: Path) -> Path:
    return Path(state_dir) / "printer" / "paper-roll.jsonl"


class PaperRollWriter(Closing):
    """Appends physical events to the roll file; safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def power_on(self) -> None:
        self._append({"event": "power_on"})

    def line(self, text: str) -> None:
        self._append({"event": "line", "text": text})

    def cut(self, partial: bool = False) -> None:
        self._append({"event": "cut", "partial": partial})

    def torn(self, reason: str = "jam") -> None:
        self._append({"event": "torn", "reason": reason})

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _append(self, fields: dict[str, Any]) -> None:
        record = {
            "t": datetime.now().astimezone().isoformat(timespec="milliseconds"),
            "mono": time.monotonic(),
            **fields,
        }
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if self._fd < 0:
                raise ValueError(f"{self.path}: the paper roll writer is closed")
            written = os.write(self._fd, data)  # one write: whole line or (never seen) a part
            if written != len(data):
                raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")


@dataclass(frozen=True)
class PrintedReceipt:
    """The lines printed between two cuts and how that piece of paper ended.

    `started_t` / `ended_t` are `time.monotonic()` seconds (comparable with the harness history);
    `ended_t` is None while the receipt is still open.
    """

    index: int
    lines: tuple[str, ...]
    complete: bool
    ended_by: EndedBy
    started_t: float
    ended_t: float | None
    started_wall: str = ""

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def read_events(path: Path) -> list[dict[str, Any]]:
    """All events on the roll; a missing roll is empty, an unparsable final line is skipped."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    events: list[dict[str, Any]] = []
    chunks = raw.split(b"\n")
    for number, chunk in enumerate(chunks, start=1):
        if not chunk.strip():
            continue
        try:
            event = json.loads(chunk.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if number == len(chunks):  # the last line, cut short by a power loss
                log.warning("%s: ignoring a torn last line %r", path, chunk[:80])
                continue
            raise ValueError(f"{path}:{number}: not a JSON roll event: {chunk[:80]!r}") from None
        if not isinstance(event, dict) or "event" not in event:
            raise ValueError(f"{path}:{number}: not a roll event: {event!r}")
        events.append(event)
    return events


def read_roll(path: Path) -> list[PrintedReceipt]:
    """Receipts as they physically came out; pieces without any line are not receipts."""
    receipts: list[PrintedReceipt] = []
    lines: list[str] = []
    started_t = 0.0
    started_wall = ""

    def close(ended_by: EndedBy, event: dict[str, Any] | None) -> None:
        nonlocal lines
        if lines:
            receipts.append(
                PrintedReceipt(
                    index=len(receipts),
                    lines=tuple(lines),
                    complete=ended_by == "cut",
                    ended_by=ended_by,
                    started_t=started_t,
                    ended_t=None if event is None else float(event["mono"]),
                    started_wall=started_wall,
                )
            )
        lines = []

    for event in read_events(path):
        kind = event["event"]
        if kind == "line":
            if not lines:
                started_t, started_wall = float(event["mono"]), str(event["t"])
            lines.append(str(event["text"]))
        elif kind == "cut":
            close("cut", event)
        elif kind == "torn":
            close("torn", event)
        elif kind == "power_on":
            close("power_loss", event)
        else:
            raise ValueError(f"{path}: unknown roll event {kind!r}")
    close("open", None)
    return receipts
