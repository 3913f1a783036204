"""The whole simulated bench, end to end, through the harness's drivers and real clients.

Each test starts its own bench on free ports in a private state dir and stops it afterwards.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.drivers.interfaces import Outcome, SaleResult
from harness.rig import Rig, load_rig
from harness.sim.launcher import BenchStartError, SimBench
from harness.sim.paper_roll import read_roll
from tests.benchutil import (
    CARD,
    bench_rig,
    card_slot,
    ledger,
    psu_session,
    repeat_when_up,
    running_bench,
    serial_terminal,
    wait_for,
)
from tests.simrig import make_sim_rig


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return bench_rig(tmp_path)


@pytest.fixture
def bench(rig: Rig) -> Iterator[SimBench]:
    with running_bench(rig) as running:
        yield running


def test_sale_over_the_serial_line_is_recorded_by_host_journal_and_paper(
    rig: Rig, bench: SimBench
) -> None:
    assert rig.sim is not None and bench.endpoints is not None
    card_slot(rig).present(CARD)
    terminal = serial_terminal(rig, bench)
    try:
        terminal.register()
        result = terminal.sale("order-1", 1234)
        assert result.outcome is Outcome.PAID, result.detail
        assert result.result_code == 0 and result.trace is not None
        journal = terminal.repeat_receipt(result.trace)
    finally:
        terminal.close()

    entries = [e for e in ledger(rig).entries() if e.stan == result.trace]
    assert len(entries) == 1 and entries[0].captured and entries[0].amount == 1234
    assert entries[0].card_masked == CARD.masked
    assert journal is not None and journal.approved and journal.amount == 1234
    assert journal.order_ref == "order-1"

    receipts = read_roll(bench.endpoints.paper_roll)
    originals = [r for r in receipts if "COPY" not in r.text]
    copies = [r for r in receipts if "COPY" in r.text]
    assert len(originals) == 1 and originals[0].complete
    assert "APPROVED" in originals[0].text and "交易成功" in originals[0].text
    assert f"TRACE {result.trace:06d}" in originals[0].text
    assert len(copies) == 1  # the repeat receipt, marked as a copy
    for receipt in receipts:
        assert CARD.pan not in receipt.text and CARD.masked in receipt.text
    log_text = (bench.state_dir / "logs" / "ecr-link.log").read_text()
    assert log_text and CARD.pan not in log_text
    card_slot(rig).remove()  # the physical card leaves the slot; nothing else may hold its number
    leaks = [
        str(path)
        for path in bench.state_dir.rglob("*")
        if path.is_file() and CARD.pan.encode() in path.read_bytes()
    ]
    assert leaks == [], f"full card number found in {leaks}"


def test_declined_sale_is_not_paid_everywhere(rig: Rig, bench: SimBench) -> None:
    assert rig.sim is not None and bench.endpoints is not None
    card_slot(rig).present(CARD)
    terminal = serial_terminal(rig, bench)
    try:
        result = terminal.sale("order-51", 5100)
    finally:
        terminal.close()
    assert result.outcome is Outcome.NOT_PAID and result.result_code == 0x33
    entries = [e for e in ledger(rig).entries() if e.stan == result.trace]
    assert [e.status for e in entries] == ["declined"]
    receipts = read_roll(bench.endpoints.paper_roll)
    assert len(receipts) == 1 and "NOT PAID" in receipts[0].text
    assert "APPROVED" not in receipts[0].text


def test_power_cut_after_the_request_reached_the_host_is_resolved_after_boot(
    rig: Rig, bench: SimBench
) -> None:
    """Cut the terminal's power once the host has captured (the answer is 1.5 s late)."""
    assert rig.sim is not None and rig.psu is not None and bench.endpoints is not None
    card_slot(rig).present(CARD)
    terminal = serial_terminal(rig, bench)
    results: list[SaleResult] = []
    sale = threading.Thread(target=lambda: results.append(terminal.sale("order-cut", 4242)))
    sale.start()
    host = ledger(rig)
    captured = wait_for(
        "the host to capture the sale",
        lambda: [e for e in host.entries() if e.amount == 4242 and e.captured],
    )
    psu = psu_session(rig)
    try:
        psu.write(":OUTP CH1,OFF")  # the instant the test chose: request at the host, no answer
        assert psu.query(":OUTP? CH1").strip() == "OFF"
        sale.join(timeout=3 * rig.terminal.timeout_s)
        assert results and results[0].outcome is Outcome.UNKNOWN, results
        psu.write(":OUTP CH1,ON")
    finally:
        psu.close()
    stan = captured[0].stan
    reversed_entry = wait_for(
        "the reversal to reach the host after boot",
        lambda: [e for e in host.entries() if e.stan == stan and e.status == "reversed"],
        timeout=rig.rig.recovery_s,
    )
    assert len(reversed_entry) == 1
    journal = wait_for("the terminal to answer again", lambda: repeat_when_up(terminal, stan))
    terminal.close()
    assert not journal.approved  # the terminal says not paid, and the host agrees
    receipts = [r for r in read_roll(bench.endpoints.paper_roll) if f"{stan:06d}" in r.text]
    assert receipts, "the failed sale's receipt was never printed"
    assert all("APPROVED" not in r.text for r in receipts)
    assert any("NOT PAID" in r.text for r in receipts)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "ctrl-c"])
