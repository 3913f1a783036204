"""Network faults on the terminal's host link (toxiproxy between terminal and acquirer)."""

from __future__ import annotations

import time

import pytest

from harness.drivers.interfaces import Outcome
from harness.protocols.iso8583 import REVERSAL_MTIS
from harness.scenario import Scenario

pytestmark = pytest.mark.needs("network", "host")


def test_request_lost_is_reversed_harmlessly(scenario: Scenario) -> None:
    """F1: the 0200 never reaches the host; the terminal must fail the sale, never charge."""
    lost = scenario.inject(scenario.faults.request_lost())
    result = scenario.sale()
    scenario.heal(lost)
    assert result.outcome is not Outcome.PAID


def test_response_lost_after_the_host_approved_is_reversed(scenario: Scenario) -> None:
    """F2 (单边账): the host approves, the 0210 is lost; the reversal must undo the debit."""
    lost = scenario.inject(scenario.faults.response_lost())
    result = scenario.sale()
    scenario.heal(lost)
    assert result.outcome is not Outcome.PAID


def test_late_response_is_ignored_and_the_sale_reversed(scenario: Scenario) -> None:
    """F3: the approval arrives after the terminal gave up; it must not print PAID."""
    sim = scenario.rig.sim
    timeout_ms = int((sim.terminal.host_timeout_s if sim else 30) * 1000)
    late = scenario.inject(scenario.faults.late_response(delay_ms=timeout_ms + 1500))
    scenario.sale()
    time.sleep(2.0)  # let the late 0210 actually arrive at the terminal after its timeout
    scenario.heal(late)


def test_connection_reset_mid_answer_means_reversal(scenario: Scenario) -> None:
    """A NAT or 4G handover cuts the link after 20 bytes of the 0210: an unusable answer."""
    cut = scenario.inject(scenario.faults.reset_mid_message(after_bytes=20))
    scenario.sale()
    scenario.heal(cut)


def test_slow_link_within_the_timeout_still_pays(scenario: Scenario) -> None:
    """A congested link (2 KB/s, 200 ms each way): slow but inside the terminal's timeout."""
    slow = scenario.inject(scenario.faults.slow_link(rate_kbps=2, latency_ms=200))
    result = scenario.sale()
    scenario.heal(slow)
    assert result.outcome is Outcome.PAID


def test_host_unreachable_declines_without_charging(scenario: Scenario) -> None:
    """Partition: the connect is refused; the request provably never left."""
    down = scenario.inject(scenario.faults.partition())
    result = scenario.sale()
    scenario.heal(down)
    assert result.outcome is Outcome.NOT_PAID


@pytest.mark.needs("capture")
def test_reversal_lost_several_times_is_stored_and_forwarded(scenario: Scenario) -> None:
    """F13: the host approves, its answer is lost, and from then on every reversal is
    swallowed for a while; the reversal must survive every failed send until delivered."""
    lost = scenario.inject(scenario.faults.response_lost())
    blackhole = scenario.after(
        "host_request",
        5,
        scenario.faults.request_lost(),
        match=lambda e: e.data.get("mti") == "0200",
    )
    scenario.sale()
    sim = scenario.rig.sim
    per_send = (sim.terminal.host_timeout_s + sim.terminal.reversal_retry_s) if sim else 35.0
    time.sleep(3 * per_send)  # at least three more sends fail while the link swallows them
    scenario.heal(blackhole.wait(5))
    scenario.heal(lost)


def test_reversal_answer_lost_is_resent_and_counted_once(scenario: Scenario) -> None:
    """F14: the host reverses but its 0410 is lost; the terminal resends; one reversal effect."""
    lost = scenario.inject(scenario.faults.response_lost())
    scenario.sale()
    time.sleep(2.0)  # reversal attempts go out and their answers are lost too
    scenario.heal(lost)


def test_flapping_link_keeps_reversal_before_the_next_sale(scenario: Scenario) -> None:
    """F22: a flapping link during the reversal and the next sale: reverse first, then sell."""
    lost = scenario.inject(scenario.faults.response_lost())
    scenario.sale()
    scenario.heal(lost)
    flap = scenario.inject(scenario.faults.flapping(period_ms=400, cycles=4))
    scenario.sale()
    scenario.heal(flap)
    capture = scenario.bench.capture
    if capture is not None and capture.active:
        kinds = [(m.mti, m.stan) for m in capture.messages() if m.direction == "to_host"]
        reversals = [i for i, (mti, _) in enumerate(kinds) if mti in REVERSAL_MTIS]
        sales = [i for i, (mti, _) in enumerate(kinds) if mti == "0200"]
        if reversals and len(sales) >= 2:
            assert min(reversals) < sales[1], f"a new sale left before the reversal: {kinds}"
