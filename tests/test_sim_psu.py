"""The simulated DP832: its SCPI behaviour, and power cuts that really kill the wired devices.

Process tests start `python -m harness.sim.psu` on a private rig (free ports) with its outputs
wired to tests/fake_device.py and drive it with unmodified pyvisa + pyvisa-py over a raw socket,
as the harness does. A cut must have killed and reaped the device before the PSU answers the
next query on the same connection. In-process tests drive `Dp832.execute` directly.
"""

from __future__ import annotations

import os
import re
import select
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyvisa
from pyvisa.resources import MessageBasedResource

from harness.sim.psu import Dp832, PsuLog
from harness.sim.world import World
from tests.polling import alive, wait_for
from tests.simpsu import RunningPsu, start_psu, stop_psu

DEADLINE_S = 5.0
IDN = "RIGOL TECHNOLOGIES,DP832,DP8SIM000001,00.01.16"
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00 \d+\.\d{6} \S.*")


def open_visa(psu: RunningPsu) -> tuple[pyvisa.ResourceManager, MessageBasedResource]:
    manager = pyvisa.ResourceManager("@py")
    resource = manager.open_resource(
        psu.resource, read_termination="\n", write_termination="\n", timeout=2000
    )
    assert isinstance(resource, MessageBasedResource)
    return manager, resource


@pytest.fixture
def psu(tmp_path: Path) -> Iterator[RunningPsu]:
    running = start_psu(tmp_path)
    try:
        running.wait_for_boot("terminal")
        running.wait_for_boot("printer")
        yield running
    finally:
        stop_psu(running)


@pytest.fixture
def visa(psu: RunningPsu) -> Iterator[MessageBasedResource]:
    manager, resource = open_visa(psu)
    try:
        yield resource
    finally:
        resource.close()
        manager.close()


# -- the real process over pyvisa -------------------------------------------------------------


def test_idn_and_power_on_state_over_unmodified_pyvisa(
    psu: RunningPsu, visa: MessageBasedResource
) -> None:
    assert visa.query("*IDN?") == IDN
    assert visa.query(":APPL? CH1") == "CH1:30V/3A,12.000,2.000"
    assert visa.query(":APPL? CH2") == "CH2:30V/3A,24.000,3.000"
    assert [visa.query(f":OUTP? CH{n}") for n in (1, 2, 3)] == ["ON", "ON", "OFF"]
    assert visa.query(":MEAS:VOLT? CH1") == "12.000"
    assert visa.query(":MEAS:ALL? CH1") == "12.000,0.150,1.800"
    assert visa.query(":MEAS:ALL? CH3") == "0.000,0.000,0.000"
    assert visa.query_ascii_values(":MEAS? CH2") == [24.0]


def test_output_off_kills_the_device_before_the_next_reply_and_on_boots_a_new_one(
    psu: RunningPsu, visa: MessageBasedResource
) -> None:
    terminal, printer = psu.pid("terminal"), psu.pid("printer")
    assert terminal is not None and printer is not None
    visa.write(":OUTP CH1,OFF")
    assert visa.query(":OUTP? CH1") == "OFF"
    assert not alive(terminal), "the cut must be done before the PSU answers again"
    assert alive(printer)
    assert visa.query(":MEAS:ALL? CH1") == "0.000,0.000,0.000"

    visa.write(":OUTP CH1,ON")
    rebooted = psu.wait_for_boot("terminal", not_pid=terminal)
    assert visa.query(":MEAS:VOLT? CH1") == "12.000"

    log = psu.log_text()
    assert all(LOG_LINE.fullmatch(line) for line in log.splitlines()), log
    assert "':OUTP CH1,OFF'" in log and "CH1 output OFF (:OUTP CH1,OFF)" in log
    assert f"terminal cut pid={terminal} SIGKILL" in log
    assert f"terminal boot pid={rebooted}" in log
    assert log.index(f"cut pid={terminal}") < log.index("':OUTP? CH1'")


def test_brown_out_below_min_volts_kills_and_voltage_back_boots(
    psu: RunningPsu, visa: MessageBasedResource
) -> None:
    terminal = psu.pid("terminal")
    assert terminal is not None
    visa.write(":INST:NSEL 1")
    visa.write(":SOUR:VOLT 9.5")  # the rig's terminal needs 10 V
    assert visa.query(":MEAS:ALL? CH1") == "9.500,0.000,0.000"
    assert not alive(terminal)
    assert visa.query(":OUTP? CH1") == "ON"
    visa.write(":SOUR1:VOLT 10")
    psu.wait_for_boot("terminal", not_pid=terminal)
    assert "brown-out: 9.500 V < min 10.000 V" in psu.log_text()


