"""The bug zoo: every buggy firmware profile is caught by its target scenarios, with the
invariant its defect breaks (the correct firmware passing the same scenarios is shown by the
scenario smoke test and `make run`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.drivers.capture import capture_available
from harness.sim.profiles import FIRMWARE_PROFILES
from harness.sim.rigs import derive_sim_rig
from harness.zoo import TARGETS

ROOT = Path(__file__).resolve().parent.parent


def test_every_profile_has_a_target_with_an_expected_invariant() -> None:
    zoo = set(FIRMWARE_PROFILES) - {"correct"}
    assert zoo == set(TARGETS)
    assert all(target.expected for target in TARGETS.values())


CAPTURE_OK, CAPTURE_WHY = capture_available("lo")


@pytest.mark.timeout(1800)
@pytest.mark.skipif(
    not CAPTURE_OK, reason=f"several targets anchor faults on the wire: {CAPTURE_WHY}"
)
def test_hil_zoo_catches_every_profile_with_its_invariant(tmp_path: Path) -> None:
    rig = derive_sim_rig(tmp_path / "rig")
    out = tmp_path / "zoo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "zoo",
            "--rig",
            str(rig),
            "--out",
            str(out),
            "--recovery-s",
            "8",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    matrix = json.loads((out / "zoo.json").read_text())
    escaped = {p: r for p, r in matrix.items() if not r["caught"]}
    assert not escaped, f"escaped: {json.dumps(escaped, indent=1)[:3000]}\n{proc.stdout[-3000:]}"
    for profile, target in TARGETS.items():
        broken = set(matrix[profile]["broken"])
        assert target.expected & broken, (profile, broken)
        for scenario, cells in matrix[profile]["scenarios"].items():  # each target catches it
            failed = {i for i, v in cells.items() if v == "fail"}
            assert target.expected & failed, (profile, scenario, cells)
    assert proc.returncode == 0
    assert "every profile caught" in proc.stdout
