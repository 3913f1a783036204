"""Simulated Rigol DP832 bench PSU: SCPI over TCP whose outputs really power the device processes.

The one thing to know: a wired output that goes off, browns out or trips SIGKILLs its device's
process group synchronously, inside the handling of the command (or load change) that caused it,
and reaps it before the next reply; power coming back boots a fresh process. So the instant a
command is handled is the instant of the power cut, and only what the device fsync'ed survives.

Run as `python -m harness.sim.psu --rig RIG`. The rig's outputs named "terminal" and "printer" are
wired to `python -m harness.sim.<device>` (env `HIL_SIM_DEVICE_CMD`, a JSON object
{"terminal": [argv...], ...}, overrides the command line per device, for tests); file
descriptors listed in `HIL_PASS_FDS` are passed through to every device (the terminal's ECR
line outlives its power cycles). Every received command and every output / device transition is
appended with a wall-clock timestamp to `<state_dir>/psu/psu.log`, the bench's evidence.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import select
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from harness.protocols.scpi import (
    Command,
    HeaderPattern,
    ScpiError,
    format_error,
    parse_bool,
    parse_number,
    parse_program,
)
from harness.rig import Rig
from harness.sim.process import listen, module_command, start_device
from harness.sim.world import Activity, World
from harness.stamped_log import StampedLog

logger = logging.getLogger(__name__)

DEVICE_CMD_ENV = "HIL_SIM_DEVICE_CMD"
PASS_FDS_ENV = "HIL_PASS_FDS"
WIRED_DEVICES = ("terminal", "printer")

# DP832: (rated volts, rated amps, OVP max, OCP max) per channel.
RATINGS: dict[int, tuple[float, float, float, float]] = {
    1: (30.0, 3.0, 33.0, 3.3),
    2: (30.0, 3.0, 33.0, 3.3),
    3: (5.0, 3.0, 5.5, 3.3),
}
PROTECTION_MIN = {"OVP": 0.01, "OCP": 0.001}

# What a device draws (amps) while doing something; the PSU turns World activity into current.
LOAD_AMPS: dict[Activity, float] = {
    "off": 0.0,
    "booting": 0.250,
    "idle": 0.150,
    "transacting": 0.350,
    "printing": 0.400,
}
PRINTING_AMPS = {"printer": 1.600, "terminal": 0.400}

ERROR_QUEUE_SIZE = 20
MAX_LINE_BYTES = 64 * 1024
MONITOR_INTERVAL_S = 0.02
RECV_POLL_S = 0.25
SEND_TIMEOUT_S = 5.0
SPAWN_TIMEOUT_S = 10.0
REAP_TIMEOUT_S = 5.0
STOP_GRACE_S = 2.0
_EPS = 1e-9


def load_amps(device: str, activity: Activity) -> float:
    """The current a device draws while doing `activity` (a printer head is the big load)."""
    if activity == "printing":
        return PRINTING_AMPS.get(device, LOAD_AMPS["printing"])
    return LOAD_AMPS[activity]


class PsuLog(StampedLog):
    """The PSU's evidence log: one line per command, reply and transition, never rewritten."""


@dataclass
class _SpawnRequest:
    argv: list[str]
    pass_fds: tuple[int, ...]
    console: Path
    result: Future[subprocess.Popen[bytes]] = field(default_factory=Future)


class Spawner:
    """Starts every device process from one long-lived thread.

    Devices ask for PR_SET_PDEATHSIG, which fires when the *thread* that forked them exits: a
    device booted from a client's connection thread would die when that client disconnects.
    """

    def __init__(self) -> None:
        self._requests: queue.Queue[_SpawnRequest | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="psu-spawner", daemon=True)
        self._thread.start()

    def spawn(
        self, argv: list[str], pass_fds: tuple[int, ...], console: Path
    ) -> subprocess.Popen[bytes]:
        request = _SpawnRequest(argv, pass_fds, console)
        self._requests.put(request)
        return request.result.result(timeout=SPAWN_TIMEOUT_S)

    def close(self) -> None:
        """Stop the thread; call it only after every device has stopped (see the class doc)."""
        self._requests.put(None)
        self._thread.join(timeout=SPAWN_TIMEOUT_S)

    def _run(self) -> None:
        while (request := self._requests.get()) is not None:
            if not request.result.set_running_or_notify_cancel():
                continue
            try:
                request.console.parent.mkdir(parents=True, exist_ok=True)
                with open(request.console, "ab") as console:
                    process = subprocess.Popen(
                        request.argv,
                        stdin=subprocess.DEVNULL,
                        stdout=console,
                        stderr=subprocess.STDOUT,
                        pass_fds=request.pass_fds,
                        start_new_session=True,  # its own process group: the whole board
                    )
            except BaseException as exc:  # handed to the caller, who logs it
                request.result.set_exception(exc)
            else:
                request.result.set_result(process)


