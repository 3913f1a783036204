"""The SCPI parser: what real instruments accept parses to one canonical header, what they reject
fails with the SCPI error number they would queue, and every dialect template is valid SCPI.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.protocols.scpi import (
    DIALECTS,
    Command,
    HeaderPattern,
    ScpiError,
    format_error,
    parse_bool,
    parse_number,
    parse_program,
)
from harness.sim.psu import Dp832, PsuLog
from harness.sim.world import World

VOLTAGE_LEVEL = ("SOURCE", "VOLTAGE", "LEVEL")


def one(line: str) -> Command:
    commands = parse_program(line)
    assert len(commands) == 1
    return commands[0]


def error_code(line: str) -> int:
    with pytest.raises(ScpiError) as info:
        parse_program(line)
    return info.value.code


@pytest.mark.parametrize(
    "line",
    [
        ":SOUR2:VOLT:LEV 12",
        "SOUR2:VOLT:LEV 12",
        ":SOURce2:VOLTage:LEVel 12",
        ":source2:voltage:level 12",
        ":sOuR2:VoLt:lEv 12",
        "  :SOUR2:VOLT:LEV   12  ",
        ":SOUR2:VOLT:LEV 12\r\n",
    ],
)
def test_short_long_and_mixed_case_forms_give_one_canonical_header(line: str) -> None:
    command = one(line)
    assert command.header == VOLTAGE_LEVEL
    assert command.suffixes == (2, None, None)
    assert command.suffix("SOUR") == 2 and command.suffix("source") == 2
    assert command.args == ("12",)
    assert not command.query


def test_queries_common_commands_and_arguments() -> None:
    idn = one("*idn?")
    assert idn.header == ("*IDN",) and idn.query and idn.common
    assert one("*RST").header == ("*RST",) and not one("*RST").query
    measure = one(":MEAS:ALL? CH1")
    assert measure.header == ("MEASURE", "ALL") and measure.query and measure.args == ("CH1",)
    output = one(":OUTP CH1 , ON")
    assert output.header == ("OUTPUT",) and output.args == ("CH1", "ON")
    keysight = one("VOLT 12.000,(@1,2)")
    assert keysight.args == ("12.000", "(@1,2)")
    quoted = one('SYST:ERR? "a;b, c"')
    assert quoted.args == ('"a;b, c"',)
    assert one("volt 500 mV").args == ("500 mV",)
    assert one("syst:err?").path == "SYSTEM:ERROR"


def test_semicolons_split_units_and_relative_headers_follow_the_current_path() -> None:
    commands = parse_program(":SOUR2:VOLT 12;CURR 1.5;:OUTP CH2,ON;*OPC?;:MEAS? CH2;")
    assert [c.header for c in commands] == [
        ("SOURCE", "VOLTAGE"),
        ("SOURCE", "CURRENT"),  # relative to SOUR2: the path after SOUR2:VOLT
        ("OUTPUT",),
        ("*OPC",),
        ("MEASURE",),
    ]
    assert commands[1].suffixes == (2, None)
    assert [c.query for c in commands] == [False, False, False, True, True]
    # a common command does not change the current path
    assert parse_program("SYST:ERR?;*CLS;ERR?")[2].header == ("SYSTEM", "ERROR")
    assert parse_program("") == [] and parse_program("  \r\n") == []


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("SOUR::VOLT 1", -102),
        ("SOUR:VOLT: 1", -102),
        (":VOLT?X", -102),
        ("VOLT 1;;CURR 1", -102),
        ("OUTP CH1,,ON", -102),
        ("OUTP CH1,", -102),
        ('SYST:ERR? "open', -102),
        ("VOLT (1", -102),
        ("VOLT 1)", -102),
        ("VOLT 1.2.3", -102),
        ("VOLT 12 V V", -102),
        ("VOLT 12\u00b0", -102),
        ("12 VOLT", -102),
        ("VOLTA 12", -113),  # neither the short nor the long form
        ("VOLTAG 12", -113),
        ("FOO:BAR 1", -113),
        ("*FOO", -113),
        ("SOUR0:VOLT 1", -114),
    ],
)
def test_bad_syntax_is_rejected_with_the_scpi_error_number(line: str, code: int) -> None:
    assert error_code(line) == code


def test_a_malformed_line_is_rejected_whole() -> None:
    # nothing of "VOLT 1;FOO" may run: the parser raises before returning any command
    assert error_code("VOLT 1;FOO 2") == -113


def test_format_error_is_what_syst_err_answers() -> None:
    assert format_error(None) == '0,"No error"'
    assert format_error(ScpiError(-113)) == '-113,"Undefined header"'
    assert format_error(ScpiError(-222, detail="40 V")) == '-222,"Data out of range"'
    assert format_error(ScpiError(-350)) == '-350,"Queue overflow"'
    assert format_error(ScpiError(-100, 'say "hi"')) == '-100,"say ""hi"""'
    expected = {
        -100: "Command error",
        -102: "Syntax error",
        -104: "Data type error",
        -108: "Parameter not allowed",
        -109: "Missing parameter",
        -113: "Undefined header",
        -222: "Data out of range",
        -224: "Illegal parameter value",
        -350: "Queue overflow",
    }
    for code, message in expected.items():
        assert ScpiError(code).message == message


