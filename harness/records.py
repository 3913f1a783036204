"""The plain records the oracle reconciles: what each party says about each transaction.

The plugin fills these from the bench after a scenario (the ECR's own results, the terminal's
answers, the host's export, the receipts, the wire capture and the fault timeline); the oracle
only ever sees these dataclasses, never a driver. Amounts are integers in minor units; times are
monotonic seconds on the harness machine's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

EcrOutcome = Literal["PAID", "NOT_PAID", "UNKNOWN"]
HostStatus = Literal["captured", "declined", "reversed"]
ReceiptVerdict = Literal["paid", "unpaid", "other"]


@dataclass(frozen=True)
class Order:
    """One sale intent from the ECR (the harness), and what the ECR concluded."""

    order_id: str
    amount: int
    currency: int
    started: float
    ended: float | None
    outcome: EcrOutcome  # the ECR's conclusion from the sale exchange itself
    result_code: int | None
    trace: int | None  # the terminal's trace number (= ISO STAN) when the ECR learned it
    receipt_no: int | None
    detail: str = ""
    cancelled: bool = False  # the ECR cancelled it afterwards (06 30) and the terminal confirmed
    recovered: EcrOutcome | None = None  # the ECR's conclusion after recovery (repeat receipt)


@dataclass(frozen=True)
class HostTxn:
    """A financial transaction in the acquirer's ledger: the money truth."""

    tid: str
    stan: int
    amount: int
    currency: int
    status: HostStatus
    response_code: str
    rrn: str = ""
    batch: int = 0
    reversal_messages: int = 0  # how many 0400/0420 the host received for it


@dataclass(frozen=True)
class JournalTxn:
    """What the terminal's journal says about one trace, asked over the ECR link after recovery."""

    trace: int
    amount: int
    approved: bool  # approved and not reversed, as the terminal reports it now
    result_code: int
    order_ref: str | None = None
    receipt_no: int | None = None


@dataclass(frozen=True)
class Receipt:
    """One physical receipt (or its fragment), classified by the rig's receipt patterns."""

    index: int
    trace: int | None  # read from the receipt text ("TRACE 000123")
    order_ref: str | None
    verdict: ReceiptVerdict  # paid / unpaid claim, or neither (a settlement slip, a fragment)
    copy: bool  # marked as a copy / duplicate / reprint
    complete: bool  # ended by a cut (not torn by a jam, not cut short by a power loss)
    kind: str = "sale"  # "sale" | "reversal" | "settlement" | "other"
    text: str = ""


@dataclass(frozen=True)
class Totals:
    """End-of-day totals: the terminal's (04 0F of 06 50) and the host's for the same batch."""

    terminal_count: int | None  # None: the terminal gave no totals (end of day failed)
    terminal_amount: int | None
    host_count: int
    host_amount: int
    currency: int
    result_code: int | None = None


@dataclass(frozen=True)
class WireMsg:
    """A message seen on the host link by the capture (the wire's own account)."""

    t: float
    direction: Literal["to_host", "from_host"]
    mti: str | None
    stan: int | None
    response_code: str | None


@dataclass(frozen=True)
class FaultSpan:
    """A fault as applied: when it took effect and when it was healed (None: self-healing)."""

    label: str
    family: str
    applied: float
    healed: float | None


@dataclass(frozen=True)
class Operation:
    """An ECR command other than a sale (end of day, cancel): it may be what a fault hit."""

    name: str
    started: float
    ended: float | None


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the scenario's timeline (from the history), for the violation report."""

    t: float
    text: str


@dataclass
class Evidence:
    """Everything the oracle needs about one scenario."""

    tid: str
    orders: list[Order] = field(default_factory=list)
    host: list[HostTxn] = field(default_factory=list)
    journal: list[JournalTxn] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    totals: Totals | None = None
    wire: list[WireMsg] = field(default_factory=list)
    faults: list[FaultSpan] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    expects_faults: bool = True  # a fault scenario: proves nothing unless a sale met a fault
    read_errors: list[str] = field(default_factory=list)  # records that could not be read
    recovery_s: float = 30.0
    unresolved: list[str] = field(default_factory=list)  # order ids still in doubt at the end
