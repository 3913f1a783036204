"""Fault scheduling precision on the simulated bench: requested instant vs actual instant.

For each fault family a fault is armed `OFFSET_MS` after an event and the bench records when it
actually took effect (the PSU driver's instant after the OFF write; toxiproxy's answer to the
toxic creation; the tap's own instant for a printer fault). The event is published on the bench's
event bus the way the capture or the tap publish theirs. Prints p50 / p95 / p99 / max of
(actual - requested) per family, and the capture's event latency (wire -> bus) from a few sales.

Run: .venv/bin/python bench/fault_timing.py [--runs 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.bench import Bench  # noqa: E402
from harness.drivers.capture import capture_available  # noqa: E402
from harness.drivers.interfaces import Card  # noqa: E402
from harness.faults import Fault  # noqa: E402
from harness.history import History  # noqa: E402
from harness.protocols.cards import with_luhn  # noqa: E402
from harness.rig import load_rig  # noqa: E402
from harness.sim.launcher import SimBench  # noqa: E402
from harness.sim.rigs import derive_sim_rig  # noqa: E402
from harness.timing import BenchEvent  # noqa: E402

OFFSET_MS = 20.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def row(name: str, errors_ms: list[float]) -> str:
    """Percentiles of the absolute error (early or late), plus the signed median."""
    absolute = [abs(e) for e in errors_ms]
    return (
        f"{name:<22} n={len(errors_ms):<4} |err| p50 {percentile(absolute, 50):6.3f}  "
        f"p95 {percentile(absolute, 95):6.3f}  p99 {percentile(absolute, 99):6.3f}  "
        f"max {max(absolute):6.3f}  (signed p50 {percentile(errors_ms, 50):+.3f}) ms"
    )


def measure(bench: Bench, make: Callable[[], Fault], runs: int) -> list[float]:
    """Scheduling errors in ms after 5 warm-up applies (the scheduler learns actuation times)."""
    errors: list[float] = []
    for run in range(runs + 5):
        scheduled = bench.after("bench_probe", OFFSET_MS, make())
        bench.events.publish(BenchEvent("bench_probe", time.monotonic()))
        applied = scheduled.wait(5)
        if run >= 5:
            errors.append((applied.effective_at - applied.requested_at) * 1000)
        bench.heal(applied)
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hil-bench-") as tmp:
        rig = load_rig(derive_sim_rig(Path(tmp)))
        with (
            SimBench(rig, fresh=True),
            Bench.open(rig, History(Path(tmp) / "run" / "history.jsonl"), guard=False) as bench,
        ):
            print(
                f"fault scheduling error (actual - requested), offset {OFFSET_MS} ms, "
                f"{args.runs} runs each, simulated bench"
            )
            families: list[tuple[str, Callable[[], Fault]]] = [
                ("power: cut printer", lambda: bench.faults.power_cut("printer")),
                ("network: response lost", bench.faults.response_lost),
                ("printer: jam (tap)", bench.faults.jam),
            ]
            for name, make in families:
                print(row(name, measure(bench, make, args.runs)), flush=True)
            ok, why = capture_available("lo")
            if not ok:
                print(f"wire event latency: not measured ({why})")
                return 0
            capture = bench.watch_wire(Path(tmp) / "run" / "link.pcap")
            assert bench.cards is not None and bench.terminal is not None
            bench.cards.present(Card(with_luhn("476173" + "000000001")))
            for index in range(20):
                bench.terminal.sale(f"bench-{index}", 1000 + index)
            result = capture.stop()
            latencies = [x * 1000 for x in result.latencies_s]
            if latencies:
                print(row(f"wire -> bus ({result.filter_mode})", latencies))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
