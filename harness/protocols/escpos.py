"""ESC/POS: an incremental decoder, the status bytes a printer answers, and a receipt builder.

Pure codec, no I/O: the simulated printer, the printer tap and the oracle all decode with the
same `EscPosDecoder`. The one thing to know: the decoder is a byte-exact state machine that
keeps incomplete commands (and an incomplete GB18030 character) buffered across `feed()` calls,
so any chunking of a stream gives the same events; every command's argument bytes (raster data
included) are skipped exactly, never guessed, so text after a graphic still decodes.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

PaperState = Literal["ok", "near_end", "out"]
Align = Literal["left", "center", "right"]

ESC = 0x1B
GS = 0x1D
FS = 0x1C
DLE = 0x10
LF = 0x0A
CR = 0x0D
HT = 0x09
VT = 0x0B
FF = 0x0C

# ESC t n -> single-byte code page used outside Chinese mode (others fall back to CP437).
CODE_PAGES: dict[int, str] = {
    0: "cp437",
    2: "cp850",
    3: "cp860",
    4: "cp863",
    5: "cp865",
    16: "cp1252",
    17: "cp866",
    19: "cp858",
}


class EscPosError(ValueError):
    """A strict decoder met a command it does not know; `offset` is its first byte's position."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(f"offset {offset}: {message}")
        self.offset = offset


# -- events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Init:
    """ESC @: reset modes; `discarded` is unterminated text the reset threw away (not printed)."""

    discarded: str = ""


@dataclass(frozen=True)
class TextLine:
    """One printed line (ended by LF, or flushed by a cut / print-and-feed command)."""

    text: str


@dataclass(frozen=True)
class Cut:
    partial: bool = False


@dataclass(frozen=True)
class Feed:
    """ESC d n: print the buffer and feed n lines."""

    lines: int


@dataclass(frozen=True)
class RealtimeStatus:
    """DLE EOT n: answered at once, even offline."""

    n: int


@dataclass(frozen=True)
class RealtimeRecovery:
    """DLE ENQ n: 1 = recover and restart, 2 = recover after clearing the buffers."""

    n: int


@dataclass(frozen=True)
class AutoStatusBack:
    """GS a n: enable (n != 0) or disable Automatic Status Back for this link."""

    mask: int


@dataclass(frozen=True)
class TransmitStatus:
    """GS r n: processed in order, so its answer proves everything before it was printed."""

    n: int


@dataclass(frozen=True)
class Unknown:
    """Bytes the decoder does not understand (non-strict mode), reported and skipped."""

    data: bytes
    offset: int = 0


Event = (
    Init
    | TextLine
    | Cut
    | Feed
    | RealtimeStatus
    | RealtimeRecovery
    | AutoStatusBack
    | TransmitStatus
    | Unknown
)

