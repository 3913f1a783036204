"""A harness process for the guard tests: open the bench, apply faults, then wait to be killed.

Usage: python tests/bench_child.py RIG HISTORY
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from harness.bench import Bench
from harness.history import History
from harness.rig import load_rig


def main() -> int:
    rig = load_rig(sys.argv[1])
    history = History(Path(sys.argv[2]))
    with Bench.open(rig, history) as bench:
        bench.inject(bench.faults.power_cut("terminal"))
        bench.inject(bench.faults.response_lost())
        bench.inject(bench.faults.jam())
        print("applied", flush=True)
        time.sleep(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
