"""A fault-free sale on the simulated bench: end-to-end latency and where the time goes.

Two device settings side by side: the shipped rig (realistic device timing: 15 ms per journal
write on the terminal's flash, 4 ms per printed line) and the same rig with instant devices
(flash_write_ms = 0, line_ms = 0), which leaves the harness, the protocols, the processes and
the proxies. Parts: the ECR link (a ZVT status enquiry round trip), the host round trip through
toxiproxy (0200 -> 0210 on the wire), printing (first printed line -> cut, on the paper roll),
and a journal append + fsync on this disk.

Run: .venv/bin/python bench/sale_latency.py [--sales 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.bench import Bench  # noqa: E402
from harness.drivers.capture import capture_available  # noqa: E402
from harness.drivers.interfaces import Card, Outcome  # noqa: E402
from harness.history import History  # noqa: E402
from harness.protocols.cards import with_luhn  # noqa: E402
from harness.rig import load_rig  # noqa: E402
from harness.sim.launcher import SimBench  # noqa: E402
from harness.sim.paper_roll import read_roll  # noqa: E402
from harness.sim.rigs import derive_sim_rig  # noqa: E402
from harness.timing import BenchEvent  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def row(name: str, values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    if not ms:
        return f"  {name:<34} (not measured)"
    return (
        f"  {name:<34} n={len(ms):<4} p50 {pct(ms, 50):7.2f}  p95 {pct(ms, 95):7.2f}  "
        f"p99 {pct(ms, 99):7.2f} ms"
    )


def fsync_latency(directory: Path, runs: int = 200) -> list[float]:
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    samples = []
    try:
        for _ in range(runs):
            started = time.monotonic()
            os.write(fd, b'{"op":"approved","trace":1}\n')
            os.fsync(fd)
            samples.append(time.monotonic() - started)
    finally:
        os.close(fd)
    return samples


def measure(name: str, label: str, replace: dict[str, str], sales: int, tmp: Path) -> None:
    rig = load_rig(derive_sim_rig(tmp / name, replace))
    with (
        SimBench(rig, fresh=True),
        Bench.open(rig, History(tmp / name / "history.jsonl"), guard=False) as bench,
    ):
        assert bench.terminal is not None and bench.cards is not None
        events: list[BenchEvent] = []
        bench.events.subscribe(events.append)
        if capture_available("lo")[0]:
            bench.watch_wire(tmp / name / "link.pcap")
        bench.cards.present(Card(with_luhn("476173" + "000000001")))
        for warm in range(5):
            bench.terminal.sale(f"warm-{warm}", 1000)
        events.clear()
        ends: list[float] = []
        for index in range(sales):
            result = bench.terminal.sale(f"lat-{index}", 1000 + index)
            if result.outcome is not Outcome.PAID:
                raise SystemExit(f"sale {index} was {result.outcome}: {result.detail}")
            ends.append(result.ended - result.started)
        ecr = []
        for _ in range(min(sales, 100)):
            started = time.monotonic()
            bench.terminal.status()
            ecr.append(time.monotonic() - started)
        time.sleep(0.5)  # the last events (cut, wire) arrive from their own threads
        host = _pairs(events, "host_request", "host_response", key="stan")
        roll = read_roll(rig.require_sim().state_dir / "printer" / "paper-roll.jsonl")
        printing = [r.ended_t - r.started_t for r in roll[-sales:] if r.ended_t is not None]
    print(f"{label}:")
    print(row("sale end to end (ECR 06 01 -> 06 0F)", ends))
    print(row("ECR link: status enquiry round trip", ecr))
    print(row("host round trip via toxiproxy (wire)", host))
    print(row("printing: first line -> cut (paper)", printing))


def _pairs(events: list[BenchEvent], start: str, end: str, key: str) -> list[float]:
    opened: dict[object, float] = {}
    out = []
    for e in events:
        if e.name == start and e.data.get("mti") == "0200":
            opened[e.data.get(key)] = e.t
        elif e.name == end and e.data.get("mti") == "0210" and e.data.get(key) in opened:
            out.append(e.t - opened.pop(e.data.get(key)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sales", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hil-sale-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"{args.sales} fault-free sales per setting, simulated bench on loopback")
        measure(
            "realistic",
            "realistic devices (flash 15 ms/write, printer 4 ms/line)",
            {},
            args.sales,
            tmp,
        )
        instant = {
            'language = "zh"': 'language = "zh"\nflash_write_ms = 0',
            "[sim.printer]\n": "[sim.printer]\nline_ms = 0\n",
        }
        measure("instant", "instant devices (flash 0, printer 0)", instant, args.sales, tmp)
        print(row("journal append + fsync on this disk", fsync_latency(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
