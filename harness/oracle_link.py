"""Linking the three records to the ECR's orders: which STAN belongs to which order_id.

The join key is the STAN (the terminal's trace number) for the evidence's TID. An order's STANs
come from the ECR (`Order.trace`), then the journal's and the receipts' order reference, and as a
last resort a host transaction of the same amount when exactly one order and one unlinked host
transaction share it. Anything ambiguous or contradictory stays unlinked and becomes a reason
for "unknown" (`Links.notes`): the oracle never guesses a link. Every index is a dict built in
one pass, so linking is linear in the number of records.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Generic, TypeVar, cast

from harness.protocols.iso8583 import REVERSAL_MTIS
from harness.records import (
    EcrOutcome,
    Evidence,
    FaultSpan,
    HostTxn,
    JournalTxn,
    Order,
    Receipt,
    WireMsg,
)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

MAX_NOTES = 10  # conflicts listed one by one; the rest summarised in one line


class Multi(Generic[K, T]):
    """Records by key, usually one per key: no list is allocated until a key repeats."""

    __slots__ = ("first", "more")

    def __init__(self) -> None:
        self.first: dict[K, T] = {}
        self.more: dict[K, list[T]] = {}

    def add(self, key: K, item: T) -> None:
        if key in self.first:
            more = self.more.get(key)
            if more is None:
                self.more[key] = [self.first[key], item]
            else:
                more.append(item)
        else:
            self.first[key] = item

    def get(self, key: K) -> list[T]:
        more = self.more.get(key)
        if more is not None:
            return list(more)
        item = self.first.get(key)
        return [] if item is None else [item]

    def __contains__(self, key: object) -> bool:
        return key in self.first

    def __len__(self) -> int:
        return len(self.first)

    def items(self) -> Iterator[tuple[K, T]]:
        """Every (key, item), repeats included."""
        more = self.more
        for key, item in self.first.items():
            if key in more:
                for extra in more[key]:
                    yield key, extra
            else:
                yield key, item


class FaultIndex:
    """Fault spans sorted by start, answering "did [start, end] overlap a fault" in O(log F)."""

    def __init__(self, faults: list[FaultSpan]) -> None:
        spans = sorted(faults, key=lambda f: f.applied)
        self.spans = spans
        self.starts = [f.applied for f in spans]
        self.max_end: list[float] = []
        running = -math.inf
        for f in spans:
            running = max(running, fault_end(f))
            self.max_end.append(running)

    def __bool__(self) -> bool:
        return bool(self.spans)

    def latest_end(self, start: float, end: float) -> float | None:
        """The latest healing among the faults overlapping [start, end], None if none does."""
        i = bisect_right(self.starts, end)
        if i == 0 or self.max_end[i - 1] < start:
            return None
        return self.max_end[i - 1]

    def overlapping(self, start: float, end: float) -> list[FaultSpan]:
        i = bisect_right(self.starts, end)
        return [f for f in self.spans[:i] if fault_end(f) >= start]


def fault_end(fault: FaultSpan) -> float:
    """A self-healing fault (healed None) is an instant at its application."""
    return fault.applied if fault.healed is None else fault.healed


@dataclass
class Links:
    """The evidence indexed by STAN and order_id, and who owns which STAN."""

    evidence: Evidence
    host: Multi[int, HostTxn] = field(default_factory=Multi)  # this TID's ledger rows
    journal: Multi[int, JournalTxn] = field(default_factory=Multi)
    receipts: Multi[int, Receipt] = field(default_factory=Multi)  # by the STAN they are about
    attempts: Multi[str, Order] = field(default_factory=Multi)  # by order_id, as submitted
    traces: Multi[str, int] = field(default_factory=Multi)  # order_id -> STANs, primary first
    owner: dict[int, str] = field(default_factory=dict)  # STAN -> order_id
    linked_via: dict[str, str] = field(default_factory=dict)  # order_id -> how, if not "ecr"
    ambiguous: set[str] = field(default_factory=set)  # orders an amount could not decide
    captured_stans: list[int] = field(default_factory=list)  # host STANs with a capture
    captured_set: set[int] = field(default_factory=set)
    cancelled_ids: set[str] = field(default_factory=set)  # orders the ECR cancelled (06 30)
    crossed: set[str] = field(default_factory=set)  # orders that overlapped a fault span
    orphans: list[int] = field(default_factory=list)  # host STANs no order links to
    unlinked_receipts: list[Receipt] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # conflicts and ambiguities: unknown reasons
    other_tid: int = 0
    conflicts: int = 0
    faults: FaultIndex = field(default_factory=lambda: FaultIndex([]))
    _wire: dict[int, list[WireMsg]] | None = field(default=None, repr=False)
    _wire_scope: set[int] | None = field(default=None, repr=False)
    _reversals: dict[int, list[float]] | None = field(default=None, repr=False)

    # --- what the host says -------------------------------------------------------------
    def captured_rows(self, stan: int) -> int:
        more = self.host.more.get(stan)
        if more is None:
            h = self.host.first.get(stan)
            return 1 if h is not None and h.status == "captured" else 0
        return sum(1 for h in more if h.status == "captured")

    def captured(self, stan: int) -> bool:
        more = self.host.more.get(stan)
        if more is None:
            h = self.host.first.get(stan)
            return h is not None and h.status == "captured"
        return any(h.status == "captured" for h in more)

    def reversal_messages(self, stan: int) -> int:
        return sum(h.reversal_messages for h in self.host.get(stan))

    # --- what the terminal says ---------------------------------------------------------
    def approved(self, stan: int) -> bool:
        more = self.journal.more.get(stan)
        if more is None:
            j = self.journal.first.get(stan)
            return j is not None and j.approved
        return any(j.approved for j in more)

    # --- what the ECR says --------------------------------------------------------------
    def final(self, order_id: str) -> EcrOutcome:
        """The ECR's last word on the order: the last attempt's recovered outcome, else its own."""
        last = self.attempts.first[order_id]
        more = self.attempts.more.get(order_id)
        if more is not None:
            last = max(more, key=lambda o: o.started)
        return last.outcome if last.recovered is None else last.recovered

    def cancelled(self, order_id: str | None) -> bool:
        """Whether any attempt of the order was cancelled by the ECR afterwards."""
        return order_id in self.cancelled_ids

    def span(self, order_id: str) -> tuple[float, float]:
        """[first started, last ended]; an attempt that never ended stretches it to +inf."""
        more = self.attempts.more.get(order_id)
        if more is None:
            o = self.attempts.first[order_id]
            return o.started, math.inf if o.ended is None else o.ended
        start = min(o.started for o in more)
        ends = [o.ended for o in more]
        return start, math.inf if None in ends else max(e for e in ends if e is not None)

    def crossed_fault(self, order_id: str) -> bool:
        """Whether the order's [started, ended] overlapped any fault span."""
        if not self.faults:
            return False
        start, end = self.span(order_id)
        return self.faults.latest_end(start, end) is not None

    def crossed_faults(self) -> set[str]:
        """Every order that overlapped a fault, in one pass with the loop written out."""
        if not self.faults:
            return set()
        starts, max_end, inf = self.faults.starts, self.faults.max_end, math.inf
        more = self.attempts.more
        out = set()
        for oid, o in self.attempts.first.items():
            if oid in more:
                if self.crossed_fault(oid):
                    out.add(oid)
                continue
            i = bisect_right(starts, inf if o.ended is None else o.ended)
            if i and max_end[i - 1] >= o.started:
                out.add(oid)
        return out

    def faults_near(self, order_ids: tuple[str, ...], stans: tuple[int, ...]) -> list[FaultSpan]:
        """Faults overlapping the orders; for an orphan STAN, those around its wire messages."""
        seen: list[FaultSpan] = []
        spans = [self.span(oid) for oid in order_ids if oid in self.attempts]
        if not spans:
            times = [m.t for s in stans for m in self.wire(s)]
            spans = [(min(times) - 1.0, max(times) + 1.0)] if times else []
        for start, end in spans:
            for f in self.faults.overlapping(start, end):
                if f not in seen:
                    seen.append(f)
        return seen

    # --- what the wire saw ----------------------------------------------------------------
    def wire(self, stan: int) -> list[WireMsg]:
        """Messages on the host link for a STAN (indexed on first use: only reports need it)."""
        if self._wire is None or (self._wire_scope is not None and stan not in self._wire_scope):
            self._index_wire(None)
        assert self._wire is not None
        return self._wire.get(stan, [])

    def prime_wire(self, stans: set[int]) -> None:
        """Index only these STANs' messages: a report about a few STANs of a big soak."""
        if self._wire is None:
            self._index_wire(stans)

    def _index_wire(self, scope: set[int] | None) -> None:
        index: dict[int, list[WireMsg]] = {}
        for m in self.evidence.wire:
            if m.stan is not None and (scope is None or m.stan in scope):
                index.setdefault(m.stan, []).append(m)
        self._wire, self._wire_scope = index, scope

    def reversals_sent(self, stan: int) -> list[float]:
        """When 0400/0420s for a STAN went to the host (one filtered pass, on first use)."""
        if self._reversals is None:
            index: dict[int, list[float]] = {}
            for m in self.evidence.wire:
                if m.mti in REVERSAL_MTIS and m.direction == "to_host" and m.stan is not None:
                    index.setdefault(m.stan, []).append(m.t)
            self._reversals = index
        return self._reversals.get(stan, [])


