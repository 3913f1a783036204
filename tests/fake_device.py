"""A stand-in device process for PSU wiring tests: records that it booted, then waits to be killed.

`python tests/fake_device.py <state_dir> <name>` marks itself idle in the World, writes
"<name> <pid>" to every descriptor in HIL_PASS_FDS, and writes its pid to
`<state_dir>/fake/<name>.pid` last (atomically), so a test that sees the pid file sees the rest.
It dies with its parent, like the real simulated devices.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from harness.sim.process import die_with_parent
from harness.sim.world import World


def pid_file(state_dir: Path, name: str) -> Path:
    return state_dir / "fake" / f"{name}.pid"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: fake_device.py STATE_DIR NAME\n")
        return 2
    state_dir, name = Path(argv[0]), argv[1]
    die_with_parent()
    World(state_dir).set_activity(name, "idle")
    for item in os.environ.get("HIL_PASS_FDS", "").split(","):
        if item.strip():
            os.write(int(item), f"{name} {os.getpid()}\n".encode("ascii"))
    path = pid_file(state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(str(os.getpid()), encoding="ascii")
    os.replace(tmp, path)
    threading.Event().wait()  # until SIGKILL (power cut) or SIGTERM (bench stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
