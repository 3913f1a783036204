"""Soak: sales for a fixed time under random faults, then one reconciliation of everything.

Each iteration draws (from the seed) a fault or none, applies it, runs a sale, heals it. At the
end the bench gets its recovery time and the oracle checks every order of the whole soak at
once. Prints transactions per second sustained, the fault mix, harness errors (exceptions from
the harness itself, failed resets) and the oracle's verdict: the target is 0 harness errors and
a valid verdict on the correct firmware.

Run: .venv/bin/python bench/soak.py [--minutes 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.bench import Bench  # noqa: E402
from harness.drivers.interfaces import Outcome  # noqa: E402
from harness.evidence import collect, take_baseline  # noqa: E402
from harness.faults import AppliedFault  # noqa: E402
from harness.history import History  # noqa: E402
from harness.oracle import check, render_text  # noqa: E402
from harness.rig import load_rig  # noqa: E402
from harness.scenario import Scenario, ScenarioInfo  # noqa: E402
from harness.sim.launcher import SimBench  # noqa: E402
from harness.sim.rigs import derive_sim_rig  # noqa: E402
from harness.timing import Scheduled  # noqa: E402

FAULTS = ("none", "none", "response_lost", "request_lost", "jam", "paper_out", "glitch")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="hil-soak-") as tmp_name:
        tmp = Path(tmp_name)
        rig = load_rig(derive_sim_rig(tmp / "soak"))
        history = History(tmp / "soak" / "history.jsonl")
        with SimBench(rig, fresh=True), Bench.open(rig, history) as bench:
            scenario = Scenario(
                bench, ScenarioInfo("bench/soak.py", args.seed, "correct", str(rig.path)), rng
            )
            baseline = take_baseline(bench)
            mix: collections.Counter[str] = collections.Counter()
            outcomes: collections.Counter[str] = collections.Counter()
            errors: list[str] = []
            started = time.monotonic()
            deadline = started + args.minutes * 60
            while time.monotonic() < deadline:
                kind = rng.choice(FAULTS)
                mix[kind] += 1
                try:
                    armed: Scheduled | None = None
                    applied: AppliedFault | None = None
                    if kind == "glitch":
                        armed = scenario.after(
                            "sale_started",
                            rng.randrange(0, 60),
                            scenario.faults.power_glitch("terminal", off_ms=30),
                        )
                    elif kind != "none":
                        applied = scenario.inject(getattr(scenario.faults, kind)())
                    with scenario.ecr_timeout(4):
                        result = scenario.sale()
                    outcomes[result.outcome.value] += 1
                    if armed is not None:
                        applied = armed.wait(5)
                    if applied is not None:
                        scenario.heal(applied)
                except Exception:
                    errors.append(traceback.format_exc(limit=3))
                    bench.reset()
            elapsed = time.monotonic() - started
            evidence = collect(scenario, baseline, rig.rig.recovery_s)
            verdict = check(evidence)
    sales = sum(outcomes.values())
    print(f"soak: {elapsed / 60:.1f} min, {sales} sales, {sales / elapsed:.2f} tx/s sustained")
    print(f"  faults drawn: {dict(mix)}")
    print(f"  ECR outcomes: {dict(outcomes)} (UNKNOWN = in doubt at the ECR, resolved after)")
    print(f"  harness errors: {len(errors)}")
    for error in errors[:5]:
        print("    " + error.replace("\n", "\n    "))
    print(
        f"  oracle: valid={verdict.valid}, violations={len(verdict.violations)}, "
        f"invariants={verdict.invariants}"
    )
    if verdict.valid is not True:
        print(render_text(evidence, verdict)[:4000])
    return 0 if not errors and verdict.valid is True and outcomes[Outcome.PAID.value] else 1


if __name__ == "__main__":
    raise SystemExit(main())
