"""Faults: each one knows how to apply and how to heal itself.

A `Fault` is data plus two callables, built by the factory functions below from the bench's
drivers. `Bench.inject` writes the fault to the history before applying it and records the
instant it actually took effect; `Bench.reset` heals whatever is still applied, in reverse order.
A self-healing fault (a power glitch) has no heal step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    family: str  # "power" | "network" | "printer"
    name: str  # what it means: "power_cut", "response_lost", "jam", ...
    target: str  # the output, proxy or printer it acts on
    params: dict[str, Any] = field(default_factory=dict)
    apply_fn: Callable[[], Any] = field(default=lambda: None, repr=False)
    heal_fn: Callable[[], Any] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.family}.{self.name}({self.target}{', ' + extra if extra else ''})"

    @property
    def self_healing(self) -> bool:
        return self.heal_fn is None

    def apply(self) -> float:
        """Apply; the instant it took effect (a driver's own instant when it reports one)."""
        return _instant(self.apply_fn())

    def heal(self) -> float:
        if self.heal_fn is None:
            return time.monotonic()
        return _instant(self.heal_fn())

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "name": self.name,
            "target": self.target,
            "params": self.params,
            "label": self.label,
        }


def _instant(result: Any) -> float:
    """Drivers may return the instant their command took effect; else it is now."""
    if isinstance(result, float):
        return result
    for name in ("effective_at", "instant", "t", "at"):
        value = getattr(result, name, None)
        if isinstance(value, float):
            return value
    return time.monotonic()


@dataclass
class AppliedFault:
    fault: Fault
    requested_at: float
    effective_at: float
    healed_at: float | None = None
    handle: Any = None  # what the driver returned (e.g. the toxics it created)

    @property
    def active(self) -> bool:
        return self.healed_at is None and not self.fault.self_healing