def link(evidence: Evidence) -> Links:
    """Index every record and link STANs to orders (see the module docstring for the rules).

    Written for a million-transaction soak: the bulk work is comprehensions and dict(zip(...))
    over the records, and only the few records that need a decision go through a Python loop.
    """
    lk = Links(evidence=evidence, faults=FaultIndex(evidence.faults))
    tid = evidence.tid
    rows = [h for h in evidence.host if h.tid == tid]
    lk.other_tid = len(evidence.host) - len(rows)
    lk.host = index(rows, attrgetter("stan"))
    hfirst, hmore = lk.host.first, lk.host.more
    lk.captured_stans = [
        s for s, h in hfirst.items() if (lk.captured(s) if s in hmore else h.status == "captured")
    ]
    lk.captured_set = set(lk.captured_stans)
    lk.journal = index(evidence.journal, attrgetter("trace"))
    lk.attempts = index(evidence.orders, attrgetter("order_id"))
    lk.cancelled_ids = {o.order_id for o in evidence.orders if o.cancelled}
    afirst = lk.attempts.first

    # 1. the ECR's own word
    explicit = [o for o in evidence.orders if o.trace is not None]
    by_stan = cast(dict[int, str], {o.trace: o.order_id for o in explicit})
    by_order = cast(dict[str, int], {o.order_id: o.trace for o in explicit})
    if len(by_stan) == len(by_order) == len(explicit):  # one STAN per order, one order per STAN
        lk.owner, lk.traces.first = by_stan, by_order
    else:
        for o in explicit:
            if o.trace is not None:
                _claim(lk, o.trace, o.order_id, "the ECR", "")
    owner, tfirst = lk.owner, lk.traces.first
    get = owner.get
    # 2. the journal's order reference, 3. the receipts' order reference (only the records
    # that add a link or contradict one are looked at one by one)
    for j in [
        j for j in evidence.journal if j.order_ref is not None and get(j.trace) != j.order_ref
    ]:
        if j.order_ref in afirst:
            _claim(lk, j.trace, j.order_ref, "the journal", "journal")
    traced = [r for r in evidence.receipts if r.trace is not None]
    for r in [
        r
        for r in traced
        if r.order_ref is not None and r.trace is not None and get(r.trace) != r.order_ref
    ]:
        if r.order_ref in afirst and r.trace is not None:
            _claim(lk, r.trace, r.order_ref, f"receipt #{r.index}", "receipt")
    # 4. a unique amount
    if len(tfirst) < len(afirst):
        _link_by_amount(lk)
    lk.orphans = [s for s in hfirst if s not in owner]

    lk.receipts = index(traced, attrgetter("trace"))
    for r in [r for r in evidence.receipts if r.trace is None]:
        if r.order_ref is not None and r.order_ref in tfirst:
            if r.order_ref not in lk.traces.more:  # a trace-less receipt speaks for the only STAN
                lk.receipts.add(tfirst[r.order_ref], r)
            else:
                lk.unlinked_receipts.append(r)
        elif r.kind in ("sale", "reversal") or r.verdict != "other":
            lk.unlinked_receipts.append(r)
    if lk.conflicts > MAX_NOTES:
        lk.notes.append(f"... and {lk.conflicts - MAX_NOTES} more conflicting links")
    lk.crossed = lk.crossed_faults()
    return lk


