"""TCP ports for derived simulated rigs that nobody else is handed at the same time.

A port from `bind(("", 0))` comes from the kernel's ephemeral range and is free again the moment
the probe socket closes: any outgoing connection may take it as its source port before the
simulated device binds it, and two processes deriving rigs at once (pytest-xdist workers) may be
handed the same one. Both were seen as a device that could not start. So ports come from below
the ephemeral range, in blocks of `BLOCK` consecutive ports, and a process owns a block while it
holds an advisory lock on the block's claim file: the claim ends with the process (no stale
claims), and no two live processes ever hand out the same port.
"""

from __future__ import annotations

import contextlib
import random
import socket
import tempfile
import threading
from pathlib import Path

from harness.claims import try_claim

BLOCK = 16
LOWEST = 21000  # above every documented port of the shipped sim rig (the highest is 20007)
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
CLAIMS = Path(tempfile.gettempdir()) / "pos-hil-ports"

_lock = threading.Lock()
_claims: list[int] = []  # open fds whose locks are this process's blocks (held until exit)
_next: list[int] = []  # ports of the current block not handed out yet


def port_range() -> range:
    """Ports outside the kernel's ephemeral range: below it, else above it, else (a kernel
    whose ephemeral range covers nearly everything) any unprivileged port above LOWEST."""
    low, high = 32768, 60999
    with contextlib.suppress(OSError, ValueError):
        low, high = (int(v) for v in EPHEMERAL_RANGE.read_text().split())
    for candidate in (range(LOWEST, low), range(max(high + 1, LOWEST), 65536)):
        if len(candidate) >= 64 * BLOCK:
            return candidate
    return range(LOWEST, 65536)


def free_port() -> int:
    """A port no live process was handed by this function, and bindable right now."""
    with _lock:
        while True:
            if not _next:
                _next.extend(_claim_block())
            port = _next.pop(0)
            if _bindable(port):
                return port


def _claim_block() -> range:
    ports = port_range()
    blocks = len(ports) // BLOCK
    CLAIMS.mkdir(exist_ok=True)
    with contextlib.suppress(PermissionError):  # only the creator may widen it; others share it
        CLAIMS.chmod(0o1777)
    first = random.randrange(blocks)
    for step in range(blocks):
        start = ports.start + ((first + step) % blocks) * BLOCK
        try:
            fd = try_claim(CLAIMS / f"{start}.lock", 0o666)
        except PermissionError:
            continue  # another user's claim file
        if fd is not None:
            _claims.append(fd)
            return range(start, start + BLOCK)
    raise RuntimeError(
        f"every block of ports in {ports.start}-{ports.stop - 1} is claimed by a live process "
        f"(claims in {CLAIMS}): too many simulated rigs at once"
    )


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