def test_header_patterns_with_optional_nodes_and_suffixes() -> None:
    volts = HeaderPattern("[SOURce[n]]:VOLTage[:LEVel][:IMMediate][:AMPLitude]")
    for line in ("VOLT 1", ":SOUR:VOLT 1", "SOUR3:VOLT:LEV:IMM:AMPL 1", "volt:ampl 1"):
        assert volts.match(one(line)), line
    for line in ("CURR 1", "SOUR:VOLT:PROT 1", "SOUR:LEV 1", "VOLT2 1", "VOLT:AMPL:LEV 1"):
        assert not volts.match(one(line)), line
    status = HeaderPattern("SYSTem:STATus?")
    assert status.match(one("SYST:STAT?")) and status.match(one("system:status?"))
    assert not status.match(one("SYST:STATE?"))
    assert HeaderPattern("*IDN").match(one("*idn?"))
    assert HeaderPattern(":OUTPut:OVP[:STATe]").match(one(":OUTP:OVP:STAT CH1,ON"))
    assert HeaderPattern("INSTrument<n>").match(one("INST2"))
    # a Command built by hand (no spellings) matches by its canonical header
    assert volts.match(Command(("VOLTAGE", "LEVEL"), False, ("1",), "VOLT:LEV 1"))
    with pytest.raises(ValueError):
        HeaderPattern("SOURce::VOLTage")


def test_numbers_units_and_booleans() -> None:
    assert parse_number("12") == 12.0
    assert parse_number("+1.5e1") == 15.0
    assert parse_number(".5") == 0.5
    assert parse_number("500mA", "A") == pytest.approx(0.5)
    assert parse_number("12 V", "V") == 12.0
    assert parse_number("1.2kV", "V") == pytest.approx(1200.0)
    for arg, unit, code in (("ON", "V", -104), ("12A", "V", -131), ("12V", None, -131)):
        with pytest.raises(ScpiError) as info:
            parse_number(arg, unit)
        assert info.value.code == code
    with pytest.raises(ScpiError) as info:
        parse_number("1e999")
    assert info.value.code == -222
    assert parse_bool("on") and parse_bool("1") and not parse_bool("OFF") and not parse_bool("0")
    with pytest.raises(ScpiError) as info:
        parse_bool("MAYBE")
    assert info.value.code == -224


