"""Read receipts the way the oracle needs them: which transaction, and what they claim.

The physical receipts come from the simulated printer's paper roll or from the printer tap's
decoded stream; the rig's `[printer] receipt` patterns say how this terminal words "paid",
"unpaid", "copy" and where it prints the trace number and the order reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from harness.records import Receipt, ReceiptVerdict
from harness.rig import ReceiptPatterns


@dataclass(frozen=True)
class RawReceipt:
    index: int
    lines: tuple[str, ...]
    complete: bool


def classify(raw: RawReceipt, patterns: ReceiptPatterns) -> Receipt:
    text = "\n".join(raw.lines)
    trace_match = re.search(patterns.trace, text)
    order_match = re.search(patterns.order, text)
    if re.search(patterns.settlement, text):
        kind = "settlement"
    elif re.search(patterns.reversal, text):
        kind = "reversal"
    elif trace_match:
        kind = "sale"
    else:
        kind = "other"
    verdict: ReceiptVerdict = "other"
    if kind == "sale":
        if re.search(patterns.unpaid, text):
            verdict = "unpaid"
        elif re.search(patterns.paid, text):
            verdict = "paid"
    return Receipt(
        index=raw.index,
        trace=int(trace_match.group(1)) if trace_match else None,
        order_ref=order_match.group(1) if order_match else None,
        verdict=verdict,
        copy=bool(re.search(patterns.copy, text)),
        complete=raw.complete,
        kind=kind,
        text=text,
    )


def classify_all(raws: Iterable[RawReceipt], patterns: ReceiptPatterns) -> list[Receipt]:
    return [classify(raw, patterns) for raw in raws]
