"""The simulated terminal's ECR port: ZVT APDUs over TCP (raw) or over a serial line (framed).

On the serial line every APDU travels as DLE STX ... DLE ETX CRC and is answered with a link
ACK (06) or NAK (15); a frame with a bad CRC is NAK'ed and the sender retransmits. Above that,
both transports look the same to the firmware: send an APDU, receive the next one or time out.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from typing import Protocol

from harness.protocols import zvt

log = logging.getLogger(__name__)

LINK_ACK = b"\x06"
LINK_NAK = b"\x15"


class LinkClosed(Exception):
    """The ECR went away (socket closed, serial line not answering)."""


class EcrLink(Protocol):
    name: str
    pending: list[zvt.Apdu]  # commands that arrived while the terminal awaited an ACK

    def send(self, apdu: zvt.Apdu) -> None: ...

    def recv(self, timeout: float) -> zvt.Apdu | None: ...

    def close(self) -> None: ...


class TcpEcrLink:
    """ZVT over TCP: raw APDUs, no framing."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.decoder = zvt.ApduDecoder()
        self.queue: list[zvt.Apdu] = []
        self.pending: list[zvt.Apdu] = []

    def send(self, apdu: zvt.Apdu) -> None:
        try:
            self.sock.sendall(apdu.encode())
        except OSError as exc:
            raise LinkClosed(str(exc)) from exc

    def recv(self, timeout: float) -> zvt.Apdu | None:
        deadline = time.monotonic() + timeout
        while not self.queue:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                return None
            try:
                data = self.sock.recv(4096)
            except OSError as exc:
                raise LinkClosed(str(exc)) from exc
            if not data:
                raise LinkClosed("ECR closed the connection")
            try:
                self.queue.extend(self.decoder.feed(data))
            except zvt.ZvtError as exc:
                raise LinkClosed(f"garbage from the ECR: {exc}") from exc
        return self.queue.pop(0)

    def close(self) -> None:
        self.sock.close()


class SerialEcrLink:
    """ZVT over RS-232 (here the master side of a pty): DLE STX framing, CRC, ACK/NAK."""

    retransmissions = 3
    link_ack_s = 1.0

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.decoder = zvt.SerialFrameDecoder()
        self.frames: list[bytes] = []
        self.link_replies: list[bytes] = []
        self.pending: list[zvt.Apdu] = []

    def _read(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([self.fd], [], [], remaining)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 4096)
        except OSError as exc:  # EIO: nobody holds the other end open
            raise LinkClosed(str(exc)) from exc
        for event in self.decoder.feed(data):
            if isinstance(event, zvt.Frame):
                os.write(self.fd, LINK_ACK)
                self.frames.append(event.apdu)
            elif isinstance(event, zvt.BadFrame):
                if event.in_frame:  # a damaged frame is NAK'ed; line noise is just dropped
                    log.info("serial frame rejected (%s): NAK", event.reason)
                    os.write(self.fd, LINK_NAK)
            elif isinstance(event, zvt.LinkAck):
                self.link_replies.append(LINK_ACK)
            elif isinstance(event, zvt.LinkNak):
                self.link_replies.append(LINK_NAK)
        return True

    def drain(self) -> None:
        """Forget bytes that arrived while the terminal was off (a UART starts empty)."""
        while select.select([self.fd], [], [], 0)[0]:
            try:
                if not os.read(self.fd, 4096):
                    break
            except OSError:
                break

    def send(self, apdu: zvt.Apdu) -> None:
        data = zvt.frame(apdu.encode())
        for _attempt in range(1 + self.retransmissions):
            self.link_replies.clear()
            os.write(self.fd, data)
            deadline = time.monotonic() + self.link_ack_s
            while not self.link_replies and self._read(deadline):
                pass
            if self.link_replies and self.link_replies[0] == LINK_ACK:
                return
        raise LinkClosed("the ECR did not acknowledge a frame on the serial line")

    def recv(self, timeout: float) -> zvt.Apdu | None:
        deadline = time.monotonic() + timeout
        while not self.frames:
            if not self._read(deadline):
                return None
        try:
            return zvt.decode_apdu(self.frames.pop(0))
        except zvt.ZvtError as exc:
            log.info("undecodable APDU from the ECR: %s", exc)
            return None

    def close(self) -> None:
        """The pty belongs to the launcher (it is the cable); nothing to close here."""