# -- command tables -----------------------------------------------------------------------------
# Formatting / mode commands with a fixed number of argument bytes: parsed and ignored.
_ESC_FIXED: dict[int, int] = {
    ord("!"): 1,  # print mode
    ord(" "): 1,  # right-side character spacing
    ord("$"): 2,  # absolute position
    ord("%"): 1,  # user-defined character set on/off
    ord("+"): 1,  # line spacing n/360 inch
    ord("-"): 1,  # underline
    ord("2"): 0,  # default line spacing
    ord("3"): 1,  # line spacing
    ord("<"): 0,  # return home
    ord("="): 1,  # select peripheral device
    ord("?"): 1,  # cancel user-defined character
    ord("A"): 1,  # line spacing n/60 inch
    ord("B"): 2,  # buzzer n t
    ord("E"): 1,  # emphasized (bold)
    ord("G"): 1,  # double-strike
    ord("L"): 0,  # page mode
    ord("M"): 1,  # character font
    ord("R"): 1,  # international character set
    ord("S"): 0,  # standard mode
    ord("T"): 1,  # print direction in page mode
    ord("U"): 1,  # unidirectional printing
    ord("V"): 1,  # 90 degree rotation
    ord("W"): 8,  # print area in page mode
    ord("\\"): 2,  # relative position
    ord("a"): 1,  # justification
    ord("c"): 2,  # ESC c 3/4/5 n: paper sensors, panel buttons
    ord("e"): 1,  # print and reverse feed n lines
    ord("p"): 3,  # drawer kick pulse m t1 t2
    ord("r"): 1,  # print colour
    ord("{"): 1,  # upside-down
}
_GS_FIXED: dict[int, int] = {
    ord("!"): 1,  # character size
    ord("$"): 2,  # absolute vertical position (page mode)
    ord("/"): 1,  # print downloaded bit image
    ord(":"): 0,  # start/end macro definition
    ord("B"): 1,  # white/black reverse
    ord("H"): 1,  # HRI position
    ord("L"): 2,  # left margin nL nH
    ord("P"): 2,  # motion units
    ord("T"): 1,  # print position to line start
    ord("W"): 2,  # print area width nL nH
    ord("\\"): 2,  # relative vertical position
    ord("^"): 3,  # execute macro
    ord("b"): 1,  # smoothing
    ord("f"): 1,  # HRI font
    ord("h"): 1,  # barcode height
    ord("w"): 1,  # barcode width
}
_FS_FIXED: dict[int, int] = {
    ord("!"): 1,  # Kanji print mode
    ord("-"): 1,  # Kanji underline
    ord("C"): 1,  # Kanji code system
    ord("S"): 2,  # Kanji spacing
    ord("W"): 1,  # Kanji quadruple size
    ord("p"): 2,  # print NV bit image n m
}
_CUT_MODES_FULL = frozenset({0, 48})
_CUT_MODES_PARTIAL = frozenset({1, 49})
_CUT_FEED_FULL = frozenset({65, 97, 103})
_CUT_FEED_PARTIAL = frozenset({66, 98, 104})
_DC4_LENGTHS = {1: 5, 2: 5, 7: 4, 8: 10}  # DLE DC4 fn ... total lengths (pulse, power-off, ...)


def _le(data: bytes | bytearray, start: int, count: int) -> int:
    return int.from_bytes(data[start : start + count], "little")


class _Incomplete(Exception):
    """The command at the head of the buffer needs more bytes."""


class _NotCommand(Exception):
    """The bytes at the head of the buffer are not a command this decoder knows."""


