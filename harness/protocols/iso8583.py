"""ISO 8583:1987 between terminal and acquirer host: message builders, framing and validation.

Pure codec, no I/O, shared by the simulated terminal, the simulated host and the tests. Messages
are plain `dict[str, str]` keyed like pyiso8583 ("t" = MTI, "2".."128" = fields) over its
`default_ascii` spec, behind a 2-byte big-endian length prefix that excludes itself. The one thing
to know: build messages with the builders here and read them with the accessors, never by hand,
and never put a full card number (field 2) in a message, log or exception: use `summary()`.
"""

from __future__ import annotations

import copy
import re
import struct
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import iso8583
from iso8583.specs import default_ascii

from harness.protocols.cards import mask_pan

SPEC: dict[str, dict[str, Any]] = copy.deepcopy(default_ascii)

MAX_FRAME = 4096  # bytes of one message body; a longer length prefix means a broken stream
_LENGTH = struct.Struct(">H")

# MTIs the bench speaks.
SIGNON = "0800"
SIGNON_RESPONSE = "0810"
SALE = "0200"
SALE_RESPONSE = "0210"
REVERSAL = "0400"
REVERSAL_RESPONSE = "0410"
REVERSAL_REPEAT = "0420"
REVERSAL_REPEAT_RESPONSE = "0430"
REVERSAL_MTIS = frozenset({REVERSAL, "0401", REVERSAL_REPEAT, "0421"})  # first or repeated
SETTLEMENT = "0500"
SETTLEMENT_RESPONSE = "0510"

# Field 39 codes the bench uses (the host's answers, and the terminal's reversal reasons).
APPROVED = "00"
DO_NOT_HONOUR = "05"
INVALID_TRANSACTION = "12"
INVALID_CARD = "14"
ORIGINAL_NOT_FOUND = "25"
FORMAT_ERROR = "30"
INSUFFICIENT_FUNDS = "51"
ISSUER_UNAVAILABLE = "91"
DUPLICATE_TRANSMISSION = "94"
RECONCILE_ERROR = "95"
SYSTEM_MALFUNCTION = "96"
REASON_OTHER = "06"  # reversal reason: garbled / unusable answer, card refused after approval
REASON_CUSTOMER_CANCEL = "17"
REASON_POWER_FAILURE = "22"
REASON_NO_RESPONSE = "98"

# Fields whose content must be digits (pyiso8583 only checks lengths).
_NUMERIC = frozenset(
    {"2", "3", "4", "11", "12", "13", "14", "22", "25", "49", "70", "74", "76", "86", "88", "90"}
)
_SALE_COPY = ("2", "3", "4", "11", "12", "13", "14", "22", "25", "41", "42", "49")
_ECHO = ("3", "4", "11", "12", "13", "41", "42", "49", "70", "90")
_FIELD_97 = re.compile(r"[CD]\d{16}")
_RESPONSE_CODE = re.compile(r"[0-9A-Z]{2}")


class Iso8583Error(ValueError):
    """A message cannot be built, encoded, framed or decoded; the text names the field."""


# --- encoding and framing -------------------------------------------------------------------


def encode_body(msg: Mapping[str, str]) -> bytes:
    """The pyiso8583 body of one message, without the length prefix. Never mutates `msg`."""
    doc = {key: value for key, value in msg.items() if key not in ("p", "1")}
    _validate(doc)
    try:
        raw, _ = iso8583.encode(doc, SPEC)
    except iso8583.EncodeError as exc:
        raise Iso8583Error(f"field {exc.field}: {exc.msg}") from None
    if len(raw) > MAX_FRAME:
        raise Iso8583Error(f"message of {len(raw)} bytes exceeds {MAX_FRAME}")
    return bytes(raw)


