"""The printer tap between a terminal and the real simulated printer process.

Every test starts `python -m harness.sim.printer` on free ports and puts a tap in front of it
(in-process, or as its own `python -m harness.drivers.printer_tap` process); the "terminal" is
python-escpos unmodified, a raw socket, or a pty. What physically printed is read back from the
sim printer's paper roll; what the terminal sent, from the tap's record and API.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from escpos.printer import Network

from harness.drivers.printer import (
    PrinterFaultError,
    PrinterFaultUnsupported,
    SimPrinterFaults,
    TapClient,
    TapEvent,
    TapPrinterFaults,
    open_printer_faults,
)
from harness.drivers.printer_tap import STREAM_FILE, PrinterTapService, iter_stream_file
from harness.protocols.escpos import ReceiptBuilder, decode_receipts
from harness.rig import Address, Endpoint, PrinterTap, load_rig
from harness.sim.paper_roll import PrintedReceipt, read_events, read_roll, roll_path
from tests.polling import wait_for
from tests.simrig import free_port, make_sim_rig

pytestmark = pytest.mark.sim

DEADLINE_S = 5.0
CHINESE = "交易成功 已支付"
HEALTHY = {1: 0x12, 2: 0x12, 3: 0x12, 4: 0x12}
JAM = {1: 0x1A, 2: 0x52, 3: 0x1A, 4: 0x12}  # offline; error occurred; autocutter error
PAPER_OUT = {1: 0x1A, 2: 0x32, 3: 0x12, 4: 0x72}
COVER_OPEN = {1: 0x1A, 2: 0x16, 3: 0x12, 4: 0x12}
WAITING_RECOVERY = 0x3A  # DLE EOT 1 after the jam was cleared, before DLE ENQ


def receipt(lines: list[str], *, barrier: bool = False) -> bytes:
    builder = ReceiptBuilder().init()
    for line in lines:
        builder.line(line)
    builder.cut()
    return (builder.barrier() if barrier else builder).build()


def status(sock: socket.socket, n: int) -> int:
    sock.sendall(bytes((0x10, 0x04, n)))
    reply = sock.recv(1)
    assert len(reply) == 1, "the link closed"
    return reply[0]


def statuses(sock: socket.socket) -> dict[int, int]:
    return {n: status(sock, n) for n in (1, 2, 3, 4)}


def recv_within(sock: socket.socket, count: int, seconds: float) -> bytes | None:
    """`count` bytes, or None when they do not all come within `seconds` (silence)."""
    sock.settimeout(seconds)
    data = b""
    try:
        while len(data) < count:
            more = sock.recv(count - len(data))
            if not more:
                break
            data += more
    except TimeoutError:
        return None
    finally:
        sock.settimeout(DEADLINE_S)
    return data


@dataclass
class Bench:
    """A sim printer process with a tap in front of it."""

    rig_path: Path
    state_dir: Path
    record_dir: Path
    tap_config: PrinterTap
    printer_proc: subprocess.Popen[bytes]
    tap: PrinterTapService | None = None

    @property
    def client(self) -> TapClient:
        return TapClient(self.tap_config.control)

    @property
    def faults(self) -> TapPrinterFaults:
        return TapPrinterFaults(self.tap_config.control)

    @property
    def terminal_address(self) -> tuple[str, int]:
        address = self.tap_config.terminal_side.address
        assert address is not None
        return address.host, address.port

    @property
    def printer_address(self) -> tuple[str, int]:
        address = self.tap_config.printer_side.address
        assert address is not None
        return address.host, address.port

    def terminal(self) -> socket.socket:
        """A terminal connection through the tap."""
        return socket.create_connection(self.terminal_address, timeout=DEADLINE_S)

    def direct(self) -> socket.socket:
        """A connection straight to the sim printer (bypassing the tap)."""
        return socket.create_connection(self.printer_address, timeout=DEADLINE_S)

    def printed(self) -> list[PrintedReceipt]:
        return read_roll(roll_path(self.state_dir))

    def printed_lines(self) -> list[str]:
        return [e["text"] for e in read_events(roll_path(self.state_dir)) if e["event"] == "line"]

    def start_tap(self) -> PrinterTapService:
        self.tap = PrinterTapService(self.tap_config, self.record_dir).start()
        return self.tap


def _printer_ready(bench: Bench) -> bool:
    if bench.printer_proc.poll() is not None:
        err = (bench.rig_path.parent / "printer.stderr").read_text()
        raise AssertionError(f"sim printer exited {bench.printer_proc.returncode}: {err}")
    try:
        with bench.direct() as sock:
            return status(sock, 1) == 0x12
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    """The sim printer process and the rig's [printer] tap in front of it (not started)."""
    rig_path = make_sim_rig(tmp_path)  # rigs/sim.toml's tap, on free ports
    rig = load_rig(rig_path)
    sim = rig.require_sim()
    assert rig.printer is not None and rig.printer.tap is not None
    assert rig.printer.tap.printer_side.address == sim.printer.listen
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.sim.printer", "--rig", str(rig_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "printer.stderr").open("ab"),
    )
    b = Bench(rig_path, sim.state_dir, tmp_path / "tap", rig.printer.tap, proc)
    try:
        wait_for("the sim printer to answer DLE EOT 1", lambda: _printer_ready(b), timeout=10)
        yield b
    finally:
        if b.tap is not None:
            b.tap.stop()
        _stop(proc)