# The commands a PSU driver sends, node by node: (long form, short form, optional, suffix).
_Node = tuple[str, str, bool, bool]
COMMAND_SHAPES: list[tuple[_Node, ...]] = [
    (
        ("SOURCE", "SOUR", True, True),
        ("VOLTAGE", "VOLT", False, False),
        ("LEVEL", "LEV", True, False),
        ("IMMEDIATE", "IMM", True, False),
        ("AMPLITUDE", "AMPL", True, False),
    ),
    (("SOURCE", "SOUR", True, True), ("CURRENT", "CURR", False, False)),
    (
        ("OUTPUT", "OUTP", False, False),
        ("OVP", "OVP", False, False),
        ("VALUE", "VAL", False, False),
    ),
    (
        ("OUTPUT", "OUTP", False, False),
        ("OCP", "OCP", False, False),
        ("QUESTION", "QUES", False, False),
    ),
    (
        ("OUTPUT", "OUTP", False, False),
        ("OVP", "OVP", False, False),
        ("CLEAR", "CLE", False, False),
    ),
    (("INSTRUMENT", "INST", False, False), ("NSELECT", "NSEL", False, False)),
    (("MEASURE", "MEAS", False, False), ("CURRENT", "CURR", False, False)),
    (("MEASURE", "MEAS", False, False), ("ALL", "ALL", False, False)),
    (("SYSTEM", "SYST", False, False), ("ERROR", "ERR", False, False)),
    (("SYSTEM", "SYST", False, False), ("REMOTE", "REM", False, False)),
    (("SYSTEM", "SYST", False, False), ("LOCAL", "LOC", False, False)),
    (("APPLY", "APPL", False, False),),
    (
        ("SOURCE", "SOUR", True, True),
        ("VOLTAGE", "VOLT", False, False),
        ("PROTECTION", "PROT", False, False),
        ("TRIPPED", "TRIP", False, False),
    ),
    (("OUTPUT", "OUTP", False, False), ("STATE", "STAT", True, False)),
    (("CHANNEL", "CHAN", False, True), ("VOLTAGE", "VOLT", False, False)),
]


@st.composite
def spelled_commands(draw: st.DrawFn) -> tuple[str, tuple[str, ...], tuple[int | None, ...]]:
    """A command written any way a programmer may: case, short/long, optional nodes, suffix."""
    shape = draw(st.sampled_from(COMMAND_SHAPES))
    words: list[str] = []
    header: list[str] = []
    suffixes: list[int | None] = []
    for long, short, optional, takes_suffix in shape:
        if optional and draw(st.booleans()):
            continue
        form = draw(st.sampled_from((long, short)))
        cased = "".join(ch.lower() if draw(st.booleans()) else ch.upper() for ch in form)
        suffix = draw(st.one_of(st.none(), st.integers(1, 8))) if takes_suffix else None
        words.append(cased + ("" if suffix is None else str(suffix)))
        header.append(long)
        suffixes.append(suffix)
    colon = draw(st.sampled_from(("", ":")))
    query = draw(st.sampled_from(("", "?")))
    args = draw(st.sampled_from(("", " 12", " CH1,ON", "\t1.5e1 , MAX")))
    return colon + ":".join(words) + query + args, tuple(header), tuple(suffixes)


@given(spelled_commands())
def test_any_spelling_parses_to_the_canonical_header(
    case: tuple[str, tuple[str, ...], tuple[int | None, ...]],
) -> None:
    line, header, suffixes = case
    command = one(line)
    assert command.header == header
    assert command.suffixes == suffixes
    assert command.query == ("?" in line)


def dialect_lines(channel: int, value: float) -> list[tuple[str, str, str]]:
    """(dialect, field, formatted command) for every template of every dialect."""
    not_commands = {"name", "idn_prefixes"}
    lines: list[tuple[str, str, str]] = []
    for name, dialect in DIALECTS.items():
        for item in dataclasses.fields(dialect):
            value_of_field = getattr(dialect, item.name)
            if item.name in not_commands or value_of_field is None or callable(value_of_field):
                continue
            templates = (value_of_field,) if isinstance(value_of_field, str) else value_of_field
            for template in templates:
                lines.append((name, item.name, template.format(ch=channel, value=value)))
    return lines


@pytest.mark.parametrize(("dialect", "field_name", "line"), dialect_lines(2, 12.5))
def test_every_dialect_template_is_valid_scpi(dialect: str, field_name: str, line: str) -> None:
    assert parse_program(line), f"{dialect}.{field_name}: {line!r}"


def test_rigol_dialect_commands_all_run_on_the_simulated_dp832(tmp_path: Path) -> None:
    psu = Dp832("RIGOL TECHNOLOGIES,DP832,X,1", world=World(tmp_path), log=PsuLog(None))
    rigol = [line for dialect, _, line in dialect_lines(1, 1.5) if dialect == "rigol-dp800"]
    assert len(rigol) >= 10
    for line in rigol:
        reply = psu.execute(line)
        assert (reply is not None) == ("?" in line), line
        assert psu.execute(":SYST:ERR?") == '0,"No error"', line
