"""The simulated terminal's flash: an append-only, fsync'ed journal of every transaction step.

Only what was fsync'ed survives a power cut (the PSU kills the firmware with SIGKILL), so the
firmware writes a step *before* acting on it: the pending record with its armed reversal before
the 0200 leaves, the approval before any receipt byte, "print started" before the printer gets
the receipt. Replaying the file on boot rebuilds every transaction's state; STAN, receipt and
batch numbers are derived from it, so there is no second counter file that could disagree.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

TxnState = Literal[
    "pending",  # request may be on the wire; reversal armed (power cut here = reverse on boot)
    "approved",  # host said 00
    "declined",  # host said no, or the request provably never left
    "reversal_due",  # outcome unknown; the terminal declared it failed and owes the host a 0400
    "reversed",  # the host acknowledged the reversal
]
TxnKind = Literal["sale", "cancel"]


@dataclass
class Txn:
    """One transaction as the journal says it is now."""

    trace: int  # also the ISO 8583 STAN
    receipt_no: int
    kind: TxnKind
    amount: int
    currency: int
    card_masked: str
    order_ref: str | None
    batch: int
    request: dict[str, str]  # the ISO 8583 fields a reversal copies (never the PAN)
    state: TxnState = "pending"
    result_code: int | None = None  # the ZVT result the terminal declared to the ECR
    response_code: str | None = None  # the host's field 39
    rrn: str = ""
    auth_code: str = ""
    reversal_reason: str = ""
    reversal_attempts: int = 0
    cancels: int | None = None  # for kind "cancel": the trace of the sale it reverses
    cancelled_by: int | None = None  # for a sale: the trace of its cancellation
    receipt_started: bool = False  # the original receipt's bytes may have reached the printer
    receipt_printed: bool = False  # the printer confirmed a complete receipt (original or copy)
    copies_printed: int = 0
    when: str = ""  # wall clock of the request, for the receipt

    @property
    def captured(self) -> bool:
        """What the terminal's totals count: approved, not reversed, not cancelled."""
        return self.kind == "sale" and self.state == "approved" and self.cancelled_by is None


@dataclass
class Settlement:
    batch: int
    count: int
    amount: int
    host_result: str
    stan: int = 0


@dataclass
class JournalState:
    txns: dict[int, Txn] = field(default_factory=dict)
    settlements: list[Settlement] = field(default_factory=list)

    @property
    def batch(self) -> int:
        return len(self.settlements) + 1

    @property
    def next_trace(self) -> int:
        last = max([*self.txns, *(s.stan for s in self.settlements)], default=0)
        return last % 999_999 + 1

    @property
    def next_receipt_no(self) -> int:
        last = max((t.receipt_no for t in self.txns.values()), default=0)
        return last % 9999 + 1

    def last_txn(self) -> Txn | None:
        if not self.txns:
            return None
        return self.txns[max(self.txns)]

    def by_receipt(self, receipt_no: int) -> Txn | None:
        matches = [t for t in self.txns.values() if t.receipt_no == receipt_no]
        return matches[-1] if matches else None

    def reversals_due(self) -> list[Txn]:
        return sorted(
            (t for t in self.txns.values() if t.state == "reversal_due"), key=lambda t: t.trace
        )

    def receipts_due(self) -> list[Txn]:
        """Decided transactions whose customer receipt the printer has not confirmed."""
        return sorted(
            (t for t in self.txns.values() if t.state != "pending" and not t.receipt_printed),
            key=lambda t: t.trace,
        )

    def open_batch(self) -> list[Txn]:
        return [t for t in self.txns.values() if t.batch == self.batch]


class Journal:
    """Append-only JSON-lines journal in the flash directory; every append is fsync'ed."""

    def __init__(self, flash_dir: Path, write_s: float = 0.0) -> None:
        flash_dir.mkdir(parents=True, exist_ok=True)
        self.write_s = write_s  # flash programming time: nothing is durable before it ends
        self.path = flash_dir / "journal.jsonl"
        self.state = JournalState()
        for record in self._records():
            self._apply(record)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        _fsync_dir(flash_dir)

    def close(self) -> None:
        os.close(self._fd)

    # -- writing -------------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> None:
        """Make one step durable, then apply it to the in-memory state."""
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        if self.write_s:
            time.sleep(self.write_s)  # the flash is being programmed; a power cut loses it
        os.write(self._fd, line)
        os.fsync(self._fd)
        self._apply(record)

    def begin(self, txn: Txn) -> Txn:
        """Record a new transaction; returns the journal's own (live) copy of it."""
        self.append(
            {
                "op": "begin",
                "trace": txn.trace,
                "receipt_no": txn.receipt_no,
                "kind": txn.kind,
                "amount": txn.amount,
                "currency": txn.currency,
                "card_masked": txn.card_masked,
                "order_ref": txn.order_ref,
                "batch": txn.batch,
                "request": txn.request,
                "cancels": txn.cancels,
                "when": txn.when,
                "state": txn.state,
                "result_code": txn.result_code,
                "reason": txn.reversal_reason,
            }
        )
        return self.state.txns[txn.trace]

    # -- reading -------------------------------------------------------------------------------
    def _records(self) -> Iterator[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                # Only the last line can be torn (power cut mid-write, before its fsync).
                log.warning("journal line %d is torn and ignored: %r", number, raw[:80])
                continue
            yield record

    def _apply(self, record: dict[str, Any]) -> None:
        op = record["op"]
        state = self.state
        if op == "begin":
            txn = Txn(
                trace=record["trace"],
                receipt_no=record["receipt_no"],
                kind=record["kind"],
                amount=record["amount"],
                currency=record["currency"],
                card_masked=record["card_masked"],
                order_ref=record["order_ref"],
                batch=record["batch"],
                request=record["request"],
                cancels=record.get("cancels"),
                when=record.get("when", ""),
                state=record.get("state", "pending"),
                result_code=record.get("result_code"),
                reversal_reason=record.get("reason", ""),
            )
            state.txns[txn.trace] = txn
            if txn.cancels is not None and txn.cancels in state.txns:
                state.txns[txn.cancels].cancelled_by = txn.trace
            return
        if op == "settled":
            state.settlements.append(
                Settlement(
                    record["batch"],
                    record["count"],
                    record["amount"],
                    record["host"],
                    record.get("stan", 0),
                )
            )
            return
        txn = state.txns[record["trace"]]
        if op == "approved":
            txn.state = "approved"
            txn.result_code = 0
            txn.response_code = "00"
            txn.rrn = record.get("rrn", "")
            txn.auth_code = record.get("auth_code", "")
        elif op == "declined":
            txn.state = "declined"
            txn.result_code = record["result_code"]
            txn.response_code = record.get("response_code")
        elif op == "reversal_due":
            txn.state = "reversal_due"
            txn.result_code = record["result_code"]
            txn.reversal_reason = record["reason"]
        elif op == "reversal_sent":
            txn.reversal_attempts += 1
        elif op == "reversed":
            txn.state = "reversed"
        elif op == "reversal_abandoned":
            txn.state = "declined"  # the record is gone: nothing will ever be sent
        elif op == "receipt_started":
            if not record.get("copy", False):
                txn.receipt_started = True
        elif op == "receipt_printed":
            txn.receipt_printed = True
            if record.get("copy", False):
                txn.copies_printed += 1
        else:
            log.warning("unknown journal op %r ignored", op)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
