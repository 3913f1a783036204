"""ISO 8583 as a scapy layer, so a pcap of the terminal<->host link reads as messages.

`Iso8583` dissects one frame of the bench's wire format (2-byte big-endian length that excludes
itself, 4-digit MTI, primary bitmap as 16 hex characters per pyiso8583 `default_ascii`, then the
rest of the body); `bind_iso8583(ports)` makes `rdpcap(...)[i].show()` use it, and
`frames_from_stream` is the pure framing step the capture's reassembler shares.
The one thing to know: a segment holds bytes, not messages. A TCP payload that does not start at a
frame boundary (a continuation of a split frame) stays `Raw`, and only a reassembled stream
(`harness.drivers.capture`) gives every message; and no rendering here, summary or `show()`, ever
prints a full card number (fields 2, 35 and 45 are masked, 52 is hidden).
"""

from __future__ import annotations

import string
import struct
from collections.abc import Iterable
from typing import Any

from scapy.fields import FieldLenField, StrFixedLenField, StrLenField
from scapy.layers.inet import TCP
from scapy.packet import Packet, Raw, bind_layers, split_layers

from harness.protocols import iso8583 as iso
from harness.protocols.cards import mask_pan

PREFIX = 2  # bytes of the length prefix
HEADER = 4 + 16  # MTI + primary bitmap (hex), the fixed start of every body
_LENGTH = struct.Struct(">H")
_HEX = frozenset(string.hexdigits.encode())
_CARD_FIELDS = ("2", "35", "45")  # PAN, track 2, track 1: masked
_SECRET_FIELDS = ("52",)  # PIN block: never shown at all


def frames_from_stream(data: bytes, max_frame: int = iso.MAX_FRAME) -> list[tuple[int, bytes]]:
    """Every complete frame at the start of `data`, as (offset of its prefix, body).

    Stops at the first incomplete frame or at a prefix that cannot start a frame (0 or longer
    than `max_frame`); `prefix_error` tells the two apart. Offsets are relative to `data`.
    """
    frames: list[tuple[int, bytes]] = []
    offset = 0
    while len(data) - offset >= PREFIX:
        (length,) = _LENGTH.unpack_from(data, offset)
        if length == 0 or length > max_frame:
            break
        end = offset + PREFIX + length
        if end > len(data):
            break
        frames.append((offset, bytes(data[offset + PREFIX : end])))
        offset = end
    return frames


def prefix_error(data: bytes, offset: int, max_frame: int = iso.MAX_FRAME) -> str | None:
    """Why the length prefix at `offset` cannot start a frame, or None (fine, or not all there)."""
    if len(data) - offset < PREFIX:
        return None
    (length,) = _LENGTH.unpack_from(data, offset)
    if length == 0:
        return "frame length 0"
    if length > max_frame:
        return f"frame of {length} bytes exceeds {max_frame}"
    return None


def looks_like_frame(data: bytes) -> bool:
    """True when `data` plausibly starts a frame: sane length, 4-digit MTI, hex bitmap."""
    if len(data) < PREFIX + HEADER:
        return False
    (length,) = _LENGTH.unpack_from(data)
    mti = data[PREFIX : PREFIX + 4]
    bitmap = data[PREFIX + 4 : PREFIX + HEADER]
    return (
        HEADER <= length <= iso.MAX_FRAME
        and mti.isdigit()
        and mti.isascii()
        and all(byte in _HEX for byte in bitmap)
    )


def masked_fields(msg: dict[str, str]) -> dict[str, str]:
    """A copy of a decoded message that is safe to show: card data masked, PIN block hidden."""
    shown = dict(msg)
    for key in _CARD_FIELDS:
        if key in shown:
            shown[key] = mask_pan(shown[key])
    for key in _SECRET_FIELDS:
        if key in shown:
            shown[key] = "*" * len(shown[key])
    return shown


def _body_of(pkt: Packet, data: bytes) -> bytes:
    return bytes(pkt.mti or b"") + bytes(pkt.bitmap or b"") + data


class _MaskedBodyField(StrLenField):
    """The fields after the primary bitmap; `show()` renders them decoded and masked."""

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        data = bytes(x or b"")
        if pkt is None:
            return f"<{len(data)} bytes>"
        try:
            msg = iso.decode(_body_of(pkt, data))
        except iso.Iso8583Error as exc:
            return f"<{len(data)} bytes, undecodable: {exc}>"
        fields = masked_fields(msg)
        fields.pop("t", None)
        return " ".join(f"{key}={value!r}" for key, value in sorted(fields.items(), key=_order))


def _order(item: tuple[str, str]) -> int:
    return int(item[0]) if item[0].isdigit() else -1


class Iso8583(Packet):
    """One length-prefixed ISO 8583 frame; anything after it in the segment is the next one."""

    name = "ISO8583"
    fields_desc = [  # noqa: RUF012 (scapy reads it as a class attribute)
        FieldLenField("length", None, length_of="body", fmt="!H", adjust=lambda _p, n: n + HEADER),
        StrFixedLenField("mti", b"0800", length=4),
        StrFixedLenField("bitmap", b"0" * 16, length=16),
        _MaskedBodyField("body", b"", length_from=lambda p: max(0, (p.length or 0) - HEADER)),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        """A payload that is not a frame start (a split frame's tail) stays Raw."""
        if _pkt is not None and not looks_like_frame(bytes(_pkt)):
            return Raw
        return cls

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return Iso8583  # dispatch_hook turns a non-frame remainder into Raw

    @property
    def complete(self) -> bool:
        """False when the segment ended before the frame did (the rest is in a later segment)."""
        return len(bytes(self.body or b"")) + HEADER >= (self.length or 0)

    def message(self) -> dict[str, str]:
        """The decoded fields, full card number included: keep in memory, show `safe_summary`."""
        return iso.decode(_body_of(self, bytes(self.body or b"")))

    def mysummary(self) -> tuple[str, list[type[Packet]]]:  # type: ignore[override]
        """MTI, STAN, amount, response code, TID, masked card; every frame and the TCP ports
        of the segment are shown (scapy otherwise keeps only the innermost layer's summary)."""
        return self.safe_summary(), [Iso8583, TCP]

    def safe_summary(self) -> str:
        """This frame alone, log-safe."""
        mti = bytes(self.mti or b"").decode("ascii", "replace")
        if not self.complete:
            seen = len(bytes(self.body or b"")) + HEADER
            return f"ISO8583 {mti} (first {seen} of {self.length} bytes)"
        try:
            return f"ISO8583 {iso.summary(self.message())}"
        except iso.Iso8583Error as exc:
            return f"ISO8583 {mti} undecodable: {exc}"


def bind_iso8583(ports: Iterable[int]) -> None:
    """Dissect TCP payloads to or from `ports` as ISO 8583 (for rdpcap / show / Wireshark-like
    reading). Scapy's layer bindings are process-wide: pair with `unbind_iso8583`."""
    for port in ports:
        bind_layers(TCP, Iso8583, sport=port)
        bind_layers(TCP, Iso8583, dport=port)


def unbind_iso8583(ports: Iterable[int]) -> None:
    """Undo `bind_iso8583` for `ports`."""
    for port in ports:
        split_layers(TCP, Iso8583, sport=port)
        split_layers(TCP, Iso8583, dport=port)
