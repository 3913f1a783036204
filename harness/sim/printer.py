"""The simulated ESC/POS receipt printer: its own OS process, on TCP and on a pty.

Run as `python -m harness.sim.printer --rig RIG`. Bytes from every link (TCP connections and the
pty at `<state_dir>/printer/printer.pty`) go through an `EscPosDecoder` in arrival order. The one
thing to know: real-time commands (DLE EOT n, DLE ENQ n) are answered at once by the I/O thread,
even while the printer is stopped by a fault, while everything else waits in one print queue
that a print-engine thread works through at `line_ms` per line, appending each line and cut to
the paper roll (`harness.sim.paper_roll`) as it physically happens. Faults are physical: the
engine reads `World.printer()` before every print action, so a jam, an empty roll or an open
cover stops it between two lines, and buffered data is simply lost when the process is killed.

Fault semantics (what a firmware under test has to cope with):
- jam (world `jam`): autocutter error, latched as soon as the engine or a DLE EOT query sees it;
  printing stops, the queue is held. When the jam is cleared in the world, the lines printed
  since the last cut are torn away (roll event "torn") and the printer waits for DLE ENQ 1
  (recover, then print the held data, retrying the action that stopped) or DLE ENQ 2 (recover
  after clearing the receive and print buffers: the held data is dropped). DLE ENQ is ignored
  while the jam is still physically there or when there is no autocutter error.
- paper out / cover open: the printer stops and resumes by itself when the world says the paper
  is back / the cover is closed; nothing is lost.
- GS r 1 is queued in order and answered when the engine reaches it: a completion barrier.
- GS a n (n != 0) enables Automatic Status Back on that link: 4 bytes at once, then on changes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import signal
import socket
import threading
import tty
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from harness.protocols.escpos import (
    AutoStatusBack,
    Cut,
    EscPosDecoder,
    Event,
    Feed,
    Init,
    PrinterStatus,
    RealtimeRecovery,
    RealtimeStatus,
    TextLine,
    TransmitStatus,
    Unknown,
    asb_status_bytes,
    paper_sensor_byte,
    realtime_status_byte,
)
from harness.rig import SimPrinter
from harness.sim.paper_roll import PaperRollWriter, roll_path
from harness.sim.process import listen, start_device
from harness.sim.world import Activity, PrinterPhysical, World

log = logging.getLogger("harness.sim.printer")

WATCH_S = 0.02  # how often the world is re-read while faulted or while ASB is enabled
SEND_TIMEOUT_S = 1.0
READ_CHUNK = 4096


def pty_link_path(state_dir: Path) -> Path:
    """Where the printer publishes its serial port (a symlink to /dev/pts/N)."""
    return Path(state_dir) / "printer" / "printer.pty"


class Link:
    """One way into the printer (a TCP connection or the pty) with its own decoder and ASB."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.decoder = EscPosDecoder()
        self.asb_mask = 0
        self.closed = False
        self._send_lock = threading.Lock()

    def send(self, data: bytes) -> None:
        """Reply to the host; a vanished host is not the printer's problem (logged, dropped)."""
        with self._send_lock:
            if self.closed:
                log.info("%s: closed, dropping reply %s", self.name, data.hex(" "))
                return
            try:
                self._write(data)
            except OSError as exc:
                log.warning("%s: reply %s lost: %s", self.name, data.hex(" "), exc)

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with self._send_lock:
            self.closed = True


class TcpLink(Link):
    def __init__(self, sock: socket.socket, peer: str) -> None:
        super().__init__(f"tcp {peer}")
        self.sock = sock
        sock.settimeout(SEND_TIMEOUT_S)

    def _write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        super().close()
        self.sock.close()


class PtyLink(Link):
    """The serial side: the printer owns the pty master; hosts open the slave path."""

    def __init__(self, master: int, slave_name: str) -> None:
        super().__init__(f"pty {slave_name}")
        self.master = master

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except BlockingIOError:  # nobody reads the line: a serial port just loses the bytes
            log.warning("%s: output buffer full, reply dropped", self.name)


@dataclass
class _Item:
    link: Link
    event: Event
    epoch: int