@pytest.fixture
def tapped(bench: Bench) -> Bench:
    bench.start_tap()
    return bench


# -- transparent ---------------------------------------------------------------------------------
def test_python_escpos_prints_through_the_tap_onto_the_roll_and_into_the_record(
    tapped: Bench,
) -> None:
    client = Network(*tapped.terminal_address, timeout=2)
    try:
        assert client.is_online() is True  # DLE EOT 1 answered by the real printer
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
    lines = ("ACME STORE", "SALE  CNY 12.34  APPROVED 00", CHINESE)
    wait_for("the cut on the roll", lambda: tapped.printed() and tapped.printed()[0].complete)
    assert [p.lines for p in tapped.printed()] == [lines]

    [seen] = tapped.client.receipts()
    assert seen.lines == lines and seen.complete and seen.delivery == "forwarded"
    assert seen.first_t <= seen.last_t

    chunks = list(iter_stream_file(tapped.record_dir / STREAM_FILE))
    sent = b"".join(c.data for c in chunks if c.direction == "terminal>printer")
    answers = b"".join(c.data for c in chunks if c.direction == "printer>terminal")
    assert [r.lines for r in decode_receipts(sent)] == [lines]
    assert answers == b"\x12\x12"  # DLE EOT 1 and DLE EOT 4 from the printer itself
    assert not any(c.direction == "tap>terminal" for c in chunks)
    api_chunks, after = tapped.client.stream()
    assert [c.data for c in api_chunks] == [c.data for c in chunks] and after == chunks[-1].seq
    assert tapped.client.stream(after) == ([], after)


def test_status_queries_reach_the_real_printer_when_the_tap_has_no_fault(tapped: Bench) -> None:
    sim = SimPrinterFaults(tapped.state_dir)
    with tapped.terminal() as terminal:
        assert statuses(terminal) == HEALTHY
        sim.cover_open()  # the printer itself, not the tap: its own answers must come through
        assert statuses(terminal) == COVER_OPEN
        sim.clear()
        assert statuses(terminal) == HEALTHY
    assert tapped.client.faults()["holding"] is False
    recorded = [
        json.loads(line)
        for line in (tapped.record_dir / "tap-events.jsonl").read_text().splitlines()
    ]
    queries = [e for e in recorded if e["event"] == "status_query"]
    assert len(queries) == 12 and {e["answered_by"] for e in queries} == {"printer"}


