"""ZVT (the German ECR <-> payment terminal protocol): APDUs, BMPs, serial framing, messages.

A pure codec shared by the harness's ECR driver (`harness.drivers.terminal_zvt`) and the simulated
terminal firmware (`harness.sim.terminal`); it does no I/O. The one thing to know: both sides must
agree on the exact conversation below, and this module is where it is written down.

Wire formats
------------
- APDU: ``CLASS INSTR LEN DATA``. LEN is one byte, or ``FF`` + a 2-byte LITTLE-endian length when
  the data is 255 bytes or longer (decoding also accepts the long form for short data).
- DATA is a fixed prefix (a 3-byte BCD password for 06 00 / 05 01 / 06 20 / 06 30 / 06 50; a
  config byte and a 2-byte BCD currency for 06 00; a result code for 06 1E; an attribute for
  06 D1) followed by BMPs: a 1-byte tag and fixed-length or LLVAR / LLLVAR data
  (LL = ``F0+d F0+d``, LLL = three such bytes, counting bytes). BMP 06 is a TLV container with a
  BER length (``<80``, ``81 xx``, ``82 xx xx``). See `BMPS` for every tag this codec knows; an
  unknown tag is a `ZvtError` naming its offset.
- Card numbers (BMP 22) are packed BCD, masked digits are the nibble ``E``, odd lengths are padded
  with ``F``. Decoding always returns the masked form (first 6, last 4): a full card number never
  leaves this codec, even when a terminal sends one.
- Text (BMP 3C, 8B, 06 D1, 06 D3 lines) is UTF-8 (ASCII is the common case).
- Serial (RS-232) framing: ``DLE STX <APDU with every 10 doubled> DLE ETX CRC-L CRC-H``; the CRC is
  CRC-16/XMODEM (poly 0x1021, init 0) over the UNSTUFFED APDU followed by ETX (03), and is not
  stuffed. The receiver answers a single unframed ``ACK 06`` or ``NAK 15``; the sender retransmits
  on NAK (up to 3 times). TCP carries raw APDUs, no framing, no link ACK.

The conversation (PT = terminal, ECR = cash register / the harness)
--------------------------------------------------------------------
The PT answers every ECR command first with ``80 00 00`` (or ``84 xx 00`` to refuse, 84 83 00 for
"refused / unknown command"). After every PT message except an ACK the ECR answers ``80 00 00``
within 5 s. Everything in [brackets] is optional.

- Registration: ECR ``06 00 <password><config byte><currency 2 BCD>[03 service byte]``; PT ACK,
  then ``06 0F [19 status byte][29 TID][49 currency]``. Config bit 08 = ECR wants intermediate
  status, 02 = ECR prints payment receipts, 04 = ECR prints admin receipts (the PT then sends its
  receipts as ``06 D3`` text blocks instead of printing them).
- Sale: ECR ``06 01 04 <amount> 49 <currency> [19 payment type] [3C order reference]``; PT ACK,
  ``04 FF <status>``* (0A insert card, 0E please wait, 04 waiting for host, 05 sending
  auto-reversal), ``04 0F`` (27 result, 04, 49, 0B trace = ISO 8583 STAN, 87 receipt no, 0C time,
  0D date, 22 masked PAN, 29 TID, 3C order reference echoed), [``06 D3``*], then ``06 0F`` when
  approved or ``06 1E <result code>`` when not (the 04 0F may be missing before a 06 1E).
- Status enquiry: ``05 01 <password>`` -> ACK, ``04 0F`` (27 terminal status, 00 = ready; 29 TID),
  ``06 0F``.
- Repeat receipt: ``06 20 <password> [0B trace]`` (no trace = the last transaction) -> ACK,
  ``04 0F`` describing that transaction as the journal says now (27 = 00 only if approved and not
  reversed; 04, 49, 0B, 87, 22, 29, 3C), [``06 D3``], ``06 0F``; or ``06 1E 83`` if there is no
  such transaction.
- Reversal: ``06 30 <password> 87 <receipt no>`` -> ACK, ``04 FF``*, ``04 0F`` (27, 87 receipt no
  of the reversal, 0B trace, 04 amount), ``06 0F``; or ``06 1E <code>`` (B4 already reversed, B5
  not possible / unknown receipt).
- End of day: ``06 50 <password>`` -> ACK, ``04 FF``*, ``04 0F`` (27: 00 = balanced with the host;
  04 total; 49; 0B; 60 single totals = groups of ``<card type 1><count 2 BCD><amount 6 BCD>``,
  card type 00 = all cards), ``06 0F``; or ``06 1E <code>`` (77 = end of day not possible).
- Abort: ECR ``06 B0`` while a sale waits for the card -> PT ACK, and the sale ends ``06 1E 6C``.

Using it
--------
Each message is a frozen dataclass with ``to_apdu()`` and ``from_apdu()``; `parse_ecr_message`
(terminal side) and `parse_pt_message` (ECR side) dispatch on CLASS INSTR; function builders
(`ack`, `status_information`, `completion`, `abort`, ... and `authorization`, `status_enquiry`,
...) return an `Apdu` with arguments in wire order. ``Apdu.encode()`` gives the TCP bytes,
``frame(apdu.encode())`` the serial frame; `ApduDecoder` and `SerialFrameDecoder` cut a received
stream back into units (a `BadFrame` with ``in_frame`` True is answered NAK, noise is not).

Result codes (BMP 27, 06 1E): 00 success; 01..63 = the host's ISO 8583 response code as its
decimal value (ISO "51" -> 0x33); 6C aborted; 64 card not readable; 76 card not on the allowlist;
77 end of day not possible; 83 function not possible; 9C please wait; A1 host does not respond;
B4 already reversed; B5 reversal not possible; CC printer not ready; FF system error.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import ClassVar, TypeAlias

from harness.protocols.cards import mask_pan

BmpValue = bytes | int | str


class ZvtError(ValueError):
    """Bytes that are not valid ZVT, or a value that cannot be encoded.

    `offset` is the byte offset of the problem within the data that was being decoded (None when
    encoding); the message always names it too.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


# --------------------------------------------------------------------------------------------
# Constants

DLE, STX, ETX, ACK, NAK = 0x10, 0x02, 0x03, 0x06, 0x15

CONFIG_ECR_PRINTS_PAYMENT = 0x02
CONFIG_ECR_PRINTS_ADMIN = 0x04
CONFIG_INTERMEDIATE_STATUS = 0x08

STATUS_WAITING_FOR_HOST = 0x04
STATUS_SENDING_AUTO_REVERSAL = 0x05
STATUS_INSERT_CARD = 0x0A
STATUS_PLEASE_WAIT = 0x0E

RECEIPT_MERCHANT = 0x01
RECEIPT_CUSTOMER = 0x02
RECEIPT_ADMIN = 0x03

TLV_PRINT_TEXTS = 0x25
TLV_TEXT_LINE = 0x07
TLV_RECEIPT_TYPE = 0x1F07

CARD_TYPE_ALL = 0x00