@dataclass
class _State:
    """Printer state shared by the I/O thread and the print engine (guarded by one lock)."""

    cutter_error: bool = False  # latched autocutter error, cleared only by DLE ENQ 1/2
    jam_on_paper: bool = False  # the jam is latched and its paper not yet torn away
    recovery: int | None = None  # an accepted DLE ENQ n waiting for the engine
    epoch: int = 0  # bumped by DLE ENQ 2: items of an older epoch are dropped
    lines_since_cut: int = 0
    receipt_first_line: str = ""
    status: PrinterStatus = field(default_factory=PrinterStatus)
    queue: deque[_Item] = field(default_factory=deque)


class SimulatedPrinter:
    """The device: owns its sockets, pty, engine thread and paper roll; `run()` until stop."""

    def __init__(self, state_dir: Path, config: SimPrinter, stop: threading.Event) -> None:
        self.state_dir = Path(state_dir)
        self.config = config
        self.stop = stop
        self.line_s = config.line_ms / 1000.0
        self.world = World(self.state_dir)
        self._activity: Activity | None = None
        self._set_activity("booting")
        self.roll = PaperRollWriter(roll_path(self.state_dir))
        self.roll.power_on()
        self._state = _State()
        self._cond = threading.Condition(threading.Lock())
        self._links: set[Link] = set()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._server = listen(config.listen)
        self._server.setblocking(False)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self._pty_name = os.ttyname(self._slave)
        self._publish_pty()
        self._pty = PtyLink(self._master, self._pty_name)
        self._links.add(self._pty)
        self._engine = threading.Thread(target=self._engine_loop, name="print-engine")
        self._state.status = self._status(self._read_world())
        log.info(
            "power on: tcp %s, pty %s, line_ms %s, %s",
            config.listen,
            self._pty_name,
            config.line_ms,
            self._state.status.summary(),
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until the stop event is set (SIGTERM/SIGINT), then return."""
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        self._selector.register(self._server, selectors.EVENT_READ, "accept")
        self._selector.register(self._master, selectors.EVENT_READ, self._pty)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._set_activity("idle")
        self._engine.start()
        try:
            while not self.stop.is_set():
                for key, _ in self._selector.select(timeout=1.0):
                    self._on_ready(key.data)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            with self._cond:
                self._cond.notify_all()
            self._engine.join(timeout=5.0)
            log.info("stopped")

    def close(self) -> None:
        self.stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._engine.is_alive():
            self._engine.join(timeout=5.0)
        for link in list(self._links):
            self._drop_link(link)
        self._selector.close()
        self._server.close()
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            if os.readlink(pty_link_path(self.state_dir)) == self._pty_name:
                pty_link_path(self.state_dir).unlink()
        self.roll.close()
        self._set_activity("off")

    def _publish_pty(self) -> None:
        path = pty_link_path(self.state_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self._pty_name)
        os.replace(tmp, path)

    # -- I/O thread --------------------------------------------------------------------------
    def _on_ready(self, what: object) -> None:
        if what == "wake":
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        elif what == "accept":
            self._accept()
        elif isinstance(what, TcpLink):
            try:
                data = what.sock.recv(READ_CHUNK)
            except OSError as exc:
                log.info("%s: receive failed: %s", what.name, exc)
                data = b""
            if data:
                self._receive(what, data)
            else:
                log.info("%s: connection closed", what.name)
                self._drop_link(what)
        elif isinstance(what, PtyLink):
            try:
                data = os.read(self._master, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:  # EIO: no slave open (we hold one, so this is unexpected)
                if exc.errno != errno.EIO:
                    raise
                return
            self._receive(what, data)

    def _accept(self) -> None:
        try:
            sock, peer = self._server.accept()
        except BlockingIOError:
            return
        link = TcpLink(sock, f"{peer[0]}:{peer[1]}")
        self._links.add(link)
        self._selector.register(sock, selectors.EVENT_READ, link)
        log.info("%s: connected", link.name)

    def _drop_link(self, link: Link) -> None:
        if isinstance(link, TcpLink):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(link.sock)
        with self._cond:
            self._links.discard(link)
            link.asb_mask = 0
        link.close()

    def _receive(self, link: Link, data: bytes) -> None:
        """Decode in arrival order: real-time commands now, everything else to the queue."""
        queued: list[Event] = []
        for event in link.decoder.iter_feed(data):
            if isinstance(event, RealtimeStatus):
                self._flush_to_queue(link, queued)
                link.send(bytes((self._realtime_status(event.n),)))
            elif isinstance(event, RealtimeRecovery):
                self._flush_to_queue(link, queued)
                self._realtime_recovery(link, event.n)
            else:
                queued.append(event)
        self._flush_to_queue(link, queued)

    def _flush_to_queue(self, link: Link, events: list[Event]) -> None:
        if not events:
            return
        with self._cond:
            epoch = self._state.epoch
            self._state.queue.extend(_Item(link, event, epoch) for event in events)
            self._cond.notify_all()
        events.clear()

    def _realtime_status(self, n: int) -> int:
        """DLE EOT n reflects the world right now; a query that sees a jam latches it."""
        physical = self._read_world()
        with self._cond:
            self._latch_jam(physical)
            status = self._publish(physical)
        return realtime_status_byte(n, status)

    def _realtime_recovery(self, link: Link, n: int) -> None:
        physical = self._read_world()
        with self._cond:
            self._latch_jam(physical)
            state = self._state
            if n not in (1, 2) or not state.cutter_error:
                log.info("%s: DLE ENQ %d ignored: no recoverable error", link.name, n)
                return
            if physical.jam:
                log.info("%s: DLE ENQ %d ignored: the jam is still there", link.name, n)
                return
            state.recovery = n
            if n == 2:
                dropped = len(state.queue)
                state.queue.clear()
                state.epoch += 1
                texts = [other.decoder.discard_text() for other in self._links]
                log.info(
                    "%s: DLE ENQ 2: receive and print buffers cleared (%d commands, %d chars)",
                    link.name,
                    dropped,
                    sum(len(text) for text in texts),
                )
            else:
                log.info("%s: DLE ENQ 1: recover and restart printing", link.name)
            self._cond.notify_all()

    # -- state (call with self._cond held) ---------------------------------------------------
    def _read_world(self) -> PrinterPhysical:
        try:
            return self.world.printer()
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cannot read the printer's physical state: %s", exc)
            return PrinterPhysical()

    def _latch_jam(self, physical: PrinterPhysical) -> None:
        state = self._state
        if physical.jam and not state.cutter_error:
            state.cutter_error = True
            state.jam_on_paper = True
            log.warning("fault: paper jam at the cutter -> autocutter error, printing stopped")
            self._cond.notify_all()

    def _status(self, physical: PrinterPhysical) -> PrinterStatus:
        cutter = self._state.cutter_error
        return PrinterStatus(
            offline=cutter or physical.cover_open or physical.paper == "out",
            cover_open=physical.cover_open,
            paper=physical.paper,
            autocutter_error=cutter,
            waiting_recovery=cutter and not physical.jam,
            error=cutter,
        )

    def _publish(self, physical: PrinterPhysical) -> PrinterStatus:
        """The current status; on a change, log it and send ASB to every subscribed link."""
        status = self._status(physical)
        if status != self._state.status:
            log.info("status: %s -> %s", self._state.status.summary(), status.summary())
            self._state.status = status
            self._cond.notify_all()
            message = asb_status_bytes(status)
            for link in self._links:
                if link.asb_mask:
                    link.send(message)
        return status

    def _watching(self) -> bool:
        """Re-read the world periodically only while it matters: a fault or ASB subscribers."""
        state = self._state
        return state.cutter_error or state.status.offline or any(x.asb_mask for x in self._links)

    # -- print engine ------------------------------------------------------------------------
    def _engine_loop(self) -> None:
        try:
            while not self.stop.is_set():
                item = self._next_item()
                if item is not None:
                    self._process(item)
        except Exception:
            log.exception("print engine crashed")
            self.stop.set()
            os.write(self._wake_w, b"x")

    def _next_item(self) -> _Item | None:
        with self._cond:
            if self._state.queue:
                return self._state.queue.popleft()
            watching = self._watching()
        self._set_activity("idle")
        if watching:
            self._observe()
        with self._cond:
            if not self._state.queue and not self.stop.is_set():
                self._cond.wait(WATCH_S if self._watching() else None)
        return None

    def _observe(self) -> PrinterPhysical:
        """Read the world and apply what changed (engine thread only: it may tear paper)."""
        physical = self._read_world()
        with self._cond:
            state = self._state
            self._latch_jam(physical)
            if state.jam_on_paper and not physical.jam:
                state.jam_on_paper = False
                if state.lines_since_cut:
                    log.warning(
                        "jam cleared: %d printed lines torn away (receipt starting %r)",
                        state.lines_since_cut,
                        state.receipt_first_line,
                    )
                    self.roll.torn("jam")
                    state.lines_since_cut = 0
                else:
                    log.warning("jam cleared: nothing printed to tear away")
            if state.recovery is not None and not physical.jam:
                log.info("recovered from the autocutter error (DLE ENQ %d)", state.recovery)
                state.cutter_error = False
                state.recovery = None
            self._publish(physical)
        return physical

    def _wait_ready(self, item: _Item) -> bool:
        """Block until the printer may act (no fault); False if the item was dropped."""
        reported = ""
        while not self.stop.is_set():
            physical = self._observe()
            with self._cond:
                if item.epoch != self._state.epoch:
                    return False
                reasons = [
                    name
                    for name, active in (
                        ("autocutter error", self._state.cutter_error),
                        ("paper end", physical.paper == "out"),
                        ("cover open", physical.cover_open),
                    )
                    if active
                ]
                if not reasons:
                    if reported:
                        log.info("printing resumed")
                    return True
                if ", ".join(reasons) != reported:
                    reported = ", ".join(reasons)
                    log.warning("printing stopped: %s (%d held)", reported, len(self._state.queue))
                self._set_activity("idle")
                self._cond.wait(WATCH_S)
        return False

    def _physically(self, seconds: float) -> bool:
        """Time the mechanism takes; False if the printer is being stopped meanwhile."""
        self._set_activity("printing")
        return not self.stop.wait(seconds)

    def _process(self, item: _Item) -> None:
        event = item.event
        if isinstance(event, TextLine):
            if self._wait_ready(item) and self._physically(self.line_s):
                with self._cond:
                    self.roll.line(event.text)
                    if not self._state.lines_since_cut:
                        self._state.receipt_first_line = event.text
                    self._state.lines_since_cut += 1
        elif isinstance(event, Cut):
            if self._wait_ready(item) and self._physically(self.line_s):
                with self._cond:
                    self.roll.cut(event.partial)
                    lines = self._state.lines_since_cut
                    self._state.lines_since_cut = 0
                log.info(
                    "receipt cut (%s, %d lines, starting %r)",
                    "partial" if event.partial else "full",
                    lines,
                    self._state.receipt_first_line if lines else "",
                )
        elif isinstance(event, Feed):
            if self._wait_ready(item):
                self._physically(self.line_s * event.lines)
        elif isinstance(event, TransmitStatus):
            if self._wait_ready(item):
                with self._cond:
                    status = self._state.status
                reply = paper_sensor_byte(status) if event.n in (1, 49) else 0x00
                item.link.send(bytes((reply,)))
        elif isinstance(event, AutoStatusBack):
            with self._cond:
                item.link.asb_mask = event.mask
                status = self._state.status
            log.info("%s: automatic status back mask 0x%02X", item.link.name, event.mask)
            if event.mask:
                item.link.send(asb_status_bytes(status))
            self._observe()
        elif isinstance(event, Init):
            if event.discarded:
                log.info("ESC @ discarded unterminated text %r", event.discarded)
        elif isinstance(event, Unknown):
            log.warning("%s: ignored unknown command %s", item.link.name, event.data.hex(" "))

    def _set_activity(self, activity: Activity) -> None:
        """Tell the simulated PSU what the printer draws (written only on a change)."""
        if self._activity == activity:
            return
        self._activity = activity
        try:
            self.world.set_activity("printer", activity)
        except OSError as exc:
            log.warning("cannot record activity %s: %s", activity, exc)


def main(argv: list[str] | None = None) -> int:
    rig, stop = start_device("printer", argv, "simulated ESC/POS receipt printer")
    sim = rig.require_sim()
    printer = SimulatedPrinter(sim.state_dir, sim.printer, stop)
    try:
        printer.run()
    finally:
        printer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
