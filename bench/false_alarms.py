"""No false alarms on the correct firmware: the whole suite with many seeds, counting failures.

Every failure here is a false alarm (the `correct` firmware has no defect to find). Runs
`hil run` once per seed, each on its own private simulated rig (free ports), `--parallel` at a
time, and prints per seed how many scenarios ran and failed, then the total. Every run's
evidence stays under --out (default .hil/false-alarms/<timestamp>/run-<seed>/).

Run: .venv/bin/python bench/false_alarms.py [--seeds 20] [--parallel 2] [-k EXPR] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.sim.rigs import derive_sim_rig  # noqa: E402
from harness.zoo import ProfileResult, run_profile  # noqa: E402


def one_seed(seed: int, root: Path, select: str | None) -> ProfileResult:
    rig = derive_sim_rig(root / f"rig-{seed}")
    return run_profile("correct", select, str(rig), seed, root / f"run-{seed}")


def failed(result: ProfileResult) -> list[str]:
    return [n for n, outcome in result.outcomes.items() if outcome not in ("passed", "skipped")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("-k", dest="select", default=None)
    parser.add_argument("--out", default=None, help="default .hil/false-alarms/<timestamp>")
    args = parser.parse_args()
    os.chdir(ROOT)  # `hil run` finds the project's scenarios/ from here
    # kept, not a temporary directory: a false alarm is only worth its evidence
    out = Path(args.out or Path(".hil") / "false-alarms" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        seeds = range(1, args.seeds + 1)
        results = list(pool.map(lambda s: one_seed(s, out.resolve(), args.select), seeds))
    alarms = [(seed, f) for seed, r in zip(seeds, results, strict=True) for f in failed(r)]
    broken = [(seed, r.error) for seed, r in zip(seeds, results, strict=True) if r.error]
    for seed, r in zip(seeds, results, strict=True):
        extra = "  " + ", ".join(failed(r)) if failed(r) else ""
        took = f"{r.seconds:.0f} s"
        print(
            f"seed {seed:>3}: {len(r.outcomes)} scenarios, {len(failed(r))} failed ({took}){extra}"
        )
    for seed, error in broken:
        print(f"seed {seed:>3}: the run wrote no summary:\n{error}")
    print(
        f"\ncorrect firmware, {args.seeds} seeds, "
        f"{sum(len(r.outcomes) for r in results)} scenario runs: "
        f"{len(alarms)} false alarm(s); wall time {time.monotonic() - started:.0f} s "
        f"with {args.parallel} rig(s) in parallel; evidence in {out}/run-<seed>/"
    )
    return 0 if not alarms and not broken else 1


if __name__ == "__main__":
    raise SystemExit(main())
