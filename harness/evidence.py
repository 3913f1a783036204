"""Gather a scenario's evidence from the bench, after giving it its recovery time.

When a scenario ends: every fault is healed (a jam only cleared: the DLE ENQ that recovers the
printer is the terminal's job, and part of what is tested), then the bench gets up to the rig's
recovery time for the terminal to answer again and for every transaction in doubt to reach the
same final state on the host and in the terminal's journal. Then the three records are read
through the channels a real bench has: the terminal over the ECR link (repeat receipt per trace,
with the ECR printing so the queries add nothing to the paper; end of day for the totals), the
host's export, and the receipts (the paper roll on the simulated bench, the tap elsewhere).
Anything that cannot be read becomes a read error: the oracle then says "unknown", never "ok".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from harness.bench import Bench, BenchResetError
from harness.drivers.interfaces import TerminalError, TransactionRecord
from harness.history import read_history
from harness.protocols import zvt
from harness.receipt_reader import RawReceipt, classify_all
from harness.records import (
    Evidence,
    FaultSpan,
    HostTxn,
    JournalTxn,
    Operation,
    Order,
    Receipt,
    TimelineEntry,
    Totals,
    WireMsg,
)
from harness.rig import ReceiptPatterns
from harness.scenario import Scenario

log = logging.getLogger(__name__)
POLL_S = 0.3
EOD_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Baseline:
    """The bench's records when the scenario started: only what changed after is its own."""

    host: dict[tuple[str, int, int], str]  # (tid, stan, batch) -> status
    settlements: int  # the host's settlement records so far
    receipts: int
    history_seq: int
    t: float


def take_baseline(bench: Bench) -> Baseline:
    host: dict[tuple[str, int, int], str] = {}
    settlements = 0
    if bench.host is not None:
        host = {(e.tid, e.stan, e.batch): e.status for e in bench.host.entries()}
        if hasattr(getattr(bench.host, "target", bench.host), "settlements"):
            tid = bench.rig.terminal.tid
            rows = bench.host.settlements()  # type: ignore[attr-defined]
            settlements = sum(1 for row in rows if str(row.get("tid")) == tid)
    records = bench.history.records()
    return Baseline(
        host=host,
        settlements=settlements,
        receipts=len(_raw_receipts(bench)),
        history_seq=records[-1]["seq"] if records else 0,
        t=time.monotonic(),
    )


def _raw_receipts(bench: Bench) -> list[RawReceipt]:
    rig = bench.rig
    if rig.sim is not None:
        from harness.sim.paper_roll import read_roll

        roll = rig.sim.state_dir / "printer" / "paper-roll.jsonl"
        return [RawReceipt(r.index, r.lines, r.complete) for r in read_roll(roll)]
    if rig.printer is not None and rig.printer.tap is not None:
        from harness.drivers.printer import TapClient

        receipts = TapClient(rig.printer.tap.control).receipts()
        return [RawReceipt(r.index, tuple(r.lines), r.complete) for r in receipts]
    raise RuntimeError("the rig has no receipt source (no simulated printer, no printer tap)")