# -- faults --------------------------------------------------------------------------------------
def test_jam_through_the_tap_holds_the_receipt_and_enq2_drops_it(tapped: Bench) -> None:
    lines = ["JAMMED 1", "JAMMED 2", CHINESE]
    with tapped.terminal() as terminal:
        took_effect = tapped.faults.jam()
        assert took_effect <= time.monotonic()
        assert statuses(terminal) == JAM  # the same bytes the sim printer answers for a jam
        terminal.sendall(receipt(lines, barrier=True))
        assert recv_within(terminal, 1, 0.2) is None  # the barrier is held with the receipt
        terminal.sendall(b"\x10\x05\x02")  # DLE ENQ 2 while still jammed: ignored
        assert status(terminal, 3) == 0x1A
        assert wait_for("held", lambda: tapped.client.receipts())[0].delivery == "held"

        tapped.faults.clear()  # the jam is gone; the error waits for the terminal's recovery
        assert status(terminal, 1) == WAITING_RECOVERY and status(terminal, 3) == 0x1A
        assert tapped.client.faults()["waiting_recovery"] is True
        terminal.sendall(b"\x10\x05\x02")  # recover after clearing the buffers
        assert statuses(terminal) == HEALTHY  # the real printer answers again
        assert tapped.printed_lines() == []

        terminal.sendall(receipt(["AFTER THE JAM"], barrier=True))
        assert recv_within(terminal, 1, DEADLINE_S) == b"\x00"
    assert [(p.lines, p.complete) for p in tapped.printed()] == [(("AFTER THE JAM",), True)]
    dropped, after = tapped.client.receipts()
    assert dropped.lines == tuple(lines) and dropped.delivery == "dropped"
    assert after.lines == ("AFTER THE JAM",) and after.delivery == "forwarded"
    history = tapped.client.faults()["history"]
    assert [(h["fault"], h["on"]) for h in history] == [
        ("jam", True),
        ("jam", False),
        ("cutter_error", False),
    ]
    assert history[0]["t"] == took_effect


def test_jam_then_enq1_forwards_the_held_receipt_once(tapped: Bench) -> None:
    lines = ["HELD 1", "HELD 2"]
    with tapped.terminal() as terminal:
        tapped.faults.jam()
        terminal.sendall(receipt(lines, barrier=True))
        terminal.sendall(b"\x10\x05\x01")  # ignored: the jam is still there
        assert status(terminal, 1) == 0x1A
        tapped.faults.clear()
        assert status(terminal, 1) == WAITING_RECOVERY
        terminal.sendall(b"\x10\x05\x01")  # recover and restart: the held data goes out
        assert recv_within(terminal, 1, DEADLINE_S) == b"\x00"
    assert [(p.lines, p.complete) for p in tapped.printed()] == [(tuple(lines), True)]
    [seen] = tapped.client.receipts()
    assert seen.delivery == "forwarded" and seen.complete


def test_paper_out_holds_the_receipt_even_after_the_terminal_left_and_prints_it_on_clear(
    tapped: Bench,
) -> None:
    tapped.faults.paper_out()
    client = Network(*tapped.terminal_address, timeout=2)
    try:
        assert client.query_status(b"\x10\x04\x04") == b"\x72"  # answered by the tap
        assert client.is_online() is False
        client.hw("INIT")
        client.textln("PAPER OUT RECEIPT")
        client.textln(CHINESE)
        client.cut()
    finally:
        client.close()  # the terminal is gone; its receipt sits in the "printer's" buffer
    wait_for("the held receipt", lambda: tapped.client.receipts())
    assert tapped.client.faults()["held_bytes"] > 0
    assert tapped.printed_lines() == []
    tapped.faults.clear()
    wait_for("the cut on the roll", lambda: tapped.printed() and tapped.printed()[0].complete)
    assert tapped.printed()[0].lines == ("PAPER OUT RECEIPT", CHINESE)
    [seen] = tapped.client.receipts()
    assert seen.delivery == "forwarded" and tapped.client.faults()["held_bytes"] == 0


def test_a_dle_eot_split_across_chunks_is_never_half_forwarded(tapped: Bench) -> None:
    with tapped.terminal() as terminal:
        terminal.sendall(b"\x10\x04")
        wait_for("the first half recorded", lambda: tapped.client.stream()[0])
        tapped.faults.paper_out()
        terminal.sendall(b"\x01")
        assert recv_within(terminal, 1, DEADLINE_S) == b"\x1a"  # the tap answered all of it
        terminal.sendall(receipt(["AFTER THE SPLIT"], barrier=True))
        tapped.faults.clear()
        assert recv_within(terminal, 1, DEADLINE_S) == b"\x00"
    # had "10 04" reached the printer, it would have eaten ESC and printed "@AFTER THE SPLIT"
    assert [p.lines for p in tapped.printed()] == [("AFTER THE SPLIT",)]


