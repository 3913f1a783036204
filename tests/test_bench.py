"""The Bench on the simulated rig: clean on open, faults recorded first, healed always."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.bench import Bench
from harness.drivers.capture import capture_available
from harness.drivers.interfaces import Outcome, SaleResult
from harness.drivers.network import Network
from harness.drivers.printer import TapPrinterFaults
from harness.history import History
from harness.rig import Rig
from harness.sim.launcher import SimBench
from tests.benchutil import (
    CARD,
    bench_rig,
    ledger,
    paper,
    psu_session,
    running_bench,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return bench_rig(tmp_path)


@pytest.fixture
def sim(rig: Rig) -> Iterator[SimBench]:
    with running_bench(rig) as running:
        yield running


@pytest.fixture
def history(tmp_path: Path) -> History:
    return History(tmp_path / "run" / "history.jsonl")


def toxics(rig: Rig) -> list[object]:
    assert rig.network is not None
    with urllib.request.urlopen(f"{rig.network.toxiproxy}/proxies/host/toxics", timeout=2) as r:
        return list(json.load(r))


def tap_faults(rig: Rig) -> dict[str, bool]:
    assert rig.printer is not None and rig.printer.tap is not None
    state = TapPrinterFaults(rig.printer.tap.control).state()
    return {k: bool(state.get(k)) for k in ("jam", "paper_out", "cover_open", "offline")}


def output_on(rig: Rig, channel: int = 1) -> bool:
    psu = psu_session(rig)
    try:
        return psu.query(f":OUTP? CH{channel}").strip() == "ON"
    finally:
        psu.close()


def is_clean(rig: Rig) -> bool:
    return output_on(rig) and toxics(rig) == [] and not any(tap_faults(rig).values())


def make_dirty(rig: Rig) -> None:
    """Leave the bench the way a crashed run would: power off, a toxic, a jam."""
    assert rig.network is not None and rig.printer is not None and rig.printer.tap is not None
    psu = psu_session(rig)
    try:
        psu.write(":OUTP CH1,OFF")
    finally:
        psu.close()
    with Network(rig.network.toxiproxy, rig.network.allow_upstreams) as network:
        network.response_lost("host")
    TapPrinterFaults(rig.printer.tap.control).jam()
    assert not is_clean(rig)


def test_opening_a_dirty_bench_brings_it_to_the_clean_state(
    rig: Rig, sim: SimBench, history: History
) -> None:
    make_dirty(rig)
    with Bench.open(rig, history, guard=False):
        assert is_clean(rig)
    events = [r.get("event") for r in history.records() if r["type"] == "bench"]
    assert events[:2] == ["open", "reset"]


def test_each_fault_is_recorded_before_it_is_applied_and_reset_heals_in_reverse(
    rig: Rig, sim: SimBench, history: History
) -> None:
    with Bench.open(rig, history, guard=False) as bench:
        cut = bench.inject(bench.faults.power_cut("terminal"))
        lost = bench.inject(bench.faults.response_lost())
        jam = bench.inject(bench.faults.jam())
        assert not output_on(rig) and len(toxics(rig)) == 1 and tap_faults(rig)["jam"]
        assert cut.effective_at >= cut.requested_at
        bench.reset()
        assert is_clean(rig)
        assert not (cut.active or lost.active or jam.active)
    records = history.records()
    applied = [r for r in records if r["type"] == "fault" and r["phase"] == "apply"]
    for record in applied:
        # the fault record precedes the driver call that applies it
        driver_call = next(r for r in records if r["seq"] > record["seq"] and r["type"] == "invoke")
        assert driver_call["process"] == record["fault"]["family"]
    healed = [r["fault"]["name"] for r in records if r["type"] == "fault" and r["phase"] == "heal"]
    assert healed == ["jam", "response_lost", "power_cut"]


def test_every_device_call_is_traced_with_card_numbers_masked(
    rig: Rig, sim: SimBench, history: History
) -> None:
    with Bench.open(rig, history, guard=False) as bench:
        assert bench.cards is not None and bench.terminal is not None
        bench.cards.present(CARD)
        result = bench.terminal.sale("traced", 1111)
    assert result.outcome is Outcome.PAID
    sale = [r for r in history.records() if r.get("process") == "terminal" and r["f"] == "sale"]
    assert [r["type"] for r in sale] == ["invoke", "ok"]
    assert sale[1]["value"]["trace"] == result.trace
    assert CARD.pan not in history.path.read_text() and CARD.masked in history.path.read_text()


def test_lost_response_through_toxiproxy_makes_the_terminal_reverse(
    rig: Rig, sim: SimBench, history: History
) -> None:
    with Bench.open(rig, history, guard=False) as bench:
        assert bench.cards is not None and bench.terminal is not None
        bench.cards.present(CARD)
        fault = bench.inject(bench.faults.response_lost())
        result = bench.terminal.sale("lost", 2222)
        bench.heal(fault)
    assert result.outcome is Outcome.NOT_PAID and result.result_code == 0xA1
    host = ledger(rig)
    wait_for(
        "the reversal to reach the host",
        lambda: [e for e in host.entries() if e.stan == result.trace and e.status == "reversed"],
    )


def test_a_jam_through_the_tap_is_a_printer_error_for_the_terminal_and_recovers(
    rig: Rig, sim: SimBench, history: History
) -> None:
    with Bench.open(rig, history, guard=False) as bench:
        assert bench.cards is not None and bench.terminal is not None
        bench.cards.present(CARD)
        jam = bench.inject(bench.faults.jam())
        result = bench.terminal.sale("jammed", 3333)
        assert result.outcome is Outcome.PAID  # the payment does not depend on the printer
        assert not [r for r in paper(sim) if f"TRACE {result.trace:06d}" in r.text]
        bench.heal(jam)
        receipts = wait_for(
            "the terminal to recover the printer and print",
            lambda: [r for r in paper(sim) if f"TRACE {result.trace:06d}" in r.text and r.complete],
        )
    assert len(receipts) == 1 and "APPROVED" in receipts[0].text and "COPY" not in receipts[0].text
    log = (sim.state_dir / "logs" / "terminal.log").read_text()
    assert "printer" in log


def test_guard_restores_the_bench_when_the_harness_is_killed(
    rig: Rig, sim: SimBench, tmp_path: Path
) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "bench_child.py"),
            str(rig.path),
            str(tmp_path / "child" / "history.jsonl"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "applied"
        assert not is_clean(rig)
        killed_at = time.monotonic()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=5)
    finally:
        if child.poll() is None:
            child.kill()
    wait_for("the guard to restore the bench", lambda: is_clean(rig), timeout=5)
    restored_in = time.monotonic() - killed_at
    assert restored_in < 3.0, f"the guard took {restored_in:.1f} s"
    guard_log_path = tmp_path / "child" / "guard.log"
    guard_log = wait_for(
        "the guard to finish",
        lambda: text if "restored in" in (text := guard_log_path.read_text()) else None,
    )
    assert "restoring" in guard_log and "could not" not in guard_log
    history = History(tmp_path / "next" / "history.jsonl")
    with Bench.open(rig, history, guard=False):
        pass
    reset = [r for r in history.records() if r.get("event") == "reset"]
    assert reset and reset[0]["problems"] == []


def test_sigterm_unwinds_and_the_harness_resets_the_bench_itself(
    rig: Rig, sim: SimBench, tmp_path: Path
) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "bench_child.py"),
            str(rig.path),
            str(tmp_path / "child" / "history.jsonl"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "applied"
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=15)
    assert is_clean(rig)  # restored by the harness itself before it exited
    records = History(tmp_path / "child" / "history.jsonl").records()
    assert [r for r in records if r.get("event") == "reset"][-1]["problems"] == []
    guard_log = (tmp_path / "child" / "guard.log").read_text()
    assert "disarmed" in guard_log


@pytest.mark.skipif(
    not capture_available("lo")[0], reason=f"cannot capture on lo: {capture_available('lo')[1]}"
)
def test_a_fault_lands_at_its_offset_from_the_request_on_the_wire(
    tmp_path: Path, history: History
) -> None:
    """Lose the answer 80 ms after the 0200 reached the host link (the host answers at 1.5 s)."""
    rig = bench_rig(tmp_path)
    with running_bench(rig), Bench.open(rig, history, guard=False) as bench:
        terminal = bench.terminal
        assert bench.cards is not None and terminal is not None
        bench.watch_wire(tmp_path / "run" / "link.pcap")
        bench.cards.present(CARD)
        scheduled = bench.after(
            "host_request",
            80,
            bench.faults.response_lost(),
            match=lambda e: e.data["mti"] == "0200",
        )
        results: list[SaleResult] = []
        sale = threading.Thread(target=lambda: results.append(terminal.sale("timed", 4242)))
        sale.start()
        applied = scheduled.wait(10)
        sale.join(timeout=30)
        assert scheduled.trigger is not None
        assert abs(applied.requested_at - (scheduled.trigger.t + 0.080)) < 1e-9
        lateness = scheduled.lateness_s
        assert lateness is not None and lateness < 0.05, lateness
        assert results and results[0].outcome is Outcome.NOT_PAID  # the answer never came
    pcap = (tmp_path / "run" / "link.pcap").read_bytes()
    assert len(pcap) > 100 and CARD.masked.encode() in pcap
    assert CARD.pan.encode() not in pcap  # the evidence never holds a full card number
    phases = [r["phase"] for r in history.records() if r["type"] == "fault"]
    assert phases[:3] == ["armed", "apply", "applied"]


def test_open_refuses_when_no_bench_answers(tmp_path: Path, history: History) -> None:
    rig = bench_rig(tmp_path)  # nothing started
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        Bench.open(rig, history, guard=False)
    assert time.monotonic() - started < 20
    assert str(info.value)
    assert os.path.exists(history.path)