class ResultCode(enum.IntEnum):
    """The named ZVT result codes; 0x01..0x63 are host (ISO 8583) codes, see `iso_to_result`."""

    SUCCESS = 0x00
    CARD_NOT_READABLE = 0x64
    ABORTED = 0x6C
    PAN_NOT_ALLOWED = 0x76
    END_OF_DAY_NOT_POSSIBLE = 0x77
    FUNCTION_NOT_POSSIBLE = 0x83
    PLEASE_WAIT = 0x9C
    HOST_NO_RESPONSE = 0xA1
    ALREADY_REVERSED = 0xB4
    REVERSAL_NOT_POSSIBLE = 0xB5
    PRINTER_NOT_READY = 0xCC
    SYSTEM_ERROR = 0xFF


_RESULT_TEXT: Mapping[int, str] = MappingProxyType(
    {
        ResultCode.SUCCESS: "success",
        ResultCode.CARD_NOT_READABLE: "card not readable",
        ResultCode.ABORTED: "aborted (timeout or abort key)",
        ResultCode.PAN_NOT_ALLOWED: "card not in the allowlist",
        ResultCode.END_OF_DAY_NOT_POSSIBLE: "end of day not possible",
        ResultCode.FUNCTION_NOT_POSSIBLE: "function not possible",
        ResultCode.PLEASE_WAIT: "please wait",
        ResultCode.HOST_NO_RESPONSE: "remote station does not respond",
        ResultCode.ALREADY_REVERSED: "already reversed",
        ResultCode.REVERSAL_NOT_POSSIBLE: "reversal not possible",
        ResultCode.PRINTER_NOT_READY: "printer not ready",
        ResultCode.SYSTEM_ERROR: "system error",
    }
)

_ISO_TEXT: Mapping[int, str] = MappingProxyType(
    {
        5: "do not honour",
        12: "invalid transaction",
        14: "invalid card number",
        51: "insufficient funds",
        54: "expired card",
        55: "incorrect PIN",
        91: "issuer unavailable",
        96: "system malfunction",
    }
)


def result_text(code: int) -> str:
    """A short English text for a result code, naming the ISO code for host declines."""
    if code in _RESULT_TEXT:
        return _RESULT_TEXT[code]
    if 0x01 <= code <= 0x63:
        name = _ISO_TEXT.get(code)
        return f"declined by host: ISO {code:02d}" + (f" ({name})" if name else "")
    return f"unknown result code 0x{code:02X}"


def iso_to_result(code_str: str) -> int:
    """The ZVT result code for an ISO 8583 response code (field 39): "51" -> 0x33.

    Only two-digit numeric codes map; anything else raises ZvtError so the caller decides.
    """
    if len(code_str) != 2 or not code_str.isdigit():
        raise ZvtError(f"ISO 8583 response code {code_str!r} is not two digits")
    return int(code_str)


def result_to_iso(code: int) -> str | None:
    """The ISO 8583 response code a ZVT result code stands for, or None if it is not a host code."""
    return f"{code:02d}" if 0 <= code <= 0x63 else None


# --------------------------------------------------------------------------------------------
# BCD, passwords, BER lengths, TLV


def bcd_encode(n: int | str, nbytes: int) -> bytes:
    """`n` as packed BCD in exactly `nbytes` bytes, zero-padded on the left."""
    digits = str(n) if isinstance(n, int) else n
    if isinstance(n, int) and n < 0:
        raise ZvtError(f"BCD cannot hold a negative number ({n})")
    if not digits.isdigit() or not digits.isascii():
        raise ZvtError(f"BCD needs decimal digits, got {digits!r}")
    if len(digits) > 2 * nbytes:
        raise ZvtError(f"{digits} does not fit in {nbytes} BCD bytes")
    return bytes.fromhex(digits.zfill(2 * nbytes))


def bcd_digits(data: bytes, offset: int = 0) -> str:
    """The decimal digits of packed BCD bytes; a nibble above 9 is a ZvtError naming its offset."""
    text = data.hex()
    for index, char in enumerate(text):
        if not char.isdigit():
            raise ZvtError(
                f"BCD byte 0x{data[index // 2]:02X} at offset {offset + index // 2} "
                "has a nibble above 9",
                offset + index // 2,
            )
    return text


def bcd_decode(data: bytes, offset: int = 0) -> int:
    """Packed BCD bytes as an integer."""
    return int(bcd_digits(data, offset) or "0")


def encode_password(password: str) -> bytes:
    """A 6-digit password as 3 BCD bytes ("000000" -> 00 00 00)."""
    if len(password) != 6 or not password.isdigit():
        raise ZvtError(f"a ZVT password is 6 digits, got {len(password)} characters")
    return bcd_encode(password, 3)


def _take_password(data: bytes, what: str) -> str:
    if len(data) < 3:
        raise ZvtError(f"{what}: the 3-byte password is cut short at offset {len(data)}", len(data))
    return bcd_digits(data[:3])


def ber_length(n: int) -> bytes:
    """A BER length: one byte below 0x80, else 81 xx or 82 xx xx."""
    if n < 0:
        raise ZvtError(f"negative length {n}")
    if n < 0x80:
        return bytes([n])
    if n <= 0xFF:
        return bytes([0x81, n])
    if n <= 0xFFFF:
        return bytes([0x82, n >> 8, n & 0xFF])
    raise ZvtError(f"length {n} does not fit a 2-byte BER length")


def read_ber_length(data: bytes, offset: int) -> tuple[int, int]:
    """(length, offset after the length) for the BER length at `offset`."""
    if offset >= len(data):
        raise ZvtError(f"BER length missing at offset {offset}", offset)
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    size = first & 0x7F
    if size not in (1, 2):
        raise ZvtError(f"unsupported BER length form 0x{first:02X} at offset {offset}", offset)
    if offset + 1 + size > len(data):
        raise ZvtError(f"BER length cut short at offset {offset}", offset)
    return int.from_bytes(data[offset + 1 : offset + 1 + size], "big"), offset + 1 + size


def _tag_bytes(tag: int) -> bytes:
    if tag < 0:
        raise ZvtError(f"negative TLV tag {tag}")
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def tlv_encode(items: Iterable[tuple[int, bytes]]) -> bytes:
    """BER-TLV items (tag as an int, e.g. 0x1F07 for a two-byte tag) to bytes."""
    out = bytearray()
    for tag, value in items:
        out += _tag_bytes(tag) + ber_length(len(value)) + value
    return bytes(out)


def tlv_decode(data: bytes, offset: int = 0) -> list[tuple[int, bytes]]:
    """BER-TLV bytes to (tag, value) items; `offset` only makes error offsets absolute."""
    items: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        start = i
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            while True:
                if i >= len(data):
                    raise ZvtError(f"TLV tag cut short at offset {offset + start}", offset + start)
                tag = (tag << 8) | data[i]
                i += 1
                if not data[i - 1] & 0x80:
                    break
        try:
            length, i = read_ber_length(data, i)
        except ZvtError as exc:
            at = offset + (exc.offset or 0)
            raise ZvtError(f"TLV 0x{tag:X}: {exc} (absolute offset {at})", at) from exc
        if i + length > len(data):
            raise ZvtError(
                f"TLV 0x{tag:X} at offset {offset + start} declares {length} bytes, "
                f"{len(data) - i} left",
                offset + start,
            )
        items.append((tag, data[i : i + length]))
        i += length
    return items


# --------------------------------------------------------------------------------------------
# Card numbers


