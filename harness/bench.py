"""The Bench: every driver of a rig, the faults applied to it, and the promise to undo them.

`Bench.open(rig, history)` connects every driver the rig names (each seen through the history,
so every call is traced), starts the out-of-process guard, and brings the bench to its clean
state: outputs at their rig values and on, no toxics, no printer faults. `inject()` records a
fault before applying it; `reset()` heals what is still applied in reverse order and restores the
clean state, also when a test fails, on Ctrl-C and on SIGTERM. If the harness process itself dies
(SIGKILL), the guard notices the broken pipe and restores the bench on its own.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from harness.closing import Closing
from harness.drivers.cards import SimCardSlot
from harness.drivers.host import SimLedger, open_ledger
from harness.drivers.interfaces import Card, CardPresenter, HostLedger, Terminal
from harness.drivers.terminal_zvt import ZvtTerminal
from harness.faults import AppliedFault, Fault, FaultFactory
from harness.history import History, Traced
from harness.protocols.cards import mask_pan
from harness.rig import Rig
from harness.timing import BenchEvent, EventBus, Scheduled, Scheduler

log = logging.getLogger(__name__)


class BenchResetError(RuntimeError):
    """The bench could not be brought back to its clean state; the message says what is left."""


def terminal_port(rig: Rig) -> str:
    """The ECR port: "sim" means the simulated terminal's serial line (a pty the launcher owns)."""
    if rig.terminal.port != "sim":
        return rig.terminal.port
    sim = rig.require_sim()
    return str(sim.state_dir / "terminal" / "ecr.pty")


def clean_steps(
    rig: Rig,
    power: Any,
    network: Any,
    printer: Any,
    sim_host: Any,
    *,
    terminal_recovers: bool = False,
) -> Iterator[tuple[str, Callable[[], Any]]]:
    """The rig's clean state, step by step: what `Bench.reset()` and the guard both restore.

    `terminal_recovers`: the terminal is up and about to get its recovery time, so a jam the
    tap faked is only cleared, and the terminal must send the DLE ENQ itself (recovering on
    its behalf would hide whether it does, and drop the receipt it still owes).
    """
    from harness.drivers.printer import TapPrinterFaults

    if power is not None:
        yield "power: every output at its rig value and on", power.restore_all
    if network is not None:
        yield "network: every toxic removed, every proxy enabled", network.reset
    if printer is not None:
        if isinstance(getattr(printer, "target", printer), TapPrinterFaults) and not (
            terminal_recovers
        ):
            # also drop what a jam left held, as an operator's recovery would
            yield "printer: faults cleared", lambda: printer.clear(recover=2)
        else:
            yield "printer: faults cleared", printer.clear
    if sim_host is not None and rig.sim is not None:
        rules = [
            {k: v for k, v in vars(rule).items() if v is not None} for rule in rig.sim.host.rules
        ]
        yield "host: the rig's answer rules", lambda: sim_host.set_rules(rules)


class RememberingPresenter:
    """A card presenter that remembers, in memory only, which card numbers it presented.

    The wire capture uses it to mask those numbers in the pcap it writes (the bytes on the wire
    carry the full test card number; the evidence must not).
    """

    def __init__(self, presenter: CardPresenter) -> None:
        self.presenter = presenter
        self.pans: set[str] = set()

    def present(self, card: Card) -> None:
        self.pans.add(card.pan)
        self.presenter.present(card)

    def remove(self) -> None:
        self.presenter.remove()

    def redact(self, data: bytes) -> bytes:
        for pan in self.pans:
            data = data.replace(pan.encode("ascii"), mask_pan(pan).encode("ascii"))
        return data


