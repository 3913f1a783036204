"""The oracle from hand-made records: every invariant fails, passes and is unknown when it should.

Pure unit tests, no bench: each builds an `Evidence` from a few records and asserts the verdict,
the invariant, the orders / STANs and the words of the diagnosis a QA engineer will read.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.oracle import check, render_text, verdict_to_json
from harness.oracle_verdict import Verdict, Violation
from harness.records import (
    EcrOutcome,
    Evidence,
    FaultSpan,
    HostTxn,
    JournalTxn,
    Operation,
    Order,
    Receipt,
    TimelineEntry,
    Totals,
    WireMsg,
)

TID = "29110001"
EUR = 978


# --- builders -----------------------------------------------------------------------------
def blank() -> Evidence:
    """Evidence for a fault-free scenario (no fault window to cross) until a fault is added."""
    return Evidence(tid=TID, expects_faults=False)


def paid(
    ev: Evidence,
    oid: str,
    stan: int,
    amount: int = 1000,
    *,
    t: float | None = None,
    trace: bool = True,
    outcome: EcrOutcome = "PAID",
    recovered: EcrOutcome | None = None,
) -> Evidence:
    """A sale done right: captured, approved in the journal, one complete original paid receipt."""
    start = stan * 10.0 if t is None else t
    known = stan if trace else None
    order = Order(
        oid, amount, EUR, start, start + 2.0, outcome, 0, known, stan, recovered=recovered
    )
    ev.orders.append(order)
    ev.host.append(HostTxn(TID, stan, amount, EUR, "captured", "00", rrn=f"R{stan}"))
    ev.journal.append(JournalTxn(stan, amount, True, 0, oid, stan))
    ev.receipts.append(Receipt(len(ev.receipts), stan, oid, "paid", False, True, text=f"T{stan}"))
    return ev


def declined(ev: Evidence, oid: str, stan: int, amount: int = 1000) -> Evidence:
    """A sale the host declined, told as NOT PAID everywhere."""
    start = stan * 10.0
    ev.orders.append(Order(oid, amount, EUR, start, start + 2.0, "NOT_PAID", 5, stan, stan))
    ev.host.append(HostTxn(TID, stan, amount, EUR, "declined", "05"))
    ev.journal.append(JournalTxn(stan, amount, False, 5, oid, stan))
    ev.receipts.append(Receipt(len(ev.receipts), stan, oid, "unpaid", False, True))
    return ev


def with_totals(ev: Evidence) -> Evidence:
    captured = [h for h in ev.host if h.status == "captured"]
    amount = sum(h.amount for h in captured)
    ev.totals = Totals(len(captured), amount, len(captured), amount, EUR, 0)
    return ev


def fault_over(ev: Evidence, oid: str, family: str = "network", label: str = "") -> Evidence:
    o = next(o for o in ev.orders if o.order_id == oid)
    ev.faults.append(FaultSpan(label or f"{family}-fault", family, o.started + 0.5, o.started + 1))
    ev.expects_faults = True
    return ev


def swap(items: list[Any], index: int, **changes: Any) -> None:
    """Replace one record by a changed copy (records are frozen)."""
    items[index] = replace(items[index], **changes)


def only(verdict: Verdict, invariant: str) -> list[Violation]:
    found = verdict.of(invariant)
    assert found, f"expected {invariant}; got {[v.invariant for v in verdict.violations]}"
    return found


def consistent() -> Evidence:
    ev = blank()
    paid(ev, "A-1", 1)
    declined(ev, "A-2", 2)
    paid(ev, "A-3", 3, 2550)
    return with_totals(ev)


# --- the clean case and the unknown cases -------------------------------------------------
def test_consistent_history_passes_every_invariant() -> None:
    verdict = check(consistent())
    assert verdict.valid is True
    assert verdict.violations == [] and verdict.unknown == []
    assert verdict.invariants == {
        "I1": "pass",
        "I2": "pass",
        "I3": "pass",
        "I4": "pass",
        "I5": "n/a",  # nothing was in doubt
        "I6": "pass",
        "I7": "pass",
    }
    assert verdict.counts["orders"] == 3 and verdict.counts["captured"] == 2


def test_no_evidence_is_unknown_never_a_pass() -> None:
    verdict = check(blank())
    assert verdict.valid == "unknown"
    assert any("no orders" in reason for reason in verdict.unknown)
    assert set(verdict.invariants.values()) == {"n/a"}


def test_unreadable_records_make_a_clean_history_unknown() -> None:
    ev = consistent()
    ev.read_errors.append("journal: terminal did not answer 06 20")
    verdict = check(ev)
    assert verdict.valid == "unknown"
    assert "records could not be read: journal: terminal did not answer 06 20" in verdict.unknown
    assert verdict.invariants["I1"] == "unknown" and verdict.invariants["I5"] == "n/a"


def test_fault_scenario_where_no_sale_crossed_the_fault_is_unknown() -> None:
    ev = consistent()
    ev.expects_faults = True
    ev.faults.append(FaultSpan("late-cut", "power", 500.0, 501.0))  # after every sale
    verdict = check(ev)
    assert verdict.valid == "unknown"
    assert any("no transaction crossed the fault window" in r for r in verdict.unknown)


def test_a_fault_during_end_of_day_counts_as_crossing_the_window() -> None:
    ev = consistent()
    ev.expects_faults = True
    ev.faults.append(FaultSpan("eod-cut", "power", 500.0, 501.0))  # after every sale
    ev.operations.append(Operation("end_of_day", 499.9, 500.2))  # but during the settlement
    assert check(ev).valid is True
    ev.operations[0] = Operation("end_of_day", 400.0, 450.0)  # an earlier one: proves nothing
    assert check(ev).valid == "unknown"


def test_fault_scenario_without_any_fault_is_unknown() -> None:
    ev = consistent()
    ev.expects_faults = True
    verdict = check(ev)
    assert verdict.valid == "unknown"
    assert any("no fault was applied" in r for r in verdict.unknown)


def test_fault_crossing_a_sale_gives_a_real_pass() -> None:
    verdict = check(fault_over(consistent(), "A-3"))
    assert verdict.valid is True
    assert verdict.invariants["I5"] == "pass"  # A-3 was in doubt and settled
    assert verdict.counts["in_doubt"] == 1


def test_sale_that_never_ended_overlaps_a_later_fault() -> None:
    ev = paid(blank(), "A-1", 1, outcome="UNKNOWN", recovered="PAID")
    ev.orders[0] = replace(ev.orders[0], ended=None)
    ev.expects_faults = True
    ev.faults.append(FaultSpan("cut", "power", 40.0, None))  # self-healing: an instant
    assert check(ev).valid is True


def test_a_violation_makes_the_verdict_false_even_when_evidence_is_unknown() -> None:
    ev = consistent()
    ev.read_errors.append("printer tap: capture file truncated")
    swap(ev.journal, 0, approved=False)
    verdict = check(ev)
    assert verdict.valid is False
    assert verdict.unknown  # still said why the rest proves nothing
    assert verdict.invariants["I1"] == "fail" and verdict.invariants["I4"] == "unknown"


def test_host_ledger_of_another_terminal_is_unknown() -> None:
    ev = blank()
    declined(ev, "A-1", 1)
    ev.host = [replace(h, tid="99999999") for h in ev.host]
    verdict = check(ev)
    assert verdict.counts["host_other_tid"] == 1
    assert any("none for TID 29110001" in r for r in verdict.unknown)


# --- linking ------------------------------------------------------------------------------
def test_trace_missing_links_through_the_journal_order_ref() -> None:
    ev = with_totals(paid(blank(), "A-1", 7, trace=False))
    verdict = check(ev)
    assert verdict.valid is True
    assert verdict.counts["linked_via_journal"] == 1 and verdict.counts["orphans"] == 0


def test_trace_missing_links_through_the_receipt_order_ref() -> None:
    ev = paid(blank(), "A-1", 7, trace=False)
    swap(ev.journal, 0, order_ref=None)
    verdict = check(ev)
    assert verdict.valid is True
    assert verdict.counts["linked_via_receipt"] == 1


def test_trace_missing_links_through_a_unique_amount() -> None:
    ev = paid(blank(), "A-1", 7, 1234, trace=False)
    swap(ev.journal, 0, order_ref=None)
    swap(ev.receipts, 0, order_ref=None)
    declined(ev, "A-2", 8, 999)
    verdict = check(ev)
    assert verdict.valid is True
    assert verdict.counts["linked_via_amount"] == 1


def test_ambiguous_amount_is_not_linked_and_says_so() -> None:
    ev = blank()
    for oid, stan in (("A-1", 7), ("A-2", 8)):
        paid(ev, oid, stan, 1234, trace=False)
    ev.journal = [replace(j, order_ref=None) for j in ev.journal]
    ev.receipts = [replace(r, order_ref=None) for r in ev.receipts]
    verdict = check(ev)
    assert verdict.counts["linked_via_amount"] == 0 and verdict.counts["orphans"] == 2
    assert any("which was whose is unknown" in r for r in verdict.unknown)
    assert verdict.valid == "unknown"  # no false I3 for orders the oracle could not link
    assert not verdict.of("I3")


def test_one_trace_less_order_and_two_host_candidates_is_ambiguous() -> None:
    ev = paid(blank(), "A-1", 7, 500, trace=False)
    swap(ev.journal, 0, order_ref=None)
    swap(ev.receipts, 0, order_ref=None)
    ev.host.append(HostTxn(TID, 9, 500, EUR, "captured", "00"))
    verdict = check(ev)
    assert verdict.counts["linked_via_amount"] == 0
    assert any("which was whose is unknown" in r for r in verdict.unknown)


def test_conflicting_order_refs_are_reported_not_guessed() -> None:
    ev = consistent()
    swap(ev.journal, 0, order_ref="A-3")  # the journal says STAN 1 belongs to A-3
    verdict = check(ev)
    assert verdict.counts["link_conflicts"] == 1
    said = "STAN 000001 is linked to order A-1 but the journal says order A-3"
    assert any(said in reason for reason in verdict.unknown)


def test_trace_less_receipt_speaks_for_the_orders_only_stan() -> None:
    ev = paid(blank(), "A-1", 5)
    swap(ev.receipts, 0, trace=None)
    assert check(ev).valid is True  # I6 counts it as the original paid receipt of STAN 5


def test_violations_are_listed_in_host_order() -> None:
    ev = blank()
    for i, stan in enumerate((30, 10, 20)):
        paid(ev, f"A-{i}", stan)
    ev.journal = [replace(j, approved=False) for j in ev.journal]
    assert [v.stans for v in check(ev).of("I1")] == [(30,), (10,), (20,)]


def test_repeated_receipts_keep_their_printed_order() -> None:
    ev = paid(blank(), "A-1", 5)
    ev.receipts.append(Receipt(1, 6, None, "other", False, True, kind="settlement"))
    ev.receipts.append(replace(ev.receipts[0], index=2))
    ev.receipts.append(replace(ev.receipts[0], index=3, copy=True))
    (v,) = check(ev).of("I6")
    receipts = v.records["receipts"]
    assert isinstance(receipts, list) and [r["index"] for r in receipts] == [0, 2, 3]
    assert "(#0, #2)" in v.diagnosis


def test_host_rows_of_other_terminals_are_ignored() -> None:
    ev = consistent()
    ev.host.append(HostTxn("77777777", 1, 1000, EUR, "captured", "00"))
    verdict = check(ev)
    assert verdict.valid is True and verdict.counts["host_other_tid"] == 1


# --- I1 no-lost ---------------------------------------------------------------------------
def test_capture_without_an_approved_journal_record_in_a_power_cut_is_a_dropped_order() -> None:
    ev = paid(blank(), "A-1", 123, outcome="UNKNOWN", recovered="UNKNOWN")
    ev.journal.clear()
    fault_over(ev, "A-1", "power", "cut-after-0200")
    verdict = check(ev)
    (v,) = only(verdict, "I1")
    assert v.orders == ("A-1",) and v.stans == (123,)
    assert "host captured STAN 000123" in v.diagnosis
    assert "never sent a reversal" in v.diagnosis
    assert "power-cut window" in v.diagnosis and "'cut-after-0200'" in v.diagnosis
    assert "掉单" in v.diagnosis
    assert verdict.valid is False


def test_capture_the_journal_calls_failed_after_a_lost_answer_is_a_dropped_order() -> None:
    ev = paid(blank(), "A-1", 5, outcome="UNKNOWN", recovered="NOT_PAID")
    swap(ev.journal, 0, approved=False, result_code=0xA1)
    swap(ev.receipts, 0, verdict="unpaid")
    fault_over(ev, "A-1", "network", "drop-0210")
    (v,) = only(check(ev), "I1")
    assert "not approved, result code 0xA1" in v.diagnosis
    assert "without an auto-reversal" in v.diagnosis


def test_orphan_capture_nobody_knows_is_an_unaccounted_debit() -> None:
    ev = consistent()
    ev.host.append(HostTxn(TID, 42, 700, EUR, "captured", "00"))
    verdict = check(ev)
    (v,) = only(verdict, "I1")
    assert v.orders == () and v.stans == (42,)
    assert "no order and no terminal record knows it" in v.diagnosis
    assert verdict.counts["orphans"] == 1


def test_cancelled_sale_still_captured_on_the_host_is_lost_to_the_terminal() -> None:
    ev = paid(blank(), "A-1", 5)
    swap(ev.orders, 0, cancelled=True)
    swap(ev.journal, 0, approved=False)
    (v,) = only(check(ev), "I1")
    assert "the cancellation (0400) never reached the host" in v.diagnosis


def test_cancelled_sale_the_host_still_has_captured_is_a_false_unpaid() -> None:
    ev = paid(blank(), "A-1", 5)
    swap(ev.orders, 0, cancelled=True)  # the terminal confirmed, its journal still says approved
    verdict = check(ev)
    (v,) = only(verdict, "I2")
    assert "the ECR cancelled the sale (06 30, confirmed)" in v.diagnosis
    assert "charged for a cancelled sale" in v.diagnosis
    assert not verdict.of("I1")


def test_capture_the_host_kept_despite_reversal_messages_names_the_unmatched_reversal() -> None:
    ev = paid(blank(), "A-1", 5)
    swap(ev.host, 0, reversal_messages=2)
    swap(ev.journal, 0, approved=False)
    (v,) = only(check(ev), "I1")
    assert "2 reversal message(s)" in v.diagnosis and "did not match the original" in v.diagnosis


def test_i1_passes_when_every_capture_is_approved() -> None:
    assert check(consistent()).invariants["I1"] == "pass"


def test_i1_is_not_applicable_without_captures() -> None:
    assert check(declined(blank(), "A-1", 1)).invariants["I1"] == "n/a"


# --- I2 no-false-unpaid -------------------------------------------------------------------
def test_not_paid_receipt_and_outcome_for_a_capture_without_reversal() -> None:
    ev = paid(blank(), "A-1", 5, outcome="UNKNOWN", recovered="NOT_PAID")
    swap(ev.receipts, 0, verdict="unpaid")
    swap(ev.journal, 0, approved=False)
    verdict = check(ev)
    (v,) = only(verdict, "I2")
    assert v.orders == ("A-1",) and v.stans == (5,)
    assert "receipt #0 (original) says NOT PAID" in v.diagnosis
    assert "the ECR concluded NOT_PAID" in v.diagnosis
    assert "no auto-reversal on timeout" in v.diagnosis and "customer was charged" in v.diagnosis


def test_not_paid_told_while_the_journal_says_approved_points_at_a_late_answer() -> None:
    ev = paid(blank(), "A-1", 5, outcome="NOT_PAID")
    (v,) = only(check(ev), "I2")
    assert "journal says STAN 000005 approved" in v.diagnosis and "late 0210" in v.diagnosis


def test_not_paid_with_reversals_the_host_ignored_says_what_it_sees() -> None:
    ev = paid(blank(), "A-1", 5, outcome="NOT_PAID")
    swap(ev.host, 0, reversal_messages=1)
    swap(ev.journal, 0, approved=False)
    (v,) = only(check(ev), "I2")
    assert "sent 1 reversal message(s) that did not undo the capture" in v.diagnosis


def test_unknown_is_not_a_claim() -> None:
    ev = paid(blank(), "A-1", 5, outcome="UNKNOWN", recovered="PAID")
    assert check(ev).valid is True
    ev = paid(blank(), "A-1", 5, outcome="UNKNOWN")  # never settled: I5, not I2
    verdict = check(ev)
    assert not verdict.of("I2") and verdict.of("I5")


def test_i2_passes_for_a_declined_sale_told_unpaid() -> None:
    verdict = check(consistent())
    assert verdict.invariants["I2"] == "pass"


# --- I3 no-false-paid ---------------------------------------------------------------------
def test_paid_receipt_for_a_reversed_capture_is_a_late_response_accepted() -> None:
    ev = paid(blank(), "A-1", 5, outcome="UNKNOWN", recovered="NOT_PAID")
    swap(ev.host, 0, status="reversed", reversal_messages=1)
    swap(ev.journal, 0, approved=False)
    verdict = check(ev)
    (v,) = only(verdict, "I3")
    assert v.orders == ("A-1",) and v.stans == (5,)
    assert "receipt #0 (original) says PAID" in v.diagnosis
    assert "late response was accepted after the reversal was queued" in v.diagnosis


def test_paid_outcome_for_a_declined_sale_ignored_the_decline() -> None:
    ev = declined(blank(), "A-1", 5)
    swap(ev.orders, 0, outcome="PAID")
    (v,) = only(check(ev), "I3")
    assert "the ECR concluded PAID" in v.diagnosis
    assert "declined (response code 05)" in v.diagnosis
    assert "ignored the host's decline" in v.diagnosis


def test_paid_receipt_the_host_never_saw() -> None:
    ev = paid(blank(), "A-1", 5)
    ev.host.clear()
    (v,) = only(check(ev), "I3")
    assert "the host has no STAN 000005" in v.diagnosis
    assert "never came from the host" in v.diagnosis


def test_paid_outcome_with_no_stan_anywhere() -> None:
    ev = blank()
    ev.orders.append(Order("A-1", 100, EUR, 1.0, 2.0, "PAID", 0, None, None))
    (v,) = only(check(ev), "I3")
    assert v.orders == ("A-1",) and v.stans == ()
    assert "no STAN is linked to it" in v.diagnosis


def test_cancelled_sale_keeps_its_true_paid_receipt() -> None:
    ev = paid(blank(), "A-1", 5)
    swap(ev.orders, 0, cancelled=True)
    swap(ev.host, 0, status="reversed", reversal_messages=1)
    swap(ev.journal, 0, approved=False)
    ev.journal.append(JournalTxn(6, 1000, True, 0, "A-1", 6))  # the cancellation's own trace
    ev.receipts.append(Receipt(1, 6, "A-1", "other", False, True, kind="reversal"))
    verdict = check(fault_over(ev, "A-1"))
    assert verdict.valid is True, [v.diagnosis for v in verdict.violations]


def test_i3_passes_when_only_captures_are_told_paid() -> None:
    assert check(consistent()).invariants["I3"] == "pass"


# --- I4 no-double-charge ------------------------------------------------------------------
def test_order_captured_under_two_stans_was_retried_instead_of_reversed() -> None:
    ev = paid(blank(), "A-1", 5)
    ev.host.append(HostTxn(TID, 4, 1000, EUR, "captured", "00"))
    ev.journal.append(JournalTxn(4, 1000, True, 0, "A-1", 4))
    verdict = check(ev)
    (v,) = only(verdict, "I4")
    assert v.orders == ("A-1",) and v.stans == (4, 5)
    assert "order A-1 was charged 2 times (STANs 000004, 000005" in v.diagnosis
    assert "retried with a new STAN instead of being reversed" in v.diagnosis


def test_order_resubmitted_by_the_ecr_and_charged_twice() -> None:
    ev = paid(blank(), "A-1", 5, outcome="UNKNOWN", recovered="UNKNOWN")
    paid(ev, "A-1", 6)
    (v,) = only(check(ev), "I4")
    assert "re-submitted" in v.diagnosis


def test_one_stan_captured_twice_is_a_missed_duplicate() -> None:
    ev = paid(blank(), "A-1", 5)
    ev.host.append(ev.host[0])
    (v,) = only(check(ev), "I4")
    assert "repeated 0200 was not treated as a duplicate" in v.diagnosis


def test_retry_after_a_reversed_first_attempt_is_one_charge() -> None:
    ev = paid(blank(), "A-1", 6)
    ev.host.append(HostTxn(TID, 5, 1000, EUR, "reversed", "00", reversal_messages=1))
    ev.journal.append(JournalTxn(5, 1000, False, 0xA1, "A-1", 5))
    ev.receipts.append(Receipt(1, 5, "A-1", "unpaid", False, True))
    verdict = check(ev)
    assert verdict.valid is True and verdict.invariants["I4"] == "pass"


# --- I5 resolved-in-time ------------------------------------------------------------------
def test_order_still_unresolved_after_recovery() -> None:
    ev = consistent()
    ev.unresolved.append("A-3")
    (v,) = only(check(ev), "I5")
    assert v.orders == ("A-3",)
    assert "still in doubt when recovery ended (recovery bound 30 s)" in v.diagnosis


def test_reversal_that_never_reached_the_host_in_time() -> None:
    ev = paid(blank(), "A-1", 77, outcome="UNKNOWN", recovered="NOT_PAID")
    swap(ev.journal, 0, approved=False, result_code=0xA1)
    swap(ev.receipts, 0, verdict="unpaid")
    ev.recovery_s = 45
    verdict = check(fault_over(ev, "A-1"))
    (v,) = only(verdict, "I5")
    assert v.stans == (77,)
    assert (
        "the reversal for STAN 000077 never reached the host within the recovery bound of 45 s"
        in v.diagnosis
    )
    assert "store-and-forward stuck or given up" in v.diagnosis
    assert {"I1", "I2", "I5"} <= {x.invariant for x in verdict.violations}  # one root cause


def test_journal_approved_but_host_reversed_is_not_settled() -> None:
    ev = paid(blank(), "A-1", 5, outcome="UNKNOWN", recovered="PAID")
    swap(ev.host, 0, status="reversed", reversal_messages=1)
    (v,) = only(check(ev), "I5")
    assert "journal says STAN 000005 approved but the host has reversed" in v.diagnosis


def test_sale_with_no_final_ecr_outcome() -> None:
    ev = paid(blank(), "A-1", 5, outcome="UNKNOWN")
    (v,) = only(check(ev), "I5")
    assert "no outcome for order A-1 after recovery" in v.diagnosis


def test_in_doubt_sale_the_terminal_has_no_record_of() -> None:
    ev = declined(blank(), "A-1", 5)
    swap(ev.orders, 0, outcome="UNKNOWN", recovered="NOT_PAID")
    ev.journal.clear()
    (v,) = only(check(ev), "I5")
    assert "no journal record of STAN 000005 although the host knows it" in v.diagnosis


def test_reversal_arriving_after_the_recovery_bound_is_late() -> None:
    ev = paid(blank(), "A-1", 5, outcome="UNKNOWN", recovered="NOT_PAID")
    swap(ev.host, 0, status="reversed", reversal_messages=1)
    swap(ev.journal, 0, approved=False)
    swap(ev.receipts, 0, verdict="unpaid")
    ev.recovery_s = 10
    ev.wire.append(WireMsg(50.5, "to_host", "0200", 5, None))
    ev.wire.append(WireMsg(95.0, "to_host", "0400", 5, None))  # sale ended at 52: 43 s later
    (v,) = only(check(ev), "I5")
    assert "reached the host 43.0 s after the sale" in v.diagnosis
    assert "beyond the recovery bound of 10 s" in v.diagnosis
    ev.recovery_s = 60
    assert check(ev).valid is True


def test_listed_unresolved_order_unknown_to_the_ecr_is_reported() -> None:
    ev = consistent()
    ev.unresolved.append("GHOST")
    (v,) = only(check(ev), "I5")
    assert v.orders == ("GHOST",) and "the ECR has no record of it" in v.diagnosis


def test_in_doubt_sale_settled_everywhere_passes() -> None:
    ev = paid(blank(), "A-1", 5, outcome="UNKNOWN", recovered="NOT_PAID")
    swap(ev.host, 0, status="reversed", reversal_messages=1)
    swap(ev.journal, 0, approved=False)
    swap(ev.receipts, 0, verdict="unpaid")
    verdict = check(fault_over(ev, "A-1"))
    assert verdict.valid is True and verdict.invariants["I5"] == "pass"


# --- I6 one-receipt -----------------------------------------------------------------------
def test_two_originals_for_one_payment() -> None:
    ev = paid(blank(), "A-1", 5)
    ev.receipts.append(replace(ev.receipts[0], index=1))
    (v,) = only(check(ev), "I6")
    assert v.stans == (5,) and "2 original receipts for STAN 000005 (#0, #1)" in v.diagnosis
    assert "a reprint was not marked as a copy" in v.diagnosis


def test_torn_original_never_reprinted() -> None:
    ev = paid(blank(), "A-1", 5)
    swap(ev.receipts, 0, complete=False)
    fault_over(ev, "A-1", "printer", "jam-after-amount")
    (v,) = only(check(ev), "I6")
    assert "no complete receipt for a paid transaction" in v.diagnosis
    assert "receipt #0 (original) was torn" in v.diagnosis and "never reprinted" in v.diagnosis
    assert "jam-after-amount" in v.diagnosis


def test_paid_sale_without_any_receipt() -> None:
    ev = paid(blank(), "A-1", 5)
    ev.receipts.clear()
    (v,) = only(check(ev), "I6")
    assert "no receipt at all for the paid STAN 000005" in v.diagnosis


def test_torn_original_with_a_complete_copy_passes() -> None:
    ev = paid(blank(), "A-1", 5)
    swap(ev.receipts, 0, complete=False)
    ev.receipts.append(Receipt(1, 5, "A-1", "paid", True, True))
    assert check(ev).valid is True


def test_lost_original_reprinted_as_a_copy_passes() -> None:
    ev = paid(blank(), "A-1", 5)
    swap(ev.receipts, 0, copy=True)
    assert check(ev).valid is True


# --- I7 totals-match ----------------------------------------------------------------------
def test_totals_that_differ_name_the_stans_that_explain_it() -> None:
    ev = consistent()
    swap(ev.journal, 2, approved=False)  # STAN 3 is not counted by the terminal
    ev.totals = Totals(1, 1000, 2, 3550, EUR, 0)
    verdict = check(ev)
    (v,) = only(verdict, "I7")
    assert "end-of-day totals differ: terminal 1 / EUR 10.00 vs host 2 / EUR 35.50" in v.diagnosis
    assert "STAN 000003 that the terminal does not count" in v.diagnosis
    assert v.records["totals"] == {
        "terminal_count": 1,
        "terminal_amount": 1000,
        "host_count": 2,
        "host_amount": 3550,
        "currency": EUR,
        "result_code": 0,
    }


def test_terminal_counting_a_reversed_sale_suggests_end_of_day_before_the_reversal() -> None:
    ev = consistent()
    swap(ev.host, 2, status="reversed", reversal_messages=1)
    ev.totals = Totals(2, 3550, 1, 1000, EUR, 0)
    (v,) = only(check(ev), "I7")
    assert "end of day ran while reversals were queued?" in v.diagnosis


def test_end_of_day_that_failed_is_a_violation() -> None:
    ev = consistent()
    ev.totals = Totals(None, None, 2, 3550, EUR, 0x77)
    (v,) = only(check(ev), "I7")
    assert "no end-of-day totals (result code 0x77): end of day failed" in v.diagnosis


def test_totals_are_not_applicable_when_not_read() -> None:
    ev = consistent()
    ev.totals = None
    assert check(ev).invariants["I7"] == "n/a"


# --- the report ---------------------------------------------------------------------------
def inconsistent() -> Evidence:
    ev = paid(blank(), "ORD-0042", 123, 1250, outcome="UNKNOWN", recovered="NOT_PAID")
    swap(ev.journal, 0, approved=False, result_code=0xA1)
    swap(ev.receipts, 0, verdict="unpaid", text="SALE\nTRACE 000123\nNOT PAID")
    ev.wire += [WireMsg(1230.1, "to_host", "0200", 123, None)]
    ev.timeline += [
        TimelineEntry(1228.0, "long before: not in the slice"),
        TimelineEntry(1230.0, "sale ORD-0042 EUR 12.50 requested"),
        TimelineEntry(1231.9, "sale ORD-0042 ended UNKNOWN"),
    ]
    return fault_over(ev, "ORD-0042", "network", "drop-0210")


def test_render_text_of_an_inconsistent_record_set_is_actionable() -> None:
    ev = inconsistent()
    verdict = check(ev)
    text = render_text(ev, verdict)
    assert "FAIL" in text
    assert "I1 no-lost — order ORD-0042 — STAN 000123" in text
    assert "I2 no-false-unpaid" in text
    assert "diagnosis: the host captured STAN 000123 (EUR 12.50)" in text
    flat = " ".join(text.split())
    for row in (
        "host STAN 000123 EUR 12.50 captured rc=00 rrn=R123 batch=0 reversals=0",
        "journal STAN 000123 1250 not approved result=0xA1 order_ref=ORD-0042",
        "ecr order ORD-0042 EUR 12.50 UNKNOWN -> NOT_PAID trace=000123",
        "receipt #0 STAN 000123 unpaid original complete kind=sale",
        "wire STAN 000123 to_host 0200 rc=- at +2.100s",
    ):
        assert row in flat, row
    assert "| NOT PAID" in text  # the receipt as printed
    assert "sale ORD-0042 EUR 12.50 requested" in text
    assert "FAULT drop-0210 (network) applied" in text
    assert "long before" not in text


def test_timeline_slice_is_the_order_window_plus_faults() -> None:
    ev = inconsistent()
    (v,) = check(ev).of("I1")
    assert [line.split("s  ", 1)[1] for line in v.timeline] == [
        "sale ORD-0042 EUR 12.50 requested",
        "FAULT drop-0210 (network) applied",
        "FAULT drop-0210 (network) healed",
        "sale ORD-0042 ended UNKNOWN",
    ]
    host = {"tid": TID, "stan": 123, "amount": 1250, "currency": EUR, "status": "captured"}
    host |= {"response_code": "00", "rrn": "R123", "batch": 0, "reversal_messages": 0}
    assert v.records["host"] == [host]


def test_verdict_to_json_is_plain_json() -> None:
    ev = inconsistent()
    data = verdict_to_json(check(ev))
    loaded = json.loads(json.dumps(data))
    assert loaded["valid"] is False
    assert loaded["invariants"]["I1"] == "fail"
    assert loaded["violations"][0]["orders"] == ["ORD-0042"]
    assert loaded["violations"][0]["records"]["ecr"][0]["linked_via"] == "ecr"


def test_render_text_of_an_unknown_verdict_says_it_proves_nothing() -> None:
    ev = blank()
    text = render_text(ev, check(ev))
    assert "UNKNOWN" in text and "no orders" in text and "PASS" not in text


# --- properties ---------------------------------------------------------------------------
SALE = st.tuples(
    st.booleans(),  # captured (else declined)
    st.integers(1, 99_999),  # amount
    st.sampled_from(["ecr", "journal", "receipt"]),  # where the order's STAN comes from
    st.booleans(),  # crossed a fault (in doubt, settled by recovery)
    st.booleans(),  # a reprint marked as a copy
)


def history(sales: list[tuple[bool, int, str, bool, bool]]) -> Evidence:
    """A consistent history: what every correct terminal leaves behind."""
    ev = blank()
    for i, (captured, amount, link, in_doubt, reprint) in enumerate(sales):
        oid, stan = f"O{i}", i + 1
        (paid if captured else declined)(ev, oid, stan, amount)
        if link != "ecr":
            swap(ev.orders, -1, trace=None)
        if link == "receipt":
            swap(ev.journal, -1, order_ref=None)
        if in_doubt:
            swap(ev.orders, -1, outcome="UNKNOWN", recovered=ev.orders[-1].outcome)
            fault_over(ev, oid)
        if reprint:
            ev.receipts.append(replace(ev.receipts[-1], index=len(ev.receipts), copy=True))
    return with_totals(ev)


@settings(max_examples=150, deadline=None)
@given(st.lists(SALE, min_size=1, max_size=25))
def test_consistent_histories_are_always_valid(
    sales: list[tuple[bool, int, str, bool, bool]],
) -> None:
    verdict = check(history(sales))
    assert verdict.valid is True, [v.diagnosis for v in verdict.violations] + verdict.unknown


ON_CAPTURED = {
    "host declined": "I3",
    "journal not approved": "I1",
    "journal record lost": "I1",
    "receipt says unpaid": "I2",
    "receipt lost": "I6",
    "reprint not marked as copy": "I6",
    "ECR says not paid": "I2",
    "charged again under a new STAN": "I4",
    "left unresolved": "I5",
    "terminal totals off by one": "I7",
}
ON_DECLINED = {
    "host captured": "I1",
    "receipt says paid": "I3",
    "ECR says paid": "I3",
    "terminal totals off by one": "I7",
}


def flip(ev: Evidence, i: int, what: str) -> None:
    """Break one record of sale i (its order, host row, journal record, receipt, or totals)."""
    oid, stan = ev.orders[i].order_id, i + 1
    j = next(k for k, x in enumerate(ev.journal) if x.trace == stan)
    r = next(k for k, x in enumerate(ev.receipts) if x.trace == stan and not x.copy)
    if what == "host declined":
        swap(ev.host, i, status="declined", response_code="05")
    elif what == "host captured":
        swap(ev.host, i, status="captured", response_code="00")
    elif what == "journal not approved":
        swap(ev.journal, j, approved=False)
    elif what == "journal record lost":
        del ev.journal[j]
    elif what in ("receipt says unpaid", "receipt says paid"):
        swap(ev.receipts, r, verdict=what.rsplit(" ", 1)[1])
    elif what == "receipt lost":
        ev.receipts = [x for x in ev.receipts if x.trace != stan]
    elif what == "reprint not marked as copy":
        ev.receipts.append(replace(ev.receipts[r], index=len(ev.receipts)))
    elif what in ("ECR says not paid", "ECR says paid"):
        swap(ev.orders, i, outcome="NOT_PAID" if "not" in what else "PAID", recovered=None)
    elif what == "charged again under a new STAN":
        ev.host.append(HostTxn(TID, 900_000 + i, 1, EUR, "captured", "00"))
        ev.journal.append(JournalTxn(900_000 + i, 1, True, 0, oid, None))
    elif what == "left unresolved":
        ev.unresolved.append(oid)
    elif what == "terminal totals off by one" and ev.totals is not None:
        count = ev.totals.terminal_count
        ev.totals = replace(ev.totals, terminal_count=None if count is None else count + 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(SALE, min_size=1, max_size=20), st.data())
def test_flipping_one_record_is_always_caught(
    sales: list[tuple[bool, int, str, bool, bool]], data: st.DataObject
) -> None:
    ev = history(sales)
    i = data.draw(st.integers(0, len(sales) - 1), label="sale")
    table = ON_CAPTURED if sales[i][0] else ON_DECLINED
    what = data.draw(st.sampled_from(sorted(table)), label="flip")
    flip(ev, i, what)
    verdict = check(ev)
    assert verdict.valid is False
    assert table[what] in {v.invariant for v in verdict.violations}, verdict.violations


# --- speed --------------------------------------------------------------------------------
def test_ten_thousand_transactions_check_quickly() -> None:
    sales = [(i % 10 != 0, 100 + i, "ecr", i % 100 == 0, i % 50 == 0) for i in range(10_000)]
    ev = history(sales)
    started = time.perf_counter()
    verdict = check(ev)
    elapsed = time.perf_counter() - started
    assert verdict.valid is True
    assert elapsed < 2.0, f"{elapsed:.2f} s for 10k transactions (1M must fit in 10 s)"
