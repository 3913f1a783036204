"""Derive a private simulated rig from rigs/sim.toml: free ports and its own state dir.

Tests, benchmarks and parallel runs each get a bench that never collides with another one (or
with a developer's bench on the documented ports): every fixed port of the shipped rig is
swapped, consistently, for a free one (harness/sim/ports.py says which).
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.sim.ports import free_port

SIM_RIG = Path(__file__).resolve().parents[2] / "rigs" / "sim.toml"
FIXED_PORTS = ("8583", "8580", "9100", "9101", "9102", "5025", "20007", "8474", "18583")


def derive_sim_rig(
    out_dir: Path,
    replace: dict[str, str] | None = None,
    *,
    base: Path = SIM_RIG,
    ports: dict[str, int] | None = None,
    firmware: str | None = None,
) -> Path:
    """Write `out_dir/rig.toml`: `base` with its fixed ports swapped and state in `out_dir/state`.

    `replace` maps exact snippets of the base rig to their replacement (applied first, so they
    may name the documented ports). `ports` pins chosen replacements (else free ports).
    """
    text = base.read_text(encoding="utf-8")
    for old, new in (replace or {}).items():
        if old not in text:
            raise ValueError(f"{old!r} is not in {base}")
        text = text.replace(old, new)
    if firmware is not None:
        text, count = re.subn(
            r'^firmware = ".*"', f'firmware = "{firmware}"', text, count=1, flags=re.M
        )
        if count != 1:
            raise ValueError(f"{base} has no [sim] firmware line to set")
    chosen = {port: str((ports or {}).get(port) or free_port()) for port in FIXED_PORTS}
    text = re.sub(r"(?<=[:])(" + "|".join(FIXED_PORTS) + r")\b", lambda m: chosen[m.group(1)], text)

    def capture_ports(match: re.Match[str]) -> str:
        listed = [chosen.get(p.strip(), p.strip()) for p in match.group(2).split(",")]
        return match.group(1) + ", ".join(listed) + "]"

    text = re.sub(r"^(ports = \[)([\d, ]+)\]", capture_ports, text, flags=re.M)
    state_dir = Path(out_dir) / "state"
    text = re.sub(r'^state_dir = ".*"', f'state_dir = "{state_dir}"', text, flags=re.M)
    text = re.sub(
        r'^name = "(.*)"', rf'name = "\1-{Path(out_dir).name[:20]}"', text, count=1, flags=re.M
    )
    path = Path(out_dir) / "rig.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
