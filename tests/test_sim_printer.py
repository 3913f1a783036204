"""The simulated printer process, driven only through the channels a real printer has.

Every test starts the real `python -m harness.sim.printer` on free ports and talks ESC/POS to it
(python-escpos unmodified, raw sockets, pyserial on the pty); faults are set in the World; what
physically printed is read back from the paper roll.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import serial
from escpos.printer import Network

from harness.protocols.escpos import ReceiptBuilder
from harness.rig import load_rig
from harness.sim.paper_roll import PrintedReceipt, read_events, read_roll, roll_path
from harness.sim.printer import pty_link_path
from harness.sim.world import PrinterPhysical, World
from tests.polling import wait_for
from tests.simrig import make_sim_rig

pytestmark = pytest.mark.sim

CHINESE = "交易成功 已支付"
SLOW = 30.0  # line_ms that lets a fault land mid-receipt
DEADLINE_S = 5.0


@dataclass
class SimPrinterProcess:
    rig_path: Path
    port: int
    state_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def world(self) -> World:
        return World(self.state_dir)

    @property
    def roll(self) -> Path:
        return roll_path(self.state_dir)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.sim.printer", "--rig", str(self.rig_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.state_dir.parent / "printer.stderr").open("ab"),
        )
        wait_for("the printer to answer DLE EOT 1", self._ready, timeout=10)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = self.state_dir.parent / "printer.stderr"
            raise AssertionError(f"printer exited {self.proc.returncode}: {log.read_text()}")
        try:
            with self.connect() as sock:
                return self.status(sock, 1) == 0x12
        except OSError:
            return False

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=5)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=2)

    @staticmethod
    def status(sock: socket.socket, n: int) -> int:
        sock.sendall(bytes((0x10, 0x04, n)))
        reply = sock.recv(1)
        assert len(reply) == 1, "the printer closed the connection"
        return reply[0]

    def statuses(self, sock: socket.socket) -> dict[int, int]:
        return {n: self.status(sock, n) for n in (1, 2, 3, 4)}

    def printed_lines(self) -> list[str]:
        return [e["text"] for e in read_events(self.roll) if e["event"] == "line"]

    def receipts(self) -> list[PrintedReceipt]:
        return read_roll(self.roll)


@pytest.fixture
def start_printer(tmp_path: Path) -> Iterator[Callable[..., SimPrinterProcess]]:
    """Start the real printer process (line_ms given = slow mechanism); always stopped after."""
    started: list[SimPrinterProcess] = []

    def start(line_ms: float | None = None) -> SimPrinterProcess:
        replace = {"[sim.printer]\n": f"[sim.printer]\nline_ms = {line_ms}\n"} if line_ms else {}
        rig_path = make_sim_rig(tmp_path, replace)
        sim = load_rig(rig_path).require_sim()
        printer = SimPrinterProcess(rig_path, sim.printer.listen.port, sim.state_dir)
        started.append(printer)
        printer.start()
        return printer

    yield start
    for printer in started:
        printer.stop()


def receipt(lines: list[str], *, barrier: bool = False) -> bytes:
    builder = ReceiptBuilder().init()
    for line in lines:
        builder.line(line)
    builder.cut()
    return (builder.barrier() if barrier else builder).build()


def print_and_confirm(printer: SimPrinterProcess, lines: list[str]) -> None:
    """Send a receipt and wait for its GS r 1 completion barrier."""
    with printer.connect() as sock:
        sock.settimeout(DEADLINE_S)
        sock.sendall(receipt(lines, barrier=True))
        assert sock.recv(1) == b"\x00"


def barrier_answered_within(sock: socket.socket, seconds: float) -> bytes | None:
    """Send GS r 1; its reply (or None: the printer is holding everything before it)."""
    sock.sendall(b"\x1dr\x01")
    sock.settimeout(seconds)
    try:
        return sock.recv(1)
    except TimeoutError:
        return None
    finally:
        sock.settimeout(DEADLINE_S)


# -- healthy printer ----------------------------------------------------------------------------
def test_python_escpos_receipt_lands_on_the_roll_complete(
    start_printer: Callable[..., SimPrinterProcess],
) -> None:
    printer = start_printer()
    client = Network("127.0.0.1", port=printer.port, timeout=2)
    try:
        assert client.is_online() is True
        assert client.paper_status() == 2
        client.hw("INIT")
        client.set(align="center", bold=True)
        client.textln("ACME STORE")
        client.set(align="left", bold=False)
        client.textln("SALE  CNY 12.34  APPROVED 00")
        client.textln(CHINESE)
        client.cut()
    finally:
        client.close()
    wait_for("the cut on the roll", lambda: printer.receipts() and printer.receipts()[0].complete)
    [printed] = printer.receipts()
    assert printed.lines == ("ACME STORE", "SALE  CNY 12.34  APPROVED 00", CHINESE)
    assert printed.complete and printed.ended_by == "cut"
    assert printer.world.activity("printer") in ("idle", "printing")
    assert printer.stop() == 0
    assert printer.world.activity("printer") == "off"


def test_completion_barrier_answers_only_after_the_lines_are_on_the_roll(
    start_printer: Callable[..., SimPrinterProcess],
) -> None:
    printer = start_printer(line_ms=SLOW)
    lines = ["ORDER 1001", "AMOUNT 12.34", CHINESE, "THANK YOU"]
    with printer.connect() as sock:
        sock.settimeout(DEADLINE_S)
        sent = time.monotonic()
        sock.sendall(receipt(lines, barrier=True))
        assert printer.status(sock, 1) == 0x12  # real-time: answered while the lines print
        assert printer.printed_lines() != lines  # ... so the roll cannot be done yet
        assert sock.recv(1) == b"\x00"
        took = time.monotonic() - sent
        [printed] = printer.receipts()  # read right after the answer: already there
    assert printed.lines == tuple(lines) and printed.complete
    assert took >= len(lines) * SLOW / 1000


def test_cover_open_status_bytes(start_printer: Callable[..., SimPrinterProcess]) -> None:
    printer = start_printer()
    with printer.connect() as sock:
        printer.world.set_printer(PrinterPhysical(cover_open=True))
        assert printer.statuses(sock) == {1: 0x1A, 2: 0x16, 3: 0x12, 4: 0x12}
        printer.world.set_printer(PrinterPhysical())
        assert printer.statuses(sock) == {1: 0x12, 2: 0x12, 3: 0x12, 4: 0x12}


def test_automatic_status_back_arrives_on_a_change(
    start_printer: Callable[..., SimPrinterProcess],
) -> None:
    printer = start_printer()
    with printer.connect() as asb:
        asb.sendall(b"\x1da\x0f")
        assert asb.recv(4) == bytes([0x10, 0x00, 0x00, 0x00])  # once, at once
        printer.world.set_printer(PrinterPhysical(paper="out"))
        assert asb.recv(4) == bytes([0x18, 0x00, 0x0C, 0x00])  # offline, roll paper end
        printer.world.set_printer(PrinterPhysical())
        assert asb.recv(4) == bytes([0x10, 0x00, 0x00, 0x00])


# -- faults mid-receipt -------------------------------------------------------------------------
def test_jam_mid_receipt_holds_tears_and_enq2_drops_the_held_data(
    start_printer: Callable[..., SimPrinterProcess],
) -> None:
    printer = start_printer(line_ms=SLOW)
    lines = [f"JAMMED LINE {i}" for i in range(10)]
    with printer.connect() as terminal, printer.connect() as harness:
        terminal.sendall(receipt(lines))
        wait_for("two printed lines", lambda: len(printer.printed_lines()) >= 2)
        printer.world.set_printer(PrinterPhysical(jam=True))
        assert printer.statuses(harness) == {1: 0x1A, 2: 0x52, 3: 0x1A, 4: 0x12}
        assert barrier_answered_within(terminal, 0.2) is None  # the rest is held
        held_from = len(printer.printed_lines())
        assert 2 <= held_from < len(lines)
        assert not any(e["event"] == "cut" for e in read_events(printer.roll))

        printer.world.set_printer(PrinterPhysical())  # the operator pulls the jammed paper
        wait_for("the torn paper", lambda: read_events(printer.roll)[-1]["event"] == "torn")
        assert printer.status(harness, 1) == 0x3A  # offline, waiting for online recovery
        assert printer.status(harness, 3) == 0x1A  # still an autocutter error until DLE ENQ
        harness.sendall(b"\x10\x05\x02")  # recover after clearing the buffers
        wait_for("online again", lambda: printer.status(harness, 1) == 0x12)
        assert printer.statuses(harness) == {1: 0x12, 2: 0x12, 3: 0x12, 4: 0x12}

    print_and_confirm(printer, ["NEW RECEIPT", CHINESE])
    torn, new = printer.receipts()
    assert torn.lines == tuple(lines[: len(torn.lines)]) and len(torn.lines) == held_from
    assert not torn.complete and torn.ended_by == "torn"
    assert new.lines == ("NEW RECEIPT", CHINESE) and new.complete
    assert not set(lines[held_from:]) & set(printer.printed_lines())  # held data never printed


def test_jam_then_enq1_prints_the_held_rest(
    start_printer: Callable[..., SimPrinterProcess],
) -> None:
    printer = start_printer(line_ms=SLOW)
    lines = [f"LINE {i}" for i in range(6)]
    with printer.connect() as terminal, printer.connect() as harness:
        terminal.sendall(receipt(lines, barrier=True))
        wait_for("a printed line", lambda: len(printer.printed_lines()) >= 1)
        printer.world.set_printer(PrinterPhysical(jam=True))
        assert printer.status(harness, 3) == 0x1A
        harness.sendall(b"\x10\x05\x01")  # ignored: the jam is still there
        assert printer.status(harness, 3) == 0x1A
        printer.world.set_printer(PrinterPhysical())
        wait_for("waiting for recovery", lambda: printer.status(harness, 1) == 0x3A)
        harness.sendall(b"\x10\x05\x01")  # recover and restart printing
        terminal.settimeout(DEADLINE_S)
        assert terminal.recv(1) == b"\x00"  # the barrier after the held rest
    torn, rest = printer.receipts()
    assert torn.ended_by == "torn" and rest.ended_by == "cut"
    assert torn.lines + rest.lines == tuple(lines)  # nothing lost, nothing printed twice


def test_paper_out_holds_the_receipt_and_prints_it_after_reload(
    start_printer: Callable[..., SimPrinterProcess],
) -> None:
    printer = start_printer(line_ms=SLOW)
    lines = [f"PAPER LINE {i}" for i in range(6)]
    with printer.connect() as terminal, printer.connect() as harness:
        terminal.sendall(receipt(lines))
        wait_for("a printed line", lambda: len(printer.printed_lines()) >= 1)
        printer.world.set_printer(PrinterPhysical(paper="out"))
        assert printer.statuses(harness) == {1: 0x1A, 2: 0x32, 3: 0x12, 4: 0x72}
        assert barrier_answered_within(terminal, 0.2) is None
        assert len(printer.printed_lines()) < len(lines)
        printer.world.set_printer(PrinterPhysical())  # a new roll goes in
        terminal.settimeout(DEADLINE_S)
        assert terminal.recv(1) == b"\x00"
        assert printer.status(harness, 4) == 0x12
    [printed] = printer.receipts()
    assert printed.lines == tuple(lines) and printed.complete


def test_power_cut_mid_receipt_shows_as_power_loss_and_the_next_receipt_prints(
    start_printer: Callable[..., SimPrinterProcess],
) -> None:
    printer = start_printer(line_ms=SLOW)
    lines = [f"LOST LINE {i}" for i in range(8)]
    with printer.connect() as terminal:
        terminal.sendall(receipt(lines))
        wait_for("two printed lines", lambda: len(printer.printed_lines()) >= 2)
        printer.kill()
    printer.start()
    print_and_confirm(printer, ["AFTER POWER", CHINESE])
    lost, after = printer.receipts()
    assert lost.ended_by == "power_loss" and not lost.complete
    assert 2 <= len(lost.lines) < len(lines) and lost.lines == tuple(lines[: len(lost.lines)])
    assert after.lines == ("AFTER POWER", CHINESE) and after.complete


# -- the serial side ----------------------------------------------------------------------------
def test_pty_serves_esc_pos_to_pyserial(start_printer: Callable[..., SimPrinterProcess]) -> None:
    printer = start_printer()
    path = pty_link_path(printer.state_dir)
    assert path.is_symlink() and str(path.resolve()).startswith("/dev/pts/")
    with serial.Serial(str(path), baudrate=9600, timeout=DEADLINE_S) as port:
        port.write(b"\x10\x04\x01")
        assert port.read(1) == b"\x12"
        port.write(receipt(["SERIAL RECEIPT", CHINESE], barrier=True))
        assert port.read(1) == b"\x00"
    [printed] = printer.receipts()
    assert printed.lines == ("SERIAL RECEIPT", CHINESE) and printed.complete
