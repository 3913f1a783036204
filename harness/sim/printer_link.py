"""The simulated terminal's side of its receipt printer: ESC/POS over TCP with status checks.

A receipt counts as printed only when the printer answers the GS r 1 barrier that follows the
cut: the printer executes it in order, so the answer proves every byte before it was printed.
Replies are told apart by bit 4 (set in DLE EOT replies, clear in GS r replies), so a late barrier
answer and a status query can share one connection.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from dataclasses import dataclass

from harness.rig import Address

log = logging.getLogger(__name__)

DLE_EOT = b"\x10\x04"
DLE_ENQ_CLEAR = b"\x10\x05\x02"  # recover after clearing the receive and print buffers


@dataclass(frozen=True)
class PrinterHealth:
    reachable: bool
    offline: bool = False
    paper_out: bool = False
    cover_open: bool = False
    cutter_error: bool = False
    unrecoverable: bool = False

    @property
    def ready(self) -> bool:
        return self.reachable and not self.offline

    def __str__(self) -> str:
        if not self.reachable:
            return "unreachable"
        flags = [
            name
            for name, on in (
                ("offline", self.offline),
                ("paper out", self.paper_out),
                ("cover open", self.cover_open),
                ("cutter error", self.cutter_error),
                ("unrecoverable", self.unrecoverable),
            )
            if on
        ]
        return ", ".join(flags) or "ready"


class PrinterLink:
    """One persistent connection to the printer, reopened after the printer lost power."""

    def __init__(self, address: Address, timeout_s: float = 1.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self.barrier_pending = False  # a receipt was sent whose barrier answer has not come
        self.lost = False  # the connection died with a receipt outstanding: its bytes are gone

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.barrier_pending:
            self.lost = True
        self.barrier_pending = False

    def _connect(self) -> socket.socket | None:
        if self._sock is None:
            try:
                self._sock = socket.create_connection(
                    (self.address.host, self.address.port), timeout=self.timeout_s
                )
            except OSError as exc:
                log.info("printer %s unreachable: %s", self.address, exc)
                return None
            self.barrier_pending = False
        return self._sock

    def _read_byte(self, want_status: bool, deadline: float) -> int | None:
        """Next reply byte of the wanted kind; barrier answers seen meanwhile are recorded."""
        sock = self._sock
        while sock is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([sock], [], [], remaining)
            if not ready:
                return None
            try:
                data = sock.recv(1)
            except OSError:
                data = b""
            if not data:
                log.info("printer connection lost")
                self.close()
                return None
            byte = data[0]
            is_status = bool(byte & 0x10)
            if not is_status:
                self.barrier_pending = False  # a GS r answer: the pending receipt is out
                if not want_status:
                    return byte
            elif want_status:
                return byte
        return None

    def health(self) -> PrinterHealth:
        sock = self._connect()
        if sock is None:
            return PrinterHealth(reachable=False)
        replies: dict[int, int] = {}
        for n in (1, 2, 3, 4):
            try:
                sock.sendall(DLE_EOT + bytes([n]))
            except OSError:
                self.close()
                return PrinterHealth(reachable=False)
            byte = self._read_byte(True, time.monotonic() + self.timeout_s)
            if byte is None:
                self.close()
                return PrinterHealth(reachable=False)
            replies[n] = byte
        return PrinterHealth(
            reachable=True,
            offline=bool(replies[1] & 0x08),
            cover_open=bool(replies[2] & 0x04),
            paper_out=bool(replies[4] & 0x60 == 0x60) or bool(replies[2] & 0x20),
            cutter_error=bool(replies[3] & 0x08),
            unrecoverable=bool(replies[3] & 0x20),
        )

    def settle(self) -> str:
        """What became of the outstanding receipt: "confirmed", "lost", "pending" or "none"."""
        if self.lost:
            self.lost = False
            return "lost"
        if not self.barrier_pending:
            return "none"
        self._read_byte(False, time.monotonic())
        if self.lost:
            self.lost = False
            return "lost"
        return "pending" if self.barrier_pending else "confirmed"

    def send_receipt(self, data: bytes, wait_s: float) -> bool:
        """Send a receipt that ends with GS r 1; True when the printer confirmed it printed."""
        sock = self._connect()
        if sock is None:
            return False
        try:
            sock.sendall(data)
        except OSError:
            self.close()
            return False
        self.barrier_pending = True
        self.lost = False
        self._read_byte(False, time.monotonic() + wait_s)
        return not self.barrier_pending and not self.lost

    def clear_and_recover(self) -> None:
        """Drop what the printer still holds (a jammed receipt) and leave the error state."""
        sock = self._connect()
        if sock is None:
            return
        try:
            sock.sendall(DLE_ENQ_CLEAR)
        except OSError:
            self.close()
        self.barrier_pending = False
        self.lost = False
