"""The evidence a violation carries: the records side by side and the timeline around it.

Only violations pay for this (nothing here runs on a clean history), and every slice is bounded:
a violation is read by a person, so it shows the records of its own STANs and orders and at
most `MAX_TIMELINE` timeline lines, with faults that overlapped it added as their own lines.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import fields
from typing import Any

from harness.oracle_link import Links
from harness.oracle_verdict import Finding
from harness.records import Evidence, TimelineEntry

MAX_TIMELINE = 60
MAX_WIRE = 40
MARGIN_S = 1.0  # timeline shown from 1 s before the order started to 1 s after it ended


def plain(record: Any) -> dict[str, object]:
    """A flat dataclass record as a JSON-able dict (receipt text left out: it is long)."""
    return {f.name: getattr(record, f.name) for f in fields(record) if f.name != "text"}


class Slicer:
    """Cuts the records and the timeline for one finding; sorts the timeline once, lazily."""

    def __init__(self, lk: Links) -> None:
        self.lk = lk
        self._entries: list[TimelineEntry] | None = None
        self._times: list[float] = []
        self.t0 = 0.0

    def records(self, finding: Finding) -> dict[str, object]:
        lk = self.lk
        host = [plain(h) for s in finding.stans for h in lk.host.get(s)]
        journal = [plain(j) for s in finding.stans for j in lk.journal.get(s)]
        ecr = []
        for oid in finding.orders:
            for o in lk.attempts.get(oid):
                entry = plain(o)
                entry["stans"] = lk.traces.get(oid)
                entry["linked_via"] = lk.linked_via.get(oid, "ecr" if o.trace is not None else "")
                ecr.append(entry)
        receipts = {r.index: plain(r) for s in finding.stans for r in lk.receipts.get(s)}
        wanted = set(finding.orders)
        for r in lk.unlinked_receipts:
            if r.order_ref in wanted:
                receipts[r.index] = plain(r)
        wire = sorted((m for s in finding.stans for m in lk.wire(s)), key=lambda m: m.t)
        out: dict[str, object] = {
            "host": host,
            "journal": journal,
            "ecr": ecr,
            "receipts": [receipts[i] for i in sorted(receipts)],
            "wire": [plain(m) for m in wire[:MAX_WIRE]],
        }
        out.update(finding.extra)
        return out

    def timeline(self, finding: Finding) -> tuple[str, ...]:
        entries, times = self._sorted()
        window = self._window(finding, times)
        if window is None:
            return ()
        start, end = window
        lo = bisect_left(times, start)
        hi = bisect_right(times, end)
        lines = [(e.t, e.text) for e in entries[lo:hi]]
        for f in self.lk.faults.overlapping(start, end):
            _add_fault(lines, f.applied, f.label, f"FAULT {f.label} ({f.family}) applied")
            if f.healed is not None:
                _add_fault(lines, f.healed, f.label, f"FAULT {f.label} ({f.family}) healed")
        lines.sort(key=lambda line: line[0])
        text = [f"{at(t, self.t0)}  {what}" for t, what in lines]
        if len(text) > MAX_TIMELINE:
            head, tail = MAX_TIMELINE * 3 // 4, MAX_TIMELINE // 4 - 1
            omitted = len(text) - head - tail
            text = [*text[:head], f"{'':>11}  ... {omitted} entries omitted ...", *text[-tail:]]
        return tuple(text)

    def _window(self, finding: Finding, times: list[float]) -> tuple[float, float] | None:
        lk = self.lk
        spans = [lk.span(oid) for oid in finding.orders if oid in lk.attempts]
        if spans:
            return min(s for s, _ in spans) - MARGIN_S, max(e for _, e in spans) + MARGIN_S
        wire = [m.t for s in finding.stans for m in lk.wire(s)]
        if wire:
            return min(wire) - MARGIN_S, max(wire) + MARGIN_S
        if finding.invariant == "I7" and times:  # end of day: the end of the scenario
            return times[max(0, len(times) - MAX_TIMELINE // 2)], math.inf
        return None

    def _sorted(self) -> tuple[list[TimelineEntry], list[float]]:
        if self._entries is None:
            ev = self.lk.evidence
            self._entries = sorted(ev.timeline, key=lambda e: e.t)
            self._times = [e.t for e in self._entries]
            self.t0 = origin(ev)
        return self._entries, self._times


def origin(ev: Evidence) -> float:
    """Time zero of a report: the first timeline entry, sale or fault (monotonic seconds)."""
    starts = [min(e.t for e in ev.timeline)] if ev.timeline else []
    starts += [min(o.started for o in ev.orders)] if ev.orders else []
    starts += [min(f.applied for f in ev.faults)] if ev.faults else []
    return min(starts, default=0.0)


def at(t: float, t0: float) -> str:
    """ "   +12.345s": a time relative to the report's origin, right-aligned."""
    return f"{f'+{t - t0:.3f}s':>11}"


def _add_fault(lines: list[tuple[float, str]], t: float, label: str, text: str) -> None:
    """Add a fault line unless the history already logged it at that instant."""
    if not any(abs(t - at) < 1e-3 and label in what for at, what in lines):
        lines.append((t, text))