class WiredDevice:
    """A device process fed by one PSU output: boot = spawn, cut = SIGKILL its group and reap.

    `powered` is what the PSU applies, not whether the process still lives: a device that
    crashed on its own stays dead until its power is cycled, as a hung board does.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        min_volts: float,
        *,
        spawner: Spawner,
        world: World,
        log: PsuLog,
        pass_fds: tuple[int, ...] = (),
        console: Path,
    ) -> None:
        self.name = name
        self.argv = argv
        self.min_volts = min_volts
        self.powered = False
        self._spawner = spawner
        self._world = world
        self._log = log
        self._pass_fds = pass_fds
        self._console = console
        self._process: subprocess.Popen[bytes] | None = None
        self._exit_reported = False

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def activity(self) -> Activity:
        return self._world.activity(self.name) if self.running() else "off"

    def boot(self, reason: str) -> None:
        self.powered = True
        self._exit_reported = False
        self._world.set_activity(self.name, "booting")
        try:
            self._process = self._spawner.spawn(self.argv, self._pass_fds, self._console)
        except Exception as exc:
            self._process = None
            self._log.write(f"{self.name} boot FAILED ({reason}): {exc}")
            logger.exception("cannot start %s with %s", self.name, self.argv)
            return
        self._log.write(f"{self.name} boot pid={self._process.pid} ({reason})")

    def cut(self, reason: str) -> None:
        """Power gone: SIGKILL the process group now and reap it before returning."""
        self.powered = False
        process, self._process = self._process, None
        if process is None:
            self._log.write(f"{self.name} power cut ({reason}); no process")
            return
        killed_at = time.monotonic()
        _kill_group(process, signal.SIGKILL)
        try:
            code = process.wait(timeout=REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.error(
                "%s pid %d survived SIGKILL for %.1f s", self.name, process.pid, REAP_TIMEOUT_S
            )
            code = None
        self._world.set_activity(self.name, "off")
        took_ms = (time.monotonic() - killed_at) * 1000
        self._log.write(
            f"{self.name} cut pid={process.pid} SIGKILL at {killed_at:.6f} ({reason}) rc={code}"
            f" reaped in {took_ms:.2f} ms"
        )

    def check_exit(self) -> None:
        """Note once that a powered device exited on its own (a crash, not a power cut)."""
        if self._process is None or self._exit_reported:
            return
        code = self._process.poll()
        if code is not None:
            self._exit_reported = True
            self._log.write(f"{self.name} exited by itself pid={self._process.pid} rc={code}")

    def terminate(self) -> subprocess.Popen[bytes] | None:
        """Bench shutdown, step 1: SIGTERM the group; the caller waits and reaps."""
        self.powered = False
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _kill_group(process, signal.SIGTERM)
        return process


def _kill_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        if process.poll() is None:
            process.send_signal(signum)


@dataclass
class Protection:
    """OVP or OCP of one channel: the limit, whether it is armed, whether it has tripped."""

    limit: float
    enabled: bool = False
    tripped: bool = False


@dataclass
class Channel:
    """The programmed state of one output."""

    number: int
    rated_volts: float
    rated_amps: float
    ovp: Protection
    ocp: Protection
    volts: float = 0.0
    amps: float = 0.0
    on: bool = False
    off_reason: str = "output off"
    brownout_latched: bool = False  # browned out in CC: stays off until a setting changes
    device: WiredDevice | None = None

    @classmethod
    def default(cls, number: int, device: WiredDevice | None = None) -> Channel:
        volts, amps, ovp_max, ocp_max = RATINGS[number]
        return cls(
            number, volts, amps, Protection(ovp_max), Protection(ocp_max), amps=amps, device=device
        )

    def protection(self, kind: str) -> Protection:
        return self.ovp if kind == "OVP" else self.ocp

    @property
    def rating(self) -> str:
        return f"CH{self.number}:{self.rated_volts:g}V/{self.rated_amps:g}A"


@dataclass(frozen=True)
class Reading:
    volts: float
    amps: float
    mode: str  # "CV" or "CC"


Handler = Callable[[Command], str | None]


def _fmt(value: float) -> str:
    return f"{value:.3f}"


class Dp832:
    """The instrument: SCPI in, state changes and physics, replies out; one lock around all.

    `execute` runs one program message atomically; `tick` re-reads the loads so a device that
    starts drawing more than the limit browns out or trips OCP without anyone asking.
    """

    def __init__(
        self,
        idn: str,
        *,
        world: World,
        log: PsuLog,
        devices: Mapping[int, WiredDevice] | None = None,
    ) -> None:
        self.idn = idn
        self._world = world
        self._log = log
        self._lock = threading.Lock()
        self._devices = dict(devices or {})
        self._channels = {n: Channel.default(n, self._devices.get(n)) for n in RATINGS}
        self._selected = 1
        self._errors: deque[ScpiError] = deque()
        self._remote = False
        self._table = self._command_table()

    # -- SCPI --------------------------------------------------------------------------------
    def execute(self, line: str, peer: str = "-") -> str | None:
        """Run one program message; the reply (';'-joined for several queries) or None.

        Errors go to the error queue, never into the reply. A command error (-1xx) discards
        the rest of the message, an execution error (-2xx) does not, as in IEEE 488.2.
        """
        with self._lock:
            self._log.write(f"<< {peer} {line!r}")
            try:
                commands = parse_program(line)
            except ScpiError as exc:
                self._push_error(exc, line)
                return None
            replies: list[str] = []
            for command in commands:
                try:
                    reply = self._dispatch(command)
                except ScpiError as exc:
                    self._push_error(exc, command.raw)
                    if -200 < exc.code <= -100:
                        break
                    continue
                except Exception:
                    logger.exception("bug handling %r", command.raw)
                    self._push_error(ScpiError(-100, detail="internal error"), command.raw)
                    break
                if reply is not None:
                    replies.append(reply)
            if not replies:
                return None
            reply_text = ";".join(replies)
            self._log.write(f">> {peer} {reply_text!r}")
            return reply_text

    def reject(self, peer: str, detail: str) -> None:
        """Input the transport could not turn into a program message: a -102 in the queue."""
        with self._lock:
            self._push_error(ScpiError(-102, detail=detail), f"{peer}: {detail}")

    def _push_error(self, error: ScpiError, context: str) -> None:
        self._log.write(f"error {format_error(error)} in {context!r} {error.detail}".rstrip())
        if len(self._errors) >= ERROR_QUEUE_SIZE:
            self._errors[-1] = ScpiError(-350)
            return
        self._errors.append(error)

    def _dispatch(self, command: Command) -> str | None:
        header_known = False
        for pattern, query, handler in self._table:
            if pattern.match(command):
                header_known = True
                if query == command.query:
                    return handler(command)
        form = "query" if command.query else "set"
        detail = f"no {form} form" if header_known else "not a DP832 command"
        raise ScpiError(-113, detail=f"{command.raw}: {detail}")

    def _command_table(self) -> list[tuple[HeaderPattern, bool, Handler]]:
        rows: list[tuple[str, bool, Handler]] = [
            ("*IDN", True, lambda c: self._no_args(c) or self.idn),
            ("*RST", False, self._rst),
            ("*CLS", False, self._cls),
            ("*OPC", True, lambda c: self._no_args(c) or "1"),
            ("*OPC", False, self._no_args),
            ("INSTrument:NSELect", False, self._nsel_set),
            ("INSTrument:NSELect", True, lambda c: self._no_args(c) or str(self._selected)),
            ("INSTrument[:SELect]", False, self._inst_set),
            ("INSTrument[:SELect]", True, lambda c: self._no_args(c) or f"CH{self._selected}"),
            ("APPLy", False, self._apply_set),
            ("APPLy", True, self._apply_get),
            ("[SOURce[n]]:VOLTage[:LEVel][:IMMediate][:AMPLitude]", False, self._volts_set),
            ("[SOURce[n]]:VOLTage[:LEVel][:IMMediate][:AMPLitude]", True, self._volts_get),
            ("[SOURce[n]]:CURRent[:LEVel][:IMMediate][:AMPLitude]", False, self._amps_set),
            ("[SOURce[n]]:CURRent[:LEVel][:IMMediate][:AMPLitude]", True, self._amps_get),
            ("OUTPut[:STATe]", False, self._output_set),
            ("OUTPut[:STATe]", True, self._output_get),
            ("OUTPut:MODE", True, self._mode_get),
            ("MEASure[:VOLTage][:DC]", True, lambda c: self._measure(c, "V")),
            ("MEASure:CURRent[:DC]", True, lambda c: self._measure(c, "I")),
            ("MEASure:POWEr[:DC]", True, lambda c: self._measure(c, "P")),
            ("MEASure:ALL[:DC]", True, lambda c: self._measure(c, "ALL")),
            ("SYSTem:ERRor[:NEXT]", True, self._error_get),
            ("SYSTem:REMote", False, lambda c: self._set_remote(c, True)),
            ("SYSTem:LOCal", False, lambda c: self._set_remote(c, False)),
        ]
        for kind, source in (("OVP", "VOLTage"), ("OCP", "CURRent")):
            # :OUTP:OVP... names the channel in a parameter; [:SOUR<n>]:VOLT:PROT... by suffix.
            out = f"OUTPut:{kind}"
            src = f"[SOURce[n]]:{source}:PROTection"
            rows += [
                (f"{out}:VALue", False, self._prot(kind, "limit", by_arg=True, query=False)),
                (f"{out}:VALue", True, self._prot(kind, "limit", by_arg=True, query=True)),
                (f"{out}[:STATe]", False, self._prot(kind, "enable", by_arg=True, query=False)),
                (f"{out}[:STATe]", True, self._prot(kind, "enable", by_arg=True, query=True)),
                (f"{out}:QUEStion", True, self._prot(kind, "tripped", by_arg=True, query=True)),
                (f"{out}:CLEar", False, self._prot(kind, "clear", by_arg=True, query=False)),
                (f"{src}[:LEVel]", False, self._prot(kind, "limit", by_arg=False, query=False)),
                (f"{src}[:LEVel]", True, self._prot(kind, "limit", by_arg=False, query=True)),
                (f"{src}:STATe", False, self._prot(kind, "enable", by_arg=False, query=False)),
                (f"{src}:STATe", True, self._prot(kind, "enable", by_arg=False, query=True)),
                (f"{src}:TRIPped", True, self._prot(kind, "tripped", by_arg=False, query=True)),
                (f"{src}:CLEar", False, self._prot(kind, "clear", by_arg=False, query=False)),
            ]
        return [(HeaderPattern(text), query, handler) for text, query, handler in rows]

    # -- parameters ----------------------------------------------------------------------------
    @staticmethod
    def _no_args(command: Command) -> None:
        if command.args:
            raise ScpiError(-108, detail=f"{command.raw}: takes no parameter")

    @staticmethod
    def _count(command: Command, low: int, high: int) -> tuple[str, ...]:
        if len(command.args) < low:
            raise ScpiError(-109, detail=f"{command.raw}: needs {low} parameter(s)")
        if len(command.args) > high:
            raise ScpiError(-108, detail=f"{command.raw}: takes at most {high} parameter(s)")
        return command.args

    def _channel_arg(self, arg: str) -> Channel:
        text = arg.strip().upper()
        if text.startswith("CH") and text[2:].isdigit() and int(text[2:]) in self._channels:
            return self._channels[int(text[2:])]
        raise ScpiError(-224, detail=f"{arg!r} is not CH1, CH2 or CH3")

    def _split_channel(self, args: tuple[str, ...]) -> tuple[Channel, tuple[str, ...]]:
        """`[CH<n>,]rest`: the named channel, or the selected one."""
        if args and args[0].strip().upper().startswith("CH"):
            return self._channel_arg(args[0]), args[1:]
        return self._channels[self._selected], args

    def _source_channel(self, command: Command) -> Channel:
        number = command.suffix("SOURCE")
        if number is None:
            return self._channels[self._selected]
        if number not in self._channels:
            raise ScpiError(-114, detail=f"{command.raw}: no channel {number}")
        return self._channels[number]

    @staticmethod
    def _value(arg: str, unit: str, low: float, high: float, default: float) -> float:
        text = arg.strip().upper()
        if text in ("MIN", "MINIMUM"):
            return low
        if text in ("MAX", "MAXIMUM"):
            return high
        if text in ("DEF", "DEFAULT"):
            return default
        if text[:1].isalpha():
            raise ScpiError(-104, detail=f"{arg!r}: expected a number, MIN, MAX or DEF")
        value = parse_number(arg, unit)
        if not low - _EPS <= value <= high + _EPS:
            raise ScpiError(-222, detail=f"{arg} outside {low:g} to {high:g} {unit}")
        return value

    @staticmethod
    def _min_max_query(args: tuple[str, ...], low: float, high: float) -> float | None:
        if not args:
            return None
        text = args[0].strip().upper()
        if len(args) == 1 and text in ("MIN", "MINIMUM"):
            return low
        if len(args) == 1 and text in ("MAX", "MAXIMUM"):
            return high
        raise ScpiError(-224 if len(args) == 1 else -108, detail=f"{args!r}: expected MIN|MAX")

    # -- handlers ------------------------------------------------------------------------------
    def _rst(self, command: Command) -> None:
        self._no_args(command)
        self._log.write("*RST: all outputs off, defaults")
        for number, channel in self._channels.items():
            fresh = Channel.default(number, channel.device)
            if channel.on:
                self._log.write(f"CH{number} output OFF (*RST)")
            fresh.off_reason = "*RST"
            self._channels[number] = fresh
            self._settle(fresh)
        self._selected = 1

    def _cls(self, command: Command) -> None:
        self._no_args(command)
        self._errors.clear()

    def _nsel_set(self, command: Command) -> None:
        (arg,) = self._count(command, 1, 1)
        number = self._value(arg, "", 1, len(self._channels), 1)
        if number != int(number):
            raise ScpiError(-224, detail=f"{arg!r} is not a channel number")
        self._selected = int(number)

    def _inst_set(self, command: Command) -> None:
        (arg,) = self._count(command, 1, 1)
        self._selected = self._channel_arg(arg).number

    def _apply_set(self, command: Command) -> None:
        args = self._count(command, 1, 3)
        channel = self._channel_arg(args[0])
        volts = channel.volts
        amps = channel.amps
        if len(args) > 1:
            volts = self._value(args[1], "V", 0.0, channel.rated_volts, 0.0)
        if len(args) > 2:
            amps = self._value(args[2], "A", 0.0, channel.rated_amps, channel.rated_amps)
        self._program(channel, volts, amps)

    def _apply_get(self, command: Command) -> str:
        args = self._count(command, 0, 2)
        channel = self._channel_arg(args[0]) if args else self._channels[self._selected]
        if len(args) == 2:
            what = args[1].strip().upper()
            if what in ("VOLT", "VOLTAGE"):
                return _fmt(channel.volts)
            if what in ("CURR", "CURRENT"):
                return _fmt(channel.amps)
            raise ScpiError(-224, detail=f"{args[1]!r}: expected VOLT or CURR")
        return f"{channel.rating},{_fmt(channel.volts)},{_fmt(channel.amps)}"

    def _volts_set(self, command: Command) -> None:
        channel = self._source_channel(command)
        (arg,) = self._count(command, 1, 1)
        volts = self._value(arg, "V", 0.0, channel.rated_volts, 0.0)
        self._program(channel, volts, channel.amps)

    def _volts_get(self, command: Command) -> str:
        channel = self._source_channel(command)
        limit = self._min_max_query(command.args, 0.0, channel.rated_volts)
        return _fmt(channel.volts if limit is None else limit)

    def _amps_set(self, command: Command) -> None:
        channel = self._source_channel(command)
        (arg,) = self._count(command, 1, 1)
        amps = self._value(arg, "A", 0.0, channel.rated_amps, channel.rated_amps)
        self._program(channel, channel.volts, amps)

    def _amps_get(self, command: Command) -> str:
        channel = self._source_channel(command)
        limit = self._min_max_query(command.args, 0.0, channel.rated_amps)
        return _fmt(channel.amps if limit is None else limit)

    def _output_set(self, command: Command) -> None:
        channel, rest = self._split_channel(self._count(command, 1, 2))
        if len(rest) != 1:
            raise ScpiError(-109, detail=f"{command.raw}: needs ON or OFF")
        on = parse_bool(rest[0])
        if on and (channel.ovp.tripped or channel.ocp.tripped):
            raise ScpiError(-221, detail=f"CH{channel.number} protection tripped: clear it first")
        channel.brownout_latched = False
        self._switch(channel, on, f"{command.raw.strip()}")
        self._settle(channel)

    def _output_get(self, command: Command) -> str:
        channel, rest = self._split_channel(self._count(command, 0, 1))
        if rest:
            raise ScpiError(-224, detail=f"{rest[0]!r} is not a channel")
        return "ON" if channel.on else "OFF"

    def _mode_get(self, command: Command) -> str:
        channel, rest = self._split_channel(self._count(command, 0, 1))
        if rest:
            raise ScpiError(-224, detail=f"{rest[0]!r} is not a channel")
        self._settle(channel)
        return self._reading(channel).mode

    def _measure(self, command: Command, what: str) -> str:
        channel, rest = self._split_channel(self._count(command, 0, 1))
        if rest:
            raise ScpiError(-224, detail=f"{rest[0]!r} is not a channel")
        self._settle(channel)
        reading = self._reading(channel)
        power = reading.volts * reading.amps
        if what == "V":
            return _fmt(reading.volts)
        if what == "I":
            return _fmt(reading.amps)
        if what == "P":
            return _fmt(power)
        return f"{_fmt(reading.volts)},{_fmt(reading.amps)},{_fmt(power)}"

    def _error_get(self, command: Command) -> str:
        self._no_args(command)
        return format_error(self._errors.popleft() if self._errors else None)

    def _set_remote(self, command: Command, remote: bool) -> None:
        self._no_args(command)
        self._remote = remote

    def _prot(self, kind: str, op: str, *, by_arg: bool, query: bool) -> Handler:
        """One OVP/OCP handler; `by_arg`: the channel is a `CH<n>` parameter, not a suffix."""
        unit = "V" if kind == "OVP" else "A"

        def handler(command: Command) -> str | None:
            if by_arg:
                channel, rest = self._split_channel(command.args)
            else:
                channel, rest = self._source_channel(command), command.args
            protection = channel.protection(kind)
            low, high = PROTECTION_MIN[kind], RATINGS[channel.number][2 if kind == "OVP" else 3]
            if query:
                if op == "limit":
                    limit = self._min_max_query(rest, low, high)
                    return _fmt(protection.limit if limit is None else limit)
                if rest:
                    raise ScpiError(-108, detail=f"{command.raw}: unexpected {rest[0]!r}")
                if op == "enable":
                    return "ON" if protection.enabled else "OFF"
                return "YES" if protection.tripped else "NO"
            if op == "clear":
                if rest:
                    raise ScpiError(-108, detail=f"{command.raw}: unexpected {rest[0]!r}")
                if protection.tripped:
                    self._log.write(f"CH{channel.number} {kind} trip cleared")
                protection.tripped = False
                return None
            if len(rest) != 1:
                raise ScpiError(-109 if not rest else -108, detail=f"{command.raw}: one value")
            if op == "limit":
                protection.limit = self._value(rest[0], unit, low, high, high)
            else:
                protection.enabled = parse_bool(rest[0])
            self._settle(channel)
            return None

        return handler

    # -- physics -------------------------------------------------------------------------------
    def _program(self, channel: Channel, volts: float, amps: float) -> None:
        channel.volts, channel.amps = volts, amps
        channel.brownout_latched = False
        self._settle(channel)

    def _switch(self, channel: Channel, on: bool, reason: str) -> None:
        if channel.on == on:
            return
        channel.on = on
        if not on:
            channel.off_reason = reason
        self._log.write(f"CH{channel.number} output {'ON' if on else 'OFF'} ({reason})")

    def _reading(self, channel: Channel) -> Reading:
        """What the output terminals show: CV at the set voltage, or CC when the load is more."""
        if not channel.on:
            return Reading(0.0, 0.0, "CV")
        device = channel.device
        load = 0.0 if device is None else load_amps(device.name, device.activity())
        if load > channel.amps + _EPS:
            return Reading(channel.volts * channel.amps / load, channel.amps, "CC")
        return Reading(channel.volts, load, "CV")

    def _settle(self, channel: Channel) -> None:
        """Apply the consequences of the channel's state now: trips, then the device's power."""
        if channel.on:
            reading = self._reading(channel)
            for kind, value, unit in (("OVP", reading.volts, "V"), ("OCP", reading.amps, "A")):
                protection = channel.protection(kind)
                if protection.enabled and value > protection.limit + _EPS:
                    protection.tripped = True
                    why = f"{kind} trip: {value:.3f} {unit} > {protection.limit:.3f} {unit}"
                    self._switch(channel, False, why)
                    break
        device = channel.device
        if device is None:
            return
        reason = self._unpowered_reason(channel, device)
        if device.powered and reason is not None:
            device.cut(reason)
        elif not device.powered and reason is None:
            device.boot(f"CH{channel.number} {_fmt(channel.volts)} V on")

    def _unpowered_reason(self, channel: Channel, device: WiredDevice) -> str | None:
        """Why the device has no usable power now, or None when it runs."""
        if not channel.on:
            return channel.off_reason
        if channel.brownout_latched:
            return "brown-out (current limit)"
        if channel.volts < device.min_volts - _EPS:
            return f"brown-out: {_fmt(channel.volts)} V < min {_fmt(device.min_volts)} V"
        if device.running():
            reading = self._reading(channel)
            if reading.volts < device.min_volts - _EPS:
                # A real board would boot-loop; the sim stays off until a setting changes.
                channel.brownout_latched = True
                return (
                    f"brown-out in CC: {_fmt(reading.volts)} V < min {_fmt(device.min_volts)} V"
                    f" at limit {_fmt(channel.amps)} A"
                )
        return None

    # -- lifecycle -----------------------------------------------------------------------------
    def recall(self, outputs: Mapping[int, tuple[float, float]]) -> None:
        """Power-on state of the bench: these channels at (volts, amps) and ON; others off."""
        with self._lock:
            for number, (volts, amps) in outputs.items():
                channel = self._channels[number]
                channel.volts, channel.amps = volts, amps
                self._switch(channel, True, "power-on recall")
                self._settle(channel)

    def tick(self) -> None:
        """Re-read every load: OCP trips and current-limit brown-outs happen without a query."""
        with self._lock:
            for channel in self._channels.values():
                if channel.device is not None:
                    channel.device.check_exit()
                if channel.on:
                    self._settle(channel)

    def shutdown(self) -> None:
        """Stop every device: SIGTERM, SIGKILL after STOP_GRACE_S, reap all."""
        with self._lock:
            self._log.write("shutdown: stopping devices")
            stopping = [(d, d.terminate()) for d in self._devices.values()]
            deadline = time.monotonic() + STOP_GRACE_S
            for device, process in stopping:
                if process is None:
                    continue
                try:
                    code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
                    how = "SIGTERM"
                except subprocess.TimeoutExpired:
                    _kill_group(process, signal.SIGKILL)
                    code = process.wait(timeout=REAP_TIMEOUT_S)
                    how = "SIGKILL after SIGTERM"
                self._world.set_activity(device.name, "off")
                self._log.write(f"{device.name} stopped pid={process.pid} {how} rc={code}")


class ScpiServer:
    """Serves one instrument on a TCP socket: one thread per client, one line = one message."""

    def __init__(self, listener: socket.socket, instrument: Dp832) -> None:
        self._listener = listener
        self._instrument = instrument
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._clients: dict[socket.socket, threading.Thread] = {}
        self._wake_reader, self._wake_writer = socket.socketpair()  # wakes accept on close
        self._acceptor = threading.Thread(target=self._accept_loop, name="psu-accept")

    def start(self) -> None:
        self._listener.settimeout(RECV_POLL_S)
        self._acceptor.start()

    def close(self) -> None:
        """Stop accepting, disconnect every client and join every thread."""
        self._closing.set()
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=5)
        self._listener.close()
        self._wake_reader.close()
        self._wake_writer.close()
        with self._lock:
            clients = list(self._clients.items())
        for conn, _ in clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for _, thread in clients:
            thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            readable, _, _ = select.select([self._listener, self._wake_reader], [], [], 1.0)
            if self._listener not in readable:
                continue
            try:
                conn, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if not self._closing.is_set():
                    logger.exception("accept failed")
                return
            peer = f"{address[0]}:{address[1]}"
            thread = threading.Thread(
                target=self._serve, args=(conn, peer), name=f"psu-client-{peer}"
            )
            with self._lock:
                self._clients[conn] = thread
            thread.start()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        logger.info("client %s connected", peer)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._serve_lines(conn, peer)
        except OSError as exc:
            logger.info("client %s dropped: %s", peer, exc)
        finally:
            with self._lock:
                self._clients.pop(conn, None)
            conn.close()
            logger.info("client %s disconnected", peer)

    def _serve_lines(self, conn: socket.socket, peer: str) -> None:
        buffer = b""
        while not self._closing.is_set():
            conn.settimeout(RECV_POLL_S)
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            _ack_now(conn)
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                reply = self._instrument.execute(raw.decode("latin-1").rstrip("\r"), peer)
                if reply is not None:
                    conn.settimeout(SEND_TIMEOUT_S)
                    conn.sendall(reply.encode("ascii", "replace") + b"\n")
            if len(buffer) > MAX_LINE_BYTES:
                self._instrument.reject(peer, f"line longer than {MAX_LINE_BYTES} bytes")
                buffer = b""


def _ack_now(conn: socket.socket) -> None:
    """ACK at once (Linux TCP_QUICKACK, which the kernel resets, so after every read).

    A client without TCP_NODELAY (pyvisa-py's SOCKET sessions) holds a second write until the
    first is ACKed; with the default delayed ACK that stalls a power cut written right after a
    set command by about 40 ms.
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None:
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, quickack, 1)