class EscPosDecoder:
    """Turns an ESC/POS byte stream into events, one `feed()` chunk at a time.

    `chinese_mode` is the power-on state (restored by ESC @): many Chinese-firmware printers boot
    in Chinese mode, so raw GB18030 (what python-escpos sends for Chinese) prints correctly.
    """

    def __init__(self, strict: bool = False, chinese_mode: bool = True) -> None:
        self.strict = strict
        self.power_on_chinese = chinese_mode
        self.chinese = chinese_mode
        self.code_page = 0
        self._buf = bytearray()
        self._offset = 0  # stream offset of self._buf[0]
        self._text: list[str] = []
        self._text_codec = self._new_text_codec()

    @property
    def offset(self) -> int:
        """Bytes consumed so far (everything before the buffered incomplete tail)."""
        return self._offset

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete command still waiting for the rest."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        return list(self.iter_feed(data))

    def iter_feed(self, data: bytes) -> Iterator[Event]:
        """Like feed(), but yields each event as soon as it is parsed.

        A printer acting on a real-time command (DLE ENQ 2 clears buffered text) must see it
        before the bytes that follow it are decoded; consume the iterator fully.
        """
        self._buf += data
        while self._buf:
            try:
                consumed, events = self._step()
            except _Incomplete:
                return
            del self._buf[:consumed]
            self._offset += consumed
            yield from events

    def discard_text(self) -> str:
        """Drop text received but not yet ended by LF (the printer cleared its buffers)."""
        self._flush_codec()
        text = "".join(self._text)
        self._text.clear()
        return text

    # -- internals ---------------------------------------------------------------------------
    def _new_text_codec(self) -> codecs.IncrementalDecoder:
        name = "gb18030" if self.chinese else CODE_PAGES.get(self.code_page, "cp437")
        return codecs.getincrementaldecoder(name)(errors="replace")

    def _flush_codec(self) -> None:
        tail = self._text_codec.decode(b"", final=True)
        if tail:
            self._text.append(tail)

    def _switch_text_mode(
        self, *, chinese: bool | None = None, code_page: int | None = None
    ) -> None:
        self._flush_codec()
        if chinese is not None:
            self.chinese = chinese
        if code_page is not None:
            self.code_page = code_page
        self._text_codec = self._new_text_codec()

    def _take_line(self) -> str:
        self._flush_codec()
        text = "".join(self._text)
        self._text.clear()
        return text

    def _flush_line(self) -> list[Event]:
        """Print-and-feed commands and cuts print whatever text is pending."""
        self._flush_codec()
        if not self._text:
            return []
        return [TextLine(self._take_line())]

    def _step(self) -> tuple[int, list[Event]]:
        buf = self._buf
        first = buf[0]
        if first >= 0x20 or first == HT:
            end = 1
            while end < len(buf) and (buf[end] >= 0x20 or buf[end] == HT):
                end += 1
            self._text.append(self._text_codec.decode(bytes(buf[:end]), final=False))
            return end, []
        if first == LF:
            return 1, [TextLine(self._take_line())]
        if first in (CR, VT):
            return 1, []
        if first == FF:  # standard mode: print what is buffered (and feed to the next form)
            return 1, self._flush_line()
        try:
            if first == ESC:
                return self._esc()
            if first == GS:
                return self._gs()
            if first == FS:
                return self._fs()
            if first == DLE:
                return self._dle()
        except _NotCommand:
            return self._unknown(2)
        return self._unknown(1)

    def _need(self, count: int) -> None:
        if len(self._buf) < count:
            raise _Incomplete

    def _unknown(self, length: int) -> tuple[int, list[Event]]:
        data = bytes(self._buf[:length])
        if self.strict:
            raise EscPosError(self._offset, f"unknown command {data.hex(' ')}")
        return len(data), [Unknown(data, self._offset)]

    def _esc(self) -> tuple[int, list[Event]]:
        self._need(2)
        buf = self._buf
        cmd = buf[1]
        if cmd == ord("@"):
            discarded = self._take_line()
            self._switch_text_mode(chinese=self.power_on_chinese, code_page=0)
            return 2, [Init(discarded)]
        if cmd == ord("d"):
            self._need(3)
            return 3, [*self._flush_line(), Feed(buf[2])]
        if cmd in (ord("J"), ord("K")):  # print and feed / reverse feed n dots
            self._need(3)
            return 3, self._flush_line()
        if cmd == ord("t"):
            self._need(3)
            self._switch_text_mode(code_page=buf[2])
            return 3, []
        if cmd == ord("i"):
            return 2, [*self._flush_line(), Cut(partial=False)]
        if cmd == ord("m"):
            return 2, [*self._flush_line(), Cut(partial=True)]
        if cmd == ord("*"):  # bit image m nL nH d1..dk
            self._need(5)
            dots = _le(buf, 3, 2)
            return self._skip(5 + (dots * 3 if buf[2] in (32, 33) else dots))
        if cmd == ord("D"):  # tab positions, NUL-terminated
            return self._skip_until_nul(2)
        if cmd == ord("&"):  # user-defined characters y c1 c2 [x d1..d(y*x)]...
            return self._user_chars()
        if cmd == ord("("):  # ESC ( fn pL pH data
            self._need(5)
            return self._skip(5 + _le(buf, 3, 2))
        if cmd in _ESC_FIXED:
            return self._skip(2 + _ESC_FIXED[cmd])
        raise _NotCommand

    def _gs(self) -> tuple[int, list[Event]]:
        self._need(2)
        buf = self._buf
        cmd = buf[1]
        if cmd == ord("V"):
            self._need(3)
            mode = buf[2]
            if mode in _CUT_MODES_FULL or mode in _CUT_MODES_PARTIAL:
                return 3, [*self._flush_line(), Cut(partial=mode in _CUT_MODES_PARTIAL)]
            if mode in _CUT_FEED_FULL or mode in _CUT_FEED_PARTIAL:
                self._need(4)
                return 4, [*self._flush_line(), Cut(partial=mode in _CUT_FEED_PARTIAL)]
            return self._unknown(3)
        if cmd == ord("a"):
            self._need(3)
            return 3, [AutoStatusBack(buf[2])]
        if cmd == ord("r"):
            self._need(3)
            if buf[2] in (1, 2, 49, 50):
                return 3, [TransmitStatus(buf[2])]
            return self._unknown(3)
        if cmd == ord("v"):  # GS v 0 m xL xH yL yH raster
            self._need(8)
            if buf[2] != ord("0"):
                return self._unknown(3)
            return self._skip(8 + _le(buf, 4, 2) * _le(buf, 6, 2))
        if cmd == ord("("):  # GS ( fn pL pH data: QR (k), graphics (L), ...
            self._need(5)
            return self._skip(5 + _le(buf, 3, 2))
        if cmd == ord("8"):  # GS 8 L p1 p2 p3 p4 data: large graphics
            self._need(7)
            if buf[2] != ord("L"):
                return self._unknown(3)
            return self._skip(7 + _le(buf, 3, 4))
        if cmd == ord("*"):  # GS * x y data: define downloaded bit image
            self._need(4)
            return self._skip(4 + buf[2] * buf[3] * 8)
        if cmd == ord("k"):  # barcode: m 0-6 NUL-terminated, m 65+ with a length byte
            self._need(3)
            if buf[2] <= 6:
                return self._skip_until_nul(3)
            self._need(4)
            return self._skip(4 + buf[3])
        if cmd in _GS_FIXED:
            return self._skip(2 + _GS_FIXED[cmd])
        raise _NotCommand

    def _fs(self) -> tuple[int, list[Event]]:
        self._need(2)
        cmd = self._buf[1]
        if cmd == ord("&"):
            self._switch_text_mode(chinese=True)
            return 2, []
        if cmd == ord("."):
            self._switch_text_mode(chinese=False)
            return 2, []
        if cmd == ord("("):  # FS ( fn pL pH data
            self._need(5)
            return self._skip(5 + _le(self._buf, 3, 2))
        if cmd in _FS_FIXED:
            return self._skip(2 + _FS_FIXED[cmd])
        raise _NotCommand

    def _dle(self) -> tuple[int, list[Event]]:
        self._need(2)
        buf = self._buf
        cmd = buf[1]
        if cmd == 0x04:  # DLE EOT n
            self._need(3)
            if 1 <= buf[2] <= 4:
                return 3, [RealtimeStatus(buf[2])]
            return self._unknown(3)
        if cmd == 0x05:  # DLE ENQ n
            self._need(3)
            if buf[2] <= 2:
                return 3, [RealtimeRecovery(buf[2])]
            return self._unknown(3)
        if cmd == 0x14:  # DLE DC4 fn ...
            self._need(3)
            length = _DC4_LENGTHS.get(buf[2])
            if length is None:
                return self._unknown(3)
            self._need(length)
            return self._unknown(length)
        raise _NotCommand

    def _skip(self, length: int) -> tuple[int, list[Event]]:
        self._need(length)
        return length, []

    def _skip_until_nul(self, start: int) -> tuple[int, list[Event]]:
        end = self._buf.find(0, start)
        if end < 0:
            raise _Incomplete
        return end + 1, []

    def _user_chars(self) -> tuple[int, list[Event]]:
        self._need(5)
        y, first, last = self._buf[2], self._buf[3], self._buf[4]
        pos = 5
        for _ in range(max(0, last - first + 1)):
            self._need(pos + 1)
            pos += 1 + y * self._buf[pos]
        return self._skip(pos)


