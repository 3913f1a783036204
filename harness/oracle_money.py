"""I1-I4: every claim about the money, held against the host ledger (the money truth).

The one thing to know: the host decides what happened; the terminal journal, the receipts and
the ECR's conclusion are claims checked against it. UNKNOWN is not a claim (a timeout proves
nothing); "NOT PAID" on a receipt or from the ECR is one, and so is "PAID".
"""

from __future__ import annotations

from harness.oracle_link import Links
from harness.oracle_verdict import Checked, Finding
from harness.oracle_words import during, host_state, money, receipt_text, stan, stans_text

Subject = str | int  # an order_id, or the STAN of a transaction no order links to


def _orders(subject: Subject) -> tuple[str, ...]:
    return (subject,) if isinstance(subject, str) else ()


# --- I1 no-lost ---------------------------------------------------------------------------
def no_lost(lk: Links) -> Checked:
    """Every host capture is approved in the terminal journal (else: a dropped order, 掉单)."""
    findings = []
    jfirst, jmore = lk.journal.first, lk.journal.more
    for s in lk.captured_stans:
        if s in jmore:
            if lk.approved(s):
                continue
        else:
            j = jfirst.get(s)
            if j is not None and j.approved:
                continue
        oid = lk.owner.get(s)
        orders = (oid,) if oid is not None else ()
        findings.append(Finding("I1", orders, (s,), _why_lost(lk, s, oid)))
    return Checked(findings, len(lk.captured_stans))


def _why_lost(lk: Links, s: int, oid: str | None) -> str:
    rows = lk.host.get(s)
    journal = lk.journal.get(s)
    reversals = sum(h.reversal_messages for h in rows)
    what = f"STAN {stan(s)} ({money(rows[0].amount, rows[0].currency)})"
    orders = (oid,) if oid is not None else ()
    faults = lk.faults_near(orders, (s,))
    power = [f for f in faults if f.family == "power"]
    power_text = ", ".join(f"'{f.label}'" for f in power)
    if oid is not None and lk.cancelled(oid):
        cause = (
            f"the host received {reversals} reversal message(s) but did not apply them"
            if reversals
            else "the cancellation (0400) never reached the host"
        )
        return (
            f"the ECR cancelled order {oid} and the terminal no longer counts it, but the host "
            f"still has {what} captured: {cause} — the customer is charged for a cancelled sale"
        )
    record = (
        "no journal record"
        if not journal
        else f"journal: not approved, result code 0x{journal[-1].result_code:02X}"
    )
    if reversals:
        return (
            f"the host captured {what} and received {reversals} reversal message(s) for it without"
            f" undoing the capture, and the terminal has no approved record ({record}): the"
            " reversal did not match the original (check field 90, the TID and the amount of the"
            " 0400 and the host's reversal log) — the customer was charged"
        )
    if oid is None and not journal:
        cause = (
            f"the request left before the terminal recorded it (power-cut window: {power_text})"
            if power
            else "the terminal sent a sale it never recorded (journal written after the 0200?)"
        )
        return (
            f"the host captured {what} but no order and no terminal record knows it and no"
            f" reversal was sent: an unaccounted debit — {cause} — a dropped order (掉单)"
        )
    if power:
        cause = (
            f"the request left before the terminal recorded it (power-cut window: {power_text})"
            if not journal
            else f"the approval was lost in the power cut ({power_text}) and not reversed on boot"
        )
    elif faults:
        cause = (
            f"the answer was lost ({', '.join(repr(f.label) for f in faults)}) and the terminal"
            " gave up without an auto-reversal"
        )
    else:
        cause = "no fault was active: the journal lost or never wrote the approval"
    return (
        f"the host captured {what} but the terminal has no approved record ({record}) and never"
        f" sent a reversal: {cause} — a dropped order (掉单)"
    )


