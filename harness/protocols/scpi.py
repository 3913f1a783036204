"""SCPI for bench power supplies: the per-vendor dialect table and a command-line parser.

One `Dialect` per vendor family says which command strings do each operation. Adding a vendor is
adding one entry to `DIALECTS`. The parser turns one SCPI program line into headers and
arguments, expanding short/long mnemonic forms, so the simulated PSU accepts what real
instruments accept (`:SOUR:VOLT 12`, `SOURce:VOLTage:LEVel 12`, `volt 12`).

The parser is pure and raises `ScpiError` with the real SCPI error number; an instrument puts
that in its error queue (`SYST:ERR?`, see `format_error`) and never replies with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass


def _on_off(reply: str) -> bool:
    text = reply.strip().upper()
    if text in ("ON", "1"):
        return True
    if text in ("OFF", "0"):
        return False
    raise ValueError(f"unexpected output state reply {reply!r}; expected ON/OFF or 1/0")


def _yes_no(reply: str) -> bool:
    text = reply.strip().upper()
    if text in ("YES", "1", "ON"):
        return True
    if text in ("NO", "0", "OFF"):
        return False
    raise ValueError(f"unexpected protection-trip reply {reply!r}; expected YES/NO or 1/0")


def _siglent_status(channel: int) -> Callable[[str], bool]:
    """SPD3303X `SYST:STAT?` answers a hex word; bit 4 is CH1 output on, bit 5 CH2."""

    def parse(reply: str) -> bool:
        word = int(reply.strip(), 16)
        return bool(word & (1 << (3 + channel)))

    return parse


@dataclass(frozen=True)
class Dialect:
    """How one vendor family spells each PSU operation.

    Templates use `{ch}` for the channel and `{value}` for a number. `select` (when not None) is
    sent before every channel operation whose templates do not name the channel themselves.
    Operations a family lacks over SCPI are None: the driver refuses them with a clear error.
    """

    name: str
    select: str | None
    set_volts: tuple[str, ...]
    set_amps: tuple[str, ...]
    output_on: tuple[str, ...]
    output_off: tuple[str, ...]
    output_query: str
    parse_output: Callable[[int], Callable[[str], bool]]
    measure_volts: str
    measure_amps: str
    ovp_set: tuple[str, ...] | None = None
    ocp_set: tuple[str, ...] | None = None
    ovp_tripped: str | None = None
    ocp_tripped: str | None = None
    clear_trip: tuple[str, ...] | None = None
    parse_trip: Callable[[str], bool] = _yes_no
    error_query: str = "SYST:ERR?"
    idn_prefixes: tuple[str, ...] = ()


DIALECTS: dict[str, Dialect] = {
    "rigol-dp800": Dialect(
        name="rigol-dp800",
        select=":INST:NSEL {ch}",
        set_volts=(":SOUR{ch}:VOLT {value:.3f}",),  # names the channel: no select race
        set_amps=(":SOUR{ch}:CURR {value:.3f}",),
        output_on=(":OUTP CH{ch},ON",),
        output_off=(":OUTP CH{ch},OFF",),
        output_query=":OUTP? CH{ch}",
        parse_output=lambda ch: _on_off,
        measure_volts=":MEAS:VOLT? CH{ch}",
        measure_amps=":MEAS:CURR? CH{ch}",
        ovp_set=(":OUTP:OVP:VAL CH{ch},{value:.3f}", ":OUTP:OVP CH{ch},ON"),
        ocp_set=(":OUTP:OCP:VAL CH{ch},{value:.3f}", ":OUTP:OCP CH{ch},ON"),
        ovp_tripped=":OUTP:OVP:QUES? CH{ch}",
        ocp_tripped=":OUTP:OCP:QUES? CH{ch}",
        clear_trip=(":OUTP:OVP:CLEAR CH{ch}", ":OUTP:OCP:CLEAR CH{ch}"),
        error_query=":SYST:ERR?",
        idn_prefixes=("RIGOL TECHNOLOGIES,DP8",),
    ),
    "keysight-e36300": Dialect(
        name="keysight-e36300",
        select=None,
        set_volts=("VOLT {value:.3f},(@{ch})",),
        set_amps=("CURR {value:.3f},(@{ch})",),
        output_on=("OUTP ON,(@{ch})",),
        output_off=("OUTP OFF,(@{ch})",),
        output_query="OUTP? (@{ch})",
        parse_output=lambda ch: _on_off,
        measure_volts="MEAS:VOLT? (@{ch})",
        measure_amps="MEAS:CURR? (@{ch})",
        ovp_set=("VOLT:PROT {value:.3f},(@{ch})",),
        ocp_set=("CURR:PROT:STAT ON,(@{ch})",),
        ovp_tripped="VOLT:PROT:TRIP? (@{ch})",
        ocp_tripped="CURR:PROT:TRIP? (@{ch})",
        clear_trip=("OUTP:PROT:CLE (@{ch})",),
        idn_prefixes=("Keysight Technologies,E363", "Agilent Technologies,E363"),
    ),
    "siglent-spd3303x": Dialect(
        name="siglent-spd3303x",
        select=None,
        set_volts=("CH{ch}:VOLT {value:.3f}",),
        set_amps=("CH{ch}:CURR {value:.3f}",),
        output_on=("OUTP CH{ch},ON",),
        output_off=("OUTP CH{ch},OFF",),
        output_query="SYST:STAT?",
        parse_output=_siglent_status,
        measure_volts="MEAS:VOLT? CH{ch}",
        measure_amps="MEAS:CURR? CH{ch}",
        idn_prefixes=("Siglent Technologies,SPD3303",),
    ),
    "rs-hmc804x": Dialect(
        name="rs-hmc804x",
        select="INST:NSEL {ch}",
        set_volts=("VOLT {value:.3f}",),
        set_amps=("CURR {value:.3f}",),
        output_on=("OUTP:SEL ON", "OUTP:GEN ON"),
        output_off=("OUTP:SEL OFF",),
        output_query="OUTP:SEL?",
        parse_output=lambda ch: _on_off,
        measure_volts="MEAS:VOLT?",
        measure_amps="MEAS:CURR?",
        ovp_set=("VOLT:PROT:LEV {value:.3f}", "VOLT:PROT:STAT ON"),
        ocp_set=("FUSE:STAT ON",),
        ovp_tripped="VOLT:PROT:TRIP?",
        ocp_tripped="FUSE:TRIP?",
        clear_trip=("VOLT:PROT:CLE",),
        idn_prefixes=("Rohde&Schwarz,HMC804", "Rohde&Schwarz,NGE10"),
    ),
}


# -- the parser ---------------------------------------------------------------------------------
# IEEE 488.2 / SCPI-99 program messages: units separated by ';', a header (`*IDN?` or
# `[:]MNEMonic[n]:...[?]`), whitespace, then comma-separated parameters. A header without a
# leading ':' after a compound command is relative to that command's path (SCPI-99 §6.2.4):
# `:SOUR:VOLT 12;CURR 1` sets SOUR:CURR. Mnemonics are accepted in exactly their short or long
# form, in any case; anything else is -113 Undefined header, as on a real instrument.

SCPI_ERRORS: dict[int, str] = {
    0: "No error",
    -100: "Command error",
    -102: "Syntax error",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -131: "Invalid suffix",
    -221: "Settings conflict",
    -222: "Data out of range",
    -224: "Illegal parameter value",
    -350: "Queue overflow",
}


class ScpiError(Exception):
    """An SCPI error as an instrument queues it: a standard number and its standard text.

    `detail` says what exactly was wrong, for logs; `format_error` leaves it out, as the
    instruments the harness drives do.
    """

    def __init__(self, code: int, message: str | None = None, detail: str = "") -> None:
        self.code = code
        self.message = message if message is not None else SCPI_ERRORS.get(code, "Unknown error")
        self.detail = detail
        text = f"{code},{self.message}"
        super().__init__(f"{text} ({detail})" if detail else text)


def format_error(err: ScpiError | None) -> str:
    """The reply to SYST:ERR?: `-113,"Undefined header"`, or `0,"No error"` for None."""
    if err is None:
        return '0,"No error"'
    message = err.message.replace('"', '""')
    return f'{err.code},"{message}"'


# Long forms with the short form in upper case. Where two share a short form the first listed is
# the canonical one (STAT -> STATE); matching against a HeaderPattern uses the spelling, so
# `SYST:STAT?` still matches a `SYSTem:STATus` pattern.
_MNEMONICS: tuple[str, ...] = (
    "ABORt", "ALL", "AMPLitude", "APPLy", "CH", "CHANnel", "CLEar", "CONDition", "COUNt",
    "CURRent", "DC", "DELay", "DISPlay", "ENABle", "ERRor", "EVENt", "FUSE", "GENeral",
    "IMMediate", "INSTrument", "LEVel", "LOCal", "MASTer", "MEASure", "MODE", "NEXT", "NSELect",
    "OCP", "OPERation", "OUTPut", "OVP", "POWEr", "PROTection", "QUEStion", "REMote", "RWLock",
    "SELect", "SOURce", "STATe", "STATus", "SYSTem", "TRACk", "TRIGger", "TRIPped", "VALue",
    "VERSion", "VOLTage",
)  # fmt: skip

_COMMON_COMMANDS = frozenset(
    {"*CLS", "*ESE", "*ESR", "*IDN", "*OPC", "*PSC", "*RCL", "*RST", "*SAV", "*SRE", "*STB",
     "*TRG", "*TST", "*WAI"}
)  # fmt: skip


def _short_form(spelling: str) -> str:
    return "".join(ch for ch in spelling if ch.isupper())


def _vocabulary(spellings: tuple[str, ...]) -> dict[str, str]:
    """Every accepted spelling (upper case) -> its canonical long form."""
    table: dict[str, str] = {}
    for spelling in spellings:
        long = spelling.upper()
        for form in (long, _short_form(spelling)):
            table.setdefault(form, long)
    return table


_CANONICAL = _vocabulary(_MNEMONICS)

_HEADER = re.compile(r"(:?)([A-Za-z][A-Za-z0-9_]*(?::[A-Za-z][A-Za-z0-9_]*)*)(\?)?")
_COMMON = re.compile(r"\*([A-Za-z]+)(\?)?")
_MNEMONIC = re.compile(r"([A-Za-z][A-Za-z_]*?)(\d*)")
_UNIT = re.compile(r"\s*(\S+)(?:\s+(.*?))?\s*", re.DOTALL)
_NUMBER = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)")
_ARGUMENT = re.compile(
    r"""[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:\s*[A-Za-z]+)?  # number [unit]
      | [A-Za-z][A-Za-z0-9_]*                                          # character data
      | "(?:[^"]|"")*" | '(?:[^']|'')*'                                # string
      | \(.*\)                                                         # expression, (@1,2)
      | \#[HhQqBb][0-9A-Fa-f]+                                         # non-decimal number
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Command:
    """One program message unit.

    `header` is the canonical long mnemonics, upper case, suffixes split out (`:SOUR2:VOLT:LEV
    12` -> ("SOURCE", "VOLTAGE", "LEVEL")); `suffixes` aligns with it (None = not given);
    `spelled` is what was written (upper case, no suffix), which HeaderPattern matches against.
    Common commands have a one-element header like ("*IDN",).
    """

    header: tuple[str, ...]
    query: bool
    args: tuple[str, ...]
    raw: str
    suffixes: tuple[int | None, ...] = ()
    spelled: tuple[str, ...] = ()

    @property
    def common(self) -> bool:
        return bool(self.header) and self.header[0].startswith("*")

    @property
    def path(self) -> str:
        """The canonical header as text, e.g. "SOURCE:VOLTAGE" or "*IDN"."""
        return ":".join(self.header)

    def suffix(self, mnemonic: str) -> int | None:
        """The numeric suffix written on `mnemonic` (any accepted spelling), or None."""
        wanted = _CANONICAL.get(mnemonic.upper(), mnemonic.upper())
        for name, suffix in zip(self.header, self.suffixes, strict=False):
            if name == wanted:
                return suffix
        return None