def test_the_tap_sends_asb_when_a_fault_starts_and_clears(tapped: Bench) -> None:
    with tapped.terminal() as terminal:
        terminal.sendall(b"\x1da\x0f")
        assert recv_within(terminal, 4, DEADLINE_S) == bytes([0x10, 0, 0, 0])  # the printer's
        tapped.faults.paper_out()
        assert recv_within(terminal, 4, DEADLINE_S) == bytes([0x18, 0, 0x0C, 0])  # as the sim
        assert statuses(terminal) == PAPER_OUT
        tapped.faults.clear()
        assert recv_within(terminal, 4, DEADLINE_S) == bytes([0x10, 0, 0, 0])
        tapped.faults.cover_open()
        assert recv_within(terminal, 4, DEADLINE_S) == bytes([0x38, 0, 0, 0])
        assert statuses(terminal) == COVER_OPEN
        tapped.faults.clear()
        assert recv_within(terminal, 4, DEADLINE_S) == bytes([0x10, 0, 0, 0])


def test_offline_is_silence_and_the_held_data_prints_after_clear(tapped: Bench) -> None:
    tapped.faults.offline()
    client = Network(*tapped.terminal_address, timeout=0.3)
    try:
        with pytest.raises(TimeoutError):
            client.query_status(b"\x10\x04\x01")  # an unplugged printer says nothing at all
        assert client.device is not None
        client.device.sendall(receipt(["WHILE UNPLUGGED"], barrier=True))
        assert recv_within(client.device, 1, 0.2) is None
        assert tapped.client.faults()["answers"] is None
        tapped.faults.clear()
        # the swallowed DLE EOT is never answered late: the next byte is the barrier's
        assert recv_within(client.device, 1, DEADLINE_S) == b"\x00"
    finally:
        client.close()
    assert [p.lines for p in tapped.printed()] == [("WHILE UNPLUGGED",)]


def test_events_deliver_first_byte_within_milliseconds_of_the_send(tapped: Bench) -> None:
    got: queue.SimpleQueue[TapEvent] = queue.SimpleQueue()
    detect, deliver = [], []
    with tapped.client.subscribe(got.put) as subscription, tapped.terminal() as terminal:
        terminal.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(20):
            sent = time.monotonic()
            terminal.sendall(receipt([f"ORDER {i}"], barrier=True))
            event = got.get(timeout=DEADLINE_S)
            assert event.event == "first_byte", event
            detect.append(event.t - sent)
            deliver.append(event.received_t - sent)
            assert got.get(timeout=DEADLINE_S).event == "cut"
            assert recv_within(terminal, 1, DEADLINE_S) == b"\x00"
        tapped.faults.jam()
        assert got.get(timeout=DEADLINE_S).fields["fault"] == "jam"
        tapped.faults.clear()
        assert got.get(timeout=DEADLINE_S).event == "fault_cleared"
        assert subscription.alive and subscription.error is None
    assert not subscription.alive
    summary = (
        f"tap saw the first byte p50 {statistics.median(detect) * 1e3:.3f} ms, "
        f"max {max(detect) * 1e3:.3f} ms; event delivered p50 "
        f"{statistics.median(deliver) * 1e3:.3f} ms, max {max(deliver) * 1e3:.3f} ms"
    )
    assert statistics.median(detect) < 0.002 and statistics.median(deliver) < 0.003, summary
    assert max(deliver) < 0.25, summary  # an unflushed event would wait for the keepalive


