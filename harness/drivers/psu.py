"""Bench power supplies over SCPI: the `Power` protocol the harness injects power faults through.

`ScpiPsu` drives any supply whose vendor family has an entry in `harness.protocols.scpi.DIALECTS`
(over pyvisa: pyvisa-py raw sockets, VXI-11, serial, or pyvisa-sim models in tests). Outputs are
addressed by the rig's output name ("terminal", "printer"), never by channel number.

The one thing to know: every setting is checked against the rig's limits for that output
(`max_volts`, `max_amps`, no negatives) and refused with `PsuLimitError` *before a single byte
is written*; everything the instrument then refuses (its `SYST:ERR?` queue) raises `PsuError`
naming the commands and the instrument's own error text. Fault operations return monotonic
instants (`time.monotonic()`, the clock of the history and of the simulated PSU's log) taken
right after the command that changed the power was written: the moment it took effect as far
as the harness can know.

Each public method is a plain method, so a tracing decorator can wrap it into the history.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import pyvisa
from pyvisa import constants
from pyvisa.errors import VisaIOError
from pyvisa.resources import MessageBasedResource

from harness.closing import Closing
from harness.protocols.scpi import DIALECTS, Dialect
from harness.rig import PsuConfig, PsuOutput

logger = logging.getLogger(__name__)
# Every line written to or read from an instrument, at DEBUG: "<resource> > <line>" for a write,
# "<resource> ? <line> -> <reply>" for a query. Off by default; tests read it to see the wire.
wire_logger = logging.getLogger(f"{__name__}.wire")

TERMINATION = "\n"
MAX_ERRORS_DRAINED = 32  # instruments queue 10-20; more means the reply is not an error queue
MAX_WRITE_ALLOWANCE_S = 0.0005  # a slower write was preempted; do not start the ON earlier
SPIN_S = 0.001  # the last part of a hold is busy-waited: sleep() overshoots by up to ~0.1 ms
# `-222,"Data out of range"` (SCPI-99); some families separate with spaces: `0  No Error`.
_ERROR_REPLY = re.compile(r'\s*([+-]?\d+)(?:\s*,\s*|\s+|$)"?(.*?)"?\s*')

OutageKind = Literal["glitch", "cycle", "brown-out"]


class PsuError(RuntimeError):
    """The supply refused or failed an operation; names the resource, the commands and why.

    `commands` are the lines written for the operation, `instrument_errors` what `SYST:ERR?`
    answered (e.g. `-222,"Data out of range"`), empty when the harness itself refused.
    """

    def __init__(
        self,
        message: str,
        *,
        commands: Sequence[str] = (),
        instrument_errors: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.commands = tuple(commands)
        self.instrument_errors = tuple(instrument_errors)


class PsuLimitError(PsuError, ValueError):
    """A setting outside the rig's limits for an output; nothing was sent to the instrument."""

    def __init__(self, output: str, what: str, value: float, limit: str) -> None:
        super().__init__(f"refused {what} {value:g} on output {output!r}: {limit}")
        self.output = output
        self.what = what
        self.value = value
        self.limit = limit


class PsuUnsupportedError(PsuError):
    """The supply's dialect has no SCPI command for this operation (e.g. Siglent OVP)."""


@dataclass(frozen=True)
class Measured:
    """One measured value with its unit and the bound it must stay within (OpenHTF style)."""

    name: str  # "terminal.volts"
    value: float
    unit: str  # "V", "A"
    low: float
    high: float

    @property
    def in_range(self) -> bool:
        return self.low <= self.value <= self.high

    def __str__(self) -> str:
        return f"{self.name}={self.value:g} {self.unit} [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Reading:
    """What one output shows now: its switch state and the measured volts and amps."""

    output: str
    on: bool
    volts: Measured
    amps: Measured
    at: float  # monotonic s, right after the last reply of the reading


