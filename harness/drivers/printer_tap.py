"""The printer tap: a man-in-the-middle between a terminal and its receipt printer (any printer).

Run as a bench service, `python -m harness.drivers.printer_tap --rig RIG [--record-dir DIR]`
(like toxiproxy it outlives the test process that uses it: it never asks to die with its parent,
and stops on SIGTERM / SIGINT), or in-process with `PrinterTapService(config, record_dir)`.
It forwards bytes both ways (TCP_NODELAY), records every chunk to
`<record_dir>/printer-stream.jsonl` *before* forwarding it, decodes the terminal's ESC/POS stream
into receipts, and fakes printer faults for a printer that cannot be jammed on command. An HTTP
control API (`GET /health /faults /receipts /stream?since=N /events`, `PUT /faults`,
`POST /reset`) drives it; `/events` streams JSON lines (first receipt byte, cut, status query,
fault changes) within a fraction of a millisecond, so a fault can be timed against a receipt.

The one thing to know: while a fault is active the tap *is* the printer as far as the terminal
can tell. It holds the terminal's bytes (nothing reaches the real printer, so a GS r barrier in
them stays unanswered), answers DLE EOT n itself with exactly the bytes `harness.sim.printer`
answers for that fault, and sends ASB on a change when the terminal enabled it. A fault lands
at a byte boundary of the stream: what was forwarded before it still prints on the real printer.

Fault semantics (chosen to match `harness.sim.printer`):
- jam: latches an autocutter error (DLE EOT 1/2/3 = 1A/52/1A). Clearing the jam (PUT or
  /reset) leaves the error latched, "waiting for recovery" (DLE EOT 1 = 3A), until the terminal
  sends DLE ENQ 1 (the held data is forwarded) or DLE ENQ 2 (the held data of every connection
  is dropped, and the receipts it belonged to end "dropped"). DLE ENQ while the jam is still
  set, or without a latched error, is ignored. `POST /reset?recover=1|2` does that recovery on
  the terminal's behalf (for a bench reset without a terminal); plain /reset drops nothing.
- paper_out (1A/32/12/72) and cover_open (1A/16/12/12): held data is forwarded on clear.
- offline (printer unplugged): the tap is silent. Real-time commands are swallowed unanswered
  (never answered late), the terminal's bytes are held, the printer's own bytes to the terminal
  are held too, and no ASB is sent; everything held is delivered in order on clear. New TCP
  connections are still accepted (the kernel completes the handshake).
- While no fault is active, every byte (DLE EOT, DLE ENQ, GS a included) is forwarded as is
  and the real printer answers; a DLE that may start a real-time command is kept back only
  until its command is complete, so a split `10 04 | 01` is never half forwarded.
A faked status reports paper "ok" otherwise (the tap does not know the real roll's level).

Links: each terminal TCP connection gets its own printer connection (opened at accept; if the
printer is unreachable and no fault is active the terminal's connection is closed, as a dead
printer would; a printer that closes its side closes the terminal's too, so a power cut is
seen). A terminal that leaves while its bytes are held does not lose them: they go to the
printer on clear, then the printer side is half-closed. A serial terminal side is one link for
the tap's whole life (the printer connection is reopened on the next byte). A serial printer
side is shared by all terminal links; its bytes go to the link that last wrote to it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, urlsplit

import serial

from harness.json_http import JsonHandler, JsonHttpServer
from harness.protocols.escpos import (
    AutoStatusBack,
    Cut,
    EscPosDecoder,
    PrinterStatus,
    RealtimeRecovery,
    RealtimeStatus,
    TextLine,
    TransmitStatus,
    asb_status_bytes,
    realtime_status_byte,
)
from harness.rig import Address, Endpoint, PrinterTap, RigError, load_rig
from harness.sim.process import listen, setup_logging, stop_event
from harness.stamped_log import now_wall

log = logging.getLogger("harness.drivers.printer_tap")

FAULT_KEYS = ("jam", "paper_out", "cover_open", "offline")
STREAM_FILE = "printer-stream.jsonl"
EVENTS_FILE = "tap-events.jsonl"
READ_CHUNK = 4096
SEND_TIMEOUT_S = 2.0  # a printer that stops reading blocks the tap at most this long per write
CONNECT_TIMEOUT_S = 2.0
DRAIN_S = 2.0  # after the terminal left: how long to wait for the printer to close its side
TICK_S = 0.2  # housekeeping period of the I/O thread (reopen serial ports, drain deadlines)
KEEPALIVE_S = 1.0  # an empty line on /events this often, so dead subscribers are noticed
MAX_CHUNKS_KEPT = 200_000  # /stream serves this many recent chunks; the file keeps them all
MAX_CHUNKS_PER_REPLY = 10_000
DLE = 0x10

Direction = Literal["terminal>printer", "printer>terminal", "tap>terminal"]
Delivery = Literal["forwarded", "held", "dropped"]


class TapError(RuntimeError):
    """The tap cannot start (a port is taken, a serial device is missing)."""


# -- records ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    """One recv() worth of bytes in one direction, as recorded before it was forwarded."""

    seq: int
    t: float  # monotonic, right after the recv
    wall: str
    direction: Direction
    session: int
    data: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "t": self.t,
            "wall": self.wall,
            "dir": self.direction,
            "session": self.session,
            "len": len(self.data),
            "hex": self.data.hex(),
        }


@dataclass
class FaultState:
    """The faults the tap fakes; `cutter_error` is the latched error a jam leaves behind."""

    jam: bool = False
    paper_out: bool = False
    cover_open: bool = False
    offline: bool = False
    cutter_error: bool = False

    @property
    def holding(self) -> bool:
        """Terminal bytes are held (and real-time commands intercepted) while this is true."""
        return self.cutter_error or self.paper_out or self.cover_open or self.offline

    def status(self) -> PrinterStatus:
        """What the tap reports; the same rule as harness.sim.printer for the same faults."""
        return PrinterStatus(
            offline=self.cutter_error or self.cover_open or self.paper_out,
            cover_open=self.cover_open,
            paper="out" if self.paper_out else "ok",
            autocutter_error=self.cutter_error,
            waiting_recovery=self.cutter_error and not self.jam,
            error=self.cutter_error,
        )


@dataclass
class _Fate:
    """Where a connection's terminal bytes went, by stream offset (kept after it closed)."""

    fed: int = 0
    held: list[tuple[int, bytes]] = field(default_factory=list)
    dropped: list[tuple[int, int, str]] = field(default_factory=list)

    def drop_held(self, reason: str) -> int:
        count = sum(len(data) for _, data in self.held)
        self.dropped.extend((off, off + len(data), reason) for off, data in self.held)
        self.held.clear()
        return count


