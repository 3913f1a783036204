"""No false alarms on the correct firmware: the whole suite with many seeds, counting failures.

Every failure here is a false alarm (the `correct` firmware has no defect to find). Runs
`hil run` once per seed, each on its own private simulated rig (free ports), `--parallel` at a
time, and prints per seed how many scenarios ran and failed, then the total.

Run: .venv/bin/python bench/false_alarms.py [--seeds 20] [--parallel 2] [-k EXPR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.sim.rigs import derive_sim_rig  # noqa: E402


@dataclass
class SeedRun:
    seed: int
    ran: int
    failed: list[str]
    exit_code: int
    seconds: float


def one_seed(seed: int, root: Path, select: str | None) -> SeedRun:
    rig = derive_sim_rig(root / f"rig-{seed}")
    out = root / f"run-{seed}"
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        "--rig",
        str(rig),
        "--seed",
        str(seed),
        "--no-report",
        "--out",
        str(out),
    ]
    if select:
        command += ["-k", select]
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    try:
        rows = json.loads((out / "summary.json").read_text()).get("scenarios", [])
    except (OSError, ValueError):
        rows = []
    failed = [str(r["nodeid"]) for r in rows if r.get("outcome") not in ("passed", "skipped")]
    return SeedRun(seed, len(rows), failed, proc.returncode, time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("-k", dest="select", default=None)
    args = parser.parse_args()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="hil-false-alarms-") as tmp,
        ThreadPoolExecutor(max_workers=args.parallel) as pool,
    ):
        seeds = range(1, args.seeds + 1)
        results = list(pool.map(lambda s: one_seed(s, Path(tmp), args.select), seeds))
    alarms = [(r.seed, f) for r in results for f in r.failed]
    for r in results:
        extra = "  " + ", ".join(r.failed) if r.failed else ""
        took = f"{r.seconds:.0f} s"
        print(f"seed {r.seed:>3}: {r.ran} scenarios, {len(r.failed)} failed ({took}){extra}")
    print(
        f"\ncorrect firmware, {args.seeds} seeds, {sum(r.ran for r in results)} scenario runs: "
        f"{len(alarms)} false alarm(s); wall time {time.monotonic() - started:.0f} s "
        f"with {args.parallel} rig(s) in parallel"
    )
    return 0 if not alarms else 1


if __name__ == "__main__":
    raise SystemExit(main())