def parse_program(line: str) -> list[Command]:
    """Parse one program message (one line, units separated by ';'); raise ScpiError.

    The whole line is rejected on the first syntax error, so nothing of a malformed line runs.
    A blank line is an empty program; one trailing ';' is tolerated.
    """
    text = line.rstrip("\r\n")
    if not text.isascii():
        raise ScpiError(-102, detail="non-ASCII character")
    if not text.strip():
        return []
    units = _split(text, ";")
    if len(units) > 1 and not units[-1].strip():
        units.pop()
    commands: list[Command] = []
    path: tuple[tuple[str, str, int | None], ...] = ()  # (spelled, canonical, suffix)
    for unit in units:
        command, nodes, absolute = _parse_unit(unit)
        if nodes is not None:
            if not absolute:
                nodes = path + nodes
                command = Command(
                    header=tuple(n[1] for n in nodes),
                    query=command.query,
                    args=command.args,
                    raw=command.raw,
                    suffixes=tuple(n[2] for n in nodes),
                    spelled=tuple(n[0] for n in nodes),
                )
            path = nodes[:-1]
        commands.append(command)
    return commands


def _parse_unit(
    unit: str,
) -> tuple[Command, tuple[tuple[str, str, int | None], ...] | None, bool]:
    """One unit -> (command, its header nodes or None for a common command, leading ':')."""
    match = _UNIT.fullmatch(unit)
    if match is None:
        raise ScpiError(-102, detail=f"empty program message unit in {unit!r}")
    header_text, args_text = match.group(1), match.group(2)
    args = _parse_args(args_text) if args_text else ()
    raw = unit.strip()
    common = _COMMON.fullmatch(header_text)
    if common is not None:
        name = "*" + common.group(1).upper()
        if name not in _COMMON_COMMANDS:
            raise ScpiError(-113, detail=f"unknown common command {name}")
        command = Command((name,), common.group(2) is not None, args, raw, (None,), (name,))
        return command, None, True
    header = _HEADER.fullmatch(header_text)
    if header is None:
        raise ScpiError(-102, detail=f"bad header {header_text!r}")
    nodes = tuple(_parse_mnemonic(text) for text in header.group(2).split(":"))
    command = Command(
        header=tuple(n[1] for n in nodes),
        query=header.group(3) is not None,
        args=args,
        raw=raw,
        suffixes=tuple(n[2] for n in nodes),
        spelled=tuple(n[0] for n in nodes),
    )
    return command, nodes, header.group(1) == ":"