@dataclass(frozen=True)
class Outage:
    """A power fault that was applied, and healed again if `ended` is set.

    `began` / `ended` are monotonic instants right after the command that removed / gave back
    the power was written; `volts` is what the output delivered meanwhile (0 for off).
    """

    output: str
    kind: OutageKind
    volts: float
    began: float
    ended: float | None
    asked_s: float | None  # the hold that was asked for; None = left applied

    @property
    def held_s(self) -> float | None:
        return None if self.ended is None else self.ended - self.began


@runtime_checkable
class Power(Protocol):
    """The harness's view of bench power: named outputs that can be cut, glitched and browned.

    Instants are monotonic seconds. `restore_all` is what `Bench.reset()` calls: every output
    back to its rig volts / amps, trips cleared where the supply can, and ON.
    """

    def cut(self, output: str) -> float: ...

    def restore(self, output: str) -> float: ...

    def cycle(self, output: str, off_s: float) -> Outage: ...

    def glitch(self, output: str, off_ms: float) -> Outage: ...

    def brown_out(self, output: str, volts: float, hold_s: float | None = None) -> Outage: ...

    def set_output(self, output: str, volts: float, amps: float) -> float: ...

    def read(self, output: str) -> Reading: ...

    def protect(
        self, output: str, ovp_volts: float | None = None, ocp_amps: float | None = None
    ) -> float: ...

    def tripped(self, output: str) -> bool: ...

    def clear_trip(self, output: str) -> float: ...

    def restore_all(self) -> dict[str, float]: ...

    def close(self) -> None: ...


def hold_until(deadline: float) -> None:
    """Return at `deadline` (monotonic): sleep most of the way, busy-wait the last SPIN_S."""
    while (remaining := deadline - time.monotonic()) > SPIN_S:
        time.sleep(remaining - SPIN_S)
    while time.monotonic() < deadline:
        pass


