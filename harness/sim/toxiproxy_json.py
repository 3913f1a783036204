"""Go `encoding/json` as toxiproxy's HTTP API parses and prints it, so clients see the same bytes.

Decoding is two steps, like Go's `json.Decoder`: `decode_value` scans the *first* JSON value of a
body with Go's scanner (trailing bytes ignored; syntax errors carry Go's exact wording, e.g.
"invalid character 'z' looking for beginning of value", "unexpected EOF", "EOF"), then `bind`
maps it onto a described Go type with Go's leniencies: keys match case-insensitively, unknown keys
are ignored, `null` keeps the default, and a type mismatch gives Go's message, e.g.
"json: cannot unmarshal number 1.5 into Go struct field LatencyToxic.attributes.latency of type
int64". The one thing to know: `bind` returns only the fields that were present and not null, so
the caller applies them onto its defaults (absent and null are the same thing in Go).

Encoding (`marshal`) is compact, keeps dict order, escapes `<`, `>`, `&`, U+2028 and U+2029 like
Go, and prints `Float32` values in Go's shortest float32 form (`1`, `0.5`, `1e-07` -> `1e-7`).
Deviation: values nested deeper than Python's recursion allows (about 900 levels; Go allows
10000) are refused with Go's "exceeded max depth" wording.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


class GoJsonError(Exception):
    """A body Go would refuse; `str()` is Go's error text (without "bad request body: ")."""


@dataclass(frozen=True)
class GoNumber:
    """A JSON number kept as its literal text: Go's messages quote it ("number 1.5")."""

    text: str


@dataclass(frozen=True)
class GoObject:
    """A JSON object with its keys in document order, duplicates included (the last one wins)."""

    pairs: list[tuple[str, Value]]


Value = None | bool | str | GoNumber | list["Value"] | GoObject


@dataclass(frozen=True)
class Float32:
    """A float32 field (toxicity): printed the way Go prints a float32."""

    value: float


# -- scanning (a port of Go's encoding/json scanner, errors included) ---------------------------

_CONTINUE, _BEGIN_LITERAL, _BEGIN_OBJECT, _OBJECT_KEY, _OBJECT_VALUE, _END_OBJECT = range(6)
_BEGIN_ARRAY, _ARRAY_VALUE, _END_ARRAY, _SKIP_SPACE, _END, _ERROR = range(6, 12)
_PARSE_OBJECT_KEY, _PARSE_OBJECT_VALUE, _PARSE_ARRAY_VALUE = range(3)
_MAX_DEPTH = 10000
_SPACES = frozenset(b" \t\r\n")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")
_SHORT_ESCAPES = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r"}


