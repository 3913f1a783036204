"""Start and stop the whole simulated bench of a rig, and say when every device answers.

Process tree: the launcher starts the acquirer host and the PSU; the PSU boots the terminal and
the printer on its powered outputs (so a power cut is a real SIGKILL). The launcher owns the
terminal's ECR serial line, a pty pair it keeps open for the bench's whole life: the "cable"
outlives the terminal's power cycles, and its master end is handed down to each terminal boot.
Every child dies with its parent, and `stop()` reaps them all, so no process or port survives.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from harness.claims import try_claim
from harness.json_http import call_json, get_status
from harness.protocols import zvt
from harness.rig import Address, Rig
from harness.sim.process import module_command

log = logging.getLogger(__name__)

ECR_PTY_ENV = "HIL_ECR_PTY_FD"
PASS_FDS_ENV = "HIL_PASS_FDS"


class BenchStartError(RuntimeError):
    """A simulated device did not come up; the message carries its log tail."""


@dataclass(frozen=True)
class Endpoints:
    host: Address
    ledger_url: str
    terminal_tcp: Address
    terminal_serial: Path  # stable symlink to the pty the ECR opens
    printer_tcp: Address
    printer_serial: Path
    psu_resource: str
    paper_roll: Path
    state_dir: Path
    extra: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        return [
            *self.extra,
            f"host      ISO 8583   tcp://{self.host}   ledger {self.ledger_url}/ledger",
            f"terminal  ZVT        tcp://{self.terminal_tcp}   serial {self.terminal_serial}"
            f" -> {os.path.realpath(self.terminal_serial)}",
            f"printer   ESC/POS    tcp://{self.printer_tcp}   serial {self.printer_serial}"
            f"   paper roll {self.paper_roll}",
            f"psu       SCPI       {self.psu_resource}",
            f"state     {self.state_dir}",
        ]


def ecr_pty_link(state_dir: Path) -> Path:
    return state_dir / "terminal" / "ecr.pty"


class SimBench:
    """The simulated bench of one rig: `with SimBench(rig) as bench: ...`."""

    def __init__(self, rig: Rig, *, fresh: bool = False) -> None:
        self.rig = rig
        self.sim = rig.require_sim()
        self.state_dir = self.sim.state_dir
        self.fresh = fresh
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._pty: tuple[int, int] | None = None
        self._claim: int | None = None  # fd holding the lock on the rig's state dir
        self.endpoints: Endpoints | None = None

    def __enter__(self) -> SimBench:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> Endpoints:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Endpoints:
        self._claim_state_dir()
        if self.fresh and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        for sub in ("logs", "terminal", "printer", "host", "psu", "world"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self._check_ports_free()
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_inheritable(master, True)
        self._pty = (master, slave)
        link = ecr_pty_link(self.state_dir)
        link.unlink(missing_ok=True)
        link.symlink_to(os.ttyname(slave))

        deadline = time.monotonic() + self.rig.terminal.boot_s + 15
        self._spawn("host", "harness.sim.host", pass_fds=())
        network = self.rig.network
        if network is not None:
            api = network.api
            self._spawn(
                "toxiproxy",
                "harness.sim.toxiproxy",
                pass_fds=(),
                argv=["--host", api.host, "--port", str(api.port)],
            )
            self._wait("toxiproxy", deadline, self._toxiproxy_ready)
            self._populate_proxies()
        tap = self.rig.printer.tap if self.rig.printer is not None else None
        if tap is not None:
            self._spawn(
                "tap",
                "harness.drivers.printer_tap",
                pass_fds=(),
                argv=["--rig", str(self.rig.path), "--record-dir", str(self.state_dir / "tap")],
            )
            self._wait("tap", deadline, self._tap_ready)
        self._spawn("psu", "harness.sim.psu", pass_fds=(master,))
        self._wait("host", deadline, self._host_ready)
        self._wait("psu", deadline, self._psu_ready)
        self._wait("printer", deadline, self._printer_ready)
        self._wait("terminal", deadline, self._terminal_ready)
        psu_resource = self.rig.psu.resource if self.rig.psu else f"TCPIP::{self.sim.psu.listen}"
        self.endpoints = Endpoints(
            host=self.sim.host.listen,
            ledger_url=f"http://{self.sim.host.ledger_listen}",
            terminal_tcp=self.sim.terminal.zvt_listen,
            terminal_serial=link,
            printer_tcp=self.sim.printer.listen,
            printer_serial=self.state_dir / "printer" / "printer.pty",
            psu_resource=psu_resource,
            paper_roll=self.state_dir / "printer" / "paper-roll.jsonl",
            state_dir=self.state_dir,
            extra=tuple(self._service_lines()),
        )
        return self.endpoints

    def _ports(self) -> list[tuple[str, Address]]:
        ports = [
            ("host", self.sim.host.listen),
            ("ledger", self.sim.host.ledger_listen),
            ("terminal", self.sim.terminal.zvt_listen),
            ("printer", self.sim.printer.listen),
            ("psu", self.sim.psu.listen),
        ]
        if self.rig.network is not None:
            ports.append(("toxiproxy API", self.rig.network.api))
            ports += [(f"proxy {p.name}", p.listen) for p in self.rig.network.proxies.values()]
        tap = self.rig.printer.tap if self.rig.printer is not None else None
        if tap is not None:
            ports.append(("tap control", tap.control))
            if tap.terminal_side.address is not None:
                ports.append(("tap", tap.terminal_side.address))
        return ports

    def _service_lines(self) -> list[str]:
        lines = []
        if self.rig.network is not None:
            proxies = ", ".join(
                f"{p.name} {p.listen} -> {p.upstream}" for p in self.rig.network.proxies.values()
            )
            lines.append(f"toxiproxy  API {self.rig.network.toxiproxy}   proxies: {proxies}")
        tap = self.rig.printer.tap if self.rig.printer is not None else None
        if tap is not None:
            lines.append(
                f"tap       {tap.terminal_side} -> {tap.printer_side}   control "
                f"http://{tap.control}   record {self.state_dir / 'tap'}"
            )
        return lines

    def _claim_state_dir(self) -> None:
        """One bench per state dir: a second start on the same rig would wipe the first one's
        journal and ECR line mid-run. The lock ends with this process, however it ends."""
        lock = self.state_dir.with_name(self.state_dir.name + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = try_claim(lock)
        if fd is None:
            holder = lock.read_text(encoding="utf-8", errors="replace").strip() or "another process"
            raise BenchStartError(
                f"{self.rig.path}: its simulated bench ({self.state_dir}) is in use by {holder}; "
                "stop that run first, or run this one on a rig with its own [sim] state_dir and "
                "ports (hil run --parallel derives one per worker)"
            )
        os.ftruncate(fd, 0)
        when = dt.datetime.now().isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} ({' '.join(sys.argv)[:120]}, since {when})".encode(), 0)
        self._claim = fd

    def _check_ports_free(self) -> None:
        for name, address in self._ports():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((address.host, address.port))
                except OSError as exc:
                    raise BenchStartError(
                        f"{self.rig.path}: the {name} port {address} is already in use "
                        f"({exc.strerror}); is another bench running? Stop it, or give this rig "
                        "other ports"
                    ) from exc

    def _spawn(
        self, name: str, module: str, pass_fds: tuple[int, ...], argv: list[str] | None = None
    ) -> None:
        """Start one device; by default `python -m module --rig RIG`, else with `argv`."""
        env = dict(os.environ)
        if pass_fds:
            env[PASS_FDS_ENV] = ",".join(str(fd) for fd in pass_fds)
            env[ECR_PTY_ENV] = str(pass_fds[0])
        out = open(self.state_dir / "logs" / f"{name}.out", "ab")  # noqa: SIM115 - child owns it
        try:
            command = module_command(module, self.rig.path)
            if argv is not None:
                command = [sys.executable, "-m", module, *argv]
            self.processes[name] = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=pass_fds,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children
            )
        finally:
            out.close()

    def _wait(self, name: str, deadline: float, probe: object) -> None:
        assert callable(probe)
        last_error = ""
        while time.monotonic() < deadline:
            for proc_name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise BenchStartError(
                        f"the simulated {proc_name} exited with code {proc.returncode}\n"
                        + self.log_tail(proc_name)
                    )
            try:
                if probe():
                    log.info("%s ready", name)
                    return
            except OSError as exc:
                last_error = str(exc)
            time.sleep(0.05)  # polling a device's real protocol: there is no event to await
        raise BenchStartError(
            f"the simulated {name} did not answer within the boot time ({last_error or 'no reply'})"
            "\n" + self.log_tail(name)
        )

    def log_tail(self, name: str, lines: int = 15) -> str:
        chunks = []
        logs = self.state_dir / "logs"
        # a device that keeps its own log elsewhere (the tap: <state>/tap/logs/printer-tap.log)
        own = sorted(set(self.state_dir.glob(f"*/logs/*{name}.log")))
        for path in [logs / f"{name}.log", logs / f"{name}.out", *own]:
            if path.exists():
                tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(chunks) or f"(no log for {name} under {self.state_dir / 'logs'})"

    # -- readiness probes: each asks the device over its real protocol ------------------------
    def _host_ready(self) -> bool:
        url = f"http://{self.sim.host.ledger_listen}/health"
        ok = get_status(url, 0.5) == 200
        with socket.create_connection(_pair(self.sim.host.listen), timeout=0.5):
            return ok

    def _toxiproxy_ready(self) -> bool:
        assert self.rig.network is not None
        url = f"{self.rig.network.toxiproxy}/version"
        return get_status(url, 0.5) == 200

    def _populate_proxies(self) -> None:
        """Create the rig's proxies, so the terminal reaches its host through them from boot."""
        assert self.rig.network is not None
        proxies = [
            {"name": p.name, "listen": str(p.listen), "upstream": str(p.upstream)}
            for p in self.rig.network.proxies.values()
        ]
        url = f"{self.rig.network.toxiproxy}/populate"
        call_json("POST", url, proxies, timeout_s=2, error=BenchStartError, service="toxiproxy")

    def _tap_ready(self) -> bool:
        assert self.rig.printer is not None and self.rig.printer.tap is not None
        url = f"http://{self.rig.printer.tap.control}/health"
        return get_status(url, 0.5) == 200

    def _psu_ready(self) -> bool:
        with socket.create_connection(_pair(self.sim.psu.listen), timeout=0.5) as sock:
            sock.sendall(b"*IDN?\n")
            return _recv_line(sock, 1.0).count(",") >= 3

    def _printer_ready(self) -> bool:
        with socket.create_connection(_pair(self.sim.printer.listen), timeout=0.5) as sock:
            sock.sendall(b"\x10\x04\x01")
            sock.settimeout(1.0)
            return len(sock.recv(1)) == 1

    def _terminal_ready(self) -> bool:
        with socket.create_connection(_pair(self.sim.terminal.zvt_listen), timeout=0.5) as sock:
            sock.settimeout(2.0)
            password = self.rig.terminal.password
            sock.sendall(zvt.StatusEnquiry(password).to_apdu().encode())
            decoder = zvt.ApduDecoder()
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                data = sock.recv(4096)
                if not data:
                    return False
                for apdu in decoder.feed(data):
                    if (apdu.cls, apdu.instr) in ((0x04, 0x0F), (0x06, 0x0F), (0x06, 0x1E)):
                        sock.sendall(zvt.ack().encode())
                    if (apdu.cls, apdu.instr) == (0x06, 0x0F):
                        return True
            return False

    # -- one device ----------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """SIGKILL one process the launcher owns ("host" or "psu"), as a crash would."""
        proc = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)

    def respawn(self, name: str) -> None:
        """Start a killed host again and wait until it answers."""
        if name != "host":
            raise ValueError(f"only the host can be respawned this way, not {name!r}")
        self._spawn("host", "harness.sim.host", pass_fds=())
        self._wait("host", time.monotonic() + 15, self._host_ready)

    # -- stop ----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the PSU (it stops the devices it powers) and the host; reap everything."""
        for name in ("psu", "tap", "toxiproxy", "host"):
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.processes.items():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop on SIGTERM; killing it", name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of its group, e.g. PSU children
        self.processes.clear()
        if self._pty is not None:
            for fd in self._pty:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pty = None
            ecr_pty_link(self.state_dir).unlink(missing_ok=True)
        if self._claim is not None:
            os.close(self._claim)  # releases the lock on the state dir
            self._claim = None


def _pair(address: Address) -> tuple[str, int]:
    return (address.host, address.port)


def _recv_line(sock: socket.socket, timeout: float) -> str:
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data.decode("ascii", "replace").strip()
