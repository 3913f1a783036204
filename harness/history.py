"""The history: an append-only record of everything the harness asked, saw and did.

Every device call and every fault goes through `traced` into one history, Jepsen-style: an
`invoke` record is written before the call, then `ok`, `fail` or `info` (indeterminate) after it.
Records are written with one unbuffered append each, before the harness acts on them, so the
evidence is complete even if the harness process is killed. Times are monotonic seconds (the
same clock every process on the machine reads); wall clock is for display only. Card numbers
are masked on the way in, so the file never holds one.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from harness.protocols.cards import luhn_ok, mask_pan

F = TypeVar("F", bound=Callable[..., Any])
Listener = Callable[[dict[str, Any]], None]

_DIGITS = re.compile(r"\d{12,19}")


def mask_text(text: str) -> str:
    """Mask anything in free text that looks like a card number (Luhn-valid 12-19 digits)."""
    return _DIGITS.sub(lambda m: mask_pan(m.group(0)) if luhn_ok(m.group(0)) else m.group(0), text)


def plain(value: Any, depth: int = 0) -> Any:
    """A JSON-able, card-safe copy of a call argument or result."""
    if depth > 6:
        return repr(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bytes | bytearray):
        return mask_text(bytes(value).hex())
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "masked") and hasattr(value, "pan"):  # a card: only its masked form
        return {"card": value.masked}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v, depth + 1) for v in value]
    return mask_text(repr(value))


class History:
    """One run's (or one scenario's) history file: JSON lines, append-only."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self._seq = 0
        self._listeners: list[Listener] = []
        self._closed = False

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                os.close(self._fd)
                self._closed = True

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(record)` for every new record; returns the unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def record(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Append one record (written before this returns) and tell the listeners."""
        now = time.monotonic()
        with self._lock:
            if self._closed:
                raise ValueError(f"history {self.path} is closed")
            self._seq += 1
            entry: dict[str, Any] = {
                "seq": self._seq,
                "t": now,
                "wall": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "type": type_,
            }
            entry.update({key: plain(value) for key, value in fields.items()})
            line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
            written = os.write(self._fd, line.encode("utf-8"))
            if written != len(line.encode("utf-8")):
                raise OSError(f"history {self.path}: short write; the evidence is incomplete")
            listeners = list(self._listeners)
        for listener in listeners:
            listener(entry)
        return entry

    def records(self) -> list[dict[str, Any]]:
        return list(read_history(self.path))


def read_history(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record of a history file (a torn last line is skipped)."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n"):
                yield json.loads(line)


def outcome_type(result: Any) -> str:
    """Jepsen's op types: a definite success, a definite failure, or indeterminate."""
    outcome = getattr(result, "outcome", None)
    value = getattr(outcome, "value", outcome)
    if value == "NOT_PAID":
        return "fail"
    if value == "UNKNOWN":
        return "info"
    return "ok"


def traced(history: History, process: str, name: str, fn: F) -> F:
    """Wrap one device or fault call: `invoke` before, `ok`/`fail`/`info` after."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        value = {"args": list(args), "kwargs": kwargs} if kwargs else list(args)
        invoke = history.record("invoke", process=process, f=name, value=value)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            history.record(
                "info",
                process=process,
                f=name,
                invoke=invoke["seq"],
                error=f"{type(exc).__name__}: {exc}",
                duration=time.monotonic() - invoke["t"],
            )
            raise
        history.record(
            outcome_type(result),
            process=process,
            f=name,
            invoke=invoke["seq"],
            value=result,
            duration=time.monotonic() - invoke["t"],
        )
        return result

    return wrapper  # type: ignore[return-value]


class Traced:
    """A device seen through the history: every public method call is traced.

    `Traced(terminal, history, "terminal").sale("o1", 100)` records the invoke and the result;
    attributes that are not callables pass through untouched.
    """

    def __init__(self, target: Any, history: History, process: str) -> None:
        self._target = target
        self._history = history
        self._process = process

    @property
    def target(self) -> Any:
        return self._target

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name.startswith("_") or not callable(attribute):
            return attribute
        return traced(self._history, self._process, name, attribute)
