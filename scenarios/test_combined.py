"""Faults together: what happens in a shop when two things go wrong at once."""

from __future__ import annotations

import pytest

from harness.scenario import Scenario

pytestmark = pytest.mark.needs("host", "power", "network", "printer")


def test_power_cut_while_the_printer_is_jammed(scenario: Scenario) -> None:
    """The receipt waits behind a jam and the terminal loses power: reprint after both heal."""
    jam = scenario.inject(scenario.faults.jam())
    scenario.sale()
    cut = scenario.inject(scenario.faults.power_cut("terminal"))
    scenario.heal(jam)
    scenario.heal(cut)


def test_lost_answer_then_power_cut_before_the_reversal_retry(scenario: Scenario) -> None:
    """The answer is lost and the reversal cannot get out; then the power goes. After boot the
    stored reversal must still be delivered."""
    lost = scenario.inject(scenario.faults.response_lost())
    blackhole = scenario.inject(scenario.faults.request_lost())
    scenario.sale()
    cut = scenario.inject(scenario.faults.power_cut("terminal"))
    scenario.heal(blackhole)
    scenario.heal(lost)
    scenario.heal(cut)


def test_flapping_link_and_a_glitch(scenario: Scenario) -> None:
    """A flapping link and a short power glitch during a sale."""
    amount = scenario.unique_amount()
    scenario.host_answers(amount, delay_ms=200)
    flap = scenario.inject(scenario.faults.flapping(period_ms=300, cycles=3))
    glitch = scenario.after(
        "sale_started", 100, scenario.faults.power_glitch("terminal", off_ms=40)
    )
    with scenario.ecr_timeout(4):
        scenario.sale(amount)
    glitch.wait(5)
    scenario.heal(flap)
