"""The rig loader: the shipped rig loads, and every mistake names the file, the key and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.rig import Address, RigError, load_rig

SIM_RIG = Path(__file__).resolve().parent.parent / "rigs" / "sim.toml"


def write_rig(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text(text, encoding="utf-8")
    return path


def sim_text() -> str:
    return SIM_RIG.read_text(encoding="utf-8")


def test_shipped_sim_rig_loads_with_documented_ports() -> None:
    rig = load_rig(SIM_RIG)
    assert rig.sim is not None
    assert rig.sim.host.listen == Address("127.0.0.1", 8583)
    assert rig.sim.host.ledger_listen.port == 8580
    assert rig.sim.terminal.zvt_listen.port == 20007
    assert rig.sim.printer.listen.port == 9100
    assert rig.sim.psu.listen.port == 5025
    assert rig.psu is not None and rig.psu.outputs["terminal"].channel == 1
    assert rig.sim.firmware == "correct"


@pytest.mark.parametrize(
    ("change", "key", "allowed"),
    [
        (('dialect = "rigol-dp800"', 'dialect = "rigol"'), "psu.dialect", "rigol-dp800"),
        (('tid = "29110001"', 'tid = "2911"'), "terminal.tid", "8 digits"),
        (('firmware = "correct"', 'firmware = "nope"'), "sim.firmware", "correct"),
        (('listen = "127.0.0.1:8583"', 'listen = "10.0.0.1:8583"'), "sim.host.listen", "loopback"),
        (("recovery_s = 30", "recovery_s = -1"), "rig.recovery_s", "1 to 3600"),
        (("recovery_s = 30", 'recovery_s = "x"'), "rig.recovery_s", "number"),
        (("timeout_s = 30", "timout_s = 30"), "terminal.timout_s", "timeout_s"),
        (
            ("volts = 12.0, amps = 2.0", "volts = 14.0, amps = 2.0"),
            "psu.outputs.terminal.volts",
            "max_volts",
        ),
        (
            ('{ amount = 5100, response = "51" }', '{ amount = 5100, response = "99" }'),
            "sim.host.rules[0].response",
            "00, 05, 51, 91, 96",
        ),
    ],
)
def test_a_bad_key_is_named_with_what_is_allowed(
    tmp_path: Path, change: tuple[str, str], key: str, allowed: str
) -> None:
    old, new = change
    text = sim_text()
    assert old in text
    path = write_rig(tmp_path, text.replace(old, new, 1))
    with pytest.raises(RigError) as info:
        load_rig(path)
    message = str(info.value)
    assert str(path) in message
    assert f"[{key}]" in message
    assert allowed in message


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    path = write_rig(tmp_path, sim_text() + "\n[printre]\nx = 1\n")
    with pytest.raises(RigError, match=re.escape("[printre] is not a known key")):
        load_rig(path)


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    path = write_rig(tmp_path, sim_text().replace('tid = "29110001"\n', ""))
    with pytest.raises(RigError, match=re.escape("[terminal.tid] is missing")):
        load_rig(path)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write_rig(tmp_path, "[rig\nname=1")
    with pytest.raises(RigError, match="not valid TOML") as info:
        load_rig(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RigError, match="cannot read the rig file"):
        load_rig(tmp_path / "absent.toml")


def test_sim_outputs_must_be_named_after_devices(tmp_path: Path) -> None:
    text = sim_text().replace("outputs.printer =", "outputs.fan =")
    with pytest.raises(RigError, match=r"\[psu.outputs.fan\].*terminal, printer"):
        load_rig(write_rig(tmp_path, text))


def test_two_outputs_on_one_channel_are_refused(tmp_path: Path) -> None:
    text = sim_text().replace("channel = 2", "channel = 1")
    with pytest.raises(RigError, match="one channel for two outputs"):
        load_rig(write_rig(tmp_path, text))


def test_the_real_bench_example_validates_without_a_sim_section() -> None:
    rig = load_rig(SIM_RIG.parent / "real-bench.example.toml")
    assert rig.sim is None and not rig.is_sim
    assert rig.terminal.port == "/dev/ttyUSB0"
    assert rig.printer is not None and rig.printer.tap is not None
    assert rig.printer.tap.terminal_side.scheme == "serial"
    assert rig.printer.tap.terminal_side.baud == 19200
    assert rig.psu is not None and rig.psu.dialect == "keysight-e36300"
    assert rig.network is not None and str(rig.network.proxies["host"].upstream).endswith(":8583")


def test_a_proxy_to_a_host_not_allowlisted_is_refused(tmp_path: Path) -> None:
    text = (SIM_RIG.parent / "real-bench.example.toml").read_text(encoding="utf-8")
    text = text.replace('upstream = "198.51.100.7:8583"', 'upstream = "203.0.113.9:8583"')
    with pytest.raises(RigError, match=r"\[network.proxies.host.upstream\].*allow_upstreams"):
        load_rig(write_rig(tmp_path, text))