def encode_pan(pan: str) -> bytes:
    """Digits and '*' (masked, nibble E) as packed BCD, padded with F to whole bytes."""
    if not pan or not re.fullmatch(r"[0-9*]+", pan):
        raise ZvtError(f"a card number is digits and '*', got {len(pan)} characters")
    nibbles = pan.replace("*", "e")
    if len(nibbles) % 2:
        nibbles += "f"
    return bytes.fromhex(nibbles)


def decode_pan(data: bytes, offset: int = 0) -> str:
    """Packed BCD card number to text, always masked (first 6, last 4; E nibbles become '*')."""
    text = data.hex()
    if text.endswith("f"):
        text = text[:-1]
    for index, char in enumerate(text):
        if char not in "0123456789e":
            raise ZvtError(
                f"card number nibble {char.upper()} at offset {offset + index // 2}",
                offset + index // 2,
            )
    pan = text.replace("e", "*")
    return pan if "*" in pan else mask_pan(pan)


_PAN_IN_BYTES = re.compile(rb"\x22[\xF0-\xF9][\xF0-\xF9]", re.DOTALL)


def redact_pan(data: bytes) -> bytes:
    """A copy of raw bytes with any unmasked card number in a BMP 22 masked (E nibbles).

    For logs of raw traffic: it scans for ``22 Fx Fy`` followed by that many bytes of plain BCD
    digits (12 to 19 of them), so it works on APDUs, frames and garbage alike. Bytes that only
    look like a card number are masked too; a log line can only lose digits, never gain them.
    """
    out = bytearray(data)
    for match in _PAN_IN_BYTES.finditer(data):
        length = (data[match.start() + 1] & 0x0F) * 10 + (data[match.start() + 2] & 0x0F)
        start = match.end()
        body = data[start : start + length].hex()
        if len(body) != 2 * length:
            continue
        digits = body[:-1] if body.endswith("f") else body
        if not digits.isdigit() or not 12 <= len(digits) <= 19:
            continue
        masked = digits[:6] + "e" * (len(digits) - 10) + digits[-4:]
        out[start : start + length] = bytes.fromhex(masked + body[len(digits) :])
    return bytes(out)


# --------------------------------------------------------------------------------------------
# BMPs


class _Kind(enum.Enum):
    BINARY = "binary"  # fixed length, 1 byte -> int; longer -> bytes
    NUMBER = "number"  # fixed-length BCD -> int
    DIGITS = "digits"  # fixed-length BCD -> str of digits (time, date, TID)
    ASCII = "ascii"  # fixed-length text
    PAN = "pan"  # LLVAR BCD card number
    LLVAR_TEXT = "llvar text"
    LLLVAR_TEXT = "lllvar text"
    LLLVAR_BYTES = "lllvar bytes"
    TLV = "tlv"  # BER length + raw TLV content (bytes)


@dataclass(frozen=True)
class Bmp:
    """One BMP tag: its name, how its data is laid out, and its fixed length (0 if variable)."""

    tag: int
    name: str
    kind: _Kind
    length: int = 0


BMPS: Mapping[int, Bmp] = MappingProxyType(
    {
        bmp.tag: bmp
        for bmp in (
            Bmp(0x01, "timeout", _Kind.BINARY, 1),
            Bmp(0x02, "max status infos", _Kind.BINARY, 1),
            Bmp(0x03, "service byte", _Kind.BINARY, 1),
            Bmp(0x04, "amount", _Kind.NUMBER, 6),
            Bmp(0x06, "TLV container", _Kind.TLV),
            Bmp(0x0B, "trace number", _Kind.NUMBER, 3),
            Bmp(0x0C, "time", _Kind.DIGITS, 3),
            Bmp(0x0D, "date", _Kind.DIGITS, 2),
            Bmp(0x0E, "expiry date", _Kind.DIGITS, 2),
            Bmp(0x17, "card sequence number", _Kind.NUMBER, 2),
            Bmp(0x19, "payment type", _Kind.BINARY, 1),
            Bmp(0x22, "PAN", _Kind.PAN),
            Bmp(0x27, "result code", _Kind.BINARY, 1),
            Bmp(0x29, "terminal id", _Kind.DIGITS, 4),
            Bmp(0x2A, "VU number", _Kind.ASCII, 15),
            Bmp(0x37, "original trace", _Kind.NUMBER, 3),
            Bmp(0x3B, "AID", _Kind.BINARY, 8),
            Bmp(0x3C, "additional text", _Kind.LLLVAR_TEXT),
            Bmp(0x49, "currency", _Kind.NUMBER, 2),
            Bmp(0x60, "single totals", _Kind.LLLVAR_BYTES),
            Bmp(0x87, "receipt number", _Kind.NUMBER, 2),
            Bmp(0x88, "turnover record number", _Kind.NUMBER, 3),
            Bmp(0x8A, "card type", _Kind.BINARY, 1),
            Bmp(0x8B, "card name", _Kind.LLVAR_TEXT),
            Bmp(0x8C, "card type id", _Kind.BINARY, 1),
            Bmp(0xA0, "result code AS", _Kind.BINARY, 1),
            Bmp(0xBA, "AID parameter", _Kind.BINARY, 5),
        )
    }
)


def _var_prefix(n: int, digits: int) -> bytes:
    if n >= 10**digits:
        raise ZvtError(f"{n} bytes do not fit an {'L' * digits}VAR (at most {10**digits - 1})")
    return bytes(0xF0 | int(d) for d in str(n).zfill(digits))


def _read_var_prefix(data: bytes, offset: int, digits: int, tag: int) -> tuple[int, int]:
    prefix = data[offset : offset + digits]
    if len(prefix) < digits:
        raise ZvtError(
            f"BMP 0x{tag:02X}: {'L' * digits}VAR length cut short at offset {offset}", offset
        )
    n = 0
    for index, byte in enumerate(prefix):
        if byte & 0xF0 != 0xF0 or byte & 0x0F > 9:
            raise ZvtError(
                f"BMP 0x{tag:02X}: length byte 0x{byte:02X} at offset {offset + index} "
                "is not F0..F9",
                offset + index,
            )
        n = n * 10 + (byte & 0x0F)
    return n, offset + digits


def _text_bytes(value: BmpValue, tag: int) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise ZvtError(f"BMP 0x{tag:02X} takes text or bytes, got {type(value).__name__}")


def encode_bmp(tag: int, value: BmpValue) -> bytes:
    """One BMP: tag + data. ints become BCD or binary as the tag needs; str is digits or text."""
    bmp = BMPS.get(tag)
    if bmp is None:
        raise ZvtError(f"unknown BMP tag 0x{tag:02X}")
    if isinstance(value, bool):
        raise ZvtError(f"BMP 0x{tag:02X} ({bmp.name}) does not take a bool")
    kind = bmp.kind
    body: bytes
    if kind in (_Kind.NUMBER, _Kind.DIGITS):
        body = value if isinstance(value, bytes) else bcd_encode(value, bmp.length)
    elif kind is _Kind.BINARY:
        if isinstance(value, int):
            if bmp.length != 1 or not 0 <= value <= 0xFF:
                raise ZvtError(f"BMP 0x{tag:02X} ({bmp.name}) needs {bmp.length} bytes")
            body = bytes([value])
        elif isinstance(value, bytes):
            body = value
        else:
            raise ZvtError(f"BMP 0x{tag:02X} ({bmp.name}) takes an int or bytes")
    elif kind is _Kind.ASCII:
        body = _text_bytes(value, tag)
        if len(body) < bmp.length:
            body = body.ljust(bmp.length, b" ")
    elif kind is _Kind.PAN:
        pan = encode_pan(value) if isinstance(value, str) else _text_bytes(value, tag)
        return bytes([tag]) + _var_prefix(len(pan), 2) + pan
    elif kind is _Kind.LLVAR_TEXT:
        text = _text_bytes(value, tag)
        return bytes([tag]) + _var_prefix(len(text), 2) + text
    elif kind in (_Kind.LLLVAR_TEXT, _Kind.LLLVAR_BYTES):
        text = _text_bytes(value, tag)
        return bytes([tag]) + _var_prefix(len(text), 3) + text
    else:  # TLV
        if not isinstance(value, bytes):
            raise ZvtError(f"BMP 0x{tag:02X} ({bmp.name}) takes the TLV content as bytes")
        return bytes([tag]) + ber_length(len(value)) + value
    if len(body) != bmp.length:
        raise ZvtError(f"BMP 0x{tag:02X} ({bmp.name}) is {bmp.length} bytes, got {len(body)} bytes")
    return bytes([tag]) + body