def test_put_faults_with_an_unknown_key_is_400_naming_it(tapped: Bench) -> None:
    url = f"http://{tapped.tap_config.control}/faults"
    for body, key in (({"jammed": True}, "jammed"), ({"jam": "yes"}, "jam")):
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), method="PUT", headers={"Content-Type": "x"}
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=2)
        answer = json.loads(caught.value.read())
        caught.value.close()
        assert caught.value.code == 400 and answer["key"] == key and key in answer["error"]
    assert tapped.client.faults()["holding"] is False
    with pytest.raises(PrinterFaultError, match=r"POST http://.*/reset\?recover=3: HTTP 400"):
        tapped.client.reset(recover=3)
    dead = TapPrinterFaults(Address("127.0.0.1", free_port()), timeout_s=0.5)
    with pytest.raises(PrinterFaultError, match=r"PUT http://127\.0\.0\.1:\d+/faults: cannot"):
        dead.jam()


def test_sim_printer_faults_make_the_sim_printer_itself_report_the_jam(bench: Bench) -> None:
    rig = load_rig(bench.rig_path)
    assert rig.printer is not None
    sim_config = type(rig.printer)(rig.printer.receipt, None, "sim")
    faults = open_printer_faults(sim_config, bench.state_dir)
    assert isinstance(faults, SimPrinterFaults)
    assert isinstance(open_printer_faults(rig.printer, bench.state_dir), TapPrinterFaults)
    with pytest.raises(PrinterFaultError, match="simulated rig"):
        open_printer_faults(sim_config, None)
    with bench.direct() as printer:
        took_effect = faults.jam()
        assert took_effect <= time.monotonic()
        assert statuses(printer) == JAM  # the bytes the tap fakes (see the jam test)
        assert faults.state() == {
            "jam": True,
            "paper_out": False,
            "cover_open": False,
            "offline": False,
            "source": "sim",
        }
        with pytest.raises(PrinterFaultUnsupported, match="tap"):
            faults.offline()
        faults.clear()
        wait_for("waiting for recovery", lambda: status(printer, 1) == WAITING_RECOVERY)
        printer.sendall(b"\x10\x05\x02")
        wait_for("online again", lambda: status(printer, 1) == 0x12)


def test_a_printer_power_cut_closes_the_terminal_link_and_the_tap_stays_up(
    tapped: Bench,
) -> None:
    with tapped.terminal() as terminal:
        assert status(terminal, 1) == 0x12
        tapped.printer_proc.kill()  # the printer loses power: its TCP connections die
        tapped.printer_proc.wait(timeout=5)
        assert recv_within(terminal, 1, DEADLINE_S) == b""  # the terminal sees the link close
    with tapped.terminal() as again:
        assert recv_within(again, 1, DEADLINE_S) == b""  # no printer behind the tap: closed
    assert tapped.client.health()["ok"] is True
    tapped.faults.paper_out()  # a fault can still be set; a terminal link is then kept open
    with tapped.terminal() as held:
        assert statuses(held) == PAPER_OUT
        held.sendall(receipt(["NOWHERE TO GO"]))
        wait_for("the held receipt", lambda: tapped.client.receipts())
    tapped.faults.clear()
    [lost] = wait_for(
        "the receipt marked dropped",
        lambda: [r for r in tapped.client.receipts() if r.delivery == "dropped"],
    )
    assert lost.lines == ("NOWHERE TO GO",)