class ScpiPsu(Closing):
    """A `Power` over pyvisa and one `Dialect`; owns its VISA session (not the shared manager).

    Opening asks *IDN? (kept in `idn`), so a driver that exists has heard its instrument.

    Channel operations whose commands do not name the channel are preceded by the dialect's
    select command every time (never cached: the front panel or another client may have moved
    it). A lock keeps select + command together when several threads share the supply; it is
    released during holds, so other outputs stay usable while one is off.
    """

    def __init__(
        self, config: PsuConfig, resource_manager: str = "@py", timeout_ms: int = 2000
    ) -> None:
        dialect = DIALECTS.get(config.dialect)
        if dialect is None:
            raise PsuError(
                f"unknown PSU dialect {config.dialect!r}; known: {', '.join(sorted(DIALECTS))}"
            )
        self.config = config
        self.dialect: Dialect = dialect
        self.idn: str | None = None
        self.tcp_nodelay: bool | None = None  # None: not a raw socket session
        self._lock = threading.RLock()
        self._closed = False
        # pyvisa keeps one ResourceManager per VISA library and process, shared by every caller
        # (closing it closes all their sessions too), so the driver owns and closes only its
        # session; pyvisa closes the manager at exit.
        self._manager = pyvisa.ResourceManager(resource_manager)
        self._resource = self._open(timeout_ms)
        try:
            if self._is_socket:
                self.tcp_nodelay = self._disable_nagle()
            # pyvisa-py reports a refused TCP connection as opened: only an answer proves the
            # instrument is there, so open = *IDN? answered (and checked against the dialect).
            self.identify()
        except PsuError as exc:
            self._resource.close()
            raise PsuError(
                f"cannot open PSU {config.resource} ({dialect.name}): {exc}",
                commands=exc.commands,
                instrument_errors=exc.instrument_errors,
            ) from exc
        except BaseException:
            self._resource.close()
            raise

    # -- opening ---------------------------------------------------------------------------------
    @property
    def _is_socket(self) -> bool:
        return self.config.resource.upper().endswith("::SOCKET")

    def _open(self, timeout_ms: int) -> MessageBasedResource:
        resource = self.config.resource
        options: dict[str, Any] = {"timeout": timeout_ms}
        if self._is_socket or resource.upper().startswith("ASRL"):
            # A socket or a serial line has no end-of-message: without read_termination every
            # read waits for the timeout; pyvisa's default write termination is "\r\n".
            options.update(read_termination=TERMINATION, write_termination=TERMINATION)
        try:
            opened = self._manager.open_resource(resource, open_timeout=timeout_ms, **options)
        except Exception as exc:  # pyvisa-py raises a bare Exception("could not connect: ...")
            raise PsuError(f"cannot open PSU {resource} ({self.dialect.name}): {exc}") from exc
        if not isinstance(opened, MessageBasedResource):
            opened.close()
            raise PsuError(f"{resource} is not a message-based instrument; SCPI needs one")
        return opened

    def _disable_nagle(self) -> bool:
        """Set TCP_NODELAY so a command written right after another is not held back ~40 ms.

        pyvisa-py 0.8.1 reads VI_ATTR_TCPIP_NODELAY on SOCKET sessions but does not wire its
        setter (UnknownAttribute), so then the option is set on the session's own socket.
        Returns what the session reports afterwards.
        """
        resource = self._resource
        attribute = constants.ResourceAttribute.tcpip_nodelay
        try:
            resource.set_visa_attribute(attribute, constants.VI_TRUE)
        except Exception as exc:  # backends raise their own types (pyvisa-py: UnknownAttribute)
            sock = _session_socket(resource)
            if sock is None:
                logger.warning("%s: cannot set TCP_NODELAY (%s)", self.config.resource, exc)
                return False
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            logger.debug("%s: TCP_NODELAY set on the session socket", self.config.resource)
        try:
            state = resource.get_visa_attribute(attribute)
        except Exception:  # a backend that cannot even report it
            return False
        if state != constants.VI_TRUE:
            logger.warning(
                "%s: TCP_NODELAY is off; back-to-back commands may stall ~40 ms (Nagle)",
                self.config.resource,
            )
        return bool(state == constants.VI_TRUE)

    # -- identity --------------------------------------------------------------------------------
    def identify(self) -> str:
        """*IDN?; a reply that does not look like the configured dialect is logged, not fatal."""
        with self._lock:
            idn = self._query("*IDN?")
        self.idn = idn
        if self.dialect.idn_prefixes and not idn.startswith(self.dialect.idn_prefixes):
            logger.warning(
                "%s answers *IDN? %r, which is not a %s (%s); check the rig's dialect",
                self.config.resource,
                idn,
                self.dialect.name,
                " or ".join(self.dialect.idn_prefixes),
            )
        return idn

    # -- power faults ----------------------------------------------------------------------------
    def cut(self, output: str) -> float:
        """Output OFF; the instant right after the OFF command was written."""
        out = self._output(output)
        lines = self._lines(out, (self.dialect.output_off, None))
        with self._lock:
            at = self._send(lines)
            self._check(lines)
        return at

    def restore(self, output: str) -> float:
        """Rig volts and amps, then ON (heals a cut and a brown-out); the instant after ON."""
        out = self._output(output)
        lines = self._restore_lines(out)
        with self._lock:
            at = self._send(lines)
            self._check(lines)
        return at

    def glitch(self, output: str, off_ms: float) -> Outage:
        """Off for `off_ms` milliseconds, timed on the monotonic clock, then on again."""
        off_s = _positive(output, "glitch off_ms", off_ms) / 1000.0
        return self._outage(self._output(output), "glitch", off_s)

    def cycle(self, output: str, off_s: float) -> Outage:
        """Off for `off_s` seconds, then on again: a power cycle."""
        return self._outage(self._output(output), "cycle", _positive(output, "cycle off_s", off_s))

    def _outage(self, out: PsuOutput, kind: OutageKind, off_s: float) -> Outage:
        off = self._lines(out, (self.dialect.output_off, None))
        on = self._lines(out, (self.dialect.output_on, None))
        with self._lock:
            started = time.monotonic()
            began = self._send(off)
        # Both instants are taken after a write returns; start the ON write early by what the
        # OFF write took, so the ON lands `off_s` after the OFF did (pyvisa costs ~0.1 ms).
        write_s = min(began - started, MAX_WRITE_ALLOWANCE_S)
        hold_until(began + off_s - write_s)
        with self._lock:
            ended = self._send(on)
            self._check(off + on)
        return Outage(out.name, kind, 0.0, began, ended, off_s)

    def brown_out(self, output: str, volts: float, hold_s: float | None = None) -> Outage:
        """Step the output's voltage DOWN to `volts`; back to the rig value after `hold_s`.

        Without `hold_s` the brown-out stays applied until `restore` / `restore_all`.
        """
        out = self._output(output)
        _check_value(out, "brown-out volts", volts, "V")
        if not volts < out.volts:
            raise PsuLimitError(
                out.name,
                "brown-out volts",
                volts,
                f"a brown-out steps down, below the rig's {out.volts:g} V",
            )
        if hold_s is not None:
            _positive(output, "brown-out hold_s", hold_s)
        down = self._lines(out, (self.dialect.set_volts, volts))
        with self._lock:
            began = self._send(down)
            if hold_s is None:
                self._check(down)
                return Outage(out.name, "brown-out", volts, began, None, None)
        hold_until(began + hold_s)
        up = self._lines(out, (self.dialect.set_volts, out.volts))
        with self._lock:
            ended = self._send(up)
            self._check(down + up)
        return Outage(out.name, "brown-out", volts, began, ended, hold_s)

    # -- settings --------------------------------------------------------------------------------
    def set_output(self, output: str, volts: float, amps: float) -> float:
        """Program volts and amps (within the rig's limits); the instant after the last write."""
        out = self._output(output)
        _check_value(out, "volts", volts, "V", out.max_volts)
        _check_value(out, "amps", amps, "A", out.max_amps)
        lines = self._lines(out, (self.dialect.set_volts, volts), (self.dialect.set_amps, amps))
        with self._lock:
            at = self._send(lines)
            self._check(lines)
        return at

    def protect(
        self, output: str, ovp_volts: float | None = None, ocp_amps: float | None = None
    ) -> float:
        """Arm over-voltage and / or over-current protection; a trip switches the output off.

        Families whose OCP command takes no level (Keysight E36300, the R&S fuse) trip when the
        output reaches its current limit, so there `ocp_amps` is written as the current limit.
        """
        out = self._output(output)
        if ovp_volts is None and ocp_amps is None:
            raise PsuError(f"protect({output!r}) needs ovp_volts, ocp_amps or both")
        parts: list[tuple[tuple[str, ...], float | None]] = []
        if ovp_volts is not None:
            _check_value(out, "OVP volts", ovp_volts, "V", out.max_volts)
            parts.append((self._require(self.dialect.ovp_set, "OVP"), ovp_volts))
        if ocp_amps is not None:
            _check_value(out, "OCP amps", ocp_amps, "A", out.max_amps)
            ocp_set = self._require(self.dialect.ocp_set, "OCP")
            if not any("{value" in template for template in ocp_set):
                parts.append((self.dialect.set_amps, ocp_amps))
            parts.append((ocp_set, ocp_amps))
        lines = self._lines(out, *parts)
        with self._lock:
            at = self._send(lines)
            self._check(lines)
        return at

    def tripped(self, output: str) -> bool:
        """True when OVP or OCP (whichever the family can report) has switched the output off."""
        out = self._output(output)
        queries = [q for q in (self.dialect.ovp_tripped, self.dialect.ocp_tripped) if q]
        if not queries:
            raise self._unsupported("protection trip queries")
        trips: list[str] = []
        with self._lock:
            replies = self._queries(out, queries)
        for query, reply in zip(queries, replies, strict=True):
            try:
                if self.dialect.parse_trip(reply):
                    trips.append(query.format(ch=out.channel))
            except ValueError as exc:
                raise PsuError(f"{self.config.resource}: {exc}", commands=[query]) from exc
        if trips:
            logger.info("%s output %r tripped: %s", self.config.resource, output, trips)
        return bool(trips)

    def clear_trip(self, output: str) -> float:
        """Clear a protection trip (the output stays off until `restore`)."""
        out = self._output(output)
        lines = self._lines(out, (self._require(self.dialect.clear_trip, "clearing a trip"), None))
        with self._lock:
            at = self._send(lines)
            self._check(lines)
        return at

    def restore_all(self) -> dict[str, float]:
        """Every output: clear trips where possible, rig volts / amps, ON, then verify ON.

        Tries every output even when one fails, then raises one `PsuError` naming all failures:
        a reset that stops half-way leaves the bench in a state nobody chose.
        """
        instants: dict[str, float] = {}
        failures: list[str] = []
        errors: list[str] = []
        clear = self.dialect.clear_trip
        for name, out in self.config.outputs.items():
            lines = self._restore_lines(out, *([(clear, None)] if clear is not None else []))
            try:
                with self._lock:
                    instants[name] = self._send(lines)
                    self._check(lines)
                    if not self._is_on(out):
                        failures.append(f"{name}: still OFF after {lines[-1]!r}")
            except PsuError as exc:
                failures.append(f"{name}: {exc}")
                errors += exc.instrument_errors
        if failures:
            raise PsuError(
                f"{self.config.resource}: restore_all failed: " + "; ".join(failures),
                instrument_errors=errors,
            )
        return instants

    # -- readback --------------------------------------------------------------------------------
    def read(self, output: str) -> Reading:
        """Switch state, measured volts and amps of one output, with the rig's bounds."""
        out = self._output(output)
        queries = (self.dialect.output_query, self.dialect.measure_volts, self.dialect.measure_amps)
        with self._lock:
            state, volts, amps = self._queries(out, queries)
            at = time.monotonic()
        return Reading(
            output=out.name,
            on=self._parse_output(out, state),
            volts=Measured(
                f"{out.name}.volts", self._float(volts, queries[1]), "V", 0.0, out.max_volts
            ),
            amps=Measured(
                f"{out.name}.amps", self._float(amps, queries[2]), "A", 0.0, out.max_amps
            ),
            at=at,
        )

    def _parse_output(self, out: PsuOutput, reply: str) -> bool:
        try:
            return self.dialect.parse_output(out.channel)(reply)
        except ValueError as exc:
            raise PsuError(
                f"{self.config.resource}: {exc}", commands=[self.dialect.output_query]
            ) from exc

    def _float(self, reply: str, query: str) -> float:
        try:
            return float(reply)
        except ValueError as exc:
            raise PsuError(
                f"{self.config.resource}: {query!r} answered {reply!r}, not a number",
                commands=[query],
            ) from exc

    def _is_on(self, out: PsuOutput) -> bool:
        (reply,) = self._queries(out, (self.dialect.output_query,))
        return self._parse_output(out, reply)

    def _queries(self, out: PsuOutput, templates: Sequence[str]) -> list[str]:
        """Ask several things of one output: one select (if needed), then each query."""
        lines = self._lines(out, (templates, None))
        for line in lines[: len(lines) - len(templates)]:
            self._write(line)
        return [self._query(line) for line in lines[len(lines) - len(templates) :]]

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the session; the outputs stay as they are (a close is not a power fault)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._resource.close()

    # -- commands --------------------------------------------------------------------------------
    def _output(self, name: str) -> PsuOutput:
        out = self.config.outputs.get(name)
        if out is None:
            known = ", ".join(sorted(self.config.outputs))
            raise PsuError(f"{self.config.resource}: no output named {name!r}; rig has {known}")
        return out

    def _require(self, templates: tuple[str, ...] | None, what: str) -> tuple[str, ...]:
        if templates is None:
            raise self._unsupported(what)
        return templates

    def _unsupported(self, what: str) -> PsuUnsupportedError:
        return PsuUnsupportedError(
            f"{self.config.resource}: the {self.dialect.name} dialect has no SCPI command for "
            f"{what}"
        )

    def _lines(self, out: PsuOutput, *parts: tuple[Iterable[str], float | None]) -> list[str]:
        """Format each part's templates with its value, for one output.

        The dialect's select goes once before the first template that does not name the channel.
        """
        lines: list[str] = []
        selected = False
        for templates, value in parts:
            for template in templates:
                if "{ch}" not in template and self.dialect.select is not None and not selected:
                    lines.append(self.dialect.select.format(ch=out.channel))
                    selected = True
                lines.append(template.format(ch=out.channel, value=value))
        return lines

    def _restore_lines(
        self, out: PsuOutput, *first: tuple[Iterable[str], float | None]
    ) -> list[str]:
        """`first` (e.g. clearing trips), then the rig's volts and amps, then ON."""
        return self._lines(
            out,
            *first,
            (self.dialect.set_volts, out.volts),
            (self.dialect.set_amps, out.amps),
            (self.dialect.output_on, None),
        )

    def _send(self, lines: Sequence[str]) -> float:
        """Write every line; the monotonic instant right after the last one was written."""
        at = time.monotonic()
        for line in lines:
            self._write(line)
            at = time.monotonic()
        return at

    def _write(self, line: str) -> None:
        if self._closed:
            raise PsuError(f"{self.config.resource}: the PSU session is closed", commands=[line])
        try:
            self._resource.write(line)
        except (VisaIOError, OSError) as exc:  # pyvisa-py lets socket errors through
            raise PsuError(
                f"{self.config.resource}: writing {line!r} failed: {exc}", commands=[line]
            ) from exc
        wire_logger.debug("%s > %s", self.config.resource, line)

    def _query(self, line: str) -> str:
        """One query and its reply; a timeout names the query and the instrument's error."""
        self._write(line)
        try:
            reply = self._resource.read().strip()
        except (VisaIOError, OSError) as exc:
            errors: list[str] = []
            if line != self.dialect.error_query:
                with contextlib.suppress(PsuError):  # a silent instrument: report the first
                    errors = self._drain_errors()
            raise PsuError(
                f"{self.config.resource}: no reply to {line!r} ({exc})"
                + (f"; instrument error {', '.join(errors)}" if errors else ""),
                commands=[line],
                instrument_errors=errors,
            ) from exc
        wire_logger.debug("%s ? %s -> %s", self.config.resource, line, reply)
        return reply

    def _drain_errors(self) -> list[str]:
        """Read the error queue until "0,No error": every error, in the instrument's words."""
        errors: list[str] = []
        for _ in range(MAX_ERRORS_DRAINED):
            reply = self._query(self.dialect.error_query)
            match = _ERROR_REPLY.fullmatch(reply)
            if match is None:
                errors.append(reply)  # not `code,"text"`: report it as it came and stop
                break
            if int(match.group(1)) == 0:
                break
            errors.append(reply)
        return errors

    def _check(self, lines: Sequence[str]) -> None:
        """After settings: raise PsuError if the instrument queued any error for them."""
        errors = self._drain_errors()
        if errors:
            raise PsuError(
                f"{self.config.resource} ({self.dialect.name}) refused "
                f"{' ; '.join(lines)}: {', '.join(errors)}",
                commands=lines,
                instrument_errors=errors,
            )


def _check_value(
    out: PsuOutput, what: str, value: float, unit: str, high: float | None = None
) -> None:
    """Refuse a negative value or one above `high` (the rig's limit) before anything is sent."""
    if not math.isfinite(value):
        raise PsuLimitError(out.name, what, value, "not a finite number")
    if value < 0:
        raise PsuLimitError(out.name, what, value, "negative values are never sent")
    if high is not None and value > high:
        key = "max_volts" if unit == "V" else "max_amps"
        raise PsuLimitError(
            out.name, what, value, f"above the rig's {key} {high:g} {unit} for this output"
        )


def _positive(output: str, what: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise PsuLimitError(output, what, value, "must be a positive, finite duration")
    return value


def _session_socket(resource: MessageBasedResource) -> socket.socket | None:
    """The TCP socket behind a pyvisa-py SOCKET session, or None for any other backend."""
    sessions = getattr(resource.visalib, "sessions", None)
    if not isinstance(sessions, dict):
        return None
    interface = getattr(sessions.get(resource.session), "interface", None)
    return interface if isinstance(interface, socket.socket) else None