def test_ovp_trip_turns_the_output_off_until_cleared(
    psu: RunningPsu, visa: MessageBasedResource
) -> None:
    terminal = psu.pid("terminal")
    assert terminal is not None
    visa.write(":OUTP:OVP:VAL CH1,11")
    assert visa.query(":OUTP:OVP:QUES? CH1") == "NO"
    visa.write(":OUTP:OVP CH1,ON")  # 12 V on the output > 11 V: trips at once
    assert visa.query(":OUTP:OVP:QUES? CH1") == "YES"
    assert visa.query(":OUTP? CH1") == "OFF"
    assert not alive(terminal)
    visa.write(":OUTP CH1,ON")  # refused while tripped
    assert visa.query(":SYST:ERR?") == '-221,"Settings conflict"'
    assert visa.query(":OUTP? CH1") == "OFF"

    visa.write(":OUTP:OVP:CLEAR CH1")
    assert visa.query(":OUTP:OVP:QUES? CH1") == "NO"
    visa.write(":OUTP:OVP:VAL CH1,13")
    visa.write(":OUTP CH1,ON")
    psu.wait_for_boot("terminal", not_pid=terminal)
    assert visa.query(":OUTP:OVP? CH1") == "ON"
    assert visa.query(":OUTP:OVP:VAL? CH1") == "13.000"


def test_ocp_trips_when_the_device_starts_drawing_more(
    psu: RunningPsu, visa: MessageBasedResource
) -> None:
    printer = psu.pid("printer")
    assert printer is not None
    visa.write(":OUTP:OCP:VAL CH2,1.0")
    visa.write(":OUTP:OCP CH2,ON")
    assert visa.query(":OUTP:OCP:QUES? CH2") == "NO"  # idle: 0.150 A
    psu.world.set_activity("printer", "printing")  # 1.600 A, nobody asks: the PSU notices
    wait_for("OCP trip on CH2", lambda: visa.query(":OUTP:OCP:QUES? CH2") == "YES")
    assert visa.query(":OUTP? CH2") == "OFF"
    assert not alive(printer)
    assert "OCP trip: 1.600 A > 1.000 A" in psu.log_text()


def test_current_limit_below_the_load_means_cc_then_brown_out(
    psu: RunningPsu, visa: MessageBasedResource
) -> None:
    printer = psu.pid("printer")
    assert printer is not None
    visa.write(":SOUR2:CURR 1.5")
    psu.world.set_activity("printer", "printing")  # wants 1.6 A at 24 V
    assert visa.query(":MEAS:ALL? CH2") == "22.500,1.500,33.750"  # CC, still above 20 V
    assert visa.query(":OUTP:MODE? CH2") == "CC"
    visa.write(":SOUR2:CURR 1.0")  # 24 V x 1.0 / 1.6 = 15 V < the printer's 20 V
    assert visa.query(":OUTP? CH2") == "ON"
    assert not alive(printer)
    assert visa.query(":MEAS:ALL? CH2") == "24.000,0.000,0.000"  # no load left
    visa.write(":SOUR2:CURR 3")  # a new setting lifts the latched brown-out
    psu.wait_for_boot("printer", not_pid=printer)


def test_errors_are_queued_and_never_replied(psu: RunningPsu, visa: MessageBasedResource) -> None:
    terminal = psu.pid("terminal")
    assert terminal is not None
    visa.write(":FOO:BAR 1")
    visa.write(":SOUR1:VOLT 40")
    visa.write(":NOPE?")  # an undefined query gets no reply either
    visa.write(":MEAS:VOLT? CH9")
    assert visa.query("*IDN?") == IDN  # the first reply on the line is this one
    assert [visa.query(":SYST:ERR?") for _ in range(5)] == [
        '-113,"Undefined header"',
        '-222,"Data out of range"',
        '-113,"Undefined header"',
        '-224,"Illegal parameter value"',
        '0,"No error"',
    ]
    assert visa.query(":SOUR1:VOLT?") == "12.000"
    assert alive(terminal)