def _quote_char(c: int) -> str:
    """Go's `quoteChar`: how a byte appears in a syntax error message."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    if c == 0x5C:
        return "'\\\\'"
    if c in _SHORT_ESCAPES:
        return f"'{_SHORT_ESCAPES[c]}'"
    if c < 0x20 or c == 0x7F:
        return f"'\\x{c:02x}'"
    ch = chr(c)
    if not ch.isprintable():
        return f"'\\u{c:04x}'"
    return f"'{ch}'"


_Step = Callable[[int], int]


class _Scanner:
    """Go's JSON scanner state machine, one byte at a time."""

    def __init__(self) -> None:
        self.step: _Step = self._begin_value
        self.stack: list[int] = []
        self.err = ""

    def error(self, c: int, context: str) -> int:
        self.step = self._state_error
        self.err = f"invalid character {_quote_char(c)} {context}"
        return _ERROR

    def _state_error(self, c: int) -> int:
        return _ERROR

    def _push(self, c: int, state: int, success: int) -> int:
        self.stack.append(state)
        if len(self.stack) <= _MAX_DEPTH:
            return success
        return self.error(c, "exceeded max depth")

    def _begin_value_or_empty(self, c: int) -> int:
        if c in _SPACES:
            return _SKIP_SPACE
        if c == 0x5D:  # ]
            return self.end_value(c)
        return self._begin_value(c)

    def _begin_value(self, c: int) -> int:
        if c in _SPACES:
            return _SKIP_SPACE
        if c == 0x7B:  # {
            self.step = self._begin_string_or_empty
            return self._push(c, _PARSE_OBJECT_KEY, _BEGIN_OBJECT)
        if c == 0x5B:  # [
            self.step = self._begin_value_or_empty
            return self._push(c, _PARSE_ARRAY_VALUE, _BEGIN_ARRAY)
        if c == 0x22:
            self.step = self._in_string
            return _BEGIN_LITERAL
        if c == 0x2D:  # -
            self.step = self._neg
            return _BEGIN_LITERAL
        if c == 0x30:
            self.step = self._zero
            return _BEGIN_LITERAL
        if 0x31 <= c <= 0x39:
            self.step = self._one
            return _BEGIN_LITERAL
        literal = {0x74: "true", 0x66: "false", 0x6E: "null"}.get(c)
        if literal is not None:
            self.step = self._literal(literal, 1)
            return _BEGIN_LITERAL
        return self.error(c, "looking for beginning of value")

    def _begin_string_or_empty(self, c: int) -> int:
        if c in _SPACES:
            return _SKIP_SPACE
        if c == 0x7D:  # }
            self.stack[-1] = _PARSE_OBJECT_VALUE
            return self.end_value(c)
        return self._begin_string(c)

    def _begin_string(self, c: int) -> int:
        if c in _SPACES:
            return _SKIP_SPACE
        if c == 0x22:
            self.step = self._in_string
            return _BEGIN_LITERAL
        return self.error(c, "looking for beginning of object key string")

    def end_value(self, c: int) -> int:
        if not self.stack:
            self.step = self._end_top
            return self._end_top(c)
        if c in _SPACES:
            self.step = self.end_value
            return _SKIP_SPACE
        state = self.stack[-1]
        if state == _PARSE_OBJECT_KEY:
            if c == 0x3A:  # :
                self.stack[-1] = _PARSE_OBJECT_VALUE
                self.step = self._begin_value
                return _OBJECT_KEY
            return self.error(c, "after object key")
        if state == _PARSE_OBJECT_VALUE:
            if c == 0x2C:  # ,
                self.stack[-1] = _PARSE_OBJECT_KEY
                self.step = self._begin_string
                return _OBJECT_VALUE
            if c == 0x7D:
                self.stack.pop()
                return _END_OBJECT
            return self.error(c, "after object key:value pair")
        if c == 0x2C:
            self.step = self._begin_value
            return _ARRAY_VALUE
        if c == 0x5D:
            self.stack.pop()
            return _END_ARRAY
        return self.error(c, "after array element")

    def _end_top(self, c: int) -> int:
        # Go records an error for trailing non-space bytes but only reports it on the *next*
        # Decode call: a single Decode ignores trailing garbage.
        return _END

    def _in_string(self, c: int) -> int:
        if c == 0x22:
            self.step = self.end_value
            return _CONTINUE
        if c == 0x5C:
            self.step = self._in_string_esc
            return _CONTINUE
        if c < 0x20:
            return self.error(c, "in string literal")
        return _CONTINUE

    def _in_string_esc(self, c: int) -> int:
        if c in b'bfnrt\\/"':
            self.step = self._in_string
            return _CONTINUE
        if c == 0x75:  # u
            self.step = self._hex(4)
            return _CONTINUE
        return self.error(c, "in string escape code")

    def _hex(self, remaining: int) -> _Step:
        def step(c: int) -> int:
            if c in _HEX:
                self.step = self._in_string if remaining == 1 else self._hex(remaining - 1)
                return _CONTINUE
            return self.error(c, "in \\u hexadecimal character escape")

        return step

    def _neg(self, c: int) -> int:
        if c == 0x30:
            self.step = self._zero
            return _CONTINUE
        if 0x31 <= c <= 0x39:
            self.step = self._one
            return _CONTINUE
        return self.error(c, "in numeric literal")

    def _one(self, c: int) -> int:
        if c in _DIGITS:
            return _CONTINUE
        return self._zero(c)

    def _zero(self, c: int) -> int:
        if c == 0x2E:  # .
            self.step = self._dot
            return _CONTINUE
        if c in b"eE":
            self.step = self._exp
            return _CONTINUE
        return self.end_value(c)

    def _dot(self, c: int) -> int:
        if c in _DIGITS:
            self.step = self._dot0
            return _CONTINUE
        return self.error(c, "after decimal point in numeric literal")

    def _dot0(self, c: int) -> int:
        if c in _DIGITS:
            return _CONTINUE
        if c in b"eE":
            self.step = self._exp
            return _CONTINUE
        return self.end_value(c)

    def _exp(self, c: int) -> int:
        if c in b"+-":
            self.step = self._exp_sign
            return _CONTINUE
        return self._exp_sign(c)

    def _exp_sign(self, c: int) -> int:
        if c in _DIGITS:
            self.step = self._exp0
            return _CONTINUE
        return self.error(c, "in exponent of numeric literal")

    def _exp0(self, c: int) -> int:
        if c in _DIGITS:
            return _CONTINUE
        return self.end_value(c)

    def _literal(self, word: str, index: int) -> _Step:
        def step(c: int) -> int:
            expected = ord(word[index])
            if c == expected:
                self.step = (
                    self.end_value if index + 1 == len(word) else self._literal(word, index + 1)
                )
                return _CONTINUE
            return self.error(c, f"in literal {word} (expecting {_quote_char(expected)})")

        return step


