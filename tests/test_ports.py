"""Derived rigs get ports no other live process is handed, outside the kernel's ephemeral range."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.sim import ports
from harness.sim.ports import BLOCK, CLAIMS, EPHEMERAL_RANGE, free_port, port_range

ROOT = Path(__file__).resolve().parent.parent
HOLDER = """
import sys
from harness.sim.ports import free_port
print(" ".join(str(free_port()) for _ in range(40)), flush=True)
sys.stdin.read()  # hold the claims until the test closes stdin
"""


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(3 * BLOCK)]
    assert len(set(ports)) == len(ports)
    low = int(EPHEMERAL_RANGE.read_text().split()[0])
    assert all(p in port_range() and p < low for p in ports)
    assert all(p > 20007 for p in ports)  # never a documented port of the shipped rig


def test_processes_deriving_rigs_at_once_never_share_a_port() -> None:
    holders = [
        subprocess.Popen(
            [sys.executable, "-c", HOLDER],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        handed = [set(map(int, h.stdout.readline().split())) for h in holders if h.stdout]
        mine = {free_port() for _ in range(40)}
    finally:
        for h in holders:
            h.communicate("", timeout=10)
    sets = [*handed, mine]
    assert all(len(s) == 40 for s in sets)
    assert len(set().union(*sets)) == 40 * len(sets)
    # the claims ended with their processes: every holder's blocks can be locked again
    blocks = {p - (p - port_range().start) % BLOCK for s in handed for p in s}
    for start in blocks:
        fd = os.open(CLAIMS / f"{start}.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still claimed
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


@pytest.mark.parametrize(
    ("ephemeral", "expected"),
    [
        ("32768\t60999", range(21000, 32768)),  # Linux's default: below it
        ("1024\t60000", range(60001, 65536)),  # little below: above it
        ("1024\t65535", range(21000, 65536)),  # nothing outside: anything above LOWEST
    ],
)
def test_the_range_avoids_the_ephemeral_ports_where_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ephemeral: str, expected: range
) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text(ephemeral + "\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", setting)
    assert ports.port_range() == expected
