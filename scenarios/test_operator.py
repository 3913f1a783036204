"""What the cashier and the cash register do: crashes, retries, cancels, end of day."""

from __future__ import annotations

import contextlib

import pytest

from harness.drivers.interfaces import Outcome
from harness.scenario import Scenario, reversal_on_the_wire

pytestmark = pytest.mark.needs("host")


def test_baseline_sales_are_paid_everywhere(scenario: Scenario) -> None:
    """No fault at all: three sales, all paid on host, journal and paper, totals equal."""
    scenario.no_faults()
    for _ in range(3):
        assert scenario.sale().outcome is Outcome.PAID


def test_ecr_crash_after_approval_recovers_with_repeat_receipt(scenario: Scenario) -> None:
    """F16: the cash register crashes while the terminal approves; on restart it must learn
    the sale was paid (repeat receipt), never mark the order unpaid or charge it again."""
    amount = scenario.unique_amount()
    scenario.host_answers(amount, delay_ms=600)
    join = scenario.sale_in_background(amount)
    scenario.wait_until_host_has(amount)  # the host decided; its answer is 600 ms away
    crash = scenario.inject(scenario.ecr_crash_fault())
    result = join(20)
    scenario.heal(crash)
    assert result.outcome is Outcome.UNKNOWN  # the ECR cannot know: it must ask


def test_cancel_during_card_wait(scenario: Scenario) -> None:
    """The customer walks away: the ECR aborts while the terminal waits for a card."""
    scenario.no_faults()
    cards = scenario.bench.cards
    if cards is None:
        pytest.skip("the rig has no card presenter")
    cards.remove()
    terminal = scenario.bench.terminal
    assert terminal is not None
    taken = scenario.expect_sale_taken()
    join = scenario.sale_in_background()
    taken.wait(5)  # the terminal took the sale and now waits for a card
    assert terminal.abort()
    result = join(10)
    cards.present(scenario.card)
    assert result.outcome is Outcome.NOT_PAID


def test_cancel_an_approved_sale(scenario: Scenario) -> None:
    """The customer returns the goods at once: the ECR cancels (06 30); no charge remains."""
    scenario.no_faults()
    result = scenario.sale()
    assert scenario.cancel(result) is Outcome.PAID


@pytest.mark.needs("network", "capture")
def test_end_of_day_with_a_reversal_still_queued(scenario: Scenario) -> None:
    """F19: a reversal cannot be delivered yet when the cashier closes the day; settlement must
    wait for it (or refuse) so that the totals never disagree with the host."""
    lost = scenario.inject(scenario.faults.response_lost())
    blackhole = scenario.after(
        "host_request",
        5,
        scenario.faults.request_lost(),
        match=lambda e: e.data.get("mti") == "0200",
    )
    scenario.sale()
    applied = blackhole.wait(5)
    terminal = scenario.bench.terminal
    assert terminal is not None
    # heal right after the terminal's own retry went into the black hole: healing closes that
    # connection, the attempt fails, and the next retry is a full retry period away; the day is
    # closed inside that gap, with the reversal still only queued (healing at an arbitrary
    # instant let the retry win the race now and then: the reversal arrived first, nothing to
    # find)
    with contextlib.suppress(TimeoutError):  # a terminal that never retries: the oracle judges
        scenario.wait_for("host_request", match=reversal_on_the_wire, timeout_s=15)
    scenario.heal(lost)
    scenario.heal(applied)
    with scenario.ecr_timeout(12):
        terminal.end_of_day()


def test_back_to_back_sales(scenario: Scenario) -> None:
    """Two sales immediately one after the other: two charges, two receipts, nothing mixed."""
    scenario.no_faults()
    first, second = scenario.sale(), scenario.sale()
    assert first.trace != second.trace
