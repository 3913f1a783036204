"""Printer faults and the printer tap's readings, from the harness's side.

`PrinterFaults` is the small protocol scenarios inject printer faults through; two stand behind
it: `SimPrinterFaults` (the simulated printer's physical world: paper really jams in the sim) and
`TapPrinterFaults` (the printer tap's HTTP API: the tap fakes the fault for any printer, see
`harness.drivers.printer_tap`). `TapClient` reads what the tap saw: decoded receipts, the raw
stream, and a live event stream for scheduling a fault against the first byte of a receipt.

The one thing to know: every fault method returns the monotonic instant (`time.monotonic()`,
the clock of the history) at which the fault took effect: for the tap, the instant it changed
its state (the tap runs on the same host, so the clock is shared); for the sim, the instant the
world file was replaced (the sim printer acts on it at its next print action or status query,
or within its 20 ms watch period). Faults accumulate; `clear()` removes all of them, and a jam
then leaves the printer "waiting for recovery" until the terminal sends DLE ENQ 1 or 2, exactly
as a real printer does. Transport problems raise `PrinterFaultError` naming the URL and status.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from harness.closing import Closing
from harness.json_http import call_json
from harness.rig import Address, PrinterConfig
from harness.sim.world import PrinterPhysical, World

log = logging.getLogger(__name__)


class PrinterFaultError(RuntimeError):
    """A printer fault could not be applied or read; the message names the URL or the reason."""


class PrinterFaultUnsupported(PrinterFaultError, NotImplementedError):
    """This fault backend cannot produce that fault (the message says what can)."""


@runtime_checkable
class PrinterFaults(Protocol):
    """Printer faults a scenario injects; each returns when it took effect (monotonic s)."""

    def jam(self) -> float: ...

    def paper_out(self) -> float: ...

    def cover_open(self) -> float: ...

    def offline(self) -> float: ...

    def clear(self) -> float: ...

    def state(self) -> dict[str, Any]: ...


# -- records ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TapReceipt:
    """A receipt as the terminal sent it through the tap.

    `delivery` says where its bytes went: "forwarded" to the printer, still "held" by a fault,
    or "dropped" (DLE ENQ 2 after a jam, or a lost printer link). `ended` is "cut", "open",
    "dropped" (buffers cleared) or "closed" (the link closed before a cut).
    """

    index: int
    session: int
    lines: tuple[str, ...]
    complete: bool
    partial_cut: bool
    ended: str
    delivery: str
    first_t: float  # monotonic instant the first byte arrived at the tap
    first_wall: str
    last_t: float
    last_wall: str

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class StreamChunk:
    """One recorded chunk; direction is "terminal>printer", "printer>terminal" or "tap>terminal"."""

    seq: int
    t: float
    wall: str
    direction: str
    session: int
    data: bytes


@dataclass(frozen=True)
class TapEvent:
    """One event from the tap's /events stream; `t` is the tap's monotonic instant."""

    event: str  # first_byte, cut, status_query, fault_set, fault_cleared, recovery, released
    t: float
    wall: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    received_t: float = 0.0  # monotonic instant this client read it (delivery latency = - t)


def _tap_event(row: Mapping[str, Any], received_t: float) -> TapEvent:
    extra = {k: v for k, v in row.items() if k not in ("event", "t", "wall")}
    return TapEvent(str(row["event"]), float(row["t"]), str(row.get("wall", "")), extra, received_t)


# -- the simulated printer's physical world -----------------------------------------------------
class SimPrinterFaults:
    """Faults as physical conditions of the simulated printer (`World.set_printer`)."""

    def __init__(self, state_dir: Path) -> None:
        self.world = World(Path(state_dir))

    def __repr__(self) -> str:
        return f"SimPrinterFaults({self.world.root})"

    def jam(self) -> float:
        return self._set(jam=True)

    def paper_out(self) -> float:
        return self._set(paper="out")

    def cover_open(self) -> float:
        return self._set(cover_open=True)

    def offline(self) -> float:
        raise PrinterFaultUnsupported(
            "the simulated printer cannot be unplugged on its own: use a printer tap "
            '([printer] tap = {...}, faults = "tap") to fake an offline printer, or cut the '
            "printer's PSU output for a real loss of power"
        )

    def clear(self) -> float:
        self.world.set_printer(PrinterPhysical())
        return time.monotonic()

    def state(self) -> dict[str, Any]:
        physical = self.world.printer()
        return {
            "jam": physical.jam,
            "paper_out": physical.paper == "out",
            "cover_open": physical.cover_open,
            "offline": False,
            "source": "sim",
        }

    def _set(self, **changes: Any) -> float:
        self.world.set_printer(replace(self.world.printer(), **changes))
        return time.monotonic()


# -- the printer tap ----------------------------------------------------------------------------
class TapClient:
    """Reads and drives a printer tap over its HTTP control API (urllib, no proxies)."""

    def __init__(self, control: Address, timeout_s: float = 2.0) -> None:
        self.control = control
        self.timeout_s = timeout_s
        self.base_url = f"http://{control}"

    def __repr__(self) -> str:
        return f"TapClient({self.base_url})"

    def health(self) -> dict[str, Any]:
        return self._dict("GET", "/health")

    def faults(self) -> dict[str, Any]:
        return self._dict("GET", "/faults")

    def set_faults(self, **faults: bool) -> dict[str, Any]:
        """PUT /faults with e.g. jam=True; the answer's "t" is when it took effect."""
        return self._dict("PUT", "/faults", faults)

    def reset(self, recover: int | None = None) -> dict[str, Any]:
        """Clear every fault; `recover` 1/2 also does the terminal's DLE ENQ after a jam."""
        suffix = "" if recover is None else f"?recover={recover}"
        return self._dict("POST", f"/reset{suffix}", {})

    def receipts(self) -> list[TapReceipt]:
        document = self._dict("GET", "/receipts")
        rows = document.get("receipts")
        if not isinstance(rows, list):
            raise PrinterFaultError(f"{self.base_url}/receipts: no 'receipts' list in the answer")
        try:
            return [
                TapReceipt(
                    index=int(row["index"]),
                    session=int(row["session"]),
                    lines=tuple(str(line) for line in row["lines"]),
                    complete=bool(row["complete"]),
                    partial_cut=bool(row["partial_cut"]),
                    ended=str(row["ended"]),
                    delivery=str(row["delivery"]),
                    first_t=float(row["first_t"]),
                    first_wall=str(row["first_wall"]),
                    last_t=float(row["last_t"]),
                    last_wall=str(row["last_wall"]),
                )
                for row in rows
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise PrinterFaultError(f"{self.base_url}/receipts: malformed receipt: {exc}") from None

    def stream(self, since: int = 0) -> tuple[list[StreamChunk], int]:
        """Recorded chunks after `since`, and the `since` to pass next time."""
        document = self._dict("GET", f"/stream?since={since}")
        try:
            chunks = [
                StreamChunk(
                    int(row["seq"]),
                    float(row["t"]),
                    str(row["wall"]),
                    str(row["dir"]),
                    int(row["session"]),
                    bytes.fromhex(row["hex"]),
                )
                for row in document["chunks"]
            ]
            return chunks, int(document["next"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PrinterFaultError(f"{self.base_url}/stream: malformed answer: {exc}") from None

    def events(self, timeout_s: float = 5.0) -> EventStream:
        """An open /events stream (iterate it; close it). Subscribed when this returns."""
        return EventStream(self.control, timeout_s)

    def subscribe(
        self, callback: Callable[[TapEvent], None], timeout_s: float = 5.0
    ) -> Subscription:
        """Call `callback` from a background thread for every event until `close()`."""
        return Subscription(self.events(timeout_s), callback)

    def _dict(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        url = self.base_url + path
        document = call_json(
            method,
            url,
            body,
            timeout_s=self.timeout_s,
            error=PrinterFaultError,
            service="the printer tap",
        )
        if not isinstance(document, dict):
            raise PrinterFaultError(f"{method} {url}: expected a JSON object, got {document!r}")
        return document


class EventStream(Closing):
    """The tap's /events as an iterator of `TapEvent` (one HTTP/1.0 response, JSON lines).

    The tap writes an empty line every second; no line within `timeout_s` raises
    PrinterFaultError (the tap is gone or stuck). Iteration ends when the tap closes the stream.
    """

    def __init__(self, control: Address, timeout_s: float = 5.0) -> None:
        self.url = f"http://{control}/events"
        self.timeout_s = timeout_s
        try:
            self._sock = socket.create_connection((control.host, control.port), timeout=timeout_s)
        except OSError as exc:
            raise PrinterFaultError(
                f"GET {self.url}: cannot reach the printer tap: {exc}"
            ) from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._file = self._sock.makefile("rb")
        try:
            self._sock.sendall(f"GET /events HTTP/1.0\r\nHost: {control}\r\n\r\n".encode())
            status = self._file.readline()
            parts = status.split()
            if len(parts) < 2 or parts[1] != b"200":
                raise PrinterFaultError(f"GET {self.url}: {status.decode('latin-1').strip()!r}")
            while self._file.readline() not in (b"\r\n", b"\n", b""):
                pass
            first = self.next_event()
            if first is None or first.event != "subscribed":
                raise PrinterFaultError(f"GET {self.url}: the tap did not confirm the subscription")
        except (OSError, ValueError) as exc:
            self.close()
            raise PrinterFaultError(f"GET {self.url}: {exc}") from None
        except PrinterFaultError:
            self.close()
            raise

    def next_event(self) -> TapEvent | None:
        """The next event; None when the stream ended."""
        while True:
            try:
                line = self._file.readline()
            except TimeoutError:
                raise PrinterFaultError(
                    f"{self.url}: nothing for {self.timeout_s}s (not even a keepalive)"
                ) from None
            except (OSError, ValueError):  # shut down by close() from another thread
                return None
            received = time.monotonic()
            if not line:
                return None
            if line.strip():
                return _tap_event(json.loads(line), received)

    def __iter__(self) -> Iterator[TapEvent]:
        while (event := self.next_event()) is not None:
            yield event

    def shutdown(self) -> None:
        """Wake a thread blocked reading this stream (it then sees the end)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.shutdown()
        self._file.close()
        self._sock.close()


class Subscription(Closing):
    """A background thread feeding tap events to a callback; `close()` stops and joins it."""

    def __init__(self, stream: EventStream, callback: Callable[[TapEvent], None]) -> None:
        self._stream = stream
        self._callback = callback
        self._closing = threading.Event()
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="tap-events")
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            for event in self._stream:
                try:
                    self._callback(event)
                except Exception:
                    log.exception("tap event callback failed on %s", event.event)
        except (PrinterFaultError, ValueError) as exc:
            if not self._closing.is_set():
                self.error = exc
                log.warning("tap event stream ended: %s", exc)

    def close(self) -> None:
        self._closing.set()
        self._stream.shutdown()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)
        self._stream.close()


class TapPrinterFaults:
    """Faults faked by the printer tap (any printer, real or simulated)."""

    def __init__(self, control: Address, timeout_s: float = 2.0) -> None:
        self.client = TapClient(control, timeout_s)

    def __repr__(self) -> str:
        return f"TapPrinterFaults({self.client.base_url})"

    def jam(self) -> float:
        return self._set(jam=True)

    def paper_out(self) -> float:
        return self._set(paper_out=True)

    def cover_open(self) -> float:
        return self._set(cover_open=True)

    def offline(self) -> float:
        return self._set(offline=True)

    def clear(self, recover: int | None = None) -> float:
        """Every fault off; a jam's held data waits for the terminal's DLE ENQ 1 / 2.

        `recover=2` (or 1) also does that recovery on the terminal's behalf: for a bench reset
        that must leave the tap clean whatever the terminal did (the sim printer has no such
        hook: it is an honest device).
        """
        return _instant(self.client.reset(recover), self.client.base_url)

    def state(self) -> dict[str, Any]:
        return {**self.client.faults(), "source": "tap"}

    def _set(self, **faults: bool) -> float:
        return _instant(self.client.set_faults(**faults), self.client.base_url)


def _instant(answer: Mapping[str, Any], where: str) -> float:
    try:
        return float(answer["t"])
    except (KeyError, TypeError, ValueError):
        raise PrinterFaultError(f"{where}: the answer has no effect instant 't'") from None


def open_printer_faults(config: PrinterConfig, state_dir: Path | None) -> PrinterFaults:
    """The rig's printer fault backend: `faults = "tap"` or `"sim"`."""
    if config.faults == "tap":
        if config.tap is None:
            raise PrinterFaultError('[printer] faults = "tap" needs a [printer] tap = {...}')
        return TapPrinterFaults(config.tap.control)
    if config.faults == "sim":
        if state_dir is None:
            raise PrinterFaultError(
                '[printer] faults = "sim" needs a simulated rig ([sim] state_dir); '
                'on a real bench use faults = "tap"'
            )
        return SimPrinterFaults(state_dir)
    raise PrinterFaultError(f"[printer] faults is {config.faults!r}; allowed: tap, sim")