# -- status bytes -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrinterStatus:
    """Everything DLE EOT 1-4 and ASB report. `error` is DLE EOT 2 bit 6 ("error occurred")."""

    offline: bool = False
    cover_open: bool = False
    paper: PaperState = "ok"
    autocutter_error: bool = False
    unrecoverable_error: bool = False
    auto_recoverable_error: bool = False
    waiting_recovery: bool = False
    error: bool = False

    def summary(self) -> str:
        """A short human description for logs, e.g. "offline, paper out"."""
        flags = [
            name
            for name, on in (
                ("offline", self.offline),
                ("cover open", self.cover_open),
                (f"paper {self.paper.replace('_', ' ')}", self.paper != "ok"),
                ("autocutter error", self.autocutter_error),
                ("unrecoverable error", self.unrecoverable_error),
                ("auto-recoverable error", self.auto_recoverable_error),
                ("waiting for recovery", self.waiting_recovery),
            )
            if on
        ]
        return ", ".join(flags) or "ready"


@dataclass(frozen=True)
class StatusFragment:
    """What one DLE EOT n reply says; None = this n does not report that field."""

    offline: bool | None = None
    cover_open: bool | None = None
    paper: PaperState | None = None
    paper_end_stop: bool | None = None
    autocutter_error: bool | None = None
    unrecoverable_error: bool | None = None
    auto_recoverable_error: bool | None = None
    waiting_recovery: bool | None = None
    error: bool | None = None

    def apply(self, status: PrinterStatus) -> PrinterStatus:
        """Overlay the fields this reply reports onto a status (query n = 1..4, apply each)."""
        known = {
            name: value
            for name, value in vars(self).items()
            if value is not None and name != "paper_end_stop"
        }
        return replace(status, **known)


