"""Printer faults: jams, paper out, cover open, printer offline; through the tap and the sim."""

from __future__ import annotations

import pytest

from harness.drivers.interfaces import Outcome
from harness.scenario import Scenario

pytestmark = pytest.mark.needs("printer", "host")


def test_paper_out_before_the_sale(scenario: Scenario) -> None:
    """F10: no paper; the payment still goes through and the receipt prints after reloading."""
    out = scenario.inject(scenario.faults.paper_out())
    result = scenario.sale()
    scenario.heal(out)
    assert result.outcome is Outcome.PAID


@pytest.mark.needs("printer_tap")
def test_paper_runs_out_mid_receipt(scenario: Scenario) -> None:
    """F10: the roll ends while the receipt prints; after reload: one full receipt, once."""
    out = scenario.after_receipt(10, scenario.faults.paper_out())
    result = scenario.sale()
    scenario.heal(out.wait(5))
    assert result.outcome is Outcome.PAID


@pytest.mark.needs("printer_tap")
def test_cutter_jam_after_the_status_check_loses_the_receipt(scenario: Scenario) -> None:
    """F11: the terminal checks the printer (all fine), and the cutter jams before the receipt
    goes out: the printer swallows the receipt and prints nothing. After clearing, the terminal
    must notice the receipt never came out (its print barrier went unanswered) and print it
    again, marked as a copy since it cannot know how much reached the paper."""
    jam = scenario.after(
        "printer_status_query", 3, scenario.faults.jam(), match=lambda e: e.data.get("n") == 4
    )
    result = scenario.sale()
    scenario.heal_after(jam.wait(5), held_s=0.5)
    assert result.outcome is Outcome.PAID


def test_jam_before_the_sale(scenario: Scenario) -> None:
    """F11: the printer is jammed when the customer pays: never fail the payment for it."""
    jam = scenario.inject(scenario.faults.jam())
    result = scenario.sale()
    scenario.heal(jam)
    assert result.outcome is Outcome.PAID


def test_cover_open_during_the_sale(scenario: Scenario) -> None:
    """The cover is open; when closed, the held receipt prints."""
    cover = scenario.inject(scenario.faults.cover_open())
    result = scenario.sale()
    scenario.heal(cover)
    assert result.outcome is Outcome.PAID


@pytest.mark.needs("printer_tap")
def test_printer_offline_during_the_sale(scenario: Scenario) -> None:
    """F12: the printer stops answering at all (unplugged); it must be reprinted when back."""
    offline = scenario.inject(scenario.faults.printer_offline())
    result = scenario.sale()
    scenario.heal(offline)
    assert result.outcome is Outcome.PAID


@pytest.mark.needs("printer_tap", "printer_physical")
def test_paper_jam_tears_the_receipt_mid_print(scenario: Scenario) -> None:
    """F11: the paper jams in the printer itself halfway through (trace number printed);
    clearing it tears the printed part away. The receipt must be reprinted in full, marked as a
    copy: the torn half was the original."""
    jam = scenario.after_receipt(40, scenario.faults.physical_jam())
    result = scenario.sale()
    scenario.heal(jam.wait(5))
    assert result.outcome is Outcome.PAID
