"""I6 one-receipt and I7 totals-match: what the customer holds and what the merchant settles.

I6: a capture (not cancelled afterwards) has at most one original customer receipt — a torn or
power-cut original still counts as the original, so a reprint must be marked as a copy — and at
least one complete receipt that says paid (original or copy). I7: the terminal's end-of-day
totals equal the host's, count and amount. The one thing to know: zero originals with a
complete paid copy is a pass (the original never reached the paper and was reprinted as a copy,
which is the correct recovery).
"""

from __future__ import annotations

from dataclasses import asdict

from harness.oracle_link import Links
from harness.oracle_verdict import Checked, Finding
from harness.oracle_words import during, money, receipt_text, stan, stans_text
from harness.records import Receipt

MAX_EXPLAINED = 50  # STANs named in one totals diagnosis


# --- I6 one-receipt -----------------------------------------------------------------------
def one_receipt(lk: Links) -> Checked:
    findings = []
    checked = 0
    rfirst, rmore = lk.receipts.first, lk.receipts.more
    cancelled, owner = lk.cancelled_ids, lk.owner
    for s in lk.captured_stans:
        if cancelled and owner.get(s) in cancelled:
            continue
        checked += 1
        if s not in rmore:
            r = rfirst.get(s)
            if r is not None and r.kind == "sale" and r.verdict == "paid" and r.complete:
                continue  # the common case: one complete paid receipt
            receipts = [] if r is None else [r]
        else:
            receipts = rmore[s]
        originals = [r for r in receipts if r.kind == "sale" and not r.copy]
        paid = [r for r in receipts if r.kind == "sale" and r.verdict == "paid" and r.complete]
        if len(originals) <= 1 and paid:
            continue
        oid = owner.get(s)
        orders = (oid,) if oid is not None else ()
        why = _why_receipts(lk, s, orders, receipts, originals, bool(paid))
        findings.append(Finding("I6", orders, (s,), why))
    return Checked(findings, checked)


def _why_receipts(
    lk: Links,
    s: int,
    orders: tuple[str, ...],
    receipts: list[Receipt],
    originals: list[Receipt],
    paid: bool,
) -> str:
    context = during(lk, orders, (s,))
    reasons = []
    if len(originals) > 1:
        listed = ", ".join(f"#{r.index}" for r in originals)
        reasons.append(
            f"{len(originals)} original receipts for STAN {stan(s)} ({listed}): a reprint was not"
            " marked as a copy — the customer holds two originals for one payment"
        )
    if not paid:
        torn = [r for r in receipts if r.kind == "sale" and not r.complete]
        unclear = [r for r in receipts if r.kind == "sale" and r.complete and r.verdict != "paid"]
        if not receipts:
            reasons.append(
                f"no receipt at all for the paid STAN {stan(s)}: the receipt was lost and never"
                " reprinted"
            )
        elif torn:
            reasons.append(
                f"no complete receipt for a paid transaction (STAN {stan(s)}): "
                + ", ".join(
                    f"receipt #{r.index} ({'copy' if r.copy else 'original'})" for r in torn
                )
                + " was torn (jam, paper end or power loss) and never reprinted"
            )
        else:
            shown = ", ".join(f"{receipt_text(r)} says {r.verdict}" for r in unclear) or (
                ", ".join(receipt_text(r) for r in receipts)
            )
            reasons.append(
                f"no complete receipt says paid for STAN {stan(s)} ({shown}): the customer has no"
                " proof of payment"
            )
    return "; ".join(reasons) + context


# --- I7 totals-match ----------------------------------------------------------------------
def totals_match(lk: Links) -> Checked:
    totals = lk.evidence.totals
    if totals is None:
        return Checked([], 0)
    extra: dict[str, object] = {"totals": asdict(totals)}
    host_side = f"host {totals.host_count} / {money(totals.host_amount, totals.currency)}"
    if totals.terminal_count is None or totals.terminal_amount is None:
        code = "" if totals.result_code is None else f" (result code 0x{totals.result_code:02X})"
        why = (
            f"the terminal gave no end-of-day totals{code}: end of day failed, {host_side} —"
            " end of day must succeed after recovery (queued reversals sent first)"
        )
        return Checked([Finding("I7", (), (), why, extra)], 1)
    if totals.terminal_count == totals.host_count and totals.terminal_amount == totals.host_amount:
        return Checked([], 1)
    under = [s for s in lk.captured_stans if not lk.approved(s)]
    over = [s for s, j in lk.journal.items() if j.approved and not lk.captured(s)]
    terminal_side = (
        f"terminal {totals.terminal_count} / {money(totals.terminal_amount, totals.currency)}"
    )
    why = f"end-of-day totals differ: {terminal_side} vs {host_side}"
    if under:
        why += (
            f"; the host captured {stans_text(under[:MAX_EXPLAINED])} that the terminal does not"
            " count (dropped orders)"
        )
    if over:
        why += (
            f"; the terminal counts {stans_text(over[:MAX_EXPLAINED])} that the host did not"
            " capture (end of day ran while reversals were queued?)"
        )
    if not under and not over:
        why += (
            " although journal and host agree per STAN: the terminal's totals do not add up its"
            " own journal, or end of day ran while reversals were queued"
        )
    stans = tuple(sorted(set(under[:MAX_EXPLAINED] + over[:MAX_EXPLAINED])))
    orders = tuple(dict.fromkeys(lk.owner[s] for s in stans if s in lk.owner))
    return Checked([Finding("I7", orders, stans, why + during(lk, orders, stans), extra)], 1)