def index(items: Sequence[T], key: Callable[[T], K]) -> Multi[K, T]:
    """Records by key in the order keys first appear: the earliest record under `first`, all of
    them in order under `more` when a key repeats."""
    multi: Multi[K, T] = Multi()
    first = {key(x): x for x in items}  # ordered by first appearance; holds the last record
    multi.first = first
    if len(first) == len(items):
        return multi
    more = multi.more
    # the earlier records of repeated keys, by position (ints: nothing for the GC to track)
    for i in [i for i, x in enumerate(items) if first[key(x)] is not x]:
        more.setdefault(key(items[i]), []).append(items[i])
    for k, extra in more.items():
        extra.append(first[k])
        first[k] = extra[0]
    if len(first) + sum(len(extra) - 1 for extra in more.values()) != len(items):
        multi = Multi()  # the very same record listed twice: identity cannot tell, count it
        for item in items:
            multi.add(key(item), item)
    return multi


def _claim(lk: Links, stan: int, order_id: str, source: str, via: str) -> None:
    """Give `stan` to `order_id` unless another order holds it (a conflict is noted, not fixed)."""
    holder = lk.owner.get(stan)
    if holder is None:
        lk.owner[stan] = order_id
        lk.traces.add(order_id, stan)
        if via and order_id not in lk.traces.more:  # its first STAN: say how it was linked
            lk.linked_via[order_id] = via
    elif holder != order_id:
        _conflict(lk, stan, holder, order_id, source)