# --- I2 no-false-unpaid -------------------------------------------------------------------
def no_false_unpaid(lk: Links) -> Checked:
    """No receipt and no final ECR outcome says unpaid for a capture; a sale the ECR cancelled
    (and the terminal confirmed) is a claim of "not charged" too."""
    claims: dict[Subject, list[str]] = {}
    stans: dict[Subject, set[int]] = {}
    captured = lk.captured_set
    for s, r in lk.receipts.items():
        if r.verdict == "unpaid" and s in captured:
            subject: Subject = lk.owner.get(s, s)
            claims.setdefault(subject, []).append(f"{receipt_text(r)} says NOT PAID")
            stans.setdefault(subject, set()).add(s)
    tfirst, tmore = lk.traces.first, lk.traces.more
    for oid in _finals(lk, "NOT_PAID"):
        if oid not in tmore and tfirst.get(oid) not in captured:
            continue  # the common case: its one STAN (if any) is not captured
        caught = [s for s in lk.traces.get(oid) if s in captured]
        if caught:
            claims.setdefault(oid, []).append("the ECR concluded NOT_PAID")
            stans.setdefault(oid, set()).update(caught)
    for oid in sorted(lk.cancelled_ids):
        caught = [s for s in lk.traces.get(oid) if s in captured]
        if caught:
            claims.setdefault(oid, []).append("the ECR cancelled the sale (06 30, confirmed)")
            stans.setdefault(oid, set()).update(caught)
    findings = []
    for subject, said in claims.items():
        ss = tuple(sorted(stans[subject]))
        findings.append(Finding("I2", _orders(subject), ss, _why_unpaid(lk, subject, ss, said)))
    return Checked(findings, len(captured))


def _why_unpaid(lk: Links, subject: Subject, ss: tuple[int, ...], said: list[str]) -> str:
    claim = " and ".join(said)
    reversals = sum(lk.reversal_messages(s) for s in ss)
    context = during(lk, _orders(subject), ss)
    head = f"the host captured {stans_text(ss)}{_of(subject)} but {claim}{context}"
    if isinstance(subject, str) and lk.cancelled(subject):
        cause = (
            f"the host received {reversals} reversal message(s) without applying them"
            if reversals
            else "the cancellation's 0400 never reached the host"
        )
        return f"{head}: {cause} — the customer is charged for a cancelled sale"
    if reversals:
        return (
            f"{head}; the terminal sent {reversals} reversal message(s) that did not undo the"
            " capture (a correct host reverses on the first 0400: check the 0400's field 90 and"
            " amount, and the host's reversal log) — the customer was charged"
        )
    approved = [s for s in ss if lk.approved(s)]
    if approved:
        return (
            f"{head}; the terminal's own journal says {stans_text(approved)} approved: NOT PAID"
            " was told before the approval was recorded (a late 0210 accepted after the"
            " timeout?) and nothing was reversed — the customer was charged"
        )
    return (
        f"{head}: the terminal said NOT PAID but never reversed — no auto-reversal on timeout"
        " — the customer was charged"
    )


def _of(subject: Subject) -> str:
    return f" for order {subject}" if isinstance(subject, str) else ""


def _finals(lk: Links, wanted: str) -> list[str]:
    """Orders whose final ECR conclusion is `wanted` (fast path for single attempts)."""
    more = lk.attempts.more
    out: list[str] = []
    for oid, o in lk.attempts.first.items():
        if oid in more:
            final = lk.final(oid)
        elif o.recovered is None:
            final = o.outcome
        else:
            final = o.recovered
        if final == wanted:
            out.append(oid)
    return out


