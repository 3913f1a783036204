"""Power cuts and brown-outs of the terminal and the printer, swept across each flow.

A cut is a SIGKILL of the simulated device (only what its firmware fsync'ed survives); on a real
bench it is the PSU output going off. Each sweep cuts at every step of a flow, from the instant
the flow starts, so every window between "sent" and "recorded" is hit at least once.
"""

from __future__ import annotations

import pytest

from harness.scenario import Scenario, reversal_on_the_wire

pytestmark = pytest.mark.needs("power", "host")

SALE_STEPS_MS = list(range(0, 400, 50))  # a sale lasts ~400 ms (host answers at 250)
PRINT_STEPS_MS = [0, 15, 30, 45, 60]
# the printer's own cut: the terminal ends the sale once the receipt is handed over and the
# printer's status is read, as early as 25 ms after the first byte while the paper still runs
# for ~60 ms; a cut after the sale ended meets no transaction and proves nothing (seen in 2 of
# 40 seeds at 60 and 20 ms), so the steps stay early in the receipt
PRINTER_CUT_STEPS_MS = [0, 6, 12]
REVERSAL_STEPS_MS = [0, 2, 10, 30]
EOD_STEPS_MS = [0, 10, 20, 40, 60]  # the settlement lasts ~80 ms (flash, host, slip)


@pytest.mark.parametrize("offset_ms", SALE_STEPS_MS)
def test_power_cut_across_a_sale(scenario: Scenario, offset_ms: int) -> None:
    """F6/F7/F8/F9: the terminal loses power at every 50 ms of a sale (host answers at 250 ms).

    Before the request: nothing may be charged. Request sent, no answer: the reversal must be
    found on boot and sent. Answer received: the journal must say approved on boot, or reverse.
    Approved, receipt printing: the receipt is reprinted marked as a copy.
    """
    amount = scenario.unique_amount()
    scenario.host_answers(amount, delay_ms=250)
    cut = scenario.after("sale_started", offset_ms, scenario.faults.power_cut("terminal"))
    with scenario.ecr_timeout(3):
        scenario.sale(amount)
    scenario.heal(cut.wait(5))  # power back: the terminal boots and must resolve the sale


@pytest.mark.needs("capture")
def test_power_cut_right_after_the_request_left(scenario: Scenario) -> None:
    """F7: the power goes 2 ms after the 0200 reached the host link. The pending record must
    already be in flash (persist before send), or the host keeps a sale nobody knows about."""
    amount = scenario.unique_amount()
    scenario.host_answers(amount, delay_ms=200)
    cut = scenario.after(
        "host_request",
        2,
        scenario.faults.power_cut("terminal"),
        match=lambda e: e.data.get("mti") == "0200",
    )
    with scenario.ecr_timeout(3):
        scenario.sale(amount)
    scenario.heal(cut.wait(5))


@pytest.mark.needs("capture")
def test_power_cut_right_after_the_answer_arrived(scenario: Scenario) -> None:
    """F8: the power goes 2 ms after the 0210 came back: either the approval is in the journal
    on boot, or the terminal reverses; never a capture without a record."""
    cut = scenario.after(
        "host_response",
        2,
        scenario.faults.power_cut("terminal"),
        match=lambda e: e.data.get("mti") == "0210",
    )
    with scenario.ecr_timeout(3):
        scenario.sale()
    scenario.heal(cut.wait(5))


@pytest.mark.needs("printer_tap")
@pytest.mark.parametrize("offset_ms", PRINT_STEPS_MS)
def test_terminal_power_cut_while_printing(scenario: Scenario, offset_ms: int) -> None:
    """F9: the terminal dies while its receipt prints; after boot: one original, copies marked."""
    cut = scenario.after_receipt(offset_ms, scenario.faults.power_cut("terminal"))
    with scenario.ecr_timeout(3):
        scenario.sale()
    scenario.heal(cut.wait(5))


@pytest.mark.needs("printer_tap")
@pytest.mark.parametrize("offset_ms", PRINTER_CUT_STEPS_MS)
def test_printer_power_cut_while_printing(scenario: Scenario, offset_ms: int) -> None:
    """F12: the printer loses power mid-receipt (buffer lost); the sale stays paid, reprinted."""
    cut = scenario.after_receipt(offset_ms, scenario.faults.power_cut("printer"))
    scenario.sale()
    scenario.heal(cut.wait(5))


@pytest.mark.needs("capture")
@pytest.mark.parametrize("offset_ms", REVERSAL_STEPS_MS)
def test_power_cut_during_the_reversal(scenario: Scenario, offset_ms: int) -> None:
    """F6 + F13: the answer is lost, and the power goes while the reversal is on its way."""
    lost = scenario.inject(scenario.faults.response_lost())
    cut = scenario.after(
        "host_request",
        offset_ms,
        scenario.faults.power_cut("terminal"),
        match=reversal_on_the_wire,
    )
    with scenario.ecr_timeout(8):
        scenario.sale()
    applied = cut.wait(10)
    scenario.heal(lost)
    scenario.heal(applied)


@pytest.mark.parametrize("offset_ms", EOD_STEPS_MS)
def test_power_cut_during_end_of_day(scenario: Scenario, offset_ms: int) -> None:
    """F19/F20: the terminal dies while it settles; totals must still match after boot."""
    scenario.sale()
    scenario.sale()
    cut = scenario.after("ecr_end_of_day", offset_ms, scenario.faults.power_cut("terminal"))
    terminal = scenario.bench.terminal
    assert terminal is not None
    with scenario.ecr_timeout(3):
        terminal.end_of_day()
    scenario.heal(cut.wait(5))


@pytest.mark.parametrize("attempt", range(4))
def test_brown_out_at_a_random_instant(scenario: Scenario, attempt: int) -> None:
    """F23: the supply sags to 9 V (below the terminal's minimum) at a seeded random instant."""
    offset_ms = scenario.rng.randrange(0, 300)  # inside the ~330 ms sale
    amount = scenario.unique_amount()
    scenario.host_answers(amount, delay_ms=250)
    sag = scenario.after("sale_started", offset_ms, scenario.faults.brown_out("terminal", 9.0))
    with scenario.ecr_timeout(3):
        scenario.sale(amount)
    scenario.heal(sag.wait(5))


def test_short_glitch_during_the_host_exchange(scenario: Scenario) -> None:
    """A 30 ms glitch while the request is at the host: a reboot the operator may not notice."""
    amount = scenario.unique_amount()
    scenario.host_answers(amount, delay_ms=300)
    glitch = scenario.after(
        "sale_started", 100, scenario.faults.power_glitch("terminal", off_ms=30)
    )
    with scenario.ecr_timeout(3):
        scenario.sale(amount)
    glitch.wait(5)