_FIXED_RT = 0x12  # bit1 and bit4 set, bit0 and bit7 clear: the DLE EOT reply signature
_FIXED_RT_MASK = 0x93


def is_realtime_status_byte(byte: int) -> bool:
    """True when `byte` has the DLE EOT reply pattern 0xx1xx10 (not ASB, GS r or XON/XOFF)."""
    return byte & _FIXED_RT_MASK == _FIXED_RT


def realtime_status_byte(n: int, status: PrinterStatus) -> int:
    """The one-byte answer to DLE EOT n (n = 1..4); a healthy idle printer answers 0x12."""
    bits = _FIXED_RT
    if n == 1:
        bits |= (status.offline << 3) | (status.waiting_recovery << 5)
    elif n == 2:
        bits |= (status.cover_open << 2) | ((status.paper == "out") << 5) | (status.error << 6)
    elif n == 3:
        bits |= (
            (status.autocutter_error << 3)
            | (status.unrecoverable_error << 5)
            | (status.auto_recoverable_error << 6)
        )
    elif n == 4:
        if status.paper == "near_end":
            bits |= 0x0C
        elif status.paper == "out":
            bits |= 0x60
    else:
        raise ValueError(f"DLE EOT n must be 1..4, got {n}")
    return bits


def decode_realtime_status(n: int, byte: int) -> StatusFragment:
    """Read a DLE EOT n reply; raises ValueError if the byte is not a DLE EOT reply."""
    if not is_realtime_status_byte(byte):
        raise ValueError(f"0x{byte:02X} is not a DLE EOT reply (pattern 0xx1xx10)")

    def bit(number: int) -> bool:
        return bool(byte & (1 << number))

    if n == 1:
        return StatusFragment(offline=bit(3), waiting_recovery=bit(5))
    if n == 2:
        return StatusFragment(cover_open=bit(2), paper_end_stop=bit(5), error=bit(6))
    if n == 3:
        return StatusFragment(
            autocutter_error=bit(3), unrecoverable_error=bit(5), auto_recoverable_error=bit(6)
        )
    if n == 4:
        paper: PaperState = "out" if bit(5) or bit(6) else "near_end" if bit(2) or bit(3) else "ok"
        return StatusFragment(paper=paper)
    raise ValueError(f"DLE EOT n must be 1..4, got {n}")


def asb_status_bytes(status: PrinterStatus) -> bytes:
    """The 4-byte Automatic Status Back message; a healthy printer sends 10 00 00 00."""
    first = 0x10 | (status.offline << 3) | (status.cover_open << 5)
    second = (
        (status.autocutter_error << 3)
        | (status.unrecoverable_error << 5)
        | (status.auto_recoverable_error << 6)
    )
    third = paper_sensor_byte(status)
    return bytes((first, second, third, 0x00))