def test_measured_current_follows_what_the_device_is_doing(
    psu: RunningPsu, visa: MessageBasedResource
) -> None:
    world = psu.world
    expected = {"idle": "0.150", "booting": "0.250", "transacting": "0.350", "printing": "0.400"}
    for activity, amps in expected.items():
        world.set_activity("terminal", activity)  # type: ignore[arg-type]
        assert visa.query(":MEAS:CURR? CH1") == amps, activity
    world.set_activity("printer", "printing")
    assert visa.query(":MEAS:CURR? CH2") == "1.600"
    assert visa.query(":MEAS:POWE? CH2") == "38.400"
    world.set_activity("terminal", "off")
    assert visa.query(":MEAS:CURR? CH1") == "0.000"
    world.set_activity("terminal", "transacting")
    visa.write(":OUTP CH1,OFF")
    assert visa.query(":MEAS:CURR? CH1") == "0.000"
    assert world.activity("terminal") == "off"  # the PSU took the board's power away


def test_a_device_booted_from_a_client_outlives_that_client(psu: RunningPsu) -> None:
    threads = psu.threads()
    manager, other = open_visa(psu)
    try:
        wait_for("the client's thread", lambda: psu.threads() == threads + 1)
        terminal = psu.pid("terminal")
        other.write(":OUTP CH1,OFF;:OUTP CH1,ON")
        rebooted = psu.wait_for_boot("terminal", not_pid=terminal)
    finally:
        other.close()
        manager.close()
    wait_for("the client's thread to end", lambda: psu.threads() == threads)
    _, visa = open_visa(psu)
    try:
        assert visa.query(":OUTP? CH1") == "ON"
        assert alive(rebooted)
    finally:
        visa.close()


def test_two_clients_share_one_instrument(psu: RunningPsu, visa: MessageBasedResource) -> None:
    manager, other = open_visa(psu)
    try:
        visa.write(":SOUR1:VOLT 11")
        assert visa.query("*OPC?") == "1"  # handled before the other client asks
        assert other.query(":SOUR1:VOLT?") == "11.000"
        other.write(":FOO")
        assert other.query("*OPC?") == "1"  # :FOO has been handled
        assert visa.query(":SYST:ERR?") == '-113,"Undefined header"'  # one error queue
    finally:
        other.close()
        manager.close()