def encode_bmps(items: Iterable[tuple[int, BmpValue]]) -> bytes:
    """BMPs in the given order."""
    return b"".join(encode_bmp(tag, value) for tag, value in items)


def decode_bmps(data: bytes, offset: int = 0) -> dict[int, BmpValue]:
    """Decode a run of BMPs to {tag: value}.

    Values: int for 1-byte binary and BCD numbers (amount, trace, currency, receipt no); str for
    BCD digit strings (0C time "hhmmss", 0D date "MMDD", 0E expiry "YYMM", 29 TID), the masked
    card number and text; bytes for the rest (06 TLV content, 3B, BA, 60). `offset` is where
    `data` starts inside the APDU data, so error offsets point into the APDU data. An unknown or
    repeated tag, or data cut short, is a ZvtError naming the offset.
    """
    values: dict[int, BmpValue] = {}
    i = 0
    while i < len(data):
        at = offset + i
        tag = data[i]
        bmp = BMPS.get(tag)
        if bmp is None:
            raise ZvtError(f"unknown BMP tag 0x{tag:02X} at offset {at}", at)
        if tag in values:
            raise ZvtError(f"BMP 0x{tag:02X} ({bmp.name}) repeated at offset {at}", at)
        i += 1
        kind = bmp.kind
        if kind is _Kind.TLV:
            length, j = read_ber_length(data, i)
        elif kind in (_Kind.PAN, _Kind.LLVAR_TEXT):
            length, j = _read_var_prefix(data, i, 2, tag)
        elif kind in (_Kind.LLLVAR_TEXT, _Kind.LLLVAR_BYTES):
            length, j = _read_var_prefix(data, i, 3, tag)
        else:
            length, j = bmp.length, i
        body = data[j : j + length]
        if len(body) < length:
            raise ZvtError(
                f"BMP 0x{tag:02X} ({bmp.name}) at offset {at} needs {length} bytes, "
                f"{len(body)} left",
                at,
            )
        values[tag] = _decode_value(bmp, body, offset + j)
        i = j + length
    return values


def _decode_value(bmp: Bmp, body: bytes, at: int) -> BmpValue:
    kind = bmp.kind
    if kind is _Kind.NUMBER:
        return bcd_decode(body, at)
    if kind is _Kind.DIGITS:
        return bcd_digits(body, at)
    if kind is _Kind.BINARY:
        return body[0] if bmp.length == 1 else body
    if kind is _Kind.PAN:
        return decode_pan(body, at)
    if kind in (_Kind.ASCII, _Kind.LLVAR_TEXT, _Kind.LLLVAR_TEXT):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ZvtError(
                f"BMP 0x{bmp.tag:02X} ({bmp.name}) at offset {at + exc.start} is not UTF-8",
                at + exc.start,
            ) from exc
    return body


def _int(values: Mapping[int, BmpValue], tag: int) -> int | None:
    value = values.get(tag)
    return value if isinstance(value, int) else None


def _str(values: Mapping[int, BmpValue], tag: int) -> str | None:
    value = values.get(tag)
    return value if isinstance(value, str) else None


def _bytes(values: Mapping[int, BmpValue], tag: int) -> bytes | None:
    value = values.get(tag)
    return value if isinstance(value, bytes) else None


# --------------------------------------------------------------------------------------------
# End-of-day single totals (BMP 60)


@dataclass(frozen=True)
class TotalsGroup:
    """One group of BMP 60: a card type (00 = all cards), a count and an amount (minor units)."""

    card_type: int
    count: int
    amount: int


def encode_totals(groups: Iterable[TotalsGroup]) -> bytes:
    """The content of BMP 60: ``<card type 1><count 2 BCD><amount 6 BCD>`` per group."""
    out = bytearray()
    for group in groups:
        if not 0 <= group.card_type <= 0xFF:
            raise ZvtError(f"card type {group.card_type} is not one byte")
        out += bytes([group.card_type]) + bcd_encode(group.count, 2) + bcd_encode(group.amount, 6)
    return bytes(out)


def decode_totals(data: bytes, offset: int = 0) -> tuple[TotalsGroup, ...]:
    if len(data) % 9:
        raise ZvtError(
            f"single totals at offset {offset} are {len(data)} bytes, not a multiple of 9", offset
        )
    return tuple(
        TotalsGroup(
            data[i],
            bcd_decode(data[i + 1 : i + 3], offset + i + 1),
            bcd_decode(data[i + 3 : i + 9], offset + i + 3),
        )
        for i in range(0, len(data), 9)
    )


# --------------------------------------------------------------------------------------------
# APDUs


@dataclass(frozen=True)
class Apdu:
    """One ZVT APDU: CLASS INSTR and the data (LEN is derived)."""

    cls: int
    instr: int
    data: bytes = b""

    def encode(self) -> bytes:
        if not (0 <= self.cls <= 0xFF and 0 <= self.instr <= 0xFF):
            raise ZvtError(f"CLASS/INSTR must be bytes, got {self.cls:#x} {self.instr:#x}")
        n = len(self.data)
        if n < 0xFF:
            return bytes([self.cls, self.instr, n]) + self.data
        if n <= 0xFFFF:
            return bytes([self.cls, self.instr, 0xFF, n & 0xFF, n >> 8]) + self.data
        raise ZvtError(f"APDU data of {n} bytes is longer than 65535")

    @property
    def command(self) -> tuple[int, int]:
        return (self.cls, self.instr)

    def __str__(self) -> str:
        return f"{self.cls:02X} {self.instr:02X} ({command_name(self.cls, self.instr)})"


def _apdu_size(raw: bytes | bytearray, start: int = 0) -> int | None:
    """Total size of the APDU at `start`, or None if its header is not complete yet."""
    if len(raw) - start < 3:
        return None
    if raw[start + 2] != 0xFF:
        return 3 + raw[start + 2]
    if len(raw) - start < 5:
        return None
    return 5 + (raw[start + 3] | raw[start + 4] << 8)


