"""Three synthetic scenarios: one passes, one violates I2, one is skipped."""

from __future__ import annotations

import pytest

DIAGNOSIS = "host captured order-2 (STAN 000042) but the terminal journal says NOT_PAID"


@pytest.mark.verdict(invariants={"I6": "n/a", "I7": "unknown"})
def test_sale_approved() -> None:
    assert 1234 > 0


@pytest.mark.verdict(
    valid=False,
    invariants={"I2": "fail", "I6": "n/a"},
    violations=[{"invariant": "I2", "diagnosis": DIAGNOSIS}],
)
def test_response_lost() -> None:
    raise AssertionError(f"I2 violated: {DIAGNOSIS}")


@pytest.mark.skip(reason="printer tap not wired on this rig")
def test_printer_jam() -> None:
    raise AssertionError("never runs")