class LoadMonitor:
    """Calls `Dp832.tick` every MONITOR_INTERVAL_S until closed."""

    def __init__(self, instrument: Dp832, interval_s: float = MONITOR_INTERVAL_S) -> None:
        self._instrument = instrument
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="psu-monitor")

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._instrument.tick()
            except Exception:  # keep watching: a missed tick must not end the power model
                logger.exception("load monitor tick failed")


# -- wiring from the rig and the environment ------------------------------------------------------


def device_commands(rig: Rig, environ: Mapping[str, str]) -> dict[str, list[str]]:
    """The command line of each wired device: `HIL_SIM_DEVICE_CMD` entries, else the module."""
    override: dict[str, list[str]] = {}
    text = environ.get(DEVICE_CMD_ENV)
    if text:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{DEVICE_CMD_ENV} is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f'{DEVICE_CMD_ENV} must be an object like {{"terminal": [argv]}}')
        for name, argv in data.items():
            if name not in WIRED_DEVICES:
                raise ValueError(f"{DEVICE_CMD_ENV}: unknown device {name!r}")
            if not argv or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise ValueError(f"{DEVICE_CMD_ENV}[{name!r}] must be a non-empty list of strings")
            override[name] = argv
    return {
        name: override.get(name) or module_command(f"harness.sim.{name}", rig.path)
        for name in WIRED_DEVICES
    }