def test_sim_up_prints_ready_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    rig_path = make_sim_rig(tmp_path)
    rig = load_rig(rig_path)
    assert rig.sim is not None
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "sim", "up", "--rig", str(rig_path), "--fresh"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "ready":
                break
        assert lines and lines[-1].strip() == "ready", "".join(lines)
        endpoint_lines = [proc.stdout.readline() for _ in range(7)]
        text = "".join(endpoint_lines)
        assert str(rig.sim.host.listen) in text and str(rig.sim.terminal.zvt_listen) in text
        assert "/dev/pts/" in text  # the terminal's serial line
        assert "toxiproxy" in text and "tap" in text
        children = _descendants(proc.pid)
        assert len(children) >= 4  # host, psu, terminal, printer
        proc.send_signal(stop_signal)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for pid in children:
        assert not _alive(pid), f"process {pid} outlived the bench"
    for address in (rig.sim.host.listen, rig.sim.printer.listen, rig.sim.psu.listen):
        _assert_port_free(address.host, address.port)


def test_sim_up_refuses_a_bad_rig_with_one_clear_line(tmp_path: Path) -> None:
    rig_path = make_sim_rig(tmp_path, {'dialect = "rigol-dp800"': 'dialect = "acme"'})
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "sim", "up", "--rig", str(rig_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert f"{rig_path}: [psu.dialect]" in proc.stderr and "rigol-dp800" in proc.stderr
    assert "Traceback" not in proc.stderr


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent:
                found.append(int(entry.name))
                frontier.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and ") Z " not in stat.read_text()


def _assert_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def test_a_device_log_tail_includes_the_log_the_device_keeps_itself(bench: SimBench) -> None:
    """A start failure quotes the device's own log: the tap keeps it under <state>/tap/logs."""
    tail = bench.log_tail("tap")
    assert "printer-tap.log" in tail and "tap up" in tail


def test_a_second_bench_on_the_same_rig_is_refused_and_leaves_the_first_intact(rig: Rig) -> None:
    """Two runs on one rig file: the second used to wipe the first's state and ECR line."""
    with running_bench(rig) as first:
        second = SimBench(rig, fresh=True)
        with pytest.raises(BenchStartError, match=f"in use by pid {os.getpid()} "):
            second.start()
        assert first.endpoints is not None and first.endpoints.terminal_serial.exists()
        card_slot(rig).present(CARD)
        terminal = serial_terminal(rig, first)
        try:
            assert terminal.sale("order-52", 5200).outcome is Outcome.PAID
        finally:
            terminal.close()
    lock = first.state_dir.with_name(first.state_dir.name + ".lock")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # stopped: the rig is free again
    finally:
        os.close(fd)