class Bench(Closing):
    """An opened bench; use as a context manager or call `close()`."""

    def __init__(self, rig: Rig, history: History) -> None:
        self.rig = rig
        self.history = history
        self.events = EventBus()
        self.scheduler = Scheduler(self.events, self._inject_at)
        self.applied: list[AppliedFault] = []
        self.terminal: Terminal | None = None
        self.power: Any = None
        self.network: Any = None
        self.printer: Any = None
        self.cards: CardPresenter | None = None
        self.host: HostLedger | None = None
        self.faults = FaultFactory(None, None, None, None)
        self._presenter: RememberingPresenter | None = None
        self.capture: Any = None
        self._guard: subprocess.Popen[bytes] | None = None
        self._closers: list[Callable[[], None]] = []
        self._previous_sigterm: Any = None
        self._lock = threading.RLock()
        self._unsubscribe_history = history.subscribe(self._history_event)

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, rig: Rig, history: History, *, guard: bool = True) -> Bench:
        bench = cls(rig, history)
        try:
            bench._connect()
            if guard:
                bench._start_guard()
            bench._arm_sigterm()
            bench.reset()
        except BaseException:
            bench.close()
            raise
        return bench

    def _traced(self, target: Any, process: str) -> Any:
        return Traced(target, self.history, process)

    def _connect(self) -> None:
        rig = self.rig
        self.history.record("bench", event="open", rig=str(rig.path), name=rig.rig.name)
        if rig.host is not None:
            self.host = self._traced(open_ledger(rig.host), "host")
        if rig.sim is not None:
            self._presenter = RememberingPresenter(
                SimCardSlot(rig.sim.state_dir, rig.rig.card_bins)
            )
            self.cards = self._traced(self._presenter, "cards")
        if rig.psu is not None:
            from harness.drivers.psu import ScpiPsu

            psu = ScpiPsu(rig.psu)
            self._closers.append(psu.close)
            self.power = self._traced(psu, "power")
        if rig.network is not None:
            from harness.drivers.network import Network

            network = Network(rig.network.toxiproxy, rig.network.allow_upstreams)
            self._closers.append(network.close)
            for proxy in rig.network.proxies.values():
                network.ensure_proxy(proxy.name, str(proxy.listen), str(proxy.upstream))
            self.network = self._traced(network, "network")
        if rig.printer is not None:
            from harness.drivers.printer import open_printer_faults

            state_dir = rig.sim.state_dir if rig.sim is not None else None
            self.printer = self._traced(open_printer_faults(rig.printer, state_dir), "printer")
        terminal = ZvtTerminal(
            terminal_port(rig),
            tid=rig.terminal.tid,
            password=rig.terminal.password,
            currency=rig.terminal.currency,
            timeout_s=rig.terminal.timeout_s,
            log_path=self.history.path.with_name("ecr-link.log"),
        )
        self._closers.append(terminal.close)
        terminal.on_accepted = self._terminal_accepted
        self.terminal = self._traced(terminal, "terminal")
        default_proxy = next(iter(rig.network.proxies), None) if rig.network else None
        physical = None
        if rig.sim is not None:
            from harness.drivers.printer import SimPrinterFaults

            physical = self._traced(SimPrinterFaults(rig.sim.state_dir), "printer")
        self.faults = FaultFactory(
            self.power, self.network, self.printer, default_proxy, printer_physical=physical
        )

    # -- the guard -----------------------------------------------------------------------------
    def _start_guard(self) -> None:
        log_path = self.history.path.with_name("guard.log")
        with open(log_path, "ab") as out:
            self._guard = subprocess.Popen(
                [sys.executable, "-m", "harness.guard", "--rig", str(self.rig.path)],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # it must outlive us: that is its whole point
            )
        self.history.record("bench", event="guard", pid=self._guard.pid)

    def _stop_guard(self) -> None:
        guard, self._guard = self._guard, None
        if guard is None or guard.stdin is None:
            return
        with contextlib.suppress(OSError):
            guard.stdin.write(b"disarm\n")
            guard.stdin.flush()
        with contextlib.suppress(OSError):
            guard.stdin.close()
        try:
            guard.wait(timeout=5)
        except subprocess.TimeoutExpired:
            guard.kill()
            guard.wait()

    def _arm_sigterm(self) -> None:
        """SIGTERM unwinds like Ctrl-C does, so `finally`/`with` blocks reset the bench."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt("SIGTERM")

        self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    # -- faults --------------------------------------------------------------------------------
    def inject(self, fault: Fault) -> AppliedFault:
        """Record the fault in the history, then apply it."""
        return self._inject_at(fault, None)

    def _inject_at(self, fault: Fault, requested_at: float | None) -> AppliedFault:
        with self._lock:
            requested = requested_at if requested_at is not None else time.monotonic()
            entry = self.history.record(
                "fault", phase="apply", fault=fault.describe(), requested_at=requested
            )
            applied = AppliedFault(fault, requested, requested)
            self.applied.append(applied)  # before applying: a half-applied fault gets healed
        try:
            applied.effective_at = fault.apply()
        except BaseException as exc:
            self.history.record(
                "fault",
                phase="apply-failed",
                fault=fault.describe(),
                error=str(exc),
                invoke=entry["seq"],
            )
            raise
        self.history.record(
            "fault",
            phase="applied",
            fault=fault.describe(),
            invoke=entry["seq"],
            requested_at=requested,
            effective_at=applied.effective_at,
            late_ms=(applied.effective_at - requested) * 1000,
        )
        if fault.self_healing:
            applied.healed_at = applied.effective_at
        return applied

    def heal(self, applied: AppliedFault) -> None:
        with self._lock:
            if not applied.active:
                return
            self.history.record("fault", phase="heal", fault=applied.fault.describe())
            applied.healed_at = applied.fault.heal()
            self.history.record(
                "fault", phase="healed", fault=applied.fault.describe(), at=applied.healed_at
            )

    def after(
        self,
        event: str,
        offset_ms: float,
        fault: Fault,
        match: Callable[[BenchEvent], bool] | None = None,
    ) -> Scheduled:
        """Arm `fault` to fire `offset_ms` after the next matching event."""
        self.history.record(
            "fault", phase="armed", fault=fault.describe(), event=event, offset_ms=offset_ms
        )
        return self.scheduler.after(event, offset_ms, fault, match)

    # -- clean state ---------------------------------------------------------------------------
    def reset(self, *, terminal_recovers: bool = False) -> None:
        """Heal every applied fault (reverse order), then restore the rig's clean state
        (`terminal_recovers`: see `clean_steps`)."""
        with self._lock:
            self.scheduler.cancel_all()
            problems: list[str] = []
            for applied in reversed(self.applied):
                if applied.active:
                    try:
                        self.heal(applied)
                    except Exception as exc:
                        problems.append(f"{applied.fault.label}: {exc}")
            self.applied.clear()
            for name, step in self._clean_steps(terminal_recovers):
                try:
                    step()
                except Exception as exc:
                    problems.append(f"{name}: {exc}")
            self.history.record("bench", event="reset", problems=problems)
            if problems:
                raise BenchResetError(
                    "the bench is not clean: " + "; ".join(problems) + " (check the devices)"
                )

    def _clean_steps(self, terminal_recovers: bool) -> Iterator[tuple[str, Callable[[], Any]]]:
        host = self.host if isinstance(getattr(self.host, "target", None), SimLedger) else None
        return clean_steps(
            self.rig,
            self.power,
            self.network,
            self.printer,
            host,
            terminal_recovers=terminal_recovers,
        )

    # -- events --------------------------------------------------------------------------------
    def watch_wire(self, pcap_path: Path) -> Any:
        """Capture the host link into `pcap_path`; each message becomes a bench event.

        Events: "host_request" (a message towards the host) and "host_response", stamped with
        the instant the packet crossed the interface. Without the privilege to capture this
        degrades to a warning in the history; the returned capture's result says why.
        """
        from harness.drivers.capture import LinkCapture, WireMessage

        if self.rig.capture is None:
            return None

        def on_message(message: WireMessage) -> None:
            name = "host_request" if message.direction == "to_host" else "host_response"
            data = {"mti": message.mti, "stan": message.stan, "rc": message.response_code}
            self.events.publish(BenchEvent(name, message.t, data))
            self.history.record("event", name=name, at=message.t, source="wire", data=data)

        capture = LinkCapture(
            self.rig.capture.iface,
            self.rig.capture.ports,
            pcap_path,
            on_message=on_message,
            redact=self._presenter.redact if self._presenter is not None else None,
        )
        capture.start()
        if not capture.active:
            self.history.record("bench", event="capture-unavailable", pcap=str(pcap_path))
        self.capture = capture
        self._closers.append(lambda: self._stop_capture(capture))
        return capture

    def _stop_capture(self, capture: Any) -> None:
        result = capture.stop()
        self.history.record(
            "bench",
            event="capture",
            ok=result.ok,
            reason=result.reason,
            messages=len(result.messages),
            pcap=str(result.pcap) if result.pcap else None,
        )

    def watch_printer(self) -> Any:
        """Subscribe to the printer tap's events ("receipt_first_byte", "receipt_cut", ...)."""
        if self.rig.printer is None or self.rig.printer.tap is None:
            return None
        from harness.drivers.printer import TapClient, TapEvent

        def on_event(event: TapEvent) -> None:
            name = {"first_byte": "receipt_first_byte", "cut": "receipt_cut"}.get(
                event.event, f"printer_{event.event}"
            )
            self.events.publish(BenchEvent(name, event.t, dict(event.fields)))
            if event.event in ("first_byte", "cut", "fault_set", "fault_cleared", "recovery"):
                self.history.record("event", name=name, at=event.t, source="tap")

        subscription = TapClient(self.rig.printer.tap.control).subscribe(on_event)
        self._closers.append(subscription.close)
        return subscription

    def _terminal_accepted(self, command: str, t: float) -> None:
        """The terminal took an ECR command (its 80 00 00): "terminal_accepted"."""
        data = {"command": command}
        self.history.record("event", name="terminal_accepted", at=t, source="ecr", data=data)
        self.events.publish(BenchEvent("terminal_accepted", t, data))

    def _history_event(self, record: dict[str, Any]) -> None:
        if record.get("process") == "terminal" and record.get("type") == "invoke":
            name = {"sale": "sale_started"}.get(str(record.get("f")), f"ecr_{record.get('f')}")
            self.events.publish(BenchEvent(name, record["t"], {"value": record.get("value")}))

    # -- closing -------------------------------------------------------------------------------
    def close(self) -> None:
        """Reset, disarm the guard, close every driver. Safe to call twice."""
        try:
            if self.applied or self._closers:
                with contextlib.suppress(BenchResetError):
                    self.reset()
        finally:
            self.scheduler.close()
            for closer in reversed(self._closers):
                with contextlib.suppress(Exception):
                    closer()
            self._closers.clear()
            self._stop_guard()
            self._unsubscribe_history()
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
                self._previous_sigterm = None
