"""Many transactions quickly: a burst, and a run of sales under random faults."""

from __future__ import annotations

import pytest

from harness.drivers.interfaces import Outcome
from harness.scenario import Scenario

pytestmark = pytest.mark.needs("host")


def test_burst_of_sales(scenario: Scenario) -> None:
    """Twenty sales as fast as the terminal takes them: every one paid and counted once."""
    scenario.no_faults()
    results = [scenario.sale() for _ in range(20)]
    assert all(r.outcome is Outcome.PAID for r in results)


@pytest.mark.needs("network", "printer")
def test_sales_under_random_faults(scenario: Scenario) -> None:
    """Ten sales, each with a fault drawn from the run's seed (network or printer)."""
    kinds = ["response_lost", "request_lost", "jam", "paper_out", "none"]
    for _ in range(10):
        kind = scenario.rng.choice(kinds)
        fault = None if kind == "none" else getattr(scenario.faults, kind)()
        applied = scenario.inject(fault) if fault is not None else None
        scenario.sale()
        if applied is not None:
            scenario.heal(applied)
