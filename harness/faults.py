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
    for name in ("effective_at", "applied_at", "began", "instant", "t", "at"):
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


class FaultFactory:
    """Builds the faults a scenario names, from the bench's (traced) drivers.

    Network faults act on one proxy of the rig (default: the first, the terminal's host link);
    power faults on a PSU output by its rig name; printer faults through the rig's fault path.
    """

    def __init__(
        self,
        power: Any,
        network: Any,
        printer: Any,
        default_proxy: str | None,
        printer_physical: Any = None,
    ) -> None:
        self.power = power
        self.network = network
        self.printer = printer
        self.default_proxy = default_proxy
        self.printer_physical = printer_physical

    def _need(self, driver: Any, what: str) -> Any:
        if driver is None:
            raise MissingEquipment(f"this fault needs {what}, which the rig does not have")
        return driver

    # -- power ---------------------------------------------------------------------------------
    def power_cut(self, output: str = "terminal") -> Fault:
        power = self._need(self.power, "a [psu]")
        return Fault(
            "power",
            "power_cut",
            output,
            {},
            lambda: power.cut(output),
            lambda: power.restore(output),
        )

    def power_glitch(self, output: str = "terminal", off_ms: float = 50.0) -> Fault:
        power = self._need(self.power, "a [psu]")
        return Fault(
            "power",
            "power_glitch",
            output,
            {"off_ms": off_ms},
            lambda: power.glitch(output, off_ms),
            None,
        )

    def brown_out(self, output: str = "terminal", volts: float = 9.0) -> Fault:
        power = self._need(self.power, "a [psu]")
        return Fault(
            "power",
            "brown_out",
            output,
            {"volts": volts},
            lambda: power.brown_out(output, volts),
            lambda: power.restore(output),
        )

    # -- network -------------------------------------------------------------------------------
    def _network_fault(self, name: str, proxy: str | None, **params: Any) -> Fault:
        network = self._need(self.network, "a [network] toxiproxy")
        target = proxy or self.default_proxy
        if target is None:
            raise MissingEquipment("the rig's [network] names no proxy")
        holder: dict[str, Any] = {}

        def apply() -> Any:
            holder["fault"] = getattr(network, name)(target, **params)
            return holder["fault"]

        def heal() -> Any:
            if "fault" in holder:
                network.heal(holder["fault"])

        return Fault("network", name, target, params, apply, heal)

    def request_lost(self, proxy: str | None = None) -> Fault:
        """The request never reaches the host (F1)."""
        return self._network_fault("request_lost", proxy)

    def response_lost(self, proxy: str | None = None) -> Fault:
        """The host decides, its answer never arrives (F2)."""
        return self._network_fault("response_lost", proxy)

    def late_response(self, delay_ms: int, proxy: str | None = None) -> Fault:
        """The answer arrives after the terminal gave up (F3)."""
        return self._network_fault("late_response", proxy, delay_ms=delay_ms)

    def reset_mid_message(self, after_bytes: int, proxy: str | None = None) -> Fault:
        return self._network_fault("reset_mid_message", proxy, after_bytes=after_bytes)

    def slow_link(self, rate_kbps: int, latency_ms: int = 0, proxy: str | None = None) -> Fault:
        return self._network_fault("slow_link", proxy, rate_kbps=rate_kbps, latency_ms=latency_ms)

    def partition(self, proxy: str | None = None) -> Fault:
        return self._network_fault("partition", proxy)

    def flapping(self, period_ms: int, cycles: int, proxy: str | None = None) -> Fault:
        return self._network_fault("flapping", proxy, period_ms=period_ms, cycles=cycles)

    # -- printer -------------------------------------------------------------------------------
    def _printer_fault(self, name: str) -> Fault:
        printer = self._need(self.printer, "a [printer]")
        return Fault("printer", name, "printer", {}, getattr(printer, name), printer.clear)

    def jam(self) -> Fault:
        return self._printer_fault("jam")

    def paper_out(self) -> Fault:
        return self._printer_fault("paper_out")

    def cover_open(self) -> Fault:
        return self._printer_fault("cover_open")

    def printer_offline(self) -> Fault:
        return self._printer_fault("offline")

    def physical_jam(self) -> Fault:
        """The simulated printer's own paper jam: what already printed is torn away when
        the jam is cleared (a tap can only hold bytes; it cannot tear paper)."""
        printer = self._need(self.printer_physical, "the simulated printer's physical world")
        return Fault("printer", "physical_jam", "printer", {}, printer.jam, printer.clear)


class MissingEquipment(RuntimeError):
    """A scenario needs equipment the rig lacks; the plugin skips it with this reason."""