@dataclass
class _Receipt:
    """A receipt as the terminal sent it: from the first content byte after a cut to a cut."""

    session: int
    start: int  # stream offset of its first byte in its connection
    first_t: float
    first_wall: str
    last_t: float
    last_wall: str
    lines: list[str] = field(default_factory=list)
    end: int | None = None
    ended: Literal["cut", "open", "dropped", "closed"] = "open"
    partial_cut: bool = False


# -- ports --------------------------------------------------------------------------------------
class _SocketPort:
    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(SEND_TIMEOUT_S)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> bytes | None:
        """Available bytes; b"" when the peer closed; None when nothing was there after all."""
        try:
            return self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return None
        except OSError as exc:
            log.info("%s: receive failed: %s", self.name, exc)
            return b""

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


class _SerialPort:
    """A serial device through pyserial (non-blocking reads, bounded writes)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.name = f"serial {endpoint.device}"
        try:
            self.port = serial.Serial(
                endpoint.device, baudrate=endpoint.baud, timeout=0, write_timeout=SEND_TIMEOUT_S
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TapError(f"cannot open {endpoint}: {exc}") from exc

    def fileno(self) -> int:
        return int(self.port.fileno())

    def read(self) -> bytes | None:
        try:
            return os.read(self.fileno(), READ_CHUNK)
        except BlockingIOError:
            return None
        except OSError as exc:  # EIO: the other end of a pty went away, a USB adapter unplugged
            if exc.errno != errno.EIO:
                log.warning("%s: read failed: %s", self.name, exc)
            return b""

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def shutdown_write(self) -> None:
        """A serial line has no half-close."""

    def close(self) -> None:
        self.port.close()


_Port = _SocketPort | _SerialPort


class _Session:
    """One terminal link (a TCP connection, or the serial port for the tap's whole life)."""

    def __init__(self, sid: int, terminal: _Port, persistent: bool) -> None:
        self.sid = sid
        self.terminal: _Port | None = terminal
        self.printer: _Port | None = None
        self.persistent = persistent  # the serial terminal side: survives printer reconnects
        self.decoder = EscPosDecoder()
        self.fate = _Fate()
        self.window = bytearray()  # bytes from offset `sent` to `fate.fed`, not yet disposed of
        self.sent = 0
        self.mark = 0  # stream offset up to which content has been classified
        self.up_held = bytearray()  # printer -> terminal bytes held while offline
        self.asb_mask = 0
        self.asb_status: PrinterStatus | None = None  # what the terminal last heard by ASB
        self.receipt: _Receipt | None = None
        self.shut_at: float | None = None  # when the printer side was half-closed (draining)
        self.closed = False

    @property
    def name(self) -> str:
        return f"session {self.sid}"


# -- evidence -----------------------------------------------------------------------------------
class _Recorder:
    """Appends chunks and events as JSON lines, one unbuffered write each (survives a kill)."""

    def __init__(self, record_dir: Path) -> None:
        record_dir.mkdir(parents=True, exist_ok=True)
        self.stream_path = record_dir / STREAM_FILE
        self.events_path = record_dir / EVENTS_FILE
        self.seq = _count_lines(self.stream_path)
        self.chunks: deque[Chunk] = deque(maxlen=MAX_CHUNKS_KEPT)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._stream_fd = os.open(self.stream_path, flags, 0o644)
        self._events_fd = os.open(self.events_path, flags, 0o644)

    def chunk(self, direction: Direction, session: int, data: bytes, t: float) -> Chunk:
        self.seq += 1
        record = Chunk(self.seq, t, now_wall(), direction, session, data)
        _write_line(self._stream_fd, self.stream_path, json.dumps(record.to_json()))
        self.chunks.append(record)
        return record

    def event(self, line: str) -> None:
        _write_line(self._events_fd, self.events_path, line)

    def since(self, seq: int, limit: int) -> tuple[list[Chunk], bool]:
        """Chunks after `seq`; the flag says older ones asked for are only in the file."""
        truncated = bool(self.chunks) and self.chunks[0].seq > seq + 1
        chosen = [c for c in self.chunks if c.seq > seq][:limit]
        return chosen, truncated

    def close(self) -> None:
        for fd in (self._stream_fd, self._events_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _write_line(fd: int, path: Path, line: str) -> None:
    data = (line + "\n").encode("utf-8")
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(f"{path}: short write ({written} of {len(data)} bytes)")


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


class _EventHub:
    """Fans events out to /events subscribers; each has its own queue (None = the tap stops)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: set[queue.SimpleQueue[bytes | None]] = set()
        self._closed = False

    def subscribe(self) -> queue.SimpleQueue[bytes | None]:
        q: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        with self._lock:
            if self._closed:
                q.put(None)
            self._queues.add(q)
        return q

    def unsubscribe(self, q: queue.SimpleQueue[bytes | None]) -> None:
        with self._lock:
            self._queues.discard(q)

    def publish(self, line: bytes) -> None:
        with self._lock:
            for q in self._queues:
                q.put(line)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for q in self._queues:
                q.put(None)


# -- the service --------------------------------------------------------------------------------
class PrinterTapService:
    """The tap: one I/O thread owns every link; the HTTP threads only change state and wake it.

    Every decision about a terminal byte (record, decode, hold / intercept / forward) is taken
    under one lock, in stream order, by the I/O thread; fault changes take effect under the same
    lock, so the instant they return is the instant from which bytes are treated differently.
    """

    def __init__(self, config: PrinterTap, record_dir: Path) -> None:
        self.config = config
        self.record_dir = Path(record_dir)
        self.started_t = 0.0
        self._lock = threading.RLock()
        self._faults = FaultState()
        self._fault_log: list[dict[str, Any]] = []
        self._sessions: dict[int, _Session] = {}
        self._fates: dict[int, _Fate] = {}
        self._receipts: list[_Receipt] = []
        self._next_sid = 1
        self._serial_owner: int | None = None
        self._stop = threading.Event()
        self._hub = _EventHub()
        self._recorder: _Recorder | None = None
        self._selector: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._terminal_serial: _Session | None = None
        self._printer_serial: _SerialPort | None = None
        self._wake_r = self._wake_w = -1
        self._io_thread: threading.Thread | None = None
        self._http: _ControlServer | None = None
        self._http_thread: threading.Thread | None = None
        self._next_reopen = 0.0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> PrinterTapService:
        """Bind every port and start the threads; raise TapError (nothing left open) on failure."""
        try:
            self._open()
        except (OSError, TapError) as exc:
            self._close_resources()
            raise TapError(f"printer tap cannot start: {exc}") from exc
        self.started_t = time.monotonic()
        self._io_thread = threading.Thread(target=self._io_loop, name="tap-io")
        self._io_thread.start()
        assert self._http is not None
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name="tap-http"
        )
        self._http_thread.start()
        log.info(
            "tap up: terminal side %s, printer side %s, control http://%s, records %s",
            self.config.terminal_side,
            self.config.printer_side,
            self.config.control,
            self.record_dir,
        )
        return self

    def stop(self) -> None:
        """Stop serving, close every link and thread; held data is lost (logged)."""
        self._stop.set()
        self._wake()
        if self._io_thread is not None:
            self._io_thread.join(timeout=10)
        self._hub.close()
        if self._http is not None and self._http_thread is not None:
            self._http.shutdown()
            self._http_thread.join(timeout=10)
        self._close_resources()
        log.info("tap stopped")

    @property
    def alive(self) -> bool:
        return self._io_thread is not None and self._io_thread.is_alive()

    def __enter__(self) -> PrinterTapService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open(self) -> None:
        self._recorder = _Recorder(self.record_dir)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        side = self.config.terminal_side
        if side.scheme == "tcp":
            assert side.address is not None
            self._listener = listen(side.address)
            self._listener.setblocking(False)
            self._selector.register(self._listener, selectors.EVENT_READ, ("accept", None))
        if self.config.printer_side.scheme == "serial":
            self._open_printer_serial()
        if side.scheme == "serial":
            self._open_terminal_serial()
        self._http = _ControlServer(self.config.control, self)

    def _close_resources(self) -> None:
        with self._lock:
            for session in list(self._sessions.values()):
                self._close_session(session, "the tap stopped")
            if self._printer_serial is not None:
                self._unregister(self._printer_serial)
                self._printer_serial.close()
                self._printer_serial = None
        if self._http is not None:
            self._http.server_close()
            self._http = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"x")

    # -- control (called from HTTP threads) --------------------------------------------------
    def faults(self) -> dict[str, Any]:
        with self._lock:
            return self._fault_json()

    def set_faults(self, changes: Mapping[str, bool]) -> dict[str, Any]:
        """Apply fault changes; "t" in the answer is when they took effect (monotonic)."""
        unknown = [key for key in changes if key not in FAULT_KEYS]
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r}; allowed: {', '.join(FAULT_KEYS)}")
        with self._lock:
            applied: list[dict[str, Any]] = []
            for key, on in changes.items():
                if getattr(self._faults, key) == bool(on):
                    continue
                setattr(self._faults, key, bool(on))
                if key == "jam" and on:
                    self._faults.cutter_error = True
                applied.append(self._fault_changed(key, bool(on), "control"))
            t = applied[-1]["t"] if applied else time.monotonic()
            answer = {"t": t, "changes": applied, **self._fault_json()}
        self._wake()
        return answer

    def reset(self, recover: int | None = None) -> dict[str, Any]:
        """Clear every fault; a latched jam error waits for DLE ENQ unless `recover` is 1 or 2."""
        if recover not in (None, 1, 2):
            raise ValueError(f"recover must be 1 or 2, got {recover!r}")
        with self._lock:
            answer = self.set_faults(dict.fromkeys(FAULT_KEYS, False))
            if recover is not None and self._faults.cutter_error:
                answer["changes"].append(self._recover(recover, "control"))
                answer.update(self._fault_json())
                answer["t"] = answer["changes"][-1]["t"]
        self._wake()
        return answer

    def receipts(self) -> list[dict[str, Any]]:
        with self._lock:
            shown = [r for r in self._receipts if r.lines]
            return [self._receipt_json(index, r) for index, r in enumerate(shown)]

    def stream(self, since: int, limit: int = MAX_CHUNKS_PER_REPLY) -> dict[str, Any]:
        with self._lock:
            assert self._recorder is not None
            chunks, truncated = self._recorder.since(since, limit)
            last = chunks[-1].seq if chunks else max(since, 0)
            return {
                "chunks": [c.to_json() for c in chunks],
                "next": last,
                "truncated": truncated,
                "path": str(self._recorder.stream_path),
            }

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {
                "ok": self.alive,
                "pid": os.getpid(),
                "terminal_side": str(self.config.terminal_side),
                "printer_side": str(self.config.printer_side),
                "sessions": len(self._sessions),
                "uptime_s": time.monotonic() - self.started_t,
                "record_dir": str(self.record_dir),
            }

    def subscribe(self) -> queue.SimpleQueue[bytes | None]:
        return self._hub.subscribe()

    def unsubscribe(self, q: queue.SimpleQueue[bytes | None]) -> None:
        self._hub.unsubscribe(q)

    # -- state helpers (call with the lock held) ---------------------------------------------
    def _fault_json(self) -> dict[str, Any]:
        f = self._faults
        status = f.status() if f.holding else PrinterStatus()
        return {
            **{key: getattr(f, key) for key in FAULT_KEYS},
            "cutter_error": f.cutter_error,
            "waiting_recovery": f.cutter_error and not f.jam,
            "holding": f.holding,
            "held_bytes": sum(len(data) for fate in self._fates.values() for _, data in fate.held),
            "status": status.summary(),
            "answers": (
                None
                if f.offline or not f.holding
                else {str(n): realtime_status_byte(n, status) for n in (1, 2, 3, 4)}
            ),
            "history": list(self._fault_log),
        }

    def _fault_changed(self, fault: str, on: bool, by: str) -> dict[str, Any]:
        t = time.monotonic()
        change = {"fault": fault, "on": on, "by": by, "t": t, "wall": now_wall()}
        self._fault_log.append(change)
        log.warning("fault %s %s (by %s)", fault, "set" if on else "cleared", by)
        self._publish("fault_set" if on else "fault_cleared", t, fault=fault, by=by)
        return change

    def _publish(self, event: str, t: float, **fields: Any) -> None:
        line = json.dumps({"event": event, "t": t, "wall": now_wall(), **fields})
        if self._recorder is not None:
            self._recorder.event(line)
        self._hub.publish(line.encode("utf-8") + b"\n")

    def _receipt_json(self, index: int, r: _Receipt) -> dict[str, Any]:
        fate = self._fates[r.session]
        end = r.end if r.end is not None else fate.fed
        delivery: Delivery = "forwarded"
        if any(a < end and b > r.start for a, b, _ in fate.dropped):
            delivery = "dropped"
        elif any(off < end and off + len(data) > r.start for off, data in fate.held):
            delivery = "held"
        return {
            "index": index,
            "session": r.session,
            "lines": list(r.lines),
            "complete": r.ended == "cut",
            "partial_cut": r.partial_cut,
            "ended": r.ended,
            "delivery": delivery,
            "first_t": r.first_t,
            "first_wall": r.first_wall,
            "last_t": r.last_t,
            "last_wall": r.last_wall,
        }

    # -- the I/O thread ----------------------------------------------------------------------
    def _io_loop(self) -> None:
        assert self._selector is not None
        next_tick = 0.0
        try:
            while not self._stop.is_set():
                ready = self._selector.select(timeout=TICK_S)
                woken = False
                for key, _ in ready:
                    kind, session = key.data
                    woken = woken or kind == "wake"
                    self._on_ready(kind, session)
                now = time.monotonic()
                if woken or now >= next_tick:  # the data path settles what it changes itself
                    with self._lock:
                        self._settle()
                if now >= next_tick:
                    self._maintain()
                    next_tick = now + TICK_S
        except Exception:
            log.exception("the tap's I/O thread crashed")
            raise

    def _on_ready(self, kind: str, session: _Session | None) -> None:
        if kind == "wake":
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        elif kind == "accept":
            self._accept()
        elif kind == "terminal" and session is not None and session.terminal is not None:
            data = session.terminal.read()
            t = time.monotonic()
            if data is not None:
                with self._lock:
                    if data:
                        self._terminal_data(session, data, t)
                    else:
                        self._terminal_closed(session)
        elif kind == "printer" and session is not None and session.printer is not None:
            data = session.printer.read()
            t = time.monotonic()
            if data is not None:
                with self._lock:
                    self._printer_data(session, data, t)
        elif kind == "printer_serial" and self._printer_serial is not None:
            data = self._printer_serial.read()
            t = time.monotonic()
            if data is not None:
                with self._lock:
                    owner = self._sessions.get(self._serial_owner or -1)
                    if owner is None and self._sessions:
                        owner = self._sessions[max(self._sessions)]
                    if data and owner is not None:
                        self._printer_data(owner, data, t)
                    elif data:
                        self._record("printer>terminal", 0, data, t)
                    else:
                        log.warning(
                            "%s: the printer's serial line failed", self._printer_serial.name
                        )
                        self._unregister(self._printer_serial)
                        self._printer_serial.close()
                        self._printer_serial = None

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, peer = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        with self._lock:
            session = self._new_session(_SocketPort(sock, f"terminal {peer[0]}:{peer[1]}"), False)
            log.info("%s: terminal %s:%s connected", session.name, peer[0], peer[1])
            if self._printer_for(session) is None and not self._faults.holding:
                log.warning("%s: printer unreachable, closing the terminal's link", session.name)
                self._close_session(session, "printer unreachable")

    def _new_session(self, terminal: _Port, persistent: bool) -> _Session:
        assert self._selector is not None
        session = _Session(self._next_sid, terminal, persistent)
        self._next_sid += 1
        self._sessions[session.sid] = session
        self._fates[session.sid] = session.fate
        self._selector.register(terminal.fileno(), selectors.EVENT_READ, ("terminal", session))
        return session

    def _printer_for(self, session: _Session) -> _Port | None:
        """The session's printer link, connected on first need; None when unreachable."""
        if session.printer is not None or session.closed:
            return session.printer
        side = self.config.printer_side
        if side.scheme == "serial":
            if self._printer_serial is None:
                self._open_printer_serial()
            session.printer = self._printer_serial
            return session.printer
        assert side.address is not None and self._selector is not None
        try:
            sock = socket.create_connection(
                (side.address.host, side.address.port), timeout=CONNECT_TIMEOUT_S
            )
        except OSError as exc:
            log.warning("%s: cannot connect to the printer %s: %s", session.name, side, exc)
            return None
        session.printer = _SocketPort(sock, f"printer {side.address}")
        self._selector.register(sock.fileno(), selectors.EVENT_READ, ("printer", session))
        return session.printer

    def _open_printer_serial(self) -> None:
        try:
            self._printer_serial = _SerialPort(self.config.printer_side)
        except TapError as exc:
            log.warning("%s", exc)
            return
        if self._selector is not None:
            self._selector.register(
                self._printer_serial.fileno(), selectors.EVENT_READ, ("printer_serial", None)
            )

    def _open_terminal_serial(self) -> None:
        port = _SerialPort(self.config.terminal_side)
        with self._lock:
            self._terminal_serial = self._new_session(port, True)
        log.info("%s: terminal serial line %s open", self._terminal_serial.name, port.name)

    def _maintain(self) -> None:
        """Reopen a failed serial terminal line; end drains the printer never closed."""
        now = time.monotonic()
        with self._lock:
            for session in list(self._sessions.values()):
                if session.shut_at is not None and now - session.shut_at > DRAIN_S:
                    self._close_session(session, "drained")
        if self.config.terminal_side.scheme != "serial" or now < self._next_reopen:
            return
        if self._terminal_serial is None or self._terminal_serial.sid not in self._sessions:
            self._next_reopen = now + 1.0
            try:
                self._open_terminal_serial()
            except TapError as exc:
                log.warning("%s (retrying)", exc)

    def _unregister(self, port: _Port) -> None:
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(port.fileno())

    def _close_session(self, session: _Session, reason: str) -> None:
        """Close both links (a shared serial printer stays open); held bytes are lost."""
        lost = session.fate.drop_held(reason)
        if lost:
            log.warning("%s: %d held bytes lost: %s", session.name, lost, reason)
        if session.receipt is not None:
            session.receipt.ended = "closed"
            session.receipt.end = session.fate.fed
            session.receipt = None
        for port in (session.terminal, session.printer):
            if port is not None and port is not self._printer_serial:
                self._unregister(port)
                port.close()
        session.terminal = session.printer = None
        session.closed = True
        session.window.clear()
        session.up_held.clear()
        self._sessions.pop(session.sid, None)
        log.info("%s: closed (%s)", session.name, reason)

    # -- terminal -> printer (lock held) -----------------------------------------------------
    def _terminal_data(self, s: _Session, data: bytes, t: float) -> None:
        """Record, decode, then hold / intercept / forward, in stream order."""
        self._record("terminal>printer", s.sid, data, t)
        s.window += data
        s.fate.fed += len(data)
        decoder = s.decoder
        for event in decoder.iter_feed(data):
            end = decoder.offset
            if isinstance(event, RealtimeStatus | RealtimeRecovery | AutoStatusBack):
                start = end - 3
                self._content(s, start, t)
                s.mark = end
                self._control(s, event, start, end, t)
                continue
            if isinstance(event, TransmitStatus):
                self._content(s, end - 3, t)
                s.mark = end
                continue
            self._content(s, end, t)
            s.mark = end
            if isinstance(event, TextLine) and s.receipt is not None:
                s.receipt.lines.append(event.text)
            elif isinstance(event, Cut):
                self._publish("cut", t, session=s.sid, offset=end, partial=event.partial)
                if s.receipt is not None:
                    s.receipt.end, s.receipt.ended = end, "cut"
                    s.receipt.partial_cut = event.partial
                    s.receipt = None
        self._content(s, decoder.offset, t)
        s.mark = decoder.offset
        pending = decoder.pending
        self._pass(s, decoder.offset if pending[:1] == bytes((DLE,)) else s.fate.fed)

    def _content(self, s: _Session, upto: int, t: float) -> None:
        """Bytes [mark, upto) are receipt content: the first after a cut opens a receipt."""
        if upto <= s.mark:
            return
        if s.receipt is None:
            wall = now_wall()
            s.receipt = _Receipt(s.sid, s.mark, t, wall, t, wall)
            self._receipts.append(s.receipt)
            self._publish("first_byte", t, session=s.sid, offset=s.mark)
        else:
            s.receipt.last_t, s.receipt.last_wall = t, now_wall()

    def _control(
        self,
        s: _Session,
        event: RealtimeStatus | RealtimeRecovery | AutoStatusBack,
        start: int,
        end: int,
        t: float,
    ) -> None:
        f = self._faults
        if isinstance(event, AutoStatusBack):
            s.asb_mask = event.mask
            s.asb_status = (f.status() if f.holding else PrinterStatus()) if event.mask else None
            return
        if not f.holding:  # the real printer answers: forwarded with the rest of the chunk
            if isinstance(event, RealtimeStatus):
                self._publish("status_query", t, session=s.sid, n=event.n, answered_by="printer")
            return
        self._pass(s, start)
        self._skip(s, end)
        if isinstance(event, RealtimeStatus):
            if f.offline:
                answered_by, reply = "nobody", None
            else:
                reply = realtime_status_byte(event.n, f.status())
                answered_by = "tap"
                self._to_terminal(s, bytes((reply,)), "tap>terminal", t)
            self._publish(
                "status_query", t, session=s.sid, n=event.n, answered_by=answered_by, reply=reply
            )
        elif f.offline:
            log.info("%s: DLE ENQ %d swallowed: the printer is offline", s.name, event.n)
        else:
            self._recover(event.n, s.name)
            self._settle()

    def _recover(self, n: int, by: str) -> dict[str, Any]:
        """DLE ENQ n: only a latched cutter error whose jam is gone recovers (as the sim)."""
        f = self._faults
        t = time.monotonic()
        if n not in (1, 2) or not f.cutter_error or f.jam:
            why = "the jam is still there" if f.jam else "no recoverable error"
            log.info("DLE ENQ %d from %s ignored: %s", n, by, why)
            self._publish("recovery", t, n=n, by=by, accepted=False, reason=why)
            return {"fault": "cutter_error", "on": True, "by": by, "t": t, "ignored": why}
        f.cutter_error = False
        change = self._fault_changed("cutter_error", False, f"DLE ENQ {n} from {by}")
        dropped = 0
        if n == 2:
            for session in self._sessions.values():
                had_held = bool(session.fate.held)
                dropped += session.fate.drop_held(f"DLE ENQ 2 from {by}")
                session.decoder.discard_text()
                if had_held and session.receipt is not None:
                    session.receipt.ended = "dropped"
                    session.receipt.end = session.fate.fed
                    session.receipt = None
            log.warning("DLE ENQ 2: receive buffer cleared, %d held bytes dropped", dropped)
        self._publish("recovery", change["t"], n=n, by=by, accepted=True, dropped=dropped)
        return change

    def _pass(self, s: _Session, upto: int) -> None:
        """Dispose of window bytes up to `upto`: hold them while faulted, else forward them."""
        if upto <= s.sent:
            return
        off, data = s.sent, bytes(s.window[: upto - s.sent])
        del s.window[: upto - s.sent]
        s.sent = upto
        if self._faults.holding:
            s.fate.held.append((off, data))
            return
        self._release(s)
        self._forward(s, off, data)

    def _skip(self, s: _Session, upto: int) -> None:
        """An intercepted command: consumed here, never forwarded."""
        if upto > s.sent:
            del s.window[: upto - s.sent]
            s.sent = upto

    def _release(self, s: _Session) -> None:
        if not s.fate.held:
            return
        held, s.fate.held = s.fate.held, []
        total = sum(len(data) for _, data in held)
        log.info("%s: forwarding %d held bytes", s.name, total)
        self._publish("released", time.monotonic(), session=s.sid, bytes=total)
        for off, data in held:
            self._forward(s, off, data)

    def _forward(self, s: _Session, off: int, data: bytes) -> None:
        printer = self._printer_for(s)
        if printer is None:
            s.fate.dropped.append((off, off + len(data), "printer unreachable"))
            if not s.persistent:
                self._close_session(s, "printer unreachable")
            return
        if isinstance(printer, _SerialPort):
            self._serial_owner = s.sid
        try:
            printer.write(data)
        except OSError as exc:
            log.warning("%s: %d bytes to the printer lost: %s", s.name, len(data), exc)
            s.fate.dropped.append((off, off + len(data), f"printer link failed: {exc}"))
            self._printer_lost(s)

    def _terminal_closed(self, s: _Session) -> None:
        log.info("%s: the terminal closed its link", s.name)
        if s.terminal is not None:
            self._unregister(s.terminal)
            s.terminal.close()
            s.terminal = None
        self._pass(s, s.fate.fed)  # a kept-back partial command goes out as it is
        if s.persistent:
            self._close_session(s, "serial line closed")
            return
        held = sum(len(data) for _, data in s.fate.held)
        if held:
            log.info("%s: %d bytes still held for the printer", s.name, held)
        self._settle()

    # -- printer -> terminal (lock held) -----------------------------------------------------
    def _printer_data(self, s: _Session, data: bytes, t: float) -> None:
        if not data:
            self._printer_lost(s)
            return
        self._record("printer>terminal", s.sid, data, t)
        if s.terminal is None:
            return
        if self._faults.offline:
            s.up_held += data
            return
        if s.up_held:
            data, s.up_held = bytes(s.up_held) + data, bytearray()
        self._to_terminal(s, data, None, t)

    def _printer_lost(self, s: _Session) -> None:
        if s.printer is not None and s.printer is not self._printer_serial:
            self._unregister(s.printer)
            s.printer.close()
        s.printer = None
        if s.persistent:
            log.info("%s: the printer closed its link; reconnecting on the next byte", s.name)
        else:
            self._close_session(s, "the printer closed its link")

    def _to_terminal(self, s: _Session, data: bytes, record: Direction | None, t: float) -> None:
        if record is not None:
            self._record(record, s.sid, data, t)
        if s.terminal is None:
            return
        try:
            s.terminal.write(data)
        except OSError as exc:
            log.info("%s: %d bytes to the terminal lost: %s", s.name, len(data), exc)

    def _record(self, direction: Direction, sid: int, data: bytes, t: float) -> None:
        assert self._recorder is not None
        self._recorder.chunk(direction, sid, data, t)

    # -- after any change (lock held) --------------------------------------------------------
    def _settle(self) -> None:
        """Bring every link in line with the fault state: ASB, held data, finished drains."""
        f = self._faults
        presented = f.status() if f.holding else PrinterStatus()
        for s in list(self._sessions.values()):
            if not f.offline and s.terminal is not None:
                if s.asb_mask and s.asb_status != presented:
                    s.asb_status = presented
                    self._to_terminal(
                        s, asb_status_bytes(presented), "tap>terminal", time.monotonic()
                    )
                if s.up_held:
                    data, s.up_held = bytes(s.up_held), bytearray()
                    self._to_terminal(s, data, None, time.monotonic())
            if not f.holding:
                self._release(s)
            if s.closed:
                continue
            if s.terminal is None and not s.fate.held and s.shut_at is None:
                if s.printer is None or isinstance(s.printer, _SerialPort):
                    self._close_session(s, "the terminal left")
                else:
                    s.printer.shutdown_write()  # the printer gets every byte, then closes
                    s.shut_at = time.monotonic()


# -- HTTP control API ---------------------------------------------------------------------------
class _ControlServer(JsonHttpServer):
    def __init__(self, address: Address, tap: PrinterTapService) -> None:
        self.tap = tap
        super().__init__((address.host, address.port), _ControlHandler)


class _ControlHandler(JsonHandler):
    server: _ControlServer
    error_fields: ClassVar[dict[str, Any]] = {"key": None}

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        tap = self.server.tap
        if path == "/health":
            self.send_json(HTTPStatus.OK, tap.health())
        elif path == "/faults":
            self.send_json(HTTPStatus.OK, tap.faults())
        elif path == "/receipts":
            self.send_json(HTTPStatus.OK, {"receipts": tap.receipts()})
        elif path == "/stream":
            query = parse_qs(url.query)
            try:
                since = int(query.get("since", ["0"])[0])
                limit = int(query.get("limit", [str(MAX_CHUNKS_PER_REPLY)])[0])
            except ValueError:
                self.send_error_json("since and limit must be integers", key="since")
                return
            self.send_json(
                HTTPStatus.OK, tap.stream(since, max(1, min(limit, MAX_CHUNKS_PER_REPLY)))
            )
        elif path == "/events":
            self._events()
        else:
            self.send_not_found(path)

    def do_PUT(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path != "/faults":
            self.send_not_found(path)
            return
        ok, body = self.read_json()
        if not ok:
            return
        if not isinstance(body, dict):
            self.send_error_json('the body must be a JSON object like {"jam": true}')
            return
        for key, value in body.items():
            if key not in FAULT_KEYS:
                self.send_error_json(
                    f"unknown fault {key!r}; allowed: {', '.join(FAULT_KEYS)}", key=key
                )
                return
            if not isinstance(value, bool):
                self.send_error_json(f"{key} must be true or false, got {value!r}", key=key)
                return
        self.send_json(HTTPStatus.OK, self.server.tap.set_faults(body))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path.rstrip("/") != "/reset":
            self.send_not_found(url.path)
            return
        recover_text = parse_qs(url.query).get("recover", [None])[0]
        if recover_text not in (None, "1", "2"):
            self.send_error_json(f"recover must be 1 or 2, got {recover_text!r}", key="recover")
            return
        recover = None if recover_text is None else int(recover_text)
        self.send_json(HTTPStatus.OK, self.server.tap.reset(recover))

    def _events(self) -> None:
        """JSON lines, one per event, flushed at once; an empty line every KEEPALIVE_S."""
        tap = self.server.tap
        q = tap.subscribe()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            hello = {"event": "subscribed", "t": time.monotonic(), "wall": now_wall()}
            self.wfile.write(json.dumps(hello).encode("utf-8") + b"\n")
            while True:
                try:
                    line = q.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    self.wfile.write(b"\n")
                    continue
                if line is None:
                    return
                self.wfile.write(line)
        except OSError as exc:
            log.debug("events subscriber went away: %s", exc)
        finally:
            tap.unsubscribe(q)
            self.close_connection = True


# -- command line -------------------------------------------------------------------------------
def default_record_dir(rig_name: str) -> Path:
    return Path(".hil") / rig_name / "tap"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Printer tap: records the terminal<->printer stream and fakes printer faults."
    )
    parser.add_argument("--rig", required=True, help="rig file with a [printer] tap")
    parser.add_argument("--record-dir", help="where to record (default: .hil/<rig name>/tap)")
    args = parser.parse_args(argv)
    try:
        rig = load_rig(args.rig)
    except RigError as exc:
        parser.error(str(exc))
    if rig.printer is None or rig.printer.tap is None:
        parser.error(f"{rig.path}: [printer] has no tap = {{ ... }}; nothing to run")
    tap_config = rig.printer.tap
    record_dir = Path(args.record_dir) if args.record_dir else default_record_dir(rig.rig.name)
    setup_logging("printer-tap", record_dir)
    stop = stop_event()  # deliberately no die_with_parent(): a bench service outlives its user
    service = PrinterTapService(tap_config, record_dir)
    try:
        service.start()
    except TapError as exc:
        log.error("%s", exc)
        return 1
    try:
        while not stop.wait(0.2):
            if not service.alive:
                log.error("the I/O thread died; stopping")
                return 1
    finally:
        service.stop()
    return 0


def iter_stream_file(path: Path) -> Iterator[Chunk]:
    """Read a recorded printer-stream.jsonl back (a torn last line is skipped)."""
    lines = Path(path).read_bytes().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError:
            if number == len(lines):
                return
            raise
        yield Chunk(
            int(row["seq"]),
            float(row["t"]),
            str(row["wall"]),
            row["dir"],
            int(row["session"]),
            bytes.fromhex(row["hex"]),
        )


__all__ = [
    "FAULT_KEYS",
    "Chunk",
    "FaultState",
    "PrinterTapService",
    "TapError",
    "default_record_dir",
    "iter_stream_file",
    "main",
]

if __name__ == "__main__":
    raise SystemExit(main())
