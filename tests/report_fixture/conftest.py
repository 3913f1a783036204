"""A stand-in for the pos-hil pytest plugin, just enough for `hil run`'s own tests.

It defines the plugin's options and records what the plugin records: a `pos_hil_verdict` user
property (JSON) and an Allure attachment per test. The one thing to know: each option is added
only if nobody defined it yet, so the real plugin, if installed and loaded, wins.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import allure
import pytest

INVARIANTS = [f"I{n}" for n in range(1, 8)]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pos-hil (report fixture stand-in)")
    for name, kwargs in (
        ("--rig", {"default": "rigs/sim.toml"}),
        ("--firmware", {"default": "correct"}),
        ("--seed", {"type": int, "default": 123}),
        ("--recovery-s", {"type": float, "default": 30.0}),
    ):
        with contextlib.suppress(ValueError):  # already defined by the real plugin
            group.addoption(name, **kwargs)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Attach the scenario's (made-up) history to the test's own Allure result."""
    allure.attach(
        f'{{"t": 0.0, "event": "invoke", "what": "sale", "scenario": "{item.name}"}}\n'
        f"HISTORY-OF-{item.name}\n",
        name=f"history {item.name}",
        attachment_type=allure.attachment_type.TEXT,
    )


@pytest.fixture(autouse=True)
def _verdict(request: pytest.FixtureRequest) -> Iterator[None]:
    """Record the verdict named by the test's `verdict` marker, as the plugin does."""
    yield
    marker = request.node.get_closest_marker("verdict")
    if marker is None:
        return
    name = request.node.name
    seed = request.config.getoption("--seed")
    rig = request.config.getoption("--rig")
    invariants = {inv: "pass" for inv in INVARIANTS}
    invariants.update(marker.kwargs.get("invariants", {}))
    verdict = {
        "valid": marker.kwargs.get("valid", True),
        "invariants": invariants,
        "violations": marker.kwargs.get("violations", []),
        "seed": seed,
        "replay": f"hil run --rig {rig} -k {name} --seed {seed}",
    }
    request.node.user_properties.append(("pos_hil_verdict", json.dumps(verdict)))