def decode_apdu(raw: bytes) -> Apdu:
    """Exactly one APDU; a short header, missing data or trailing bytes raise ZvtError."""
    size = _apdu_size(raw)
    if size is None:
        need = 5 if len(raw) >= 3 and raw[2] == 0xFF else 3
        raise ZvtError(
            f"APDU header cut short at offset {len(raw)}: need {need} bytes (CLASS INSTR LEN)",
            len(raw),
        )
    header = 5 if raw[2] == 0xFF else 3
    if len(raw) < size:
        raise ZvtError(
            f"APDU {raw[0]:02X} {raw[1]:02X} declares {size - header} data bytes at offset 2, "
            f"only {len(raw) - header} follow",
            len(raw),
        )
    if len(raw) > size:
        raise ZvtError(f"{len(raw) - size} bytes after the APDU end at offset {size}", size)
    return Apdu(raw[0], raw[1], bytes(raw[header:size]))


class ApduDecoder:
    """Splits a raw TCP byte stream into APDUs, keeping an incomplete tail for the next feed."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed_raw(self, data: bytes) -> list[tuple[Apdu, bytes]]:
        """Complete APDUs with the exact bytes each came in (for evidence logs)."""
        self._buffer += data
        out: list[tuple[Apdu, bytes]] = []
        while (size := _apdu_size(self._buffer)) is not None and len(self._buffer) >= size:
            raw = bytes(self._buffer[:size])
            del self._buffer[:size]
            out.append((decode_apdu(raw), raw))
        return out

    def feed(self, data: bytes) -> list[Apdu]:
        return [apdu for apdu, _ in self.feed_raw(data)]

    @property
    def pending(self) -> bytes:
        """Bytes received that do not make a whole APDU yet."""
        return bytes(self._buffer)

    def reset(self) -> bytes:
        """Drop the incomplete tail (after a resync) and return it."""
        tail = bytes(self._buffer)
        self._buffer.clear()
        return tail


# --------------------------------------------------------------------------------------------
# Serial framing


def crc16_xmodem(data: bytes, crc: int = 0) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0, no reflection): b"123456789" -> 0x31C3."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def frame(apdu_bytes: bytes) -> bytes:
    """One serial frame: DLE STX, the APDU with DLE doubled, DLE ETX, CRC low, CRC high."""
    crc = crc16_xmodem(apdu_bytes + bytes([ETX]))
    stuffed = apdu_bytes.replace(bytes([DLE]), bytes([DLE, DLE]))
    return bytes([DLE, STX]) + stuffed + bytes([DLE, ETX, crc & 0xFF, crc >> 8])


@dataclass(frozen=True)
class Frame:
    """A frame whose CRC checked: answer ACK 06."""

    apdu: bytes
    raw: bytes = b""


@dataclass(frozen=True)
class BadFrame:
    """Bytes that are not a good frame: a CRC mismatch or broken frame (answer NAK 15) or line
    noise outside any frame (`in_frame` False: nothing to answer)."""

    reason: str
    raw: bytes = b""
    in_frame: bool = True


@dataclass(frozen=True)
class LinkAck:
    raw: bytes = bytes([ACK])


@dataclass(frozen=True)
class LinkNak:
    raw: bytes = bytes([NAK])


FrameEvent = Frame | BadFrame | LinkAck | LinkNak


class _State(enum.Enum):
    IDLE = 0
    IDLE_DLE = 1
    DATA = 2
    DATA_DLE = 3
    CRC_LOW = 4
    CRC_HIGH = 5


class SerialFrameDecoder:
    """Turns a serial byte stream into frame events, resyncing on the next DLE STX.

    Every byte fed ends up in exactly one event's `raw` or in `pending`, so a caller can log the
    stream event by event. Noise outside frames is reported once per feed() call.
    """

    def __init__(self, max_apdu: int = 0xFFFF + 5) -> None:
        self._max_apdu = max_apdu
        self._state = _State.IDLE
        self._raw = bytearray()  # bytes of the frame (or noise) being collected
        self._apdu = bytearray()
        self._crc_low = 0

    @property
    def pending(self) -> bytes:
        return bytes(self._raw)

    def reset(self) -> bytes:
        tail = bytes(self._raw)
        self._raw.clear()
        self._apdu.clear()
        self._state = _State.IDLE
        return tail

    def feed(self, data: bytes) -> list[FrameEvent]:
        events: list[FrameEvent] = []
        for byte in data:
            self._step(byte, events)
        if self._state is _State.IDLE and self._raw:
            events.append(self._noise())
        return events

    def _noise(self) -> BadFrame:
        raw = bytes(self._raw)
        self._raw.clear()
        return BadFrame(f"noise outside a frame: {raw.hex(' ')}", raw, in_frame=False)

    def _bad(self, reason: str, events: list[FrameEvent]) -> None:
        events.append(BadFrame(reason, bytes(self._raw)))
        self._raw.clear()
        self._apdu.clear()
        self._state = _State.IDLE

    def _step(self, byte: int, events: list[FrameEvent]) -> None:
        state = self._state
        if state is _State.IDLE:
            if byte in (ACK, NAK) or byte == DLE:
                if self._raw:
                    events.append(self._noise())
                if byte == ACK:
                    events.append(LinkAck())
                elif byte == NAK:
                    events.append(LinkNak())
                else:
                    self._raw.append(byte)
                    self._state = _State.IDLE_DLE
            else:
                self._raw.append(byte)
        elif state is _State.IDLE_DLE:
            self._raw.append(byte)
            if byte == STX:
                self._apdu.clear()
                self._state = _State.DATA
            elif byte != DLE:
                self._state = _State.IDLE  # noise; a further DLE keeps waiting for STX
        elif state is _State.DATA:
            self._raw.append(byte)
            if byte == DLE:
                self._state = _State.DATA_DLE
            elif len(self._apdu) >= self._max_apdu:
                self._bad(f"frame longer than {self._max_apdu} bytes", events)
            else:
                self._apdu.append(byte)
        elif state is _State.DATA_DLE:
            if byte == DLE:
                self._raw.append(byte)
                self._apdu.append(DLE)
                self._state = _State.DATA
            elif byte == ETX:
                self._raw.append(byte)
                self._state = _State.CRC_LOW
            elif byte == STX:
                del self._raw[-1]  # the DLE starts the new frame
                self._bad("frame restarted by DLE STX before DLE ETX", events)
                self._raw += bytes([DLE, STX])
                self._state = _State.DATA
            else:
                self._raw.append(byte)
                self._bad(f"DLE followed by 0x{byte:02X} inside a frame", events)
        elif state is _State.CRC_LOW:
            self._raw.append(byte)
            self._crc_low = byte
            self._state = _State.CRC_HIGH
        else:
            self._raw.append(byte)
            got = self._crc_low | byte << 8
            apdu = bytes(self._apdu)
            want = crc16_xmodem(apdu + bytes([ETX]))
            raw = bytes(self._raw)
            self._raw.clear()
            self._apdu.clear()
            self._state = _State.IDLE
            if got == want:
                events.append(Frame(apdu, raw))
            else:
                events.append(BadFrame(f"CRC mismatch: got {got:04X}, computed {want:04X}", raw))


# --------------------------------------------------------------------------------------------
# Messages


_NAMES: Mapping[tuple[int, int], str] = MappingProxyType(
    {
        (0x06, 0x00): "registration",
        (0x06, 0x01): "authorization",
        (0x06, 0x02): "log-off",
        (0x06, 0x30): "reversal",
        (0x05, 0x01): "status enquiry",
        (0x06, 0x20): "repeat receipt",
        (0x06, 0x50): "end of day",
        (0x06, 0xB0): "abort request",
        (0x04, 0xFF): "intermediate status",
        (0x04, 0x0F): "status information",
        (0x06, 0xD1): "print line",
        (0x06, 0xD3): "print text block",
        (0x06, 0x0F): "completion",
        (0x06, 0x1E): "abort",
        (0x80, 0x00): "ACK",
    }
)


def command_name(cls: int, instr: int) -> str:
    """A short name for a CLASS INSTR pair, for logs and error messages."""
    if cls == 0x84:
        return f"NACK 0x{instr:02X}"
    return _NAMES.get((cls, instr), "unknown command")


def _expect(apdu: Apdu, command: tuple[int, int]) -> None:
    if apdu.command != command:
        raise ZvtError(
            f"expected {command[0]:02X} {command[1]:02X} ({command_name(*command)}), "
            f"got {apdu.cls:02X} {apdu.instr:02X}"
        )


def _bmps_after(apdu: Apdu, prefix: int, allowed: Iterable[int]) -> dict[int, BmpValue]:
    values = decode_bmps(apdu.data[prefix:], prefix)
    extra = sorted(set(values) - set(allowed))
    if extra:
        raise ZvtError(
            f"{apdu.cls:02X} {apdu.instr:02X} ({command_name(apdu.cls, apdu.instr)}) "
            f"does not take BMP 0x{extra[0]:02X}"
        )
    return values


def _required(values: Mapping[int, BmpValue], tag: int, apdu: Apdu) -> BmpValue:
    if tag not in values:
        raise ZvtError(
            f"{apdu.cls:02X} {apdu.instr:02X} ({command_name(apdu.cls, apdu.instr)}) "
            f"lacks BMP 0x{tag:02X} ({BMPS[tag].name})"
        )
    return values[tag]


def _opt(*items: tuple[int, BmpValue | None]) -> list[tuple[int, BmpValue]]:
    return [(tag, value) for tag, value in items if value is not None]


# ECR -> PT ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """06 00: the ECR logs on and says what it wants (config byte) and its currency."""

    COMMAND: ClassVar[tuple[int, int]] = (0x06, 0x00)
    password: str = "000000"
    config: int = CONFIG_INTERMEDIATE_STATUS
    currency: int = 978
    service_byte: int | None = None

    def to_apdu(self) -> Apdu:
        data = encode_password(self.password) + bytes([self.config]) + bcd_encode(self.currency, 2)
        return Apdu(*self.COMMAND, data + encode_bmps(_opt((0x03, self.service_byte))))

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> Registration:
        _expect(apdu, cls.COMMAND)
        if len(apdu.data) < 6:
            raise ZvtError(
                "06 00 needs password (3), config byte (1) and currency (2): "
                f"cut short at offset {len(apdu.data)}",
                len(apdu.data),
            )
        values = _bmps_after(apdu, 6, (0x03,))
        return cls(
            _take_password(apdu.data, "06 00"),
            apdu.data[3],
            bcd_decode(apdu.data[4:6], 4),
            _int(values, 0x03),
        )


@dataclass(frozen=True)
class Authorization:
    """06 01: a sale of `amount` minor units; `order_ref` (BMP 3C) is echoed in the 04 0F."""

    COMMAND: ClassVar[tuple[int, int]] = (0x06, 0x01)
    amount: int
    currency: int = 978
    order_ref: str | None = None
    payment_type: int | None = None

    def to_apdu(self) -> Apdu:
        items = _opt(
            (0x04, self.amount),
            (0x49, self.currency),
            (0x19, self.payment_type),
            (0x3C, self.order_ref),
        )
        return Apdu(*self.COMMAND, encode_bmps(items))

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> Authorization:
        _expect(apdu, cls.COMMAND)
        values = _bmps_after(apdu, 0, (0x04, 0x49, 0x19, 0x3C))
        amount = _required(values, 0x04, apdu)
        assert isinstance(amount, int)
        currency = _int(values, 0x49)
        return cls(
            amount,
            978 if currency is None else currency,
            _str(values, 0x3C),
            _int(values, 0x19),
        )


@dataclass(frozen=True)
class ReversalRequest:
    """06 30: reverse the approved sale with this receipt number."""

    COMMAND: ClassVar[tuple[int, int]] = (0x06, 0x30)
    password: str
    receipt_no: int

    def to_apdu(self) -> Apdu:
        return Apdu(
            *self.COMMAND, encode_password(self.password) + encode_bmp(0x87, self.receipt_no)
        )

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> ReversalRequest:
        _expect(apdu, cls.COMMAND)
        password = _take_password(apdu.data, "06 30")
        values = _bmps_after(apdu, 3, (0x87, 0x04, 0x49))
        receipt = _required(values, 0x87, apdu)
        assert isinstance(receipt, int)
        return cls(password, receipt)


@dataclass(frozen=True)
class StatusEnquiry:
    """05 01: is the terminal ready, and which TID is it."""

    COMMAND: ClassVar[tuple[int, int]] = (0x05, 0x01)
    password: str = "000000"
    service_byte: int | None = None

    def to_apdu(self) -> Apdu:
        return Apdu(
            *self.COMMAND,
            encode_password(self.password) + encode_bmps(_opt((0x03, self.service_byte))),
        )

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> StatusEnquiry:
        _expect(apdu, cls.COMMAND)
        password = _take_password(apdu.data, "05 01")
        return cls(password, _int(_bmps_after(apdu, 3, (0x03,)), 0x03))


@dataclass(frozen=True)
class RepeatReceipt:
    """06 20: report (and reprint) the transaction with this trace, or the last one."""

    COMMAND: ClassVar[tuple[int, int]] = (0x06, 0x20)
    password: str = "000000"
    trace: int | None = None

    def to_apdu(self) -> Apdu:
        return Apdu(
            *self.COMMAND, encode_password(self.password) + encode_bmps(_opt((0x0B, self.trace)))
        )

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> RepeatReceipt:
        _expect(apdu, cls.COMMAND)
        password = _take_password(apdu.data, "06 20")
        return cls(password, _int(_bmps_after(apdu, 3, (0x0B,)), 0x0B))


@dataclass(frozen=True)
class EndOfDay:
    """06 50: close the batch with the host and report the totals."""

    COMMAND: ClassVar[tuple[int, int]] = (0x06, 0x50)
    password: str = "000000"

    def to_apdu(self) -> Apdu:
        return Apdu(*self.COMMAND, encode_password(self.password))

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> EndOfDay:
        _expect(apdu, cls.COMMAND)
        password = _take_password(apdu.data, "06 50")
        _bmps_after(apdu, 3, ())
        return cls(password)


@dataclass(frozen=True)
class AbortRequest:
    """06 B0: the ECR cancels a sale that waits for the card."""

    COMMAND: ClassVar[tuple[int, int]] = (0x06, 0xB0)

    def to_apdu(self) -> Apdu:
        return Apdu(*self.COMMAND)

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> AbortRequest:
        _expect(apdu, cls.COMMAND)
        return cls()


# Both directions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    """80 00 00: positive acknowledgement (application level)."""

    COMMAND: ClassVar[tuple[int, int]] = (0x80, 0x00)

    def to_apdu(self) -> Apdu:
        return Apdu(*self.COMMAND)

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> Ack:
        _expect(apdu, cls.COMMAND)
        return cls()


@dataclass(frozen=True)
class Nack:
    """84 xx 00: the command is refused with code xx (0x83 refused / unknown command)."""

    code: int = ResultCode.FUNCTION_NOT_POSSIBLE

    def to_apdu(self) -> Apdu:
        return Apdu(0x84, int(self.code))

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> Nack:
        if apdu.cls != 0x84:
            raise ZvtError(f"expected 84 xx (NACK), got {apdu.cls:02X} {apdu.instr:02X}")
        return cls(apdu.instr)


ACK_APDU = Ack().to_apdu()


# PT -> ECR ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntermediateStatus:
    """04 FF: the PT is busy (insert card, waiting for host...); it resets the ECR's timeout."""

    COMMAND: ClassVar[tuple[int, int]] = (0x04, 0xFF)
    code: int

    def to_apdu(self) -> Apdu:
        return Apdu(*self.COMMAND, bytes([self.code]))

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> IntermediateStatus:
        _expect(apdu, cls.COMMAND)
        if not apdu.data:
            raise ZvtError("04 FF without its status byte at offset 0", 0)
        return cls(apdu.data[0])