# -- a bench service -----------------------------------------------------------------------------
SETTER = textwrap.dedent(
    """
    import subprocess, sys, time
    from harness.drivers.printer import PrinterFaultError, TapClient, TapPrinterFaults
    from harness.rig import load_rig
    rig_path, record_dir = sys.argv[1], sys.argv[2]
    control = load_rig(rig_path).printer.tap.control
    tap = subprocess.Popen(
        [sys.executable, "-m", "harness.drivers.printer_tap", "--rig", rig_path,
         "--record-dir", record_dir],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            TapClient(control).health()
            break
        except PrinterFaultError:
            if time.monotonic() > deadline or tap.poll() is not None:
                raise
            time.sleep(0.02)
    print(tap.pid, TapPrinterFaults(control).jam(), flush=True)
    time.sleep(60)
    """
)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_tap_process_outlives_the_process_that_set_a_fault_and_stops_on_sigterm(
    bench: Bench,
) -> None:
    setter = subprocess.Popen(
        [sys.executable, "-c", SETTER, str(bench.rig_path), str(bench.record_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    tap_pid = 0
    try:
        assert setter.stdout is not None
        ready, _, _ = select.select([setter.stdout], [], [], 15)
        line = setter.stdout.readline().decode() if ready else ""
        err = setter.stderr.read().decode() if setter.stderr and not line else ""
        assert line, f"the setter said nothing: {err}"
        pid_text, t_text = line.split()
        tap_pid, took_effect = int(pid_text), float(t_text)
        setter.kill()  # the harness process dies with the fault applied
        setter.wait(timeout=5)

        client = bench.client
        assert client.health()["pid"] == tap_pid and client.health()["ok"] is True
        state = client.faults()
        assert state["jam"] is True and state["history"][0]["t"] == took_effect
        with bench.terminal() as terminal:
            assert statuses(terminal) == JAM
    finally:
        if setter.poll() is None:
            setter.kill()
            setter.wait(timeout=5)
        for stream in (setter.stdout, setter.stderr):
            if stream is not None:
                stream.close()
        if tap_pid:
            os.kill(tap_pid, signal.SIGTERM)
            wait_for("the tap to stop on SIGTERM", lambda: _gone(tap_pid))
    log_text = (bench.record_dir / "logs" / "printer-tap.log").read_text()
    assert "tap stopped" in log_text


# -- the serial side -----------------------------------------------------------------------------
def test_serial_terminal_side_on_a_pty_through_the_tap_to_the_tcp_printer(bench: Bench) -> None:
    master, slave = os.openpty()
    try:
        bench.tap_config = PrinterTap(
            Endpoint("serial", None, os.ttyname(slave), 9600),
            bench.tap_config.printer_side,
            bench.tap_config.control,
        )
        bench.start_tap()

        def exchange(data: bytes, count: int, seconds: float = DEADLINE_S) -> bytes:
            os.write(master, data)
            got = b""
            end = time.monotonic() + seconds
            while len(got) < count and (left := end - time.monotonic()) > 0:
                if select.select([master], [], [], left)[0]:
                    got += os.read(master, count - len(got))
            return got

        assert exchange(b"\x10\x04\x01", 1) == b"\x12"
        bench.faults.cover_open()
        assert exchange(b"\x10\x04\x02", 1) == b"\x16"  # answered by the tap on the serial line
        assert exchange(receipt(["SERIAL RECEIPT", CHINESE], barrier=True), 1, 0.2) == b""
        bench.faults.clear()
        assert exchange(b"", 1) == b"\x00"  # the held receipt printed, then its barrier
        assert [p.lines for p in bench.printed()] == [("SERIAL RECEIPT", CHINESE)]
        assert [r.lines for r in bench.client.receipts()] == [("SERIAL RECEIPT", CHINESE)]
    finally:
        if bench.tap is not None:
            bench.tap.stop()
            bench.tap = None
        os.close(master)
        os.close(slave)


def test_tcp_terminal_through_the_tap_to_the_printer_serial_port(bench: Bench) -> None:
    pty = (bench.state_dir / "printer" / "printer.pty").resolve()
    bench.tap_config = PrinterTap(
        bench.tap_config.terminal_side,
        Endpoint("serial", None, str(pty), 9600),
        bench.tap_config.control,
    )
    bench.start_tap()
    with bench.terminal() as terminal:
        assert statuses(terminal) == HEALTHY  # answered by the printer over its serial line
        terminal.sendall(receipt(["OVER SERIAL"], barrier=True))
        assert recv_within(terminal, 1, DEADLINE_S) == b"\x00"
        bench.faults.jam()
        assert statuses(terminal) == JAM
        terminal.sendall(receipt(["JAMMED OVER SERIAL"], barrier=True))
        bench.faults.clear(recover=1)  # the bench recovers on the terminal's behalf
        assert recv_within(terminal, 1, DEADLINE_S) == b"\x00"
    assert [p.lines for p in bench.printed()] == [("OVER SERIAL",), ("JAMMED OVER SERIAL",)]