def _parse_mnemonic(text: str) -> tuple[str, str, int | None]:
    match = _MNEMONIC.fullmatch(text)
    if match is None:
        raise ScpiError(-113, detail=f"bad mnemonic {text!r}")
    spelled = match.group(1).upper()
    canonical = _CANONICAL.get(spelled)
    if canonical is None:
        raise ScpiError(-113, detail=f"unknown mnemonic {text!r}")
    if not match.group(2):
        return spelled, canonical, None
    suffix = int(match.group(2))
    if suffix < 1:
        raise ScpiError(-114, detail=f"suffix {suffix} on {spelled}")
    return spelled, canonical, suffix


def _parse_args(text: str) -> tuple[str, ...]:
    args = tuple(arg.strip() for arg in _split(text, ","))
    for arg in args:
        if not arg:
            raise ScpiError(-102, detail=f"empty parameter in {text!r}")
        if _ARGUMENT.fullmatch(arg) is None:
            raise ScpiError(-102, detail=f"bad parameter {arg!r}")
    return args


def _split(text: str, separator: str) -> list[str]:
    """Split on `separator` outside quoted strings and parentheses."""
    parts: list[str] = []
    start = 0
    quote = ""
    depth = 0
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ScpiError(-102, detail=f"unbalanced ')' in {text!r}")
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if quote or depth:
        raise ScpiError(-102, detail=f"unterminated string or expression in {text!r}")
    parts.append(text[start:])
    return parts