class Collector:
    """Reads one scenario's records; each reading failure is kept as a read error."""

    def __init__(self, scenario: Scenario, baseline: Baseline, recovery_s: float) -> None:
        self.scenario = scenario
        self.bench = scenario.bench
        self.baseline = baseline
        self.recovery_s = recovery_s
        self.read_errors: list[str] = []
        self.journal: dict[int, JournalTxn] = {}
        self.never_started: set[str] = set()  # orders the terminal provably never took
        self.denied: set[int] = set()  # traces the terminal says it has no record of
        records = self.bench.history.records()
        self.body_end_seq = records[-1]["seq"] if records else 0  # collection comes after

    # -- the terminal, queried as the ECR ------------------------------------------------------
    @contextmanager
    def ecr_prints(self) -> Iterator[None]:
        """Journal queries reprint the receipt: let the ECR take the text, not the paper."""
        terminal = self.bench.terminal
        target: Any = getattr(terminal, "target", terminal)
        saved = getattr(target, "config_byte", None)
        if saved is None or terminal is None:
            yield
            return
        target.config_byte = saved | zvt.CONFIG_ECR_PRINTS_PAYMENT
        try:
            terminal.register()
            yield
        finally:
            target.config_byte = saved
            try:
                terminal.register()
            except TerminalError as exc:
                log.info("could not register back to terminal printing: %s", exc)

    def ask_journal(self, trace: int | None) -> TransactionRecord | str | None:
        """The terminal's journal record for a trace (None: the last); "error" if no answer."""
        assert self.bench.terminal is not None
        try:
            return self.bench.terminal.repeat_receipt(trace)
        except TerminalError as exc:
            log.info("repeat receipt for %s: %s", trace, exc)
            return "error"

    def _record(self, record: TransactionRecord) -> JournalTxn:
        txn = JournalTxn(
            trace=record.trace,
            amount=record.amount,
            approved=record.approved,
            result_code=record.result_code,
            order_ref=record.order_ref,
            receipt_no=record.receipt_no,
        )
        self.journal[txn.trace] = txn
        return txn

    # -- the host -----------------------------------------------------------------------------
    def host_txns(self) -> list[HostTxn]:
        if self.bench.host is None:
            self.read_errors.append("the rig has no [host] ledger: the money truth is unknown")
            return []
        tid = self.bench.rig.terminal.tid
        reversals: dict[int, int] = {}
        host = self.bench.host
        if hasattr(getattr(host, "target", host), "reversals"):
            for row in host.reversals():  # type: ignore[attr-defined]
                if str(row.get("tid")) == tid:
                    stan = int(row["stan"])
                    reversals[stan] = reversals.get(stan, 0) + 1
        txns = []
        for entry in host.entries():
            key = (entry.tid, entry.stan, entry.batch)
            if entry.tid != tid or self.baseline.host.get(key) == entry.status:
                continue
            txns.append(
                HostTxn(
                    tid=entry.tid,
                    stan=entry.stan,
                    amount=entry.amount,
                    currency=entry.currency,
                    status=entry.status,  # type: ignore[arg-type]
                    response_code=entry.response_code,
                    rrn=entry.rrn,
                    batch=entry.batch,
                    reversal_messages=reversals.get(entry.stan, 0),
                )
            )
        return txns

    # -- recovery ------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Poll until every transaction in doubt agrees on host and journal; the unresolved."""
        deadline = time.monotonic() + self.recovery_s
        unresolved = ["(recovery not attempted)"]
        with self.ecr_prints():
            while True:
                unresolved = self._unresolved()
                if not unresolved or time.monotonic() >= deadline:
                    return unresolved
                time.sleep(POLL_S)  # the terminal resolves on its own schedule: ask again

    def _unresolved(self) -> list[str]:
        terminal = self.bench.terminal
        assert terminal is not None
        try:
            terminal.status()
        except TerminalError:
            return [o.order_id for o in self.scenario.orders] or ["(terminal not answering)"]
        host = {h.stan: h for h in self.host_txns()}
        unresolved: list[str] = []
        self._link_unknown_orders()
        traces = {o.trace for o in self.scenario.orders if o.trace is not None} | set(host)
        for trace in sorted(traces):
            answer = self.ask_journal(trace)
            order = next((o for o in self.scenario.orders if o.trace == trace), None)
            name = order.order_id if order else f"STAN {trace:06d}"
            if answer == "error":
                unresolved.append(name)
                continue
            if answer is None:
                self.journal.pop(trace, None)
                self.denied.add(trace)  # "no such transaction": the ECR must take it as unpaid
                if trace in host and host[trace].status == "captured":
                    unresolved.append(name)  # the host took money the terminal does not know
                continue
            assert not isinstance(answer, str)
            self.denied.discard(trace)
            txn = self._record(answer)
            captured = trace in host and host[trace].status == "captured"
            if captured != txn.approved:
                unresolved.append(name)
        unresolved += self._receipts_owed(host)
        for order in self.scenario.orders:
            in_doubt = order.trace is None and order.outcome == "UNKNOWN"
            if in_doubt and order.order_id not in self.never_started:
                unresolved.append(order.order_id)  # never linked to any transaction
        return sorted(set(unresolved))

    def _receipts_owed(self, host: dict[int, HostTxn]) -> list[str]:
        """Captured transactions still without a complete paid receipt: a reprint may be due."""
        patterns = self.bench.rig.printer.receipt if self.bench.rig.printer is not None else None
        if patterns is None:
            return []
        try:
            receipts = classify_all(_raw_receipts(self.bench)[self.baseline.receipts :], patterns)
        except Exception:  # unreadable receipts are reported when the evidence is read
            return []
        receipts = [r for r in receipts if r.trace not in self.earlier_stans]
        printed = {
            r.trace for r in receipts if r.complete and r.kind == "sale" and r.verdict == "paid"
        }
        return [
            f"receipt for STAN {stan:06d}"
            for stan, txn in host.items()
            if txn.status == "captured" and stan not in printed and not self._cancelled(stan)
        ]

    def _cancelled(self, stan: int) -> bool:
        return any(o.trace == stan and o.cancelled for o in self.scenario.orders)

    def _link_unknown_orders(self) -> None:
        """Orders whose result never arrived: find them in the journal by their order reference.

        Trace numbers are sequential, so the gaps between the traces this scenario knows (and a
        few beyond) hold every transaction the terminal may have started for them; each is asked
        for by trace. An order found nowhere, with the journal answering for every gap, was never
        taken by the terminal.
        """
        unknown = [o for o in self.scenario.orders if o.trace is None and o.outcome == "UNKNOWN"]
        unknown = [o for o in unknown if o.order_id not in self.never_started]
        if not unknown:
            return
        claimed = {o.trace for o in self.scenario.orders if o.trace is not None}
        known = claimed | {h.stan for h in self.host_txns()}
        probes: list[int | None] = [None]
        if known:
            low = max(1, min(known) - len(unknown) - 2)
            gaps = range(low, max(known) + len(unknown) + 3)
            probes = [t for t in gaps if t not in claimed and t not in self.earlier_stans]
            probes.append(None)
        by_ref = {o.order_id: o for o in unknown}
        complete = True
        for trace in probes:
            answer = self.ask_journal(trace)
            if isinstance(answer, str):
                complete = False  # the terminal did not answer: cannot conclude anything
                continue
            if answer is None or answer.trace in claimed:
                continue
            order = by_ref.pop(answer.order_ref, None) if answer.order_ref else None
            if order is None and answer.order_ref is None:
                same = [o for o in by_ref.values() if o.amount == answer.amount]
                order = by_ref.pop(same[0].order_id) if len(same) == 1 else None
            if order is not None:
                self._replace_order(order, replace(order, trace=answer.trace))
                claimed.add(answer.trace)
                self._record(answer)
        if complete:
            self.never_started.update(by_ref)  # no journal record anywhere: never taken

    def _replace_order(self, old: Order, new: Order) -> None:
        orders = self.scenario.orders
        orders[orders.index(old)] = new

    # -- the rest ------------------------------------------------------------------------------
    def totals(self) -> Totals | None:
        terminal = self.bench.terminal
        assert terminal is not None
        currency = self.bench.rig.terminal.currency
        target: Any = getattr(terminal, "target", terminal)
        saved = getattr(target, "timeout_s", None)
        try:
            if saved is not None:
                target.timeout_s = min(saved, EOD_TIMEOUT_S)  # a recovered bench settles fast
            result = terminal.end_of_day()
        except TerminalError as exc:
            self.read_errors.append(f"end of day: {exc}")
            return None
        finally:
            if saved is not None:
                target.timeout_s = saved
        host = self.bench.host
        settlements: list[dict[str, Any]] = []
        if host is not None and hasattr(getattr(host, "target", host), "settlements"):
            tid = self.bench.rig.terminal.tid
            settlements = [s for s in host.settlements() if str(s.get("tid")) == tid]  # type: ignore[attr-defined]
        if result.result_code is None or not settlements:
            host_count, host_amount = self._open_batch_totals()
            return Totals(None, None, host_count, host_amount, currency, result.result_code)
        ours = (
            settlements[self.baseline.settlements :] if self.baseline.settlements else settlements
        )
        mismatched = [s for s in ours if str(s.get("result")) != "00"]
        if mismatched:  # a settlement of this scenario disagreed with the host: that is I7
            first = mismatched[0]
            return Totals(
                terminal_count=int(first["terminal_count"]),
                terminal_amount=int(first["terminal_amount"]),
                host_count=int(first["host_count"]),
                host_amount=int(first["host_amount"]),
                currency=currency,
                result_code=None,
            )
        last = settlements[-1]
        return Totals(
            terminal_count=result.count,
            terminal_amount=result.total,
            host_count=int(last["host_count"]),
            host_amount=int(last["host_amount"]),
            currency=currency,
            result_code=result.result_code,
        )

    def _open_batch_totals(self) -> tuple[int, int]:
        captured = [h for h in self.host_txns() if h.status == "captured"]
        return len(captured), sum(h.amount for h in captured)

    def receipts(self, patterns: ReceiptPatterns) -> list[Receipt]:
        try:
            raws = _raw_receipts(self.bench)
        except Exception as exc:
            self.read_errors.append(f"receipts: {exc}")
            return []
        receipts = classify_all(raws[self.baseline.receipts :], patterns)
        return [r for r in receipts if r.trace is None or r.trace not in self.earlier_stans]

    @property
    def earlier_stans(self) -> set[int]:
        """STANs the host knew before this scenario: a late reprint of theirs is not ours."""
        tid = self.bench.rig.terminal.tid
        return {stan for (t, stan, _batch) in self.baseline.host if t == tid}

    def history(self) -> tuple[list[FaultSpan], list[TimelineEntry], list[Operation]]:
        spans: dict[int, FaultSpan] = {}
        open_faults: dict[str, int] = {}
        timeline: list[TimelineEntry] = []
        operations: dict[int, Operation] = {}
        for record in read_history(self.bench.history.path):
            if record["seq"] <= self.baseline.history_seq:
                continue
            instant = (
                float(record.get("at", record["t"])) if record["type"] == "event" else record["t"]
            )
            timeline.append(TimelineEntry(instant, describe(record)))
            in_body = record["seq"] <= self.body_end_seq  # not the collection's own queries
            ecr_op = record.get("f") in ("end_of_day", "reverse")
            if in_body and record.get("process") == "terminal" and ecr_op:
                if record["type"] == "invoke":
                    operations[record["seq"]] = Operation(record["f"], record["t"], None)
                elif record.get("invoke") in operations:
                    op = operations[record["invoke"]]
                    operations[record["invoke"]] = replace(op, ended=record["t"])
            if record["type"] != "fault":
                continue
            fault = record.get("fault", {})
            label = str(fault.get("label"))
            if record.get("phase") == "applied":
                span = FaultSpan(label, str(fault.get("family")), record["effective_at"], None)
                spans[record["seq"]] = span
                open_faults[label] = record["seq"]
            elif record.get("phase") == "healed" and label in open_faults:
                seq = open_faults.pop(label)
                spans[seq] = replace(spans[seq], healed=float(record["at"]))
        timeline.sort(key=lambda entry: entry.t)  # device events carry their own instants
        return list(spans.values()), timeline, list(operations.values())

    def wire(self) -> list[WireMsg]:
        capture = self.bench.capture
        if capture is None:
            return []
        return [
            WireMsg(m.t, m.direction, m.mti, m.stan, m.response_code)
            for m in capture.messages()
            if m.t >= self.baseline.t
        ]