def _conflict(lk: Links, stan: int, holder: str, order_id: str, source: str) -> None:
    lk.conflicts += 1
    if lk.conflicts <= MAX_NOTES:
        lk.notes.append(
            f"STAN {stan:06d} is linked to order {holder} but {source} says order {order_id}:"
            " the records disagree on which order it belongs to"
        )


def _link_by_amount(lk: Links) -> None:
    """Last resort: one trace-less order and one unlinked host transaction of the same amount."""
    waiting: dict[tuple[int, int], list[str]] = {}
    for oid, first in lk.attempts.first.items():
        if oid not in lk.traces.first:
            last = first
            if oid in lk.attempts.more:
                last = max(lk.attempts.get(oid), key=lambda o: o.started)
            waiting.setdefault((last.amount, last.currency), []).append(oid)
    candidates: dict[tuple[int, int], list[HostTxn]] = {}
    for stan, h in lk.host.first.items():
        if stan not in lk.owner and (h.amount, h.currency) in waiting:
            candidates.setdefault((h.amount, h.currency), []).append(h)
    for key, oids in waiting.items():
        hosts = candidates.get(key, [])
        if len(oids) == 1 and len(hosts) == 1:
            lk.owner[hosts[0].stan] = oids[0]
            lk.traces.add(oids[0], hosts[0].stan)
            lk.linked_via[oids[0]] = "amount"
            continue
        at_stake = any(lk.captured(h.stan) for h in hosts) or any(
            lk.final(oid) == "PAID" for oid in oids
        )
        if hosts and at_stake:
            lk.ambiguous.update(oids)
            named = ", ".join(sorted(oids)[:5]) + (f" (+{len(oids) - 5})" if len(oids) > 5 else "")
            lk.notes.append(
                f"order(s) {named} carry no STAN and {len(hosts)} unlinked host"
                f" transaction(s) have the same amount {key[0]} (STANs"
                f" {', '.join(f'{h.stan:06d}' for h in hosts[:5])}): which was whose is unknown"
            )