# --- I3 no-false-paid ---------------------------------------------------------------------
def no_false_paid(lk: Links) -> Checked:
    """No receipt and no final ECR outcome says paid unless the host captured (or it was
    cancelled afterwards: its paid receipt was true when printed)."""
    claims: dict[Subject, list[str]] = {}
    stans: dict[Subject, set[int]] = {}
    captured = lk.captured_set
    tfirst, tmore = lk.traces.first, lk.traces.more
    checked = 0
    for s, r in lk.receipts.items():
        if s in captured:
            continue
        checked += 1
        if r.verdict != "paid":
            continue
        subject: Subject = lk.owner.get(s, s)
        if lk.cancelled(lk.owner.get(s)):
            continue
        claims.setdefault(subject, []).append(f"{receipt_text(r)} says PAID")
        stans.setdefault(subject, set()).add(s)
    for oid in _finals(lk, "PAID"):
        if oid not in tmore and tfirst.get(oid) in captured:
            continue  # the common case: its one STAN is captured
        traces = lk.traces.get(oid)
        if any(s in captured for s in traces):
            continue
        checked += 1
        if lk.cancelled(oid) or oid in lk.ambiguous:
            continue
        claims.setdefault(oid, []).append("the ECR concluded PAID")
        stans.setdefault(oid, set()).update(traces)
    findings = []
    for subject, said in claims.items():
        ss = tuple(sorted(stans[subject]))
        findings.append(Finding("I3", _orders(subject), ss, _why_paid(lk, subject, ss, said)))
    return Checked(findings, checked)


def _why_paid(lk: Links, subject: Subject, ss: tuple[int, ...], said: list[str]) -> str:
    claim = " and ".join(said)
    context = during(lk, _orders(subject), ss)
    if not ss:
        return (
            f"{claim} for order {subject}, but no STAN is linked to it (not from the ECR, the"
            f" journal nor a receipt) and the host has no matching transaction{context}: the"
            " approval never came from the host — the goods left unpaid"
        )
    rows = {s: lk.host.get(s) for s in ss}
    state = "; ".join(
        f"the host has STAN {stan(s)} {host_state(r)}" if r else f"the host has no STAN {stan(s)}"
        for s, r in rows.items()
    )
    head = f"{claim}{_of(subject)} but {state}{context}"
    if any(h.status == "reversed" and h.reversal_messages > 0 for r in rows.values() for h in r):
        return (
            f"{head}: a late response was accepted after the reversal was queued — the receipt"
            " says paid, the host reversed — the goods left unpaid"
        )
    if any(h.status == "declined" for r in rows.values() for h in r):
        return f"{head}: the terminal ignored the host's decline — the goods left unpaid"
    if all(not r for r in rows.values()):
        return (
            f"{head}: the approval never came from the host (paid printed or told before the host"
            " answered, or the request never left) — the goods left unpaid"
        )
    return (
        f"{head}: the host reversed it without receiving any reversal message (check the host"
        " ledger: an operator or a settlement job?) — the goods left unpaid"
    )


# --- I4 no-double-charge ------------------------------------------------------------------
def no_double_charge(lk: Links) -> Checked:
    """One order_id is captured at most once, whatever retries happened."""
    findings = []
    host_more, traces_more = lk.host.more, lk.traces.more
    for oid, first in lk.traces.first.items():
        if oid not in traces_more and first not in host_more:
            continue  # one STAN, one host row: at most one capture
        traces = lk.traces.get(oid)
        charges = sum(lk.captured_rows(s) for s in traces)
        if charges > 1:
            caught = tuple(sorted(s for s in traces if lk.captured(s)))
            findings.append(Finding("I4", (oid,), caught, _why_double(lk, oid, caught, charges)))
    return Checked(findings, len(lk.attempts))


def _why_double(lk: Links, oid: str, caught: tuple[int, ...], charges: int) -> str:
    amounts = {h.amount: h.currency for s in caught for h in lk.host.get(s)}
    amount = ", ".join(money(a, c) for a, c in amounts.items())
    head = (
        f"order {oid} was charged {charges} times ({stans_text(caught)}, {amount})"
        f"{during(lk, (oid,), caught)}"
    )
    if any(lk.captured_rows(s) > 1 for s in caught):
        return (
            f"{head}: the host captured one STAN more than once — a repeated 0200 was not treated"
            " as a duplicate (same TID + STAN must get the original answer)"
        )
    attempts = lk.attempts.get(oid)
    if len(attempts) > 1:
        return (
            f"{head}: the ECR re-submitted the order after an unclear outcome and the terminal"
            " charged it again — the first sale was neither reversed nor reported as paid"
        )
    return f"{head}: a timed-out sale was retried with a new STAN instead of being reversed"
