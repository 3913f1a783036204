"""A simulated DP832 process on a private rig (free ports), with fake devices behind its outputs.

Shared by the simulator's own tests and the SCPI driver's tests: both need to start it, see
which device process it booted, read its evidence log and leave no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.rig import PsuConfig, Rig, load_rig
from harness.sim.world import World
from tests.polling import alive, wait_for
from tests.simrig import make_sim_rig

FAKE_DEVICE = Path(__file__).resolve().with_name("fake_device.py")
STOP_S = 5.0


@dataclass
class RunningPsu:
    process: subprocess.Popen[bytes]
    state_dir: Path
    rig: Rig

    @property
    def port(self) -> int:
        return self.rig.require_sim().psu.listen.port

    @property
    def resource(self) -> str:
        return f"TCPIP::127.0.0.1::{self.port}::SOCKET"

    @property
    def config(self) -> PsuConfig:
        """The driver's configuration for this PSU, from the rig."""
        assert self.rig.psu is not None
        return PsuConfig(self.resource, self.rig.psu.dialect, self.rig.psu.outputs)

    @property
    def world(self) -> World:
        return World(self.state_dir)

    def pid(self, name: str) -> int | None:
        try:
            return int((self.state_dir / "fake" / f"{name}.pid").read_text(encoding="ascii"))
        except FileNotFoundError:
            return None

    def wait_for_boot(self, name: str, not_pid: int | None = None) -> int:
        """The pid of a running `name` other than `not_pid` (a fresh boot)."""

        def booted() -> int | None:
            pid = self.pid(name)
            return pid if pid is not None and pid != not_pid and alive(pid) else None

        return wait_for(f"{name} to boot (not pid {not_pid})", booted)

    @property
    def log_path(self) -> Path:
        return self.state_dir / "psu" / "psu.log"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def events(self, since: int = 0) -> list[tuple[float, str]]:
        """(monotonic s, event) of every psu.log line after byte offset `since`."""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            text = log.read().decode("utf-8")
        events = []
        for line in text.splitlines():
            _, mono, event = line.split(" ", 2)
            events.append((float(mono), event))
        return events

    def event_at(self, since: int, text: str) -> float:
        found = [t for t, event in self.events(since) if text in event]
        assert len(found) == 1, f"{text!r} {len(found)} times in {self.events(since)}"
        return found[0]

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/task"))


def start_psu(tmp_path: Path, pass_fds: tuple[int, ...] = ()) -> RunningPsu:
    rig_path = make_sim_rig(tmp_path)
    rig = load_rig(rig_path)
    state_dir = Path(rig.require_sim().state_dir)
    devices = {
        name: [sys.executable, str(FAKE_DEVICE), str(state_dir), name]
        for name in ("terminal", "printer")
    }
    env = dict(os.environ, HIL_SIM_DEVICE_CMD=json.dumps(devices))
    if pass_fds:
        env["HIL_PASS_FDS"] = ",".join(str(fd) for fd in pass_fds)
    (tmp_path / "out").mkdir(exist_ok=True)
    with open(tmp_path / "out" / "psu.stdout", "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "harness.sim.psu", "--rig", str(rig_path)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
        )
    return RunningPsu(process, state_dir, rig)


def stop_psu(psu: RunningPsu) -> None:
    """Stop the PSU and make sure no fake device it started outlives the test."""
    if psu.process.poll() is None:
        psu.process.terminate()
        try:
            psu.process.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            psu.process.kill()
            psu.process.wait(timeout=STOP_S)
    for name in ("terminal", "printer"):
        pid = psu.pid(name)
        if pid is None or not alive(pid):
            continue
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if str(FAKE_DEVICE).encode() in cmdline and str(psu.state_dir).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)