def _first_value_end(data: bytes) -> int:
    """Where Go's Decoder stops reading the first value; raises Go's syntax or EOF error."""
    scanner = _Scanner()
    for i, c in enumerate(data):
        result = scanner.step(c)
        if result == _END:
            return i
        if result in (_END_OBJECT, _END_ARRAY) and scanner.end_value(0x20) == _END:
            return i + 1
        if result == _ERROR:
            raise GoJsonError(scanner.err)
    if scanner.step(0x20) == _END:
        return len(data)
    if any(c not in _SPACES for c in data):
        raise GoJsonError("unexpected EOF")
    raise GoJsonError("EOF")


_SURROGATES = re.compile("[\ud800-\udfff]")


def _clean(text: str) -> str:
    """Go turns invalid UTF-8 and lone surrogate escapes into U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def _no_constant(name: str) -> Value:
    raise GoJsonError(f"invalid character '{name[0]}' looking for beginning of value")


def _clean_value(value: Any) -> Value:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, list):
        return [_clean_value(v) for v in value]
    if isinstance(value, GoObject):
        return GoObject([(_clean(k), _clean_value(v)) for k, v in value.pairs])
    result: Value = value
    return result


def decode_value(body: bytes) -> Value:
    """The first JSON value of `body`, as Go's `json.Decoder.Decode` reads it."""
    end = _first_value_end(body)
    text = body[:end].decode("utf-8", errors="surrogateescape")
    try:
        raw = json.loads(
            text,
            object_pairs_hook=GoObject,
            parse_float=GoNumber,
            parse_int=GoNumber,
            parse_constant=_no_constant,
        )
    except RecursionError:
        raise GoJsonError("invalid character '[' exceeded max depth") from None
    return _clean_value(raw)


# -- binding onto Go types -----------------------------------------------------------------------


@dataclass(frozen=True)
class GoType:
    """Enough of a Go type to bind JSON onto it and to word Go's type errors.

    kind: "string" | "bool" | "int64" | "int" | "float32" | "struct" | "slice".
    name: the type as Go prints it ("int64", "toxics.LatencyToxic").
    struct_name: `reflect.Type.Name()` of a struct ("" for an anonymous struct).
    fields: a struct's JSON field names and types, in declaration order.
    elem: a slice's element type.
    """

    kind: str
    name: str
    struct_name: str = ""
    fields: tuple[tuple[str, GoType], ...] = ()
    elem: GoType | None = None


STRING = GoType("string", "string")
BOOL = GoType("bool", "bool")
INT64 = GoType("int64", "int64")
INT = GoType("int", "int")
FLOAT32 = GoType("float32", "float32")

_INT_LITERAL = re.compile(r"-?[0-9]+\Z")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]


def struct_type(name: str, struct_name: str, *fields: tuple[str, GoType]) -> GoType:
    return GoType("struct", name, struct_name=struct_name, fields=tuple(fields))


def slice_type(elem: GoType) -> GoType:
    return GoType("slice", f"[]{elem.name}", elem=elem)


