"""The oracle: reconcile host ledger x terminal journal x receipts x ECR outcomes (I1-I7).

A pure function of the plain records in `harness.records` — no I/O, no drivers, no clock:
`check(evidence)` links every STAN to its order (`oracle_link`), runs one small rule per
invariant (`oracle_money` I1-I4, `oracle_doubt` I5, `oracle_books` I6-I7), and attaches to each
violation the records side by side and the timeline around it (`oracle_slice`).
The one thing to know: evidence that proves nothing is "unknown", never a pass — no orders,
unreadable records, or a fault scenario in which no sale crossed the fault window. Checks still
run then, and any violation makes the verdict False. Linear in the number of transactions.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable

from harness.oracle_books import one_receipt, totals_match
from harness.oracle_doubt import resolved_in_time
from harness.oracle_link import Links, link
from harness.oracle_money import no_double_charge, no_false_paid, no_false_unpaid, no_lost
from harness.oracle_report import render_text
from harness.oracle_slice import Slicer
from harness.oracle_verdict import (
    INVARIANTS,
    Checked,
    InvariantStatus,
    Valid,
    Verdict,
    Violation,
    verdict_to_json,
)
from harness.records import Evidence

__all__ = [
    "INVARIANTS",
    "RULES",
    "Verdict",
    "Violation",
    "check",
    "render_text",
    "verdict_to_json",
]

RULES: dict[str, Callable[[Links], Checked]] = {
    "I1": no_lost,
    "I2": no_false_unpaid,
    "I3": no_false_paid,
    "I4": no_double_charge,
    "I5": resolved_in_time,
    "I6": one_receipt,
    "I7": totals_match,
}


def check(evidence: Evidence) -> Verdict:
    """Reconcile one scenario's records; see the module docstring for the verdict's meaning.

    The cyclic garbage collector is paused meanwhile: the indexes built here hold no cycles,
    and at a million transactions its rescans of them were most of the time (bench/).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _check(evidence)
    finally:
        if paused:
            gc.enable()


def _check(evidence: Evidence) -> Verdict:
    lk = link(evidence)
    results = {inv: rule(lk) for inv, rule in RULES.items()}
    unknown = _why_unknown(evidence, lk) + lk.notes
    slicer = Slicer(lk)
    lk.prime_wire({s for r in results.values() for f in r.findings for s in f.stans})
    violations = [
        Violation(
            invariant=f.invariant,
            name=INVARIANTS[f.invariant],
            orders=f.orders,
            stans=f.stans,
            records=slicer.records(f),
            timeline=slicer.timeline(f),
            diagnosis=f.diagnosis,
        )
        for inv in RULES
        for f in results[inv].findings
    ]
    statuses: dict[str, InvariantStatus] = {}
    for inv, result in results.items():
        if result.findings:
            statuses[inv] = "fail"
        elif result.checked == 0:
            statuses[inv] = "n/a"
        else:
            statuses[inv] = "unknown" if unknown else "pass"
    valid: Valid = False if violations else ("unknown" if unknown else True)
    return Verdict(
        valid=valid,
        violations=violations,
        unknown=unknown,
        counts=_counts(evidence, lk, results),
        invariants=statuses,
    )


def _operation_crossed(evidence: Evidence) -> bool:
    """An ECR operation (end of day, cancel) overlapped a fault: the fault met a transaction."""
    for op in evidence.operations:
        end = math.inf if op.ended is None else op.ended
        for fault in evidence.faults:
            healed = fault.applied if fault.healed is None else fault.healed
            if fault.applied <= end and healed >= op.started:
                return True
    return False


def _why_unknown(evidence: Evidence, lk: Links) -> list[str]:
    """Reasons the evidence proves nothing (Jepsen's :unknown; openraft#1910's vacuous pass)."""
    reasons = []
    if evidence.read_errors:
        reasons.append("records could not be read: " + "; ".join(evidence.read_errors))
    if not evidence.orders:
        reasons.append("no orders: no sale was attempted, so nothing is proven")
    elif evidence.expects_faults:
        if not evidence.faults:
            reasons.append("no transaction crossed the fault window: no fault was applied")
        elif not lk.crossed and not _operation_crossed(evidence):
            reasons.append(
                f"no transaction crossed the fault window ({len(evidence.faults)} fault(s), none"
                " overlapping a sale)"
            )
    if lk.other_tid and not lk.host:
        reasons.append(
            f"the host ledger holds {lk.other_tid} transaction(s), none for TID {evidence.tid}:"
            " wrong TID or wrong ledger export"
        )
    return reasons


def _counts(evidence: Evidence, lk: Links, results: dict[str, Checked]) -> dict[str, int]:
    via = list(lk.linked_via.values())
    counts = {
        "orders": len(lk.attempts),
        "order_attempts": len(evidence.orders),
        "host": len(evidence.host) - lk.other_tid,
        "host_other_tid": lk.other_tid,
        "captured": len(lk.captured_stans),
        "journal": len(evidence.journal),
        "receipts": len(evidence.receipts),
        "receipts_unlinked": len(lk.unlinked_receipts),
        "wire": len(evidence.wire),
        "faults": len(evidence.faults),
        "orphans": len(lk.orphans),
        "linked_via_journal": via.count("journal"),
        "linked_via_receipt": via.count("receipt"),
        "linked_via_amount": via.count("amount"),
        "unlinked_orders": len(lk.attempts) - len(lk.traces),
        "link_conflicts": lk.conflicts,
        "in_doubt": results["I5"].checked,
        "violations": sum(len(r.findings) for r in results.values()),
    }
    for inv, result in results.items():
        counts[f"{inv}_checked"] = result.checked
        counts[f"{inv}_violations"] = len(result.findings)
    return counts
