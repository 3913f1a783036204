"""Helpers for tests that run a whole simulated bench: start it, reach its devices, wait."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pyvisa

from harness.drivers.cards import SimCardSlot
from harness.drivers.host import SimLedger
from harness.drivers.interfaces import Card, TerminalError, TransactionRecord
from harness.drivers.terminal_zvt import ZvtTerminal
from harness.protocols.cards import with_luhn
from harness.rig import Rig, load_rig
from harness.sim.launcher import SimBench
from harness.sim.paper_roll import PrintedReceipt, read_roll
from tests import polling
from tests.simrig import make_sim_rig

CARD = Card(with_luhn("476173" + "123456789"))
T = TypeVar("T")

# Extra host rules the bench tests use on top of rigs/sim.toml's
TEST_RULES = "{ amount = 7900, silent = true },\n  { amount = 4242, delay_ms = 1500 },"


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Poll a device's real answer until it says yes (a whole bench gets longer)."""
    return polling.wait_for(what, probe, timeout, every=0.05)


def bench_rig(tmp_path: Path, extra: dict[str, str] | None = None) -> Rig:
    replace = {
        "timeout_s = 30": "timeout_s = 8",
        "{ amount = 7900, silent = true },": TEST_RULES,
    }
    replace.update(extra or {})
    return load_rig(make_sim_rig(tmp_path, replace))


@contextmanager
def running_bench(rig: Rig) -> Iterator[SimBench]:
    with SimBench(rig, fresh=True) as bench:
        yield bench


def serial_terminal(rig: Rig, bench: SimBench, **kwargs: object) -> ZvtTerminal:
    assert bench.endpoints is not None
    return ZvtTerminal(
        str(bench.endpoints.terminal_serial),
        tid=rig.terminal.tid,
        password=rig.terminal.password,
        currency=rig.terminal.currency,
        timeout_s=rig.terminal.timeout_s,
        log_path=bench.state_dir / "logs" / "ecr-link.log",
        **kwargs,  # type: ignore[arg-type]
    )


def ledger(rig: Rig) -> SimLedger:
    assert rig.sim is not None
    return SimLedger(f"http://{rig.sim.host.ledger_listen}")


def card_slot(rig: Rig) -> SimCardSlot:
    assert rig.sim is not None
    return SimCardSlot(rig.sim.state_dir, rig.rig.card_bins)


def paper(bench: SimBench) -> list[PrintedReceipt]:
    assert bench.endpoints is not None
    return read_roll(bench.endpoints.paper_roll)


def psu_session(rig: Rig) -> pyvisa.resources.MessageBasedResource:
    assert rig.psu is not None
    resource = pyvisa.ResourceManager("@py").open_resource(
        rig.psu.resource, read_termination="\n", write_termination="\n", timeout=3000
    )
    assert isinstance(resource, pyvisa.resources.MessageBasedResource)
    return resource


def repeat_when_up(terminal: ZvtTerminal, trace: int | None) -> TransactionRecord | None:
    try:
        return terminal.repeat_receipt(trace)
    except TerminalError:  # the terminal is still booting
        return None
