"""Test helper: a copy of rigs/sim.toml with free ports and a private state dir.

Tests never use the documented fixed ports (a developer's bench may be running on them), so
several simulated benches can run side by side.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

SIM_RIG = Path(__file__).resolve().parent.parent / "rigs" / "sim.toml"
FIXED_PORTS = ("8583", "8580", "9100", "9101", "9102", "5025", "20007", "8474", "18583")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_sim_rig(tmp_path: Path, replace: dict[str, str] | None = None) -> Path:
    """Write a sim rig under tmp_path with every fixed port swapped for a free one.

    `replace` maps exact snippets of rigs/sim.toml to their replacement (e.g. a firmware profile).
    """
    text = SIM_RIG.read_text(encoding="utf-8")
    for old, new in (replace or {}).items():
        if old not in text:
            raise AssertionError(f"{old!r} is not in rigs/sim.toml")
        text = text.replace(old, new)
    ports = {port: str(free_port()) for port in FIXED_PORTS}
    text = re.sub(r"(?<=[:])(" + "|".join(FIXED_PORTS) + r")\b", lambda m: ports[m.group(1)], text)

    def capture_ports(match: re.Match[str]) -> str:
        listed = [ports.get(p.strip(), p.strip()) for p in match.group(2).split(",")]
        return match.group(1) + ", ".join(listed) + "]"

    text = re.sub(r"^(ports = \[)([\d, ]+)\]", capture_ports, text, flags=re.M)
    state_dir = tmp_path / "state"
    text = text.replace('state_dir = ".hil/sim"', f'state_dir = "{state_dir}"')
    path = tmp_path / "rig.toml"
    path.write_text(text, encoding="utf-8")
    return path
