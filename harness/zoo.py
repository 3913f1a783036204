"""`hil zoo`: run the suite against every buggy firmware and print the detection matrix.

A harness is worth the bugs it catches. Each bug-zoo profile of the simulated terminal has
target scenarios and the invariant its defect breaks; `hil zoo` runs each profile's targets (or
the whole suite with `--full`) through `hil run --firmware PROFILE`, and fails if any profile
escapes: no target scenario failed with the expected invariant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.sim.profiles import FIRMWARE_PROFILES

INVARIANTS = ("I1", "I2", "I3", "I4", "I5", "I6", "I7")


@dataclass(frozen=True)
class Target:
    """Where a profile must be caught: a pytest -k selection and the invariants it breaks."""

    select: str
    expected: frozenset[str]


TARGETS: dict[str, Target] = {
    "reversal-record-after-send": Target(
        "test_power_cut_right_after_the_request_left", frozenset({"I1"})
    ),
    "no-auto-reversal": Target(
        "test_response_lost_after_the_host_approved_is_reversed", frozenset({"I2"})
    ),
    "late-response-accepted": Target(
        "test_late_response_is_ignored_and_the_sale_reversed", frozenset({"I3"})
    ),
    "journal-after-receipt": Target(
        "test_terminal_power_cut_while_printing[15]", frozenset({"I3"})
    ),
    "retry-with-new-stan": Target(
        "test_late_response_is_ignored_and_the_sale_reversed", frozenset({"I4"})
    ),
    "reversal-given-up": Target(
        "test_reversal_lost_several_times_is_stored_and_forwarded", frozenset({"I2"})
    ),
    "eod-with-queued-reversals": Target(
        "test_end_of_day_with_a_reversal_still_queued", frozenset({"I7"})
    ),
    "jam-receipt-not-reprinted": Target(
        "test_paper_jam_tears_the_receipt_mid_print"
        " or test_cutter_jam_after_the_status_check_loses_the_receipt",
        frozenset({"I6"}),
    ),
    "jam-reprint-as-original": Target(
        "test_paper_jam_tears_the_receipt_mid_print", frozenset({"I6"})
    ),
    "status-from-memory": Target("test_terminal_power_cut_while_printing[15]", frozenset({"I1"})),
    "ecr-result-before-journal": Target(
        "test_terminal_power_cut_while_printing[15]", frozenset({"I3"})
    ),
}


@dataclass
class ProfileResult:
    profile: str
    expected: frozenset[str]
    scenarios: dict[str, dict[str, str]] = field(default_factory=dict)  # nodeid -> invariants
    outcomes: dict[str, str] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0

    @property
    def broken(self) -> set[str]:
        return {i for cells in self.scenarios.values() for i, v in cells.items() if v == "fail"}

    @property
    def caught(self) -> bool:
        return bool(self.broken & self.expected)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rig", default="rigs/sim.toml", help="a simulated rig")
    parser.add_argument("--seed", type=int, default=1, help="seed for every run (default 1)")
    parser.add_argument("--profiles", default="", help="comma-separated profiles (default all)")
    parser.add_argument("--full", action="store_true", help="the whole suite per profile")
    parser.add_argument("--out", default=None, help="default .hil/zoo/<timestamp>")
    parser.add_argument(
        "--recovery-s", type=float, default=None, help="override the rig's recovery bound"
    )


def run_profile(
    profile: str,
    select: str | None,
    rig: str,
    seed: int,
    out: Path,
    recovery_s: float | None = None,
) -> ProfileResult:
    expected = TARGETS[profile].expected if profile in TARGETS else frozenset()
    result = ProfileResult(profile, expected)
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        "--rig",
        rig,
        "--firmware",
        profile,
        "--seed",
        str(seed),
        "--no-report",
        "--out",
        str(out),
    ]
    if select:
        command += ["-k", select]
    if recovery_s is not None:
        command += ["--recovery-s", str(recovery_s)]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    result.seconds = time.monotonic() - started
    summary_path = out / "summary.json"
    if not summary_path.exists():
        result.error = (proc.stdout + proc.stderr)[-2000:] or f"exit {proc.returncode}"
        return result
    summary = json.loads(summary_path.read_text())
    for row in summary.get("scenarios", []):
        nodeid = str(row["nodeid"]).split("::", 1)[-1]
        result.scenarios[nodeid] = dict(row.get("invariants") or {})
        result.outcomes[nodeid] = str(row.get("outcome"))
    return result


def matrix_table(results: list[ProfileResult]) -> Table:
    table = Table(title="bug zoo detection matrix (profile x scenario x invariant)")
    table.add_column("profile")
    table.add_column("scenario")
    for invariant in INVARIANTS:
        table.add_column(invariant, justify="center")
    table.add_column("caught")
    for result in results:
        first = True
        rows = result.scenarios or {"(no scenario ran)": {}}
        for nodeid, cells in rows.items():
            marks = []
            for invariant in INVARIANTS:
                value = cells.get(invariant, "")
                mark = {"fail": "✗", "pass": "✓", "unknown": "?", "n/a": "·"}.get(value, "-")
                if value == "fail" and invariant in result.expected:
                    mark = "[bold red]✗[/]"
                marks.append(mark)
            verdict = ""
            if first:
                want = "/".join(sorted(result.expected)) or "-"
                verdict = f"yes ({want})" if result.caught else f"[bold]ESCAPED[/] (wanted {want})"
            table.add_row(result.profile if first else "", nodeid, *marks, verdict)
            first = False
    return table


def markdown(results: list[ProfileResult]) -> str:
    lines = [
        "| profile | caught by | invariants broken | expected |",
        "| --- | --- | --- | --- |",
    ]
    for result in results:
        failing = sorted(n for n, o in result.outcomes.items() if o == "failed")
        lines.append(
            f"| `{result.profile}` | {', '.join(f'`{n}`' for n in failing) or '**nobody**'} | "
            f"{', '.join(sorted(result.broken)) or '-'} | {', '.join(sorted(result.expected))} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    console = Console()
    profiles = [p for p in args.profiles.split(",") if p] or [
        p for p in FIRMWARE_PROFILES if p != "correct"
    ]
    unknown = [p for p in profiles if p not in FIRMWARE_PROFILES]
    if unknown:
        console.print(f"hil zoo: unknown profile(s) {', '.join(unknown)}")
        return 2
    out = Path(args.out or Path(".hil") / "zoo" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    results: list[ProfileResult] = []
    for profile in profiles:
        select = None if args.full or profile not in TARGETS else TARGETS[profile].select
        console.print(f"[bold]{profile}[/]: {FIRMWARE_PROFILES[profile]}")
        result = run_profile(profile, select, args.rig, args.seed, out / profile, args.recovery_s)
        results.append(result)
        state = "caught" if result.caught else "ESCAPED"
        console.print(
            f"  {state}: broke {', '.join(sorted(result.broken)) or 'nothing'} "
            f"in {result.seconds:.0f} s" + (f"\n  {result.error}" if result.error else "")
        )
    console.print(matrix_table(results))
    report: dict[str, Any] = {
        p.profile: {
            "expected": sorted(p.expected),
            "broken": sorted(p.broken),
            "caught": p.caught,
            "scenarios": p.scenarios,
            "outcomes": p.outcomes,
            "error": p.error,
        }
        for p in results
    }
    (out / "zoo.json").write_text(json.dumps(report, indent=2))
    (out / "zoo.md").write_text(markdown(results) + "\n")
    escaped = [r.profile for r in results if not r.caught]
    console.print(f"matrix: {out / 'zoo.json'}, {out / 'zoo.md'}")
    if escaped:
        console.print(f"[bold red]ESCAPED: {', '.join(escaped)}[/]")
        return 1
    console.print(f"every profile caught ({len(results)})")
    return 0
