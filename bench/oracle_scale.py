"""Oracle scale: time and peak memory of `check()` on synthetic consistent evidence.

Builds a consistent history of N transactions (90% captured with a journal approval and one
original paid receipt, 10% declined with an unpaid receipt, 1% of them with a reprinted copy, 1%
of orders carrying no trace so they link through the journal's order reference, one order in 500
crossed by a network fault and resolved by recovery, a 0200/0210 pair on the wire per sale and
matching end-of-day totals) and times `check()` on it — as it runs in the plugin, then once
more with the cyclic GC paused to show its share — and measures its peak allocation with
tracemalloc in a last run (tracemalloc slows Python down, so timing and memory are kept apart).
The target (DESIGN §8) is 1,000,000 transactions in under 10 s, growing linearly. The work is
linear (one pass per index, dict lookups only); the time per transaction still rises with size
because a million records no longer fit the CPU caches and the GC rescans the fresh indexes.

Run: .venv/bin/python bench/oracle_scale.py [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.oracle import check  # noqa: E402
from harness.records import (  # noqa: E402
    EcrOutcome,
    Evidence,
    FaultSpan,
    HostStatus,
    HostTxn,
    JournalTxn,
    Order,
    Receipt,
    ReceiptVerdict,
    TimelineEntry,
    Totals,
    WireMsg,
)

TID = "29110001"
TARGET_S = 10.0
TARGET_N = 1_000_000


def build(n: int) -> Evidence:
    """A consistent history of n sales: every invariant holds, some sales crossed a fault."""
    ev = Evidence(tid=TID, recovery_s=30.0)
    count = amount_sum = 0
    for i in range(n):
        stan = i + 1  # beyond 999999 this stands for a later batch: the oracle keys on the int
        oid = f"O{i:07d}"
        amount = 100 + (i * 37) % 5000
        captured = i % 10 != 0
        started = i * 0.01
        in_doubt = i % 500 == 0
        outcome: EcrOutcome = "PAID" if captured else "NOT_PAID"
        ev.orders.append(
            Order(
                order_id=oid,
                amount=amount,
                currency=978,
                started=started,
                ended=started + 0.008,
                outcome="UNKNOWN" if in_doubt else outcome,
                result_code=0 if captured else 5,
                trace=None if i % 100 == 7 else stan,
                receipt_no=stan % 10000,
                recovered=outcome if in_doubt else None,
            )
        )
        if in_doubt:
            ev.faults.append(FaultSpan(f"latency-{i}", "network", started + 0.002, started + 0.006))
        status: HostStatus = "captured" if captured else "declined"
        ev.host.append(
            HostTxn(TID, stan, amount, 978, status, "00" if captured else "05", rrn=f"R{stan}")
        )
        ev.journal.append(JournalTxn(stan, amount, captured, 0 if captured else 5, oid, stan))
        verdict: ReceiptVerdict = "paid" if captured else "unpaid"
        ev.receipts.append(Receipt(len(ev.receipts), stan, oid, verdict, False, True))
        if i % 100 == 3:
            ev.receipts.append(Receipt(len(ev.receipts), stan, oid, verdict, True, True))
        ev.wire.append(WireMsg(started + 0.001, "to_host", "0200", stan, None))
        ev.wire.append(WireMsg(started + 0.004, "from_host", "0210", stan, "00"))
        ev.timeline.append(TimelineEntry(started, f"sale {oid} {amount}"))
        if captured:
            count += 1
            amount_sum += amount
    ev.totals = Totals(count, amount_sum, count, amount_sum, 978, 0)
    return ev


def measure(n: int) -> tuple[float, float, int]:
    """(seconds, seconds with the GC paused, peak traced bytes) of check() on n transactions."""
    ev = build(n)
    gc.collect()
    t = time.perf_counter()
    verdict = check(ev)
    elapsed = time.perf_counter() - t
    if verdict.valid is not True:
        raise SystemExit(f"synthetic evidence is not consistent: {verdict.unknown[:3]}")
    del verdict
    gc.collect()
    gc.disable()  # the share of the cyclic GC, which rescans the fresh indexes while they grow
    try:
        t = time.perf_counter()
        check(ev)
        paused = time.perf_counter() - t
    finally:
        gc.enable()
    gc.collect()
    tracemalloc.start()
    check(ev)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, paused, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000, 1_000_000]
    )
    args = parser.parse_args()
    print(
        f"{'transactions':>12}  {'check() s':>9}  {'us/txn':>7}  {'no-GC s':>8}  {'us/txn':>7}"
        f"  {'peak MiB':>8}  {'B/txn':>6}"
    )
    rows = []
    for n in args.sizes:
        elapsed, paused, peak = measure(n)
        rows.append((n, elapsed))
        print(
            f"{n:>12,}  {elapsed:>9.3f}  {elapsed / n * 1e6:>7.2f}  {paused:>8.3f}"
            f"  {paused / n * 1e6:>7.2f}  {peak / 2**20:>8.1f}  {peak / n:>6.0f}",
            flush=True,
        )
    for (n0, t0), (n1, t1) in pairwise(rows):
        print(f"growth {n0:,} -> {n1:,}: {n1 / n0:.1f}x transactions, {t1 / t0:.1f}x time")
    for n, elapsed in rows:
        if n >= TARGET_N:
            verdict = "met" if elapsed < TARGET_S else "MISSED"
            print(f"target {TARGET_N:,} in < {TARGET_S:g} s: {verdict} ({elapsed:.2f} s at {n:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
