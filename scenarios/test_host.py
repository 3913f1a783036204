"""The host's own answers: declines, system errors, silence, slowness."""

from __future__ import annotations

import pytest

from harness.drivers.interfaces import Outcome
from harness.scenario import Scenario

pytestmark = pytest.mark.needs("host")


@pytest.mark.parametrize(
    ("code", "reason"),
    [("05", "do not honour"), ("51", "no funds"), ("91", "issuer down"), ("96", "malfunction")],
)
def test_host_decline_is_not_paid_and_not_reversed(
    scenario: Scenario, code: str, reason: str
) -> None:
    """F21: a definitive decline: NOT PAID everywhere, nothing to reverse."""
    scenario.no_faults()
    amount = scenario.unique_amount()
    scenario.host_answers(amount, response=code)
    result = scenario.sale(amount)
    assert result.outcome is Outcome.NOT_PAID, reason


def test_silent_host_after_capture_is_reversed(scenario: Scenario) -> None:
    """The host captures and never answers (crashed after its commit): reverse, never guess."""
    scenario.no_faults()
    amount = scenario.unique_amount()
    scenario.host_answers(amount, silent=True)
    result = scenario.sale(amount)
    assert result.outcome is not Outcome.PAID


def test_slow_host_within_the_timeout_pays(scenario: Scenario) -> None:
    """The issuer takes 1.5 s: slow, but inside the terminal's timeout."""
    scenario.no_faults()
    amount = scenario.unique_amount()
    scenario.host_answers(amount, delay_ms=1500)
    assert scenario.sale(amount).outcome is Outcome.PAID


def test_decline_then_approval_uses_a_new_stan(scenario: Scenario) -> None:
    """F21: the cashier retries a declined card; the retry is a new transaction, one charge."""
    scenario.no_faults()
    declined = scenario.unique_amount()
    scenario.host_answers(declined, response="91")
    first = scenario.sale(declined)
    second = scenario.sale()
    assert first.outcome is Outcome.NOT_PAID and second.outcome is Outcome.PAID
    assert first.trace != second.trace
