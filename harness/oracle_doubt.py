"""I5 resolved-in-time: every sale that was in doubt ends final and consistent on all records.

An order is in doubt when any attempt ended UNKNOWN (or recovered to UNKNOWN), when its
[started, ended] overlapped a fault, or when the harness listed it as unresolved. After recovery
it must be settled everywhere: not listed as unresolved, a definite ECR conclusion, a journal
record for every STAN the host or the printer knows, host captured <=> journal approved, and no
reversal reaching the host later than the recovery bound after the sale and its faults ended.
The one thing to know: one root cause may also show as I1 or I2; that is intended.
"""

from __future__ import annotations

import math

from harness.oracle_link import Links
from harness.oracle_verdict import Checked, Finding
from harness.oracle_words import during, host_state, stan


def resolved_in_time(lk: Links) -> Checked:
    """Check every in-doubt order; orders listed unresolved but unknown to the ECR count too."""
    unresolved = set(lk.evidence.unresolved)
    findings = []
    checked = 0
    more = lk.attempts.more
    for oid, o in lk.attempts.first.items():
        if oid in more:
            unknown = any("UNKNOWN" in (a.outcome, a.recovered) for a in more[oid])
        else:
            unknown = o.outcome == "UNKNOWN" or o.recovered == "UNKNOWN"
        if not (unknown or oid in unresolved or oid in lk.crossed):
            continue
        checked += 1
        reasons, stans = _doubts(lk, oid, oid in unresolved)
        if reasons:
            text = "; ".join(reasons) + during(lk, (oid,), stans)
            findings.append(Finding("I5", (oid,), stans, text))
    for oid in sorted(unresolved - lk.attempts.first.keys()):
        checked += 1
        text = (
            f"order {oid} was still in doubt when recovery ended (recovery bound"
            f" {lk.evidence.recovery_s:g} s) and the ECR has no record of it"
        )
        findings.append(Finding("I5", (oid,), (), text))
    return Checked(findings, checked)


def _doubts(lk: Links, oid: str, listed: bool) -> tuple[list[str], tuple[int, ...]]:
    """What is still unsettled about one in-doubt order, in words, and the STANs concerned."""
    bound = lk.evidence.recovery_s
    reasons: list[str] = []
    concerned: list[int] = []
    if listed:
        reasons.append(
            f"order {oid} was still in doubt when recovery ended (recovery bound {bound:g} s)"
        )
    if lk.final(oid) == "UNKNOWN":
        reasons.append(
            f"the ECR still has no outcome for order {oid} after recovery: the status enquiry /"
            " repeat receipt did not settle it"
        )
    cancelled = lk.cancelled(oid)
    for s in lk.traces.get(oid):
        on_host = s in lk.host
        if cancelled and not on_host:
            continue  # the cancellation's own trace: the host books it on the original
        reason = _disagreement(lk, s, on_host, bound)
        if reason is None and not cancelled:
            reason = _late_reversal(lk, oid, s, bound)
        if reason is not None:
            reasons.append(reason)
            concerned.append(s)
    return reasons, tuple(concerned) or tuple(lk.traces.get(oid))


def _disagreement(lk: Links, s: int, on_host: bool, bound: float) -> str | None:
    captured, approved = lk.captured(s), lk.approved(s)
    if s not in lk.journal and (on_host or s in lk.receipts):
        knows = "host" if on_host else "printer"
        tail = " and the host has it captured" if captured else ""
        return (
            f"the terminal has no journal record of STAN {stan(s)} although the {knows} knows"
            f" it{tail}: the record was not persisted before acting (lost in a power cut?)"
        )
    if captured and not approved:
        reversals = lk.reversal_messages(s)
        if reversals:
            return (
                f"the host received {reversals} reversal message(s) for STAN {stan(s)} but still"
                " has it captured while the terminal has it failed: the reversal was not matched"
                " to the original"
            )
        return (
            f"the reversal for STAN {stan(s)} never reached the host within the recovery bound"
            f" of {bound:g} s (store-and-forward stuck or given up): the host has it captured,"
            " the terminal has it failed"
        )
    if approved and not captured:
        return (
            f"the terminal's journal says STAN {stan(s)} approved but the host has"
            f" {host_state(lk.host.get(s))}: the terminal never learned the final outcome (a lost"
            " 0410 or decline not recorded) — its end-of-day totals will not match"
        )
    return None


def _late_reversal(lk: Links, oid: str, s: int, bound: float) -> str | None:
    """A reversal that reached the host later than the bound after the sale and its faults."""
    if not lk.evidence.wire:
        return None
    sent = lk.reversals_sent(s)
    if not sent:
        return None
    start, end = lk.span(oid)
    settled = start if end == math.inf else end
    healed = lk.faults.latest_end(start, end) if lk.faults else None
    if healed is not None:
        settled = max(settled, healed)
    first = min(sent)  # the first attempt counts: repeats after it are harmless
    if first <= settled + bound:
        return None
    return (
        f"the reversal for STAN {stan(s)} reached the host {first - settled:.1f} s after the sale"
        f" and its faults ended, beyond the recovery bound of {bound:g} s (store-and-forward"
        " too slow)"
    )