def decode_asb(data: bytes) -> StatusFragment:
    """Read a 4-byte ASB message (first byte pattern 0xx1xx00)."""
    if len(data) != 4 or data[0] & 0x93 != 0x10:
        raise ValueError(f"{data.hex(' ')} is not a 4-byte ASB message")
    paper: PaperState = "out" if data[2] & 0x0C else "near_end" if data[2] & 0x03 else "ok"
    return StatusFragment(
        offline=bool(data[0] & 0x08),
        cover_open=bool(data[0] & 0x20),
        autocutter_error=bool(data[1] & 0x08),
        unrecoverable_error=bool(data[1] & 0x20),
        auto_recoverable_error=bool(data[1] & 0x40),
        paper=paper,
    )


def paper_sensor_byte(status: PrinterStatus) -> int:
    """GS r 1 answer: bits 0-1 roll near end, bits 2-3 roll paper end (0x00 when paper is ok)."""
    return {"ok": 0x00, "near_end": 0x03, "out": 0x0C}[status.paper]


# -- building receipts --------------------------------------------------------------------------
_ALIGN = {"left": 0, "center": 1, "right": 2}


class ReceiptBuilder:
    """The bytes firmware sends to print a receipt; every method returns the builder.

    Non-ASCII lines are wrapped in FS & ... FS . (GB18030), so they print on a printer in either
    mode; ASCII lines go plain.
    """

    def __init__(self) -> None:
        self._out = bytearray()

    def init(self) -> ReceiptBuilder:
        self._out += b"\x1b@"
        return self

    def align(self, align: Align) -> ReceiptBuilder:
        self._out += bytes((ESC, ord("a"), _ALIGN[align]))
        return self

    def bold(self, on: bool = True) -> ReceiptBuilder:
        self._out += bytes((ESC, ord("E"), int(on)))
        return self

    def line(self, text: str = "") -> ReceiptBuilder:
        if any(ord(char) < 0x20 for char in text):
            raise ValueError(f"a receipt line cannot hold control characters: {text!r}")
        if text.isascii():
            self._out += text.encode("ascii")
        else:
            self._out += b"\x1c&" + text.encode("gb18030") + b"\x1c."
        self._out += b"\n"
        return self

    def feed(self, lines: int) -> ReceiptBuilder:
        if not 0 <= lines <= 255:
            raise ValueError(f"feed takes 0..255 lines, got {lines}")
        self._out += bytes((ESC, ord("d"), lines))
        return self

    def cut(self, partial: bool = False) -> ReceiptBuilder:
        self._out += bytes((GS, ord("V"), 1 if partial else 0))
        return self

    def barrier(self) -> ReceiptBuilder:
        """GS r 1: its answer arrives only after everything before it has printed."""
        self._out += b"\x1dr\x01"
        return self

    def build(self) -> bytes:
        return bytes(self._out)


# -- whole streams ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodedReceipt:
    """The text lines sent between two cuts; complete=False when no cut followed them."""

    index: int
    lines: tuple[str, ...]
    complete: bool
    partial_cut: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def decode_receipts(data: bytes, *, chinese_mode: bool = True) -> list[DecodedReceipt]:
    """Split a captured byte stream into receipts at cuts (cuts with no lines are skipped)."""
    decoder = EscPosDecoder(chinese_mode=chinese_mode)
    events = decoder.feed(data)
    leftover = decoder.discard_text()
    if leftover:
        events.append(TextLine(leftover))
    receipts: list[DecodedReceipt] = []
    lines: list[str] = []
    for event in events:
        if isinstance(event, TextLine):
            lines.append(event.text)
        elif isinstance(event, Cut) and lines:
            receipts.append(DecodedReceipt(len(receipts), tuple(lines), True, event.partial))
            lines = []
    if lines:
        receipts.append(DecodedReceipt(len(receipts), tuple(lines), False))
    return receipts