def _parse_when(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ZvtError(f"cannot read {text!r} as a date and time (YYYY-MM-DD HH:MM:SS)") from exc


@dataclass(frozen=True)
class StatusInfo:
    """04 0F: the result of a command and the transaction it concerns.

    `card_masked` is always masked ('*'). End of day: `totals` are BMP 60's groups and
    `totals_count` / `totals_amount` the all-cards figures; give either and the other is filled
    in (the card-type-00 group if there is one, else the sum of the groups). `when` is an input
    convenience (a datetime or "YYYY-MM-DD HH:MM:SS") that fills `time` and `date`; it is not
    sent as such and not compared. `extra` holds any other known BMP, by tag.
    """

    COMMAND: ClassVar[tuple[int, int]] = (0x04, 0x0F)
    result_code: int | None = None
    amount: int | None = None
    currency: int | None = None
    trace: int | None = None
    receipt_no: int | None = None
    time: str | None = None  # "hhmmss"
    date: str | None = None  # "MMDD"
    card_masked: str | None = None
    tid: str | None = None
    order_ref: str | None = None
    totals: tuple[TotalsGroup, ...] = ()
    totals_count: int | None = None
    totals_amount: int | None = None
    original_trace: int | None = None
    turnover_no: int | None = None
    card_type: int | None = None
    card_name: str | None = None
    expiry: str | None = None  # "YYMM"
    when: datetime | str | None = field(default=None, compare=False, repr=False)
    extra: Mapping[int, BmpValue] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.when:
            moment = self.when if isinstance(self.when, datetime) else _parse_when(self.when)
            if self.time is None:
                object.__setattr__(self, "time", moment.strftime("%H%M%S"))
            if self.date is None:
                object.__setattr__(self, "date", moment.strftime("%m%d"))
        if self.totals:
            overall = tuple(g for g in self.totals if g.card_type == CARD_TYPE_ALL) or self.totals
            count, amount = sum(g.count for g in overall), sum(g.amount for g in overall)
            if self.totals_count is None:
                object.__setattr__(self, "totals_count", count)
            if self.totals_amount is None:
                object.__setattr__(self, "totals_amount", amount)
        elif self.totals_count is not None or self.totals_amount is not None:
            count, amount = self.totals_count or 0, self.totals_amount or 0
            object.__setattr__(self, "totals_count", count)
            object.__setattr__(self, "totals_amount", amount)
            object.__setattr__(self, "totals", (TotalsGroup(CARD_TYPE_ALL, count, amount),))

    def to_apdu(self) -> Apdu:
        items = _opt(
            (0x27, self.result_code),
            (0x04, self.amount),
            (0x49, self.currency),
            (0x0B, self.trace),
            (0x37, self.original_trace),
            (0x87, self.receipt_no),
            (0x88, self.turnover_no),
            (0x0C, self.time),
            (0x0D, self.date),
            (0x0E, self.expiry),
            (0x22, self.card_masked),
            (0x29, self.tid),
            (0x8A, self.card_type),
            (0x8B, self.card_name),
            (0x3C, self.order_ref),
            (0x60, encode_totals(self.totals) if self.totals else None),
        )
        items += [(tag, value) for tag, value in self.extra.items() if tag not in _STATUS_TAGS]
        return Apdu(*self.COMMAND, encode_bmps(items))

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> StatusInfo:
        _expect(apdu, cls.COMMAND)
        values = decode_bmps(apdu.data)
        totals_raw = _bytes(values, 0x60)
        totals = decode_totals(totals_raw) if totals_raw is not None else ()
        return cls(
            result_code=_int(values, 0x27),
            amount=_int(values, 0x04),
            currency=_int(values, 0x49),
            trace=_int(values, 0x0B),
            receipt_no=_int(values, 0x87),
            time=_str(values, 0x0C),
            date=_str(values, 0x0D),
            card_masked=_str(values, 0x22),
            tid=_str(values, 0x29),
            order_ref=_str(values, 0x3C),
            totals=totals,
            original_trace=_int(values, 0x37),
            turnover_no=_int(values, 0x88),
            card_type=_int(values, 0x8A),
            card_name=_str(values, 0x8B),
            expiry=_str(values, 0x0E),
            extra={tag: value for tag, value in values.items() if tag not in _STATUS_TAGS},
        )


_STATUS_TAGS = frozenset(
    (0x27, 0x04, 0x49, 0x0B, 0x37, 0x87, 0x88, 0x0C, 0x0D, 0x0E, 0x22, 0x29, 0x8A, 0x8B, 0x3C, 0x60)
)


@dataclass(frozen=True)
class PrintLine:
    """06 D1: one line for the ECR's printer (attribute byte, then text)."""

    COMMAND: ClassVar[tuple[int, int]] = (0x06, 0xD1)
    text: str
    attribute: int = 0

    def to_apdu(self) -> Apdu:
        return Apdu(*self.COMMAND, bytes([self.attribute]) + self.text.encode("utf-8"))

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> PrintLine:
        _expect(apdu, cls.COMMAND)
        if not apdu.data:
            raise ZvtError("06 D1 without its attribute byte at offset 0", 0)
        try:
            text = apdu.data[1:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ZvtError(
                f"06 D1 text is not UTF-8 at offset {1 + exc.start}", 1 + exc.start
            ) from exc
        return cls(text, apdu.data[0])


@dataclass(frozen=True)
class TextBlock:
    """06 D3: a whole receipt for the ECR's printer.

    Data: BMP 06 holding TLV 1F07 (receipt type: 1 merchant, 2 customer, 3 admin) and
    25 (print texts) holding one TLV 07 per line.
    """

    COMMAND: ClassVar[tuple[int, int]] = (0x06, 0xD3)
    lines: tuple[str, ...]
    receipt_type: int = RECEIPT_CUSTOMER

    def to_apdu(self) -> Apdu:
        texts = tlv_encode((TLV_TEXT_LINE, line.encode("utf-8")) for line in self.lines)
        content = tlv_encode(
            [(TLV_RECEIPT_TYPE, bytes([self.receipt_type])), (TLV_PRINT_TEXTS, texts)]
        )
        return Apdu(*self.COMMAND, encode_bmp(0x06, content))

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> TextBlock:
        _expect(apdu, cls.COMMAND)
        values = _bmps_after(apdu, 0, (0x06,))
        content = _required(values, 0x06, apdu)
        assert isinstance(content, bytes)
        receipt_type = RECEIPT_CUSTOMER
        lines: list[str] = []
        for tag, value in tlv_decode(content):
            if tag == TLV_RECEIPT_TYPE and len(value) == 1:
                receipt_type = value[0]
            elif tag == TLV_PRINT_TEXTS:
                for inner, text in tlv_decode(value):
                    if inner == TLV_TEXT_LINE:
                        try:
                            lines.append(text.decode("utf-8"))
                        except UnicodeDecodeError as exc:
                            raise ZvtError(f"06 D3 line {len(lines) + 1} is not UTF-8") from exc
        return cls(tuple(lines), receipt_type)


@dataclass(frozen=True)
class Completion:
    """06 0F: the command is done (a sale: approved). Registration answers with TID etc."""

    COMMAND: ClassVar[tuple[int, int]] = (0x06, 0x0F)
    status_byte: int | None = None
    tid: str | None = None
    currency: int | None = None

    def to_apdu(self) -> Apdu:
        items = _opt((0x19, self.status_byte), (0x29, self.tid), (0x49, self.currency))
        return Apdu(*self.COMMAND, encode_bmps(items))

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> Completion:
        _expect(apdu, cls.COMMAND)
        values = decode_bmps(apdu.data)
        return cls(_int(values, 0x19), _str(values, 0x29), _int(values, 0x49))


@dataclass(frozen=True)
class Abort:
    """06 1E <result code> [3C text]: the command ended without success (a sale: not paid)."""

    COMMAND: ClassVar[tuple[int, int]] = (0x06, 0x1E)
    result_code: int
    text: str | None = None

    def to_apdu(self) -> Apdu:
        return Apdu(*self.COMMAND, bytes([self.result_code]) + encode_bmps(_opt((0x3C, self.text))))

    @classmethod
    def from_apdu(cls, apdu: Apdu) -> Abort:
        _expect(apdu, cls.COMMAND)
        if not apdu.data:
            raise ZvtError("06 1E without its result code at offset 0", 0)
        values = _bmps_after(apdu, 1, (0x3C,))
        return cls(apdu.data[0], _str(values, 0x3C))


# Function-style builders (arguments in wire order) -------------------------------------------
# ECR -> PT


def registration(
    password: str = "000000",
    config: int = CONFIG_INTERMEDIATE_STATUS,
    currency: int = 978,
    service_byte: int | None = None,
) -> Apdu:
    """06 00 <password><config byte><currency>[03 service byte]."""
    return Registration(password, config, currency, service_byte).to_apdu()


def authorization(
    amount: int,
    currency: int = 978,
    order_ref: str | None = None,
    payment_type: int | None = None,
) -> Apdu:
    """06 01 04 <amount> 49 <currency> [19 payment type] [3C order reference]."""
    return Authorization(amount, currency, order_ref, payment_type).to_apdu()


def reversal(password: str, receipt_no: int) -> Apdu:
    """06 30 <password> 87 <receipt no>."""
    return ReversalRequest(password, receipt_no).to_apdu()


def status_enquiry(password: str = "000000", service_byte: int | None = None) -> Apdu:
    """05 01 <password>[03 service byte]."""
    return StatusEnquiry(password, service_byte).to_apdu()


def repeat_receipt(password: str = "000000", trace: int | None = None) -> Apdu:
    """06 20 <password>[0B trace]; no trace = the last transaction."""
    return RepeatReceipt(password, trace).to_apdu()


def end_of_day(password: str = "000000") -> Apdu:
    """06 50 <password>."""
    return EndOfDay(password).to_apdu()


def abort_request() -> Apdu:
    """06 B0: cancel a sale that waits for the card."""
    return AbortRequest().to_apdu()


# PT -> ECR


def ack() -> Apdu:
    """80 00 00."""
    return ACK_APDU


def nack(code: int = ResultCode.FUNCTION_NOT_POSSIBLE) -> Apdu:
    """84 <code> 00: refuse a command (0x83 = refused / unknown command)."""
    return Nack(code).to_apdu()


def intermediate_status(code: int) -> Apdu:
    """04 FF <code>."""
    return IntermediateStatus(code).to_apdu()


def status_information(info: StatusInfo) -> Apdu:
    """04 0F with the BMPs of `info`."""
    return info.to_apdu()


def print_line(text: str, attribute: int = 0) -> Apdu:
    """06 D1 <attribute> <text>."""
    return PrintLine(text, attribute).to_apdu()


def print_text_block(lines: Iterable[str], receipt_type: int = RECEIPT_CUSTOMER) -> Apdu:
    """06 D3 with one receipt's lines."""
    return TextBlock(tuple(lines), receipt_type).to_apdu()


def completion(
    status_byte: int | None = None, tid: str | None = None, currency: int | None = None
) -> Apdu:
    """06 0F [19 status byte][29 TID][49 currency]."""
    return Completion(status_byte, tid, currency).to_apdu()


def abort(result_code: int, text: str | None = None) -> Apdu:
    """06 1E <result code> [3C text]."""
    return Abort(result_code, text).to_apdu()


EcrMessage: TypeAlias = (
    Registration
    | Authorization
    | ReversalRequest
    | StatusEnquiry
    | RepeatReceipt
    | EndOfDay
    | AbortRequest
    | Ack
    | Nack
)
PtMessage: TypeAlias = (
    Ack | Nack | IntermediateStatus | StatusInfo | PrintLine | TextBlock | Completion | Abort
)

_ECR_PARSERS: Mapping[tuple[int, int], type[EcrMessage]] = MappingProxyType(
    {
        m.COMMAND: m
        for m in (
            Registration,
            Authorization,
            ReversalRequest,
            StatusEnquiry,
            RepeatReceipt,
            EndOfDay,
            AbortRequest,
            Ack,
        )
    }
)
_PT_PARSERS: Mapping[tuple[int, int], type[PtMessage]] = MappingProxyType(
    {
        m.COMMAND: m
        for m in (Ack, IntermediateStatus, StatusInfo, PrintLine, TextBlock, Completion, Abort)
    }
)


def parse_ecr_message(apdu: Apdu) -> EcrMessage:
    """What the ECR sent (for the terminal side).

    An unknown command raises ZvtError: the terminal answers it with 84 83 00.
    """
    if apdu.cls == 0x84:
        return Nack.from_apdu(apdu)
    parser = _ECR_PARSERS.get(apdu.command)
    if parser is None:
        raise ZvtError(f"unknown ECR command {apdu.cls:02X} {apdu.instr:02X}")
    return parser.from_apdu(apdu)


def parse_pt_message(apdu: Apdu) -> PtMessage:
    """What the terminal sent (for the ECR side); anything else raises ZvtError."""
    if apdu.cls == 0x84:
        return Nack.from_apdu(apdu)
    parser = _PT_PARSERS.get(apdu.command)
    if parser is None:
        raise ZvtError(
            f"unexpected {apdu.cls:02X} {apdu.instr:02X} ({command_name(apdu.cls, apdu.instr)}) "
            "from the terminal"
        )
    return parser.from_apdu(apdu)
