"""The pytest plugin (entry point `pytest11`): the bench as fixtures, the oracle after each test.

Options: `--rig` (default rigs/sim.toml; a simulated bench is started and stopped by the
plugin, or reused if one already answers on its ports), `--firmware` (the simulated terminal's
profile), `--seed`, `--recovery-s`, `--hil-out` (where each scenario's evidence goes).
Fixtures: `scenario` (the ECR's view: sales, faults, seeded choices), `bench`, `terminal`,
`net`, `power`, `printer`, `host`. After each scenario the plugin heals every fault, gives the
bench its recovery time, reads the three records and fails the test with the oracle's
violations; `@pytest.mark.no_oracle` opts out, `@pytest.mark.needs("power", ...)` skips a
scenario whose equipment the rig lacks, with the reason.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.rig import Rig, RigError, load_rig

VERDICT_PROPERTY = "pos_hil_verdict"
EQUIPMENT = (
    "power",
    "network",
    "printer",
    "printer_tap",
    "printer_physical",
    "capture",
    "cards",
    "host",
)


class OracleViolation(AssertionError):
    """The scenario broke an invariant; the message is the oracle's readable report."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pos-hil", "pos-hil bench")
    group.addoption("--rig", default="rigs/sim.toml", help="rig file (default rigs/sim.toml)")
    group.addoption("--firmware", default=None, help="simulated terminal firmware profile")
    group.addoption("--seed", type=int, default=None, help="seed of every random choice")
    group.addoption("--recovery-s", type=float, default=None, help="override the rig's bound")
    group.addoption("--hil-out", default=None, help="where scenario evidence goes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "no_oracle: do not reconcile this test's records")
    config.addinivalue_line("markers", "needs(*equipment): skip unless the rig has it")
    if config.getoption("seed", None) is None:
        config.option.seed = int(time.time() * 1000) % 1_000_000
    if config.getoption("hil_out", None) is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        config.option.hil_out = str(Path(".hil") / "runs" / stamp)


def pytest_report_header(config: pytest.Config) -> str:
    return f"pos-hil: rig {config.getoption('rig')}, seed {config.getoption('seed')}"


# -- the session's bench --------------------------------------------------------------------------


def session_rig(config: pytest.Config) -> Rig:
    """The run's rig: `--firmware` applied to a simulated rig; under pytest-xdist each worker
    gets its own copy of a simulated rig on free ports, so several benches run side by side."""
    path = Path(config.getoption("rig"))
    firmware = config.getoption("firmware")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    try:
        rig = load_rig(path)
        if rig.sim is None:
            if firmware:
                raise RigError(f"{path}: --firmware needs a simulated rig ([sim] section)")
            return rig
        if worker or (firmware and firmware != rig.sim.firmware):
            from harness.sim.rigs import derive_sim_rig

            out = Path(config.getoption("hil_out")) / f"rig-{worker or 'main'}"
            try:
                derived = derive_sim_rig(out, base=path, firmware=firmware)
            except ValueError as exc:
                raise RigError(str(exc)) from exc
            rig = load_rig(derived)
    except RigError as exc:
        raise pytest.UsageError(str(exc)) from exc
    return rig


@pytest.fixture(scope="session")
def hil_rig(pytestconfig: pytest.Config) -> Iterator[Rig]:
    """The run's rig; a simulated bench is started here (once per session) and stopped after."""
    rig = session_rig(pytestconfig)
    if rig.sim is None:
        yield rig
        return
    from harness.sim.launcher import BenchStartError, SimBench

    sim = SimBench(rig, fresh=True)
    try:
        sim.start()
    except BenchStartError as exc:
        pytest.exit(f"pos-hil: cannot start the simulated bench: {exc}", returncode=3)
    try:
        yield rig
    finally:
        sim.stop()


def _missing(rig: Rig, equipment: str) -> str | None:
    has = {
        "power": rig.psu is not None,
        "network": rig.network is not None,
        "printer": rig.printer is not None,
        "printer_tap": rig.printer is not None and rig.printer.tap is not None,
        "capture": rig.capture is not None,
        "cards": rig.sim is not None,
        "printer_physical": rig.sim is not None,
        "host": rig.host is not None,
    }
    if equipment not in has:
        return f"unknown equipment {equipment!r} (known: {', '.join(EQUIPMENT)})"
    if equipment == "capture" and has["capture"]:
        from harness.drivers.capture import capture_available

        ok, why = capture_available(rig.capture.iface)  # type: ignore[union-attr]
        return None if ok else f"cannot capture the host link: {why}"
    return None if has[equipment] else f"the rig {rig.path} has no {equipment}"


@pytest.fixture
def scenario(request: pytest.FixtureRequest, hil_rig: Rig) -> Iterator[Any]:
    """One scenario: the bench opened for this test, a card presented, a seeded rng."""
    from harness.bench import Bench
    from harness.evidence import take_baseline
    from harness.history import History
    from harness.scenario import Scenario, ScenarioInfo

    for marker in request.node.iter_markers("needs"):
        for equipment in marker.args:
            reason = _missing(hil_rig, equipment)
            if reason:
                pytest.skip(reason)
    config = request.config
    out = scenario_dir(config, request.node.nodeid)
    history = History(out / "history.jsonl")
    bench = Bench.open(hil_rig, history)
    try:
        if hil_rig.capture is not None:
            bench.watch_wire(out / "link.pcap")
        if hil_rig.printer is not None and hil_rig.printer.tap is not None:
            bench.watch_printer()
        seed = int(config.getoption("seed"))
        info = ScenarioInfo(
            nodeid=request.node.nodeid,
            seed=seed,
            firmware=hil_rig.sim.firmware if hil_rig.sim else None,
            rig_path=str(config.getoption("rig")),
        )
        scene = Scenario(bench, info, random.Random(f"{seed}:{request.node.nodeid}"))
        request.node.stash[_SCENARIO] = (scene, take_baseline(bench), out)
        history.record("scenario", event="start", nodeid=request.node.nodeid, seed=seed)
        yield scene
    finally:
        bench.close()
        history.close()


_SCENARIO = pytest.StashKey[tuple[Any, Any, Path]]()


def scenario_dir(config: pytest.Config, nodeid: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:120]
    path = Path(config.getoption("hil_out")) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def bench(scenario: Any) -> Any:
    return scenario.bench


@pytest.fixture
def terminal(scenario: Any) -> Any:
    return scenario.bench.terminal


def _equipment(scenario: Any, attribute: str, section: str) -> Any:
    """The bench's driver for a rig section; a rig without that section skips the test."""
    driver = getattr(scenario.bench, attribute)
    if driver is None:
        pytest.skip(f"the rig {scenario.rig.path} has no [{section}]")
    return driver


@pytest.fixture
def net(scenario: Any) -> Any:
    return _equipment(scenario, "network", "network")


@pytest.fixture
def power(scenario: Any) -> Any:
    return _equipment(scenario, "power", "psu")


@pytest.fixture
def printer(scenario: Any) -> Any:
    return _equipment(scenario, "printer", "printer")


@pytest.fixture
def host(scenario: Any) -> Any:
    return _equipment(scenario, "host", "host")


# -- the oracle, after the test body ---------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """Run the scenario, then reconcile its records; a violation fails the test."""
    from harness.faults import MissingEquipment

    try:
        result = yield
    except MissingEquipment as exc:
        pytest.skip(str(exc))
    except BaseException:
        _reconcile(item, body_failed=True)
        raise
    _reconcile(item, body_failed=False)
    return result


def _reconcile(item: pytest.Item, body_failed: bool) -> None:
    stashed = item.stash.get(_SCENARIO, None)
    if stashed is None or item.get_closest_marker("no_oracle") is not None:
        return
    from harness.attach import attach_evidence
    from harness.evidence import collect
    from harness.oracle import check, render_text, verdict_to_json

    scenario, baseline, out = stashed
    config = item.config
    recovery_s = config.getoption("recovery_s") or scenario.rig.rig.recovery_s
    evidence = collect(scenario, baseline, recovery_s)
    verdict = check(evidence)
    report = render_text(evidence, verdict)
    replay = replay_command(config, item)
    summary = {
        **verdict_to_json(verdict),
        "seed": scenario.info.seed,
        "replay": replay,
        "firmware": scenario.info.firmware,
    }
    item.user_properties.append((VERDICT_PROPERTY, json.dumps(summary, default=str)))
    attach_evidence(out, scenario, evidence, verdict, report, replay)
    if verdict.valid is not True and not body_failed:
        reason = "violates" if verdict.valid is False else "proves nothing (unknown)"
        raise OracleViolation(f"the scenario {reason}:\n{report}")


def replay_command(config: pytest.Config, item: pytest.Item) -> str:
    parts = ["hil run", f"--rig {config.getoption('rig')}"]
    if config.getoption("firmware"):
        parts.append(f"--firmware {config.getoption('firmware')}")
    parts.append(f"-k '{item.name}'")
    parts.append(f"--seed {config.getoption('seed')}")
    return " ".join(parts)
