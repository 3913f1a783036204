"""The small protocols the harness depends on, and the plain records they return.

Scenarios, the bench and the oracle talk to `Terminal`, `CardPresenter` and `HostLedger`, never
to a concrete class: a simulated and a real implementation stand behind each. Results are
records, never bare booleans; a sale's outcome is tri-state because a timeout proves nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from harness.protocols.cards import mask_pan


class Outcome(enum.Enum):
    """What the ECR may conclude about a sale.

    PAID and NOT_PAID are definite claims the terminal made and is held to. UNKNOWN means the
    ECR did not get a final answer (timeout, lost link, garbage): never read it as "not paid".
    """

    PAID = "PAID"
    NOT_PAID = "NOT_PAID"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Card:
    """A test card the card presenter puts in front of the terminal."""

    pan: str
    expiry: str = "3012"  # YYMM

    @property
    def masked(self) -> str:
        return mask_pan(self.pan)

    def __repr__(self) -> str:  # never print a full card number, even in a traceback
        return f"Card({self.masked}, expiry={self.expiry})"


@dataclass(frozen=True)
class SaleResult:
    """The ECR's view of one sale: what the terminal answered, or why there was no answer."""

    order_id: str
    amount: int  # minor units
    currency: int  # ISO 4217 numeric
    outcome: Outcome
    result_code: int | None  # ZVT result code (BMP 27); 0 = success; None = no result received
    trace: int | None  # terminal trace number, which is also the ISO 8583 STAN
    receipt_no: int | None
    terminal_id: str | None
    card_masked: str | None
    detail: str  # in words: "approved", "declined: 0x33 (51)", "no 04 0F within 30.0 s"
    started: float  # monotonic seconds
    ended: float


@dataclass(frozen=True)
class TransactionRecord:
    """One transaction as the terminal's journal reports it (repeat receipt / status)."""

    trace: int
    receipt_no: int | None
    amount: int
    currency: int
    result_code: int  # 0 = approved; anything else = not paid
    order_ref: str | None  # the ECR's order reference when the terminal echoes it
    card_masked: str | None
    terminal_id: str | None

    @property
    def approved(self) -> bool:
        return self.result_code == 0


@dataclass(frozen=True)
class TerminalStatus:
    result_code: int  # 0 = ready
    terminal_id: str | None
    detail: str


@dataclass(frozen=True)
class EndOfDayResult:
    """The terminal's end-of-day totals: what it believes it captured since the last one."""

    result_code: int | None  # None = no answer (UNKNOWN)
    count: int
    total: int  # minor units
    currency: int
    detail: str


@dataclass(frozen=True)
class ReversalResult:
    outcome: Outcome  # PAID here means "the reversal was done"
    result_code: int | None
    receipt_no: int | None
    detail: str


class TerminalError(Exception):
    """The terminal gave no definite answer to a command whose result cannot say "unknown"."""


@runtime_checkable
class Terminal(Protocol):
    """The ECR's side of a payment terminal (ZVT today; nexo or vendor SDKs by entry point)."""

    def register(self) -> TerminalStatus: ...

    def status(self) -> TerminalStatus: ...

    def sale(self, order_id: str, amount: int) -> SaleResult: ...

    def reverse(self, receipt_no: int) -> ReversalResult: ...

    def repeat_receipt(self, trace: int | None = None) -> TransactionRecord | None: ...

    def end_of_day(self) -> EndOfDayResult: ...

    def abort(self) -> bool:
        """The ECR cancels the running sale (the customer walked away); False if none runs."""
        ...

    def close(self) -> None: ...


class CardPresenter(Protocol):
    """Puts a card in front of the terminal: a card robot on a real bench, a slot in the sim."""

    def present(self, card: Card) -> None: ...

    def remove(self) -> None: ...


@dataclass(frozen=True)
class LedgerEntry:
    """One financial transaction as the acquirer host recorded it: the money truth."""

    tid: str
    stan: int
    amount: int
    currency: int
    card_masked: str
    rrn: str
    auth_code: str
    response_code: str  # ISO 8583 field 39 the host answered
    status: str  # "captured" | "declined" | "reversed"
    batch: int
    received_at: str  # ISO 8601 wall clock, for display only
    reversed_at: str | None

    @property
    def captured(self) -> bool:
        return self.status == "captured"


@dataclass(frozen=True)
class LedgerTotals:
    count: int
    amount: int
    currency: int


class HostLedger(Protocol):
    """Reads the acquirer's record: the sim host's export, or a real settlement file."""

    def entries(self) -> list[LedgerEntry]: ...