def pass_fds_from(environ: Mapping[str, str]) -> tuple[int, ...]:
    """The inherited descriptors to hand on to every device (`HIL_PASS_FDS="5,6"`)."""
    text = environ.get(PASS_FDS_ENV, "").strip()
    if not text:
        return ()
    fds: list[int] = []
    for item in text.split(","):
        try:
            fd = int(item)
            os.fstat(fd)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{PASS_FDS_ENV}={text!r}: {item!r} is not an open fd") from exc
        fds.append(fd)
    return tuple(fds)


def wired_outputs(rig: Rig) -> dict[str, tuple[int, float, float]]:
    """device name -> (channel, volts, amps) from the rig's [psu.outputs], checked vs the DP832."""
    if rig.psu is None:
        return {}
    wired: dict[str, tuple[int, float, float]] = {}
    for name, output in rig.psu.outputs.items():
        if output.channel not in RATINGS:
            raise ValueError(f"[psu.outputs.{name}] channel {output.channel}: a DP832 has 1-3")
        rated_volts, rated_amps, _, _ = RATINGS[output.channel]
        if output.volts > rated_volts or output.amps > rated_amps:
            raise ValueError(
                f"[psu.outputs.{name}] {output.volts} V / {output.amps} A is above CH"
                f"{output.channel}'s {rated_volts:g} V / {rated_amps:g} A"
            )
        wired[name] = (output.channel, output.volts, output.amps)
    return wired


