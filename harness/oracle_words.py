"""How the oracle names things in a diagnosis: STANs, amounts, receipts, host states, faults.

One vocabulary for every invariant, so a QA engineer reads "STAN 000123", "EUR 12.50" and
"fault 'cut-after-0200' (power)" the same way in every report.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.oracle_link import Links
from harness.records import FaultSpan, HostTxn, Receipt

CURRENCIES = {978: "EUR", 156: "CNY", 840: "USD", 756: "CHF", 826: "GBP"}


def stan(value: int) -> str:
    return f"{value:06d}"


def stans_text(values: Iterable[int]) -> str:
    """ "STAN 000123" or "STANs 000123, 000124"."""
    listed = [stan(v) for v in values]
    return ("STAN " if len(listed) == 1 else "STANs ") + ", ".join(listed)


def money(amount: int, currency: int) -> str:
    name = CURRENCIES.get(currency)
    if name is None:
        return f"{amount} minor units of currency {currency}"
    sign = "-" if amount < 0 else ""
    return f"{name} {sign}{abs(amount) // 100}.{abs(amount) % 100:02d}"


def receipt_text(r: Receipt) -> str:
    """ "receipt #3 (copy, torn)"."""
    return (
        f"receipt #{r.index} ({'copy' if r.copy else 'original'}"
        f"{'' if r.complete else ', torn'}{'' if r.kind == 'sale' else ', ' + r.kind})"
    )


def host_state(rows: list[HostTxn]) -> str:
    """What the host ledger says about one STAN, in words."""
    if not rows:
        return "no transaction"
    parts = []
    for h in rows:
        if h.status == "declined":
            parts.append(f"declined (response code {h.response_code or '?'})")
        elif h.status == "reversed":
            parts.append(f"reversed ({h.reversal_messages} reversal message(s))")
        else:
            parts.append("captured")
    return " and ".join(parts)


def faults_text(faults: list[FaultSpan]) -> str:
    """ "fault 'cut-after-0200' (power)", several joined with commas."""
    return ", ".join(f"fault '{f.label}' ({f.family})" for f in faults)


def during(lk: Links, orders: tuple[str, ...], stans: tuple[int, ...]) -> str:
    """ " (during fault 'x' (network))" or "" when no fault overlapped."""
    faults = lk.faults_near(orders, stans)
    return f" (during {faults_text(faults)})" if faults else ""
