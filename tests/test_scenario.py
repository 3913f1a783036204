"""The scenario as the ECR: what it sends the terminal, independent of any bench."""

from __future__ import annotations

import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness.drivers.interfaces import Outcome, SaleResult
from harness.faults import AppliedFault, Fault
from harness.rig import load_rig
from harness.scenario import Scenario, ScenarioInfo
from harness.timing import BenchEvent, EventBus, Scheduler

ROOT = Path(__file__).resolve().parent.parent


class RecordingTerminal:
    """Answers every sale PAID and remembers the order ids it was sent."""

    def __init__(self) -> None:
        self.order_ids: list[str] = []

    def sale(self, order_id: str, amount: int) -> SaleResult:
        self.order_ids.append(order_id)
        now = time.monotonic()
        return SaleResult(
            order_id, amount, 978, Outcome.PAID, 0, len(self.order_ids), None, None, None,
            "approved", now, now,
        )  # fmt: skip


def scenario_for(
    nodeid: str, terminal: RecordingTerminal, seed: int = 1, **bench_parts: Any
) -> Scenario:
    rig = load_rig(ROOT / "rigs" / "sim.toml")
    bench: Any = SimpleNamespace(rig=rig, host=None, cards=None, terminal=terminal, **bench_parts)
    info = ScenarioInfo(nodeid, seed, "correct", str(rig.path))
    return Scenario(bench, info, random.Random(seed))


def test_order_ids_never_repeat_across_cases_runs_and_replays() -> None:
    """A parametrised scenario's cases share a name; a replay shares the seed too. After a power
    cut the ECR asks the terminal how order X ended: an id used before would let an earlier
    case's sale answer for this one (a false PAID seen in a 20-seed run)."""
    terminal = RecordingTerminal()
    name = "scenarios/test_power.py::test_terminal_power_cut_while_printing"
    for nodeid in (f"{name}[30]", f"{name}[45]", f"{name}[45]"):  # the last: a replay
        scene = scenario_for(nodeid, terminal)
        scene.sale()
        scene.sale()
    ids = terminal.order_ids
    assert len(set(ids)) == len(ids) == 6, ids
    assert all(i.startswith("test_terminal_po") for i in ids)  # still tells the test apart
    assert all(len(i) <= 26 for i in ids)  # fits the receipt's ORDER line


def test_a_receipt_anchor_ignores_receipts_printed_before_the_terminal_took_the_sale() -> None:
    """The terminal may still be printing a receipt an earlier scenario left owed while this
    sale waits its turn: a fault anchored on that receipt would land before the sale began."""
    bus = EventBus()
    fired: list[float] = []

    def inject(fault: Fault, requested: float | None) -> AppliedFault:
        assert requested is not None
        fired.append(requested)
        return AppliedFault(fault, requested, time.monotonic())

    scheduler = Scheduler(bus, inject)
    scene = scenario_for(
        "scenarios/test_power.py::test_x", RecordingTerminal(), events=bus, after=scheduler.after
    )
    cut = scene.after_receipt(5, Fault("power", "power_cut", "terminal"))
    now = time.monotonic()
    bus.publish(BenchEvent("receipt_first_byte", now, {}))  # an earlier scenario's COPY
    bus.publish(BenchEvent("terminal_accepted", now + 0.01, {"command": "status enquiry"}))
    bus.publish(BenchEvent("terminal_accepted", now + 0.02, {"command": "sale order=x"}))
    bus.publish(BenchEvent("receipt_first_byte", now + 0.015, {}))  # reported late, printed before
    assert fired == []
    bus.publish(BenchEvent("receipt_first_byte", now + 0.03, {}))  # this sale's receipt
    cut.wait(2)
    scheduler.close()
    assert fired == [now + 0.03 + 0.005]