def test_inherited_fds_reach_every_device_across_power_cycles(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    psu = start_psu(tmp_path, pass_fds=(write_end,))
    os.close(write_end)
    seen = b""

    def lines() -> set[str]:
        nonlocal seen
        if select.select([read_end], [], [], 0.01)[0]:
            seen += os.read(read_end, 4096)
        return set(seen.decode("ascii").splitlines())

    try:
        terminal = psu.wait_for_boot("terminal")
        printer = psu.wait_for_boot("printer")
        wait_for("fd writes", lambda: {f"terminal {terminal}", f"printer {printer}"} <= lines())
        manager, visa = open_visa(psu)
        try:
            visa.write(":OUTP CH1,OFF")
            visa.write(":OUTP CH1,ON")
            rebooted = psu.wait_for_boot("terminal", not_pid=terminal)
        finally:
            visa.close()
            manager.close()
        wait_for("the rebooted terminal's fd write", lambda: f"terminal {rebooted}" in lines())
    finally:
        stop_psu(psu)
        os.close(read_end)


def test_sigterm_stops_the_devices_and_exits_zero(psu: RunningPsu) -> None:
    pids = [psu.pid("terminal"), psu.pid("printer")]
    psu.process.terminate()
    assert psu.process.wait(timeout=DEADLINE_S) == 0
    assert all(pid is not None and not alive(pid) for pid in pids)
    log = psu.log_text()
    assert "terminal stopped" in log and "printer stopped" in log


def test_rst_turns_every_output_off(psu: RunningPsu, visa: MessageBasedResource) -> None:
    pids = [psu.pid("terminal"), psu.pid("printer")]
    visa.write("*RST")
    assert visa.query(":APPL? CH1") == "CH1:30V/3A,0.000,3.000"
    assert all(pid is not None and not alive(pid) for pid in pids)
    assert [visa.query(f":OUTP? CH{n}") for n in (1, 2, 3)] == ["OFF", "OFF", "OFF"]


# -- the instrument in-process: SCPI behaviour without processes ------------------------------


@pytest.fixture
def dp832(tmp_path: Path) -> Dp832:
    return Dp832(IDN, world=World(tmp_path), log=PsuLog(tmp_path / "psu.log"))


def errors(psu: Dp832) -> list[str]:
    found: list[str] = []
    while (error := psu.execute(":SYST:ERR?")) != '0,"No error"':
        assert error is not None
        found.append(error.split(",")[0])
    return found


def test_channel_selection_apply_and_limits(dp832: Dp832) -> None:
    assert dp832.execute(":INST?") == "CH1" and dp832.execute(":INST:NSEL?") == "1"
    dp832.execute(":INST CH3")
    assert dp832.execute(":INST:NSEL?") == "3"
    dp832.execute(":VOLT MAX")  # the selected channel: CH3 is a 5 V output
    assert dp832.execute(":SOUR3:VOLT?") == "5.000"
    assert dp832.execute(":VOLT? MAX;:SOUR1:VOLT? MAX") == "5.000;30.000"
    dp832.execute(":APPL CH2,5.5,0.5")
    assert dp832.execute(":APPL? CH2") == "CH2:30V/3A,5.500,0.500"
    assert dp832.execute(":APPL? CH2,VOLT") == "5.500"
    assert dp832.execute(":APPL? CH2,CURR") == "0.500"
    dp832.execute(":SOUR2:CURR 250mA")
    assert dp832.execute(":SOUR2:CURR?") == "0.250"
    dp832.execute(":APPL CH3,6,1")  # above CH3's 5 V: nothing changes
    assert dp832.execute(":APPL? CH3") == "CH3:5V/3A,5.000,3.000"
    assert errors(dp832) == ["-222"]


def test_parameter_errors_carry_their_scpi_numbers(dp832: Dp832) -> None:
    cases = {
        ":OUTP CH1": "-109",
        ":SOUR:VOLT": "-109",
        "*RST 1": "-108",
        ":SOUR:VOLT 1,2": "-108",
        ":OUTP CH9,ON": "-224",
        ":OUTP CH1,MAYBE": "-224",
        ":SOUR:VOLT ON": "-104",
        ":SOUR:CURR 5": "-222",
        ":OUTP:OVP:VAL CH1,40": "-222",
        ":SOUR4:VOLT 1": "-114",
        ":SYST:ERR": "-113",  # the header exists only as a query
        "*IDN": "-113",
        ":MEAS:VOLT CH1": "-113",
    }
    for line, code in cases.items():
        assert dp832.execute(line) is None, line
        assert errors(dp832) == [code], line


def test_a_command_error_discards_the_rest_of_the_line_an_execution_error_does_not(
    dp832: Dp832,
) -> None:
    assert dp832.execute(":SOUR1:VOLT 40;:SOUR1:CURR 1;*OPC?") == "1"
    assert dp832.execute(":SOUR1:CURR?") == "1.000"
    dp832.execute(":SOUR1:VOLT 1,2;:SOUR1:CURR 2")
    assert dp832.execute(":SOUR1:CURR?") == "1.000"
    assert errors(dp832) == ["-222", "-108"]


def test_program_messages_run_in_order_and_join_replies(dp832: Dp832) -> None:
    reply = dp832.execute(":SOUR1:VOLT 5;CURR 1;:APPL? CH1;*OPC?;:SYST:ERR?")
    assert reply == 'CH1:30V/3A,5.000,1.000;1;0,"No error"'


def test_error_queue_keeps_twenty_and_marks_overflow(dp832: Dp832) -> None:
    for _ in range(25):
        dp832.execute(":FOO")
    assert errors(dp832) == ["-113"] * 19 + ["-350"]
    dp832.execute(":FOO")
    dp832.execute("*CLS")
    assert errors(dp832) == []


def test_protection_on_an_unwired_channel(dp832: Dp832) -> None:
    dp832.execute(":APPL CH3,5,1;:OUTP CH3,ON")
    dp832.execute(":SOUR3:VOLT:PROT 4.5;:SOUR3:VOLT:PROT:STAT ON")
    assert dp832.execute(":SOUR3:VOLT:PROT:TRIP?;:OUTP? CH3") == "YES;OFF"
    assert dp832.execute(":OUTP:OVP:QUES? CH3") == "YES"
    dp832.execute(":SOUR3:VOLT:PROT:CLE")
    assert dp832.execute(":OUTP:OVP:QUES? CH3;:OUTP:OCP:QUES? CH3") == "NO;NO"
    assert dp832.execute(":OUTP:OCP:VAL? CH3;:OUTP:OCP? CH3") == "3.300;OFF"
    assert dp832.execute(":SYST:REM;:SYST:LOC;:SYST:ERR?") == '0,"No error"'