@dataclass
class _Binder:
    first_error: str | None = None
    struct_name: str | None = None  # None = no error context yet (Go's nil errorContext)
    path: list[str] = field(default_factory=list)

    def type_error(self, what: str, gotype: GoType) -> None:
        if self.first_error is not None:
            return
        if self.struct_name is not None or self.path:
            where = f"Go struct field {self.struct_name or ''}.{'.'.join(self.path)}"
        else:
            where = "Go value"
        self.first_error = f"json: cannot unmarshal {what} into {where} of type {gotype.name}"

    def bind(self, value: Value, gotype: GoType) -> Any:
        """The bound value, or None when it leaves the default (null or a type error)."""
        if value is None:
            return None
        kind = gotype.kind
        if kind == "struct":
            return self._bind_struct(value, gotype)
        if kind == "slice":
            if not isinstance(value, list):
                self.type_error(_json_kind(value), gotype)
                return None
            assert gotype.elem is not None
            return [self.bind(v, gotype.elem) for v in value]
        if kind == "string":
            if isinstance(value, str):
                return value
        elif kind == "bool":
            if isinstance(value, bool):
                return value
        elif kind in ("int64", "int"):
            if isinstance(value, GoNumber):
                number = _parse_int64(value.text)
                if number is None:
                    self.type_error(f"number {value.text}", gotype)
                return number
        elif kind == "float32" and isinstance(value, GoNumber):
            number32 = _parse_float32(value.text)
            if number32 is None:
                self.type_error(f"number {value.text}", gotype)
            return number32
        self.type_error(_json_kind(value), gotype)
        return None

    def _bind_struct(self, value: Value, gotype: GoType) -> dict[str, Any] | None:
        if not isinstance(value, GoObject):
            self.type_error(_json_kind(value), gotype)
            return None
        result: dict[str, Any] = {}
        outer_struct, depth = self.struct_name, len(self.path)
        for key, item in value.pairs:
            target = _find_field(gotype, key)
            if target is None:
                continue  # unknown keys are ignored
            name, field_type = target
            self.path.append(name)
            self.struct_name = gotype.struct_name
            bound = self.bind(item, field_type)
            del self.path[depth:]
            self.struct_name = outer_struct
            if bound is None:
                continue
            if isinstance(bound, dict) and isinstance(result.get(name), dict):
                result[name] = {**result[name], **bound}  # a repeated object merges, as in Go
            else:
                result[name] = bound
        return result


def _find_field(gotype: GoType, key: str) -> tuple[str, GoType] | None:
    for name, field_type in gotype.fields:
        if name == key:
            return name, field_type
    folded = key.casefold()
    for name, field_type in gotype.fields:
        if name.casefold() == folded:
            return name, field_type
    return None


def _json_kind(value: Value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, GoNumber):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def _parse_int64(text: str) -> int | None:
    if not _INT_LITERAL.match(text):
        return None
    number = int(text)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def _parse_float32(text: str) -> float | None:
    number = float(text)
    if math.isinf(number):
        return None
    try:
        rounded: float = struct.unpack("<f", struct.pack("<f", number))[0]
    except OverflowError:
        return None
    return rounded


def bind(value: Value, gotype: GoType) -> Any:
    """Bind a decoded value onto `gotype`; raises the first Go type error, like Go does."""
    binder = _Binder()
    result = binder.bind(value, gotype)
    if binder.first_error is not None:
        raise GoJsonError(binder.first_error)
    return result


def decode(body: bytes, gotype: GoType) -> Any:
    """`json.NewDecoder(body).Decode(&x)` for x of `gotype`: present, non-null fields only."""
    return bind(decode_value(body), gotype)


# -- encoding ------------------------------------------------------------------------------------

_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _float32_bits(value: float) -> float:
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


def format_float32(value: float) -> str:
    """Go's `json.Marshal` of a float32: shortest round-trip digits, 'e' form if tiny/huge."""
    f32 = _float32_bits(value)
    if f32 == 0:
        return "-0" if math.copysign(1.0, f32) < 0 else "0"
    for precision in range(9):
        candidate = f"{f32:.{precision}e}"
        if _float32_bits(float(candidate)) == f32:
            break
    magnitude = abs(f32)
    if magnitude < _float32_bits(1e-6) or magnitude >= _float32_bits(1e21):
        mantissa, exponent = candidate.split("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
        return f"{mantissa}e{sign}{digits.zfill(2) if sign == '+' else digits}"
    return format(Decimal(candidate).normalize(), "f")


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, Float32):
        out.append(format_float32(value.value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False).translate(_GO_ESCAPES))
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            _encode(str(key), out)
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot marshal {type(value).__name__}")


def marshal(value: Any) -> bytes:
    """Go's `json.Marshal`: compact, in dict order, HTML-safe escapes, UTF-8."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8", errors="replace")