def _min_volts(rig: Rig, name: str) -> float:
    sim = rig.require_sim()
    return sim.terminal.min_volts if name == "terminal" else sim.printer.min_volts


def main(argv: list[str] | None = None) -> int:
    rig, stop = start_device("psu", argv, "Simulated Rigol DP832 bench PSU")
    sim = rig.require_sim()
    try:
        wired = wired_outputs(rig)
        commands = device_commands(rig, os.environ)
        pass_fds = pass_fds_from(os.environ)
        listener = listen(sim.psu.listen)
    except (ValueError, OSError) as exc:
        logger.error("cannot start the PSU: %s", exc)
        return 2
    with contextlib.ExitStack() as stack:
        stack.callback(listener.close)  # the server closes it too; a second close is a no-op
        log = PsuLog(Path(sim.state_dir) / "psu" / "psu.log")
        stack.callback(log.close)
        world = World(Path(sim.state_dir))
        spawner = Spawner()
        stack.callback(spawner.close)  # last: devices die with the thread that spawned them
        devices = {
            channel: WiredDevice(
                name,
                commands[name],
                _min_volts(rig, name),
                spawner=spawner,
                world=world,
                log=log,
                pass_fds=pass_fds,
                console=Path(sim.state_dir) / "logs" / f"{name}.console.log",
            )
            for name, (channel, _, _) in wired.items()
        }
        instrument = Dp832(sim.psu.idn, world=world, log=log, devices=devices)
        stack.callback(instrument.shutdown)
        monitor = LoadMonitor(instrument)
        stack.callback(monitor.close)
        server = ScpiServer(listener, instrument)
        stack.callback(server.close)
        log.write(f"start pid={os.getpid()} listen={sim.psu.listen} idn={sim.psu.idn!r}")
        instrument.recall({ch: (volts, amps) for ch, volts, amps in wired.values()})
        server.start()
        monitor.start()
        logger.info("serving SCPI on %s", sim.psu.listen)
        stop.wait()
        log.write("stop requested")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
