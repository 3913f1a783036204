"""The oracle's answer: per-invariant status, the violations with their evidence, and why unknown.

The one thing to know: `valid` is tri-state (Jepsen's `:valid?`). True only when nothing failed
on evidence that proves something; "unknown" when nothing failed but the evidence proves nothing
(no sale crossed the fault window, records unreadable) — a scenario must treat it as a failure;
False as soon as one violation exists, whatever else is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Valid = bool | Literal["unknown"]
InvariantStatus = Literal["pass", "fail", "unknown", "n/a"]

INVARIANTS: dict[str, str] = {
    "I1": "no-lost",
    "I2": "no-false-unpaid",
    "I3": "no-false-paid",
    "I4": "no-double-charge",
    "I5": "resolved-in-time",
    "I6": "one-receipt",
    "I7": "totals-match",
}


@dataclass(frozen=True)
class Violation:
    """One broken invariant for one order (or one orphan STAN), with what a QA engineer needs.

    `records` holds the parties' records side by side as plain JSON-able dicts under "host",
    "journal", "ecr", "receipts", "wire" (and "totals" for I7); `timeline` is the slice of the
    scenario's history around the order, faults included, already formatted.
    """

    invariant: str
    name: str
    orders: tuple[str, ...]
    stans: tuple[int, ...]
    records: dict[str, object]
    timeline: tuple[str, ...]
    diagnosis: str


@dataclass
class Verdict:
    """The result of `check()`: composed per invariant, never a bare pass without evidence."""

    valid: Valid
    violations: list[Violation] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    invariants: dict[str, InvariantStatus] = field(default_factory=dict)

    def of(self, invariant: str) -> list[Violation]:
        """The violations of one invariant ("I1".."I7")."""
        return [v for v in self.violations if v.invariant == invariant]


@dataclass
class Finding:
    """What a rule found, before the evidence slice is attached (see `oracle.check`)."""

    invariant: str
    orders: tuple[str, ...]
    stans: tuple[int, ...]
    diagnosis: str
    extra: dict[str, object] = field(default_factory=dict)  # records beyond the five sources


@dataclass
class Checked:
    """A rule's result: its findings and how many things it checked (0 means "n/a")."""

    findings: list[Finding]
    checked: int


def violation_to_json(violation: Violation) -> dict[str, object]:
    return {
        "invariant": violation.invariant,
        "name": violation.name,
        "orders": list(violation.orders),
        "stans": list(violation.stans),
        "records": violation.records,
        "timeline": list(violation.timeline),
        "diagnosis": violation.diagnosis,
    }


def verdict_to_json(verdict: Verdict) -> dict[str, object]:
    """A plain dict for the report bundle (json.dumps-able: records are already plain)."""
    return {
        "valid": verdict.valid,
        "invariants": dict(verdict.invariants),
        "unknown": list(verdict.unknown),
        "counts": dict(verdict.counts),
        "violations": [violation_to_json(v) for v in verdict.violations],
    }
