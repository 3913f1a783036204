"""SCPI for bench power supplies: the per-vendor dialect table and a command-line parser.

One `Dialect` per vendor family says which command strings do each operation. Adding a vendor is
adding one entry to `DIALECTS`. The parser turns one SCPI program line into headers and
arguments, expanding short/long mnemonic forms, so the simulated PSU accepts what real
instruments accept (`:SOUR:VOLT 12`, `SOURce:VOLTage:LEVel 12`, `volt 12`).
"""

from __future__ import annotations

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
        set_volts=(":SOUR:VOLT {value:.3f}",),
        set_amps=(":SOUR:CURR {value:.3f}",),
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
