"""Claims a process holds until it exits: one owner at a time for a shared resource (a block of
ports, a rig's state dir), released by the kernel however the process ends (no stale claims)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_claim(path: Path, mode: int = 0o644) -> int | None:
    """An fd holding an exclusive advisory lock on `path` (created if missing), or None while
    another open file holds it. The claim lasts as long as the fd stays open."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