def frame(body: bytes) -> bytes:
    """Prefix a body with its 2-byte big-endian length."""
    if not body:
        raise Iso8583Error("frame length 0")
    if len(body) > MAX_FRAME:
        raise Iso8583Error(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _LENGTH.pack(len(body)) + body


def encode(msg: Mapping[str, str]) -> bytes:
    """The framed bytes of one message, ready for `sendall`. Never mutates `msg`."""
    return frame(encode_body(msg))


def decode(body: bytes) -> dict[str, str]:
    """One message body (no length prefix) to its fields, without the bitmap keys."""
    if not body:
        raise Iso8583Error("empty message")
    try:
        doc, _ = iso8583.decode(bytes(body), SPEC)
    except iso8583.DecodeError as exc:
        raise Iso8583Error(f"field {exc.field}: {exc.msg} (at byte {exc.pos})") from None
    msg = {key: value for key, value in doc.items() if key not in ("p", "1")}
    _validate(msg)
    return msg


class FrameDecoder:
    """Splits a TCP byte stream into message bodies by their length prefix.

    After an `Iso8583Error` the stream cannot be resynchronised: close the connection.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame
        self._broken: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet a whole frame (non-zero at EOF = a truncated message)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every body now complete, in order."""
        if self._broken is not None:
            raise Iso8583Error(f"stream already broken: {self._broken}")
        self._buffer += data
        bodies: list[bytes] = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length == 0 or length > self._max_frame:
                self._broken = (
                    "frame length 0"
                    if length == 0
                    else f"frame of {length} bytes exceeds {self._max_frame}"
                )
                raise Iso8583Error(self._broken)
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            bodies.append(bytes(self._buffer[_LENGTH.size : end]))
            del self._buffer[:end]
        return bodies


def _validate(msg: Mapping[str, object]) -> None:
    for key, value in msg.items():
        if not isinstance(value, str):
            raise Iso8583Error(f"field {key}: must be a str, got {type(value).__name__}")
    mti = msg.get("t")
    if not isinstance(mti, str) or not re.fullmatch(r"\d{4}", mti):
        raise Iso8583Error(f"field t: MTI must be 4 digits, got {mti!r}")
    for key in _NUMERIC.intersection(msg):
        value = str(msg[key])
        if not value.isdigit() or not value.isascii():
            shown = mask_pan(value) if key == "2" else repr(value)
            raise Iso8583Error(f"field {key}: must be digits, got {shown}")
    net = msg.get("97")
    if isinstance(net, str) and not _FIELD_97.fullmatch(net):
        raise Iso8583Error(f"field 97: must be C or D and 16 digits, got {net!r}")


# --- builders -------------------------------------------------------------------------------


def sale_request(
    pan: str,
    expiry_yymm: str,
    amount: int,
    currency: int,
    stan: int,
    tid: str,
    mid: str,
    when: datetime,
) -> dict[str, str]:
    """0200 purchase, chip read (22 = 051), normal condition (25 = 00)."""
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        raise Iso8583Error(f"field 2: PAN must be 12-19 digits, got {mask_pan(pan)}")
    if not re.fullmatch(r"\d{4}", expiry_yymm):
        raise Iso8583Error(f"field 14: expiry must be YYMM, got {expiry_yymm!r}")
    return {
        "t": SALE,
        "2": pan,
        "3": "000000",
        "4": _n(amount, 12, "4"),
        "11": _n(stan, 6, "11"),
        "12": when.strftime("%H%M%S"),
        "13": when.strftime("%m%d"),
        "14": expiry_yymm,
        "22": "051",
        "25": "00",
        "41": _ans(tid, 8, "41"),
        "42": _ans(mid, 15, "42"),
        "49": _n(currency, 3, "49"),
    }


def reversal_request(original: Mapping[str, str], reason: str, repeat: bool) -> dict[str, str]:
    """0400 (0420 when `repeat`) undoing a 0200: its fields, its STAN, the reason in 39.

    Field 90 = original MTI + original STAN + 32 zeros (original field 7, acquirer and
    forwarding institution ids, which this bench does not use).
    """
    if original.get("t") != SALE:
        raise Iso8583Error(f"field t: can only reverse a {SALE}, got {original.get('t')!r}")
    if not _RESPONSE_CODE.fullmatch(reason):
        raise Iso8583Error(f"field 39: reason must be 2 characters, got {reason!r}")
    missing = [key for key in ("4", "11", "41") if key not in original]
    if missing:
        raise Iso8583Error(f"field {missing[0]}: the original {SALE} has no field {missing[0]}")
    msg = {"t": REVERSAL_REPEAT if repeat else REVERSAL}
    msg.update({key: original[key] for key in _SALE_COPY if key in original})
    msg["39"] = reason
    msg["90"] = SALE + original["11"] + "0" * 32
    return msg


def signon_request(stan: int, tid: str, when: datetime) -> dict[str, str]:
    """0800 sign-on (70 = 001)."""
    return {
        "t": SIGNON,
        "11": _n(stan, 6, "11"),
        "12": when.strftime("%H%M%S"),
        "13": when.strftime("%m%d"),
        "41": _ans(tid, 8, "41"),
        "70": "001",
    }


def settlement_request(
    stan: int,
    tid: str,
    mid: str,
    currency: int,
    debit_count: int,
    debit_amount: int,
    when: datetime,
) -> dict[str, str]:
    """0500 reconciliation with the terminal's totals of the open batch (sales only: no credits).

    74/86 credits count/amount are zero, 76/88 debits count/amount, 97 net = "D" + n16.
    """
    return {
        "t": SETTLEMENT,
        "11": _n(stan, 6, "11"),
        "12": when.strftime("%H%M%S"),
        "13": when.strftime("%m%d"),
        "41": _ans(tid, 8, "41"),
        "42": _ans(mid, 15, "42"),
        "49": _n(currency, 3, "49"),
        "74": "0" * 10,
        "76": _n(debit_count, 10, "76"),
        "86": "0" * 16,
        "88": _n(debit_amount, 16, "88"),
        "97": "D" + _n(debit_amount, 16, "97"),
    }


def response_mti(mti: str) -> str:
    """The response MTI of a request: function digit made odd (0200 -> 0210, 0420 -> 0430)."""
    if not re.fullmatch(r"\d{4}", mti):
        raise Iso8583Error(f"field t: MTI must be 4 digits, got {mti!r}")
    return mti[:2] + str(int(mti[2]) | 1) + mti[3]


def response_for(request: Mapping[str, str], response_code: str, **extra: str) -> dict[str, str]:
    """The answer to `request`: echoes its key fields, sets 39, adds `extra` (e.g. 37, 38, 76).

    Call with digit keys through a dict: `response_for(req, "00", **{"37": rrn, "38": code})`.
    The PAN is never echoed.
    """
    if not _RESPONSE_CODE.fullmatch(response_code):
        raise Iso8583Error(f"field 39: response code must be 2 characters, got {response_code!r}")
    msg = {"t": response_mti(request.get("t", ""))}
    msg.update({key: request[key] for key in _ECHO if key in request})
    msg["39"] = response_code
    msg.update(extra)
    return msg


# --- accessors ------------------------------------------------------------------------------


def field_of(msg: Mapping[str, str], key: str) -> str:
    """A field that must be present (Iso8583Error naming it otherwise)."""
    try:
        return msg[key]
    except KeyError:
        raise Iso8583Error(f"field {key}: missing") from None


def mti_of(msg: Mapping[str, str]) -> str:
    return field_of(msg, "t")


def amount_of(msg: Mapping[str, str]) -> int:
    """Field 4, minor units."""
    return _int_field(msg, "4")


def stan_of(msg: Mapping[str, str]) -> int:
    """Field 11."""
    return _int_field(msg, "11")


def original_stan(msg: Mapping[str, str]) -> int:
    """The STAN of the transaction a reversal undoes: from field 90 when present, else 11."""
    if "90" in msg:
        data = msg["90"]
        if len(data) < 10 or not data[4:10].isdigit():
            raise Iso8583Error(f"field 90: no original STAN in {data!r}")
        return int(data[4:10])
    return stan_of(msg)


def response_code_of(msg: Mapping[str, str]) -> str | None:
    return msg.get("39")


def summary(msg: Mapping[str, str]) -> str:
    """One log-safe line: MTI, STAN, amount, response code, TID and the masked card."""
    parts = [msg.get("t", "????")]
    for key, label in (("11", "stan"), ("4", "amount"), ("39", "rc"), ("41", "tid")):
        if key in msg:
            parts.append(f"{label}={msg[key]}")
    if "2" in msg:
        parts.append(f"pan={mask_pan(msg['2'])}")
    if "90" in msg:
        parts.append(f"orig={msg['90'][:10]}")
    return " ".join(parts)


def _int_field(msg: Mapping[str, str], key: str) -> int:
    value = field_of(msg, key)
    if not value.isdigit():
        raise Iso8583Error(f"field {key}: must be digits, got {value!r}")
    return int(value)


def _n(value: int, width: int, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**width:
        raise Iso8583Error(f"field {key}: {value!r} does not fit n{width}")
    return f"{value:0{width}d}"


def _ans(value: str, width: int, key: str) -> str:
    if len(value) != width or not value.isascii() or not value.isprintable():
        raise Iso8583Error(
            f"field {key}: must be {width} printable ASCII characters, got {value!r}"
        )
    return value