# -- matching headers against programming-guide patterns ----------------------------------------

_PATTERN_NODE = re.compile(
    r"(?P<open>\[)?:?(?P<name>\*?[A-Za-z]+)(?P<suffix>\[<?n>?\]|<n>)?(?(open)\])"
)


@dataclass(frozen=True)
class _PatternNode:
    long: str
    short: str
    optional: bool
    takes_suffix: bool

    def accepts(self, spelled: str, suffix: int | None) -> bool:
        return spelled in (self.long, self.short) and (suffix is None or self.takes_suffix)


class HeaderPattern:
    """A header as programming guides write it: `[SOURce[n]]:VOLTage[:LEVel][:IMMediate]`.

    Upper-case letters are the short form; `[...]` marks an optional node; `[n]` / `<n>` after
    a mnemonic allows a numeric suffix there (a suffix anywhere else does not match). A trailing
    '?' is ignored: whether a command is a query is the caller's business.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        body = text.rstrip("?")
        nodes: list[_PatternNode] = []
        position = 0
        for match in _PATTERN_NODE.finditer(body):
            if match.start() != position:
                break
            name = match.group("name")
            nodes.append(
                _PatternNode(
                    long=name.upper(),
                    short=_short_form(name) if not name.startswith("*") else name.upper(),
                    optional=match.group("open") is not None,
                    takes_suffix=match.group("suffix") is not None,
                )
            )
            position = match.end()
        if position != len(body) or not nodes:
            raise ValueError(f"bad SCPI header pattern {text!r}")
        self.nodes = tuple(nodes)

    def __repr__(self) -> str:
        return f"HeaderPattern({self.text!r})"

    def match(self, command: Command) -> bool:
        spelled = command.spelled or command.header
        suffixes = command.suffixes or (None,) * len(spelled)
        return self._match(0, spelled, suffixes, 0)

    def _match(
        self, i: int, spelled: tuple[str, ...], suffixes: tuple[int | None, ...], j: int
    ) -> bool:
        if i == len(self.nodes):
            return j == len(spelled)
        node = self.nodes[i]
        if (
            j < len(spelled)
            and node.accepts(spelled[j], suffixes[j])
            and self._match(i + 1, spelled, suffixes, j + 1)
        ):
            return True
        return node.optional and self._match(i + 1, spelled, suffixes, j)


# -- parameter helpers ----------------------------------------------------------------------------


def parse_number(arg: str, unit: str | None = None) -> float:
    """A decimal parameter, with an optional unit (`12`, `1.5e1`, `500mA` for unit "A").

    Raises -104 for something that is not a number, -131 for a unit that does not fit and -222
    for a value no float can hold.
    """
    match = _NUMBER.fullmatch(arg.strip())
    if match is None:
        raise ScpiError(-104, detail=f"{arg!r} is not a number")
    value = float(match.group(1))
    suffix = match.group(2).upper()
    if suffix:
        base = (unit or "").upper()
        scale = {base: 1.0, "M" + base: 1e-3, "U" + base: 1e-6, "K" + base: 1e3}.get(suffix)
        if not base or scale is None:
            raise ScpiError(-131, detail=f"unit {suffix!r} where {unit or 'none'} fits")
        value *= scale
    if not math.isfinite(value):
        raise ScpiError(-222, detail=f"{arg!r} is not finite")
    return value


def parse_bool(arg: str) -> bool:
    """ON/OFF or a number (non-zero = ON), as SCPI booleans are; else -224."""
    text = arg.strip().upper()
    if text == "ON":
        return True
    if text == "OFF":
        return False
    number = _NUMBER.fullmatch(text)
    if number is not None and not number.group(2):
        return round(float(number.group(1))) != 0
    raise ScpiError(-224, detail=f"{arg!r} is not ON/OFF")
