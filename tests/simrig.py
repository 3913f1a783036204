"""Test helper: a copy of rigs/sim.toml with free ports and a private state dir.

Tests never use the documented fixed ports (a developer's bench may be running on them), so
several simulated benches can run side by side.
"""

from __future__ import annotations

from pathlib import Path

from harness.sim.ports import free_port
from harness.sim.rigs import FIXED_PORTS, SIM_RIG

__all__ = ["FIXED_PORTS", "SIM_RIG", "free_port", "make_sim_rig"]


def make_sim_rig(tmp_path: Path, replace: dict[str, str] | None = None) -> Path:
    """A sim rig under tmp_path; `replace` maps exact snippets of rigs/sim.toml to new text."""
    try:
        from harness.sim.rigs import derive_sim_rig

        return derive_sim_rig(tmp_path, replace)
    except ValueError as exc:
        raise AssertionError(str(exc)) from exc
