"""What every simulated device process shares: its command line, logging, and how it dies.

A device is started as `python -m harness.sim.<device> --rig RIG`. It dies with its parent
(PR_SET_PDEATHSIG), so a killed launcher or PSU never leaves an orphan holding a port, and it
stops on SIGTERM/SIGINT by setting an event the device's main loop waits on.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

from harness.rig import Address, Rig, load_rig

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the launcher's own clean-up still stops us
        return
    if os.getppid() == 1:  # the parent died before we asked
        os._exit(1)


def device_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rig", required=True, help="rig file with a [sim] section")
    return parser.parse_args(argv)


def start_device(
    name: str, argv: list[str] | None, description: str
) -> tuple[Rig, threading.Event]:
    """Common start-up: parse args, load the rig, log to the state dir, arm stop signals."""
    args = device_args(description, argv)
    die_with_parent()
    rig = load_rig(args.rig)
    sim = rig.require_sim()
    setup_logging(name, sim.state_dir)
    return rig, stop_event()


def setup_logging(name: str, state_dir: Path) -> None:
    log_dir = Path(state_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / f"{name}.log", encoding="utf-8")
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT; the device's main thread waits on it."""
    event = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return event


def listen(address: Address, backlog: int = 16) -> socket.socket:
    """A listening TCP socket that can be re-bound at once after the previous owner died."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from exc
    sock.listen(backlog)
    return sock


def module_command(module: str, rig_path: Path) -> list[str]:
    """The command line that starts one simulated device from a rig file."""
    return [sys.executable, "-m", module, "--rig", str(rig_path)]