def describe(record: dict[str, Any]) -> str:
    """One history record as a timeline line."""
    kind = record["type"]
    if kind == "fault":
        fault = record.get("fault", {})
        extra = ""
        if record.get("phase") == "applied":
            extra = f" (late {record.get('late_ms', 0):.2f} ms)"
        return f"FAULT {record.get('phase')} {fault.get('label')}{extra}"
    if kind == "bench":
        return f"bench {record.get('event')}"
    if kind == "event":
        return (
            f"seen on the {record.get('source')}: {record.get('name')} {_short(record.get('data'))}"
        )
    what = f"{record.get('process')}.{record.get('f')}"
    if kind == "invoke":
        return f"-> {what} {_short(record.get('value'))}"
    if record.get("error"):
        return f"<- {what} {kind}: {record['error']}"
    return f"<- {what} {kind} {_short(record.get('value'))}"


def _short(value: Any) -> str:
    if isinstance(value, dict):
        keys = ("outcome", "result_code", "trace", "detail", "count", "total")
        picked = {k: value[k] for k in keys if k in value}
        value = picked or value
    text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."


def collect(scenario: Scenario, baseline: Baseline, recovery_s: float) -> Evidence:
    """Heal, recover, and read every record of the scenario."""
    bench = scenario.bench
    collector = Collector(scenario, baseline, recovery_s)
    try:
        bench.reset(terminal_recovers=True)
    except BenchResetError as exc:
        collector.read_errors.append(str(exc))
    unresolved = collector.recover()
    totals = collector.totals()
    patterns = bench.rig.printer.receipt if bench.rig.printer is not None else None
    receipts = collector.receipts(patterns) if patterns is not None else []
    if patterns is None:
        collector.read_errors.append("the rig has no [printer]: receipts are unknown")
    faults, timeline, operations = collector.history()
    orders = [
        replace(o, recovered="NOT_PAID")
        if o.trace and o.trace in collector.denied
        else replace(o, recovered=_recovered(collector.journal.get(o.trace)))
        if o.trace
        else replace(o, recovered="NOT_PAID")
        if o.order_id in collector.never_started
        else o
        for o in scenario.orders
    ]
    return Evidence(
        tid=bench.rig.terminal.tid,
        orders=orders,
        host=collector.host_txns(),
        journal=list(collector.journal.values()),
        receipts=receipts,
        totals=totals,
        wire=collector.wire(),
        faults=faults,
        operations=operations,
        timeline=timeline,
        expects_faults=scenario.expects_faults,
        read_errors=collector.read_errors,
        recovery_s=recovery_s,
        unresolved=unresolved,
    )


def _recovered(txn: JournalTxn | None) -> Any:
    if txn is None:
        return None
    return "PAID" if txn.approved else "NOT_PAID"
