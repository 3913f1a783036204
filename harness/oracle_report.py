"""The verdict as text a QA engineer can act on: what broke, for which order, and why.

Per violation: the invariant, the order ids and STANs, the diagnosis, the host / journal / ECR /
receipt / wire records side by side in one aligned table (read from `Violation.records`, so a
verdict loaded back from JSON renders the same), the receipts' printed text, and the timeline.
The one thing to know: an "unknown" verdict is printed as a failure to prove anything, never as
a pass.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

from harness.oracle_slice import at, origin
from harness.oracle_verdict import INVARIANTS, Verdict, Violation
from harness.oracle_words import money
from harness.records import Evidence

MAX_RENDERED = 200  # violations printed in full; the rest are counted
MAX_RECEIPT_LINES = 16
WIDTH = 100

Row = tuple[str, str, str, str, str]


def render_text(evidence: Evidence, verdict: Verdict) -> str:
    """The whole report: summary, unknown reasons, then every violation in full."""
    if verdict.valid is True:
        head = "PASS"
    elif verdict.valid is False:
        head = f"FAIL — {len(verdict.violations)} violation(s)"
    else:
        head = "UNKNOWN — the evidence proves nothing: treat as a failure"
    out = [f"oracle verdict for TID {evidence.tid}: {head}", ""]
    out.append("invariants:")
    for inv, name in INVARIANTS.items():
        status = verdict.invariants.get(inv, "n/a")
        out.append(f"  {inv} {name:<18} {status}")
    if verdict.unknown:
        out += ["", "unknown because:"]
        out += [_wrap(reason, "  - ", "    ") for reason in verdict.unknown]
    shown = ", ".join(f"{k} {v}" for k, v in verdict.counts.items() if not k.startswith("I"))
    out += ["", _wrap(shown, "counts: ", "        ")]
    receipts = {r.index: r.text for r in evidence.receipts} if verdict.violations else {}
    t0 = origin(evidence)
    for number, violation in enumerate(verdict.violations[:MAX_RENDERED], 1):
        out += ["", *render_violation(number, violation, receipts, t0)]
    if len(verdict.violations) > MAX_RENDERED:
        rest = len(verdict.violations) - MAX_RENDERED
        out += ["", f"... {rest} more violation(s) not shown (see the JSON verdict)"]
    return "\n".join(out) + "\n"


def render_violation(
    number: int, v: Violation, receipt_texts: Mapping[int, str], t0: float = 0.0
) -> list[str]:
    """One violation: header, diagnosis, records table, receipts as printed, timeline."""
    orders = ", ".join(v.orders) or "(no order)"
    stans = ", ".join(f"{s:06d}" for s in v.stans) or "-"
    out = [
        f"[{number}] {v.invariant} {v.name} — order {orders} — STAN {stans}",
        _wrap(v.diagnosis, "  diagnosis: ", "             "),
        "  records:",
    ]
    out += ["    " + line for line in table(_rows(v, t0))]
    indexes = [r.get("index") for r in _dicts(v.records.get("receipts"))]
    for index in indexes:
        text = receipt_texts.get(index, "") if isinstance(index, int) else ""
        if text:
            lines = text.splitlines()
            out.append(f"  receipt #{index} text:")
            out += [f"    | {line}" for line in lines[:MAX_RECEIPT_LINES]]
            if len(lines) > MAX_RECEIPT_LINES:
                out.append(f"    | ... ({len(lines) - MAX_RECEIPT_LINES} more lines)")
    out.append("  timeline:")
    out += [f"    {line}" for line in v.timeline] or ["    (no timeline entries in range)"]
    return out


def table(rows: Sequence[Row]) -> list[str]:
    header: Row = ("source", "key", "amount", "state", "detail")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
    return [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in (header, *rows)
    ]


def _rows(v: Violation, t0: float) -> list[Row]:
    rec = v.records
    rows: list[Row] = []
    host, journal = _dicts(rec.get("host")), _dicts(rec.get("journal"))
    for s in v.stans:
        mine = [h for h in host if h.get("stan") == s]
        for h in mine:
            rows.append(
                (
                    "host",
                    f"STAN {s:06d}",
                    _money(h),
                    f"{h.get('status')} rc={h.get('response_code')}",
                    f"rrn={h.get('rrn') or '-'} batch={h.get('batch')}"
                    f" reversals={h.get('reversal_messages')}",
                )
            )
        if not mine:
            rows.append(("host", f"STAN {s:06d}", "", "(no transaction)", ""))
        entries = [j for j in journal if j.get("trace") == s]
        for j in entries:
            rc = j.get("result_code")
            rows.append(
                (
                    "journal",
                    f"STAN {s:06d}",
                    _money(j),
                    "approved" if j.get("approved") else "not approved",
                    f"result={_hex(rc)} order_ref={j.get('order_ref') or '-'}"
                    f" receipt_no={j.get('receipt_no') or '-'}",
                )
            )
        if not entries:
            rows.append(("journal", f"STAN {s:06d}", "", "(no record)", ""))
    for o in _dicts(rec.get("ecr")):
        outcome = str(o.get("outcome"))
        if o.get("recovered") is not None:
            outcome += f" -> {o.get('recovered')}"
        stans = o.get("stans")
        listed = ",".join(f"{s:06d}" for s in stans) if isinstance(stans, list) else "-"
        detail = (
            f"trace={_stan(o.get('trace'))} stans={listed or '-'}"
            f" via={o.get('linked_via') or '-'} result={_hex(o.get('result_code'))}"
        )
        if o.get("cancelled"):
            detail += " CANCELLED"
        if o.get("detail"):
            detail += f" ({o.get('detail')})"
        rows.append(("ecr", f"order {o.get('order_id')}", _money(o), outcome, detail))
    receipts = _dicts(rec.get("receipts"))
    for r in receipts:
        rows.append(
            (
                f"receipt #{r.get('index')}",
                f"STAN {_stan(r.get('trace'))}",
                "",
                str(r.get("verdict")),
                f"{'copy' if r.get('copy') else 'original'}"
                f" {'complete' if r.get('complete') else 'TORN'} kind={r.get('kind')}"
                f" order_ref={r.get('order_ref') or '-'}",
            )
        )
    if not receipts and v.stans:
        rows.append(("receipts", "", "", "(none)", ""))
    for m in _dicts(rec.get("wire")):
        rows.append(
            (
                "wire",
                f"STAN {_stan(m.get('stan'))}",
                "",
                f"{m.get('direction')} {m.get('mti')}",
                f"rc={m.get('response_code') or '-'} at"
                f" {at(t, t0).strip() if isinstance(t := m.get('t'), float | int) else '-'}",
            )
        )
    totals = rec.get("totals")
    if isinstance(totals, dict):
        currency = totals.get("currency")
        cur = currency if isinstance(currency, int) else 0
        for side in ("terminal", "host"):
            count, amount = totals.get(f"{side}_count"), totals.get(f"{side}_amount")
            shown = money(amount, cur) if isinstance(amount, int) else "(none)"
            rows.append(("totals", side, shown, f"count={count}", ""))
    return rows


def _dicts(value: object) -> list[dict[str, object]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _money(record: Mapping[str, object]) -> str:
    amount, currency = record.get("amount"), record.get("currency")
    if not isinstance(amount, int):
        return ""
    return money(amount, currency) if isinstance(currency, int) else str(amount)


def _stan(value: object) -> str:
    return f"{value:06d}" if isinstance(value, int) else "-"


def _hex(value: object) -> str:
    return f"0x{value:02X}" if isinstance(value, int) else "-"


def _wrap(text: str, first: str, rest: str) -> str:
    return textwrap.fill(
        text, WIDTH, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    )
