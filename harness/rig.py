"""Load and validate a rig file (TOML) into typed, frozen configuration.

A rig names every device of a bench, how to reach it and its limits. Validation is strict and
happens before anything starts: the first problem raises `RigError` naming the file, the key and
what is allowed; unknown keys are errors too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from harness.sim.profiles import FIRMWARE_PROFILES

T = TypeVar("T")
_REQUIRED: Any = object()


class RigError(ValueError):
    """A rig file is wrong; the message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class Address:
    """A TCP endpoint "host:port"."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 / ::1: the only hosts a simulated bench may use."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RigInfo:
    name: str
    recovery_s: float
    card_bins: tuple[str, ...]


@dataclass(frozen=True)
class TerminalConfig:
    driver: str
    port: str
    tid: str
    password: str
    currency: int
    boot_s: float
    timeout_s: float


@dataclass(frozen=True)
class ReceiptPatterns:
    """Regular expressions that classify a decoded receipt's text."""

    paid: str
    unpaid: str
    copy: str
    trace: str  # one group: the trace number (= STAN) printed on the receipt
    order: str  # one group: the ECR's order reference, when the terminal prints it
    reversal: str  # a cancellation receipt
    settlement: str  # an end-of-day slip


@dataclass(frozen=True)
class Endpoint:
    """One side of a byte link: "tcp://host:port" or "serial:///dev/ttyX?baud=N"."""

    scheme: str  # "tcp" | "serial"
    address: Address | None  # tcp
    device: str | None  # serial
    baud: int

    def __str__(self) -> str:
        if self.scheme == "tcp":
            return f"tcp://{self.address}"
        return f"serial://{self.device}?baud={self.baud}"


@dataclass(frozen=True)
class PrinterTap:
    """The man-in-the-middle between terminal and printer: records, and fakes printer faults."""

    terminal_side: Endpoint  # where the terminal connects (the tap listens / opens here)
    printer_side: Endpoint  # the real printer
    control: Address  # the tap's HTTP control API


@dataclass(frozen=True)
class PrinterConfig:
    receipt: ReceiptPatterns
    tap: PrinterTap | None
    faults: str  # "tap": through the tap (any printer); "sim": the sim printer's physical world


@dataclass(frozen=True)
class PsuOutput:
    name: str
    channel: int
    volts: float
    amps: float
    max_volts: float
    max_amps: float


@dataclass(frozen=True)
class PsuConfig:
    resource: str
    dialect: str
    outputs: Mapping[str, PsuOutput]


@dataclass(frozen=True)
class HostConfig:
    ledger: str


@dataclass(frozen=True)
class ProxyConfig:
    name: str
    listen: Address
    upstream: Address


@dataclass(frozen=True)
class NetworkConfig:
    toxiproxy: str  # the API URL, "http://host:port"
    proxies: Mapping[str, ProxyConfig]
    allow_upstreams: tuple[str, ...]

    @property
    def api(self) -> Address:
        host, _, port = self.toxiproxy.removeprefix("http://").rstrip("/").rpartition(":")
        return Address(host, int(port))


@dataclass(frozen=True)
class CaptureConfig:
    iface: str
    ports: tuple[int, ...]  # TCP ports of the terminal<->host link to record


@dataclass(frozen=True)
class HostRule:
    """A test-host answer rule: the first rule whose amount / card matches decides the answer."""

    amount: int | None
    card: str | None
    response: str
    delay_ms: int
    silent: bool

    def matches(self, amount: int, pan: str) -> bool:
        if self.amount is not None and self.amount != amount:
            return False
        return self.card is None or self.card == pan


@dataclass(frozen=True)
class SimHost:
    listen: Address
    ledger_listen: Address
    rules: tuple[HostRule, ...]


@dataclass(frozen=True)
class SimTerminal:
    zvt_listen: Address
    host: Address
    printer: Address
    host_timeout_s: float
    card_wait_s: float
    reversal_retry_s: float
    mid: str
    language: str
    min_volts: float
    flash_write_ms: float  # how long one journal write takes on the terminal's flash


@dataclass(frozen=True)
class SimPrinter:
    listen: Address
    min_volts: float
    line_ms: float  # mechanical time to print one line, so a fault can land mid-receipt


@dataclass(frozen=True)
class SimPsu:
    listen: Address
    idn: str


@dataclass(frozen=True)
class SimConfig:
    state_dir: Path
    firmware: str
    host: SimHost
    terminal: SimTerminal
    printer: SimPrinter
    psu: SimPsu


@dataclass(frozen=True)
class Rig:
    path: Path
    rig: RigInfo
    terminal: TerminalConfig
    printer: PrinterConfig | None
    psu: PsuConfig | None
    host: HostConfig | None
    network: NetworkConfig | None
    capture: CaptureConfig | None
    sim: SimConfig | None
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def is_sim(self) -> bool:
        return self.sim is not None

    def require_sim(self) -> SimConfig:
        if self.sim is None:
            raise RigError(f"{self.path}: this needs a simulated rig with a [sim] section")
        return self.sim


class _Table:
    """Reads typed keys from one TOML table and rejects keys nobody asked for."""

    def __init__(self, path: Path, name: str, data: Mapping[str, Any]) -> None:
        self.path = path
        self.name = name
        self.data = dict(data)
        self.seen: set[str] = set()

    def fail(self, key: str, problem: str) -> RigError:
        where = f"{self.name}.{key}" if self.name else key
        return RigError(f"{self.path}: [{where}] {problem}")

    def _get(self, key: str, default: Any) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.fail(key, "is missing (required)")
            return default
        return self.data[key]

    def text(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        allowed: tuple[str, ...] | None = None,
        pattern: str | None = None,
        hint: str = "",
    ) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string{_hint(hint)}, got {value!r}")
        if allowed is not None and value not in allowed:
            raise self.fail(key, f"is {value!r}; allowed: {', '.join(allowed)}")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise self.fail(key, f"is {value!r}; expected {hint or pattern}")
        return value

    def number(
        self, key: str, default: Any = _REQUIRED, *, low: float = 0, high: float = 1e9
    ) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number between {low} and {high}, got {value!r}")
        if not low <= value <= high:
            raise self.fail(key, f"is {value}; allowed: {low} to {high}")
        return float(value)

    def integer(
        self, key: str, default: Any = _REQUIRED, *, low: int = 0, high: int = 2**31
    ) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer between {low} and {high}, got {value!r}")
        if not low <= value <= high:
            raise self.fail(key, f"is {value}; allowed: {low} to {high}")
        return value

    def boolean(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def address(self, key: str, default: Any = _REQUIRED, *, loopback: bool = False) -> Any:
        value = self.text(key, default, hint='"host:port"')
        if value is default and key not in self.data:
            return value
        match = re.fullmatch(r"\[?([A-Za-z0-9_.:-]+?)\]?:(\d{1,5})", value)
        if not match or not 0 < int(match.group(2)) < 65536:
            raise self.fail(key, f'is {value!r}; expected "host:port" with a port 1-65535')
        address = Address(match.group(1), int(match.group(2)))
        if loopback and not address.is_loopback:
            raise self.fail(
                key, f"is {value!r}; the simulated bench only uses loopback (127.0.0.1, localhost)"
            )
        return address

    def table(self, key: str, default: Any = _REQUIRED) -> _Table:
        value = self._get(key, default)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {value!r}")
        return _Table(self.path, f"{self.name}.{key}" if self.name else key, value)

    def has(self, key: str) -> bool:
        return key in self.data

    def list_of(self, key: str, default: Any, item: Callable[[Any, int], T]) -> tuple[T, ...]:
        value = self._get(key, default)
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, got {value!r}")
        return tuple(item(entry, index) for index, entry in enumerate(value))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            allowed = ", ".join(sorted(self.seen)) or "none"
            raise self.fail(unknown[0], f"is not a known key; allowed here: {allowed}")


def _hint(hint: str) -> str:
    return f" ({hint})" if hint else ""


def load_rig(path: str | Path) -> Rig:
    """Read and validate a rig file; raise RigError on the first problem."""
    rig_path = Path(path)
    try:
        text = rig_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RigError(f"{rig_path}: cannot read the rig file ({exc.strerror})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RigError(f"{rig_path}: not valid TOML ({exc})") from exc
    return parse_rig(data, rig_path)


def parse_rig(data: Mapping[str, Any], path: Path) -> Rig:
    top = _Table(path, "", data)
    rig = _rig_info(top.table("rig"))
    terminal = _terminal(top.table("terminal"))
    printer = _printer(top.table("printer")) if top.has("printer") else None
    psu = _psu(top.table("psu")) if top.has("psu") else None
    host = _host(top.table("host")) if top.has("host") else None
    network = _network(top.table("network")) if top.has("network") else None
    capture = _capture(top.table("capture")) if top.has("capture") else None
    sim = _sim(top.table("sim"), rig, psu) if top.has("sim") else None
    top.done()
    if sim is not None:
        _check_sim_loopback(path, printer, network)
    return Rig(path, rig, terminal, printer, psu, host, network, capture, sim, raw=data)


def _rig_info(t: _Table) -> RigInfo:
    name = t.text("name", pattern=r"[A-Za-z0-9_.-]{1,40}", hint="letters, digits, _ . -")
    recovery_s = t.number("recovery_s", 30.0, low=1, high=3600)

    def bin_item(value: Any, index: int) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"\d{6,8}", value):
            raise t.fail(f"card_bins[{index}]", f"is {value!r}; expected a 6-8 digit test BIN")
        return value

    card_bins = t.list_of("card_bins", _REQUIRED, bin_item)
    if not card_bins:
        raise t.fail("card_bins", "is empty; list the test-card BINs the bench may use")
    t.done()
    return RigInfo(name, recovery_s, card_bins)


def _terminal(t: _Table) -> TerminalConfig:
    config = TerminalConfig(
        driver=t.text("driver", "zvt", allowed=("zvt",)),
        port=t.text(
            "port",
            hint='"sim", a serial device like "/dev/ttyUSB0", or "socket://host:port"',
        ),
        tid=t.text("tid", pattern=r"\d{8}", hint="8 digits"),
        password=t.text("password", "000000", pattern=r"\d{6}", hint="6 digits"),
        currency=t.integer("currency", 978, low=1, high=999),
        boot_s=t.number("boot_s", 10.0, low=0.1, high=600),
        timeout_s=t.number("timeout_s", 30.0, low=1, high=600),
    )
    t.done()
    return config


def _printer(t: _Table) -> PrinterConfig:
    r = t.table("receipt", {})
    patterns = ReceiptPatterns(
        paid=_regex(r, "paid", "APPROVED|交易成功"),
        unpaid=_regex(r, "unpaid", "DECLINED|NOT PAID|UNPAID|未支付|交易失败"),
        copy=_regex(r, "copy", "COPY|DUPLICATE|重打印"),
        trace=_regex(r, "trace", r"TRACE (\d+)"),
        order=_regex(r, "order", r"ORDER (\S+)"),
        reversal=_regex(r, "reversal", "REVERSAL|撤销"),
        settlement=_regex(r, "settlement", "END OF DAY|结算"),
    )
    r.done()
    tap = None
    if t.has("tap"):
        p = t.table("tap")
        tap = PrinterTap(
            terminal_side=_endpoint(p, "terminal_side"),
            printer_side=_endpoint(p, "printer_side"),
            control=p.address("control"),
        )
        p.done()
    faults = t.text("faults", "tap" if tap else "sim", allowed=("tap", "sim"))
    if faults == "tap" and tap is None:
        raise t.fail("faults", 'is "tap" but there is no [printer] tap; add one or use "sim"')
    t.done()
    return PrinterConfig(patterns, tap, faults)


def _endpoint(t: _Table, key: str) -> Endpoint:
    value = t.text(key, hint='"tcp://host:port" or "serial:///dev/ttyUSB0?baud=19200"')
    match = re.fullmatch(r"tcp://([A-Za-z0-9_.:-]+?):(\d{1,5})", value)
    if match and 0 < int(match.group(2)) < 65536:
        return Endpoint("tcp", Address(match.group(1), int(match.group(2))), None, 0)
    match = re.fullmatch(r"serial://(/[^?]+)(?:\?baud=(\d+))?", value)
    if match:
        return Endpoint("serial", None, match.group(1), int(match.group(2) or 19200))
    raise t.fail(key, f'is {value!r}; expected "tcp://host:port" or "serial:///dev/ttyX?baud=N"')


def _network(t: _Table) -> NetworkConfig:
    api = t.text("toxiproxy", pattern=r"http://[^\s/]+:\d+/?", hint='"http://host:port"')
    allow = t.list_of(
        "allow_upstreams",
        _REQUIRED,
        lambda v, i: _address_item(t, f"allow_upstreams[{i}]", v),
    )
    p = t.table("proxies")
    proxies: dict[str, ProxyConfig] = {}
    for name in list(p.data):
        entry = p.table(name)
        proxy = ProxyConfig(name, entry.address("listen"), entry.address("upstream"))
        entry.done()
        if str(proxy.upstream) not in allow:
            raise entry.fail(
                "upstream",
                f"is {proxy.upstream}, which is not in [network] allow_upstreams "
                f"({', '.join(allow) or 'empty'}); the harness never proxies to other hosts",
            )
        proxies[name] = proxy
    p.done()
    if not proxies:
        raise t.fail("proxies", "is empty; name the terminal's host link, e.g. host = {...}")
    t.done()
    return NetworkConfig(api.rstrip("/"), proxies, allow)


def _address_item(t: _Table, key: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]+:\d{1,5}", value):
        raise t.fail(key, f'is {value!r}; expected "host:port"')
    return value


def _capture(t: _Table) -> CaptureConfig:
    iface = t.text("iface", "lo", pattern=r"[A-Za-z0-9_.:-]{1,15}", hint="an interface name")

    def port(value: Any, index: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise t.fail(f"ports[{index}]", f"is {value!r}; expected a TCP port 1-65535")
        return value

    ports = t.list_of("ports", _REQUIRED, port)
    if not ports:
        raise t.fail("ports", "is empty; list the TCP port(s) of the terminal's host link")
    t.done()
    return CaptureConfig(iface, ports)


def _check_sim_loopback(
    path: Path, printer: PrinterConfig | None, network: NetworkConfig | None
) -> None:
    """A simulated rig never reaches off this machine."""
    if network is not None:
        if not is_loopback_host(network.api.host):
            raise RigError(f"{path}: [network.toxiproxy] a simulated rig uses a loopback API")
        for proxy in network.proxies.values():
            for key, address in (("listen", proxy.listen), ("upstream", proxy.upstream)):
                if not address.is_loopback:
                    raise RigError(
                        f"{path}: [network.proxies.{proxy.name}.{key}] is {address}; "
                        "a simulated rig only uses loopback (127.0.0.1, localhost)"
                    )
    if printer is not None and printer.tap is not None:
        for key, side in (
            ("terminal_side", printer.tap.terminal_side),
            ("printer_side", printer.tap.printer_side),
        ):
            if side.address is not None and not side.address.is_loopback:
                raise RigError(
                    f"{path}: [printer.tap.{key}] is {side}; a simulated rig only uses loopback"
                )


def _regex(t: _Table, key: str, default: str) -> str:
    value: str = t.text(key, default)
    try:
        re.compile(value)
    except re.error as exc:
        raise t.fail(key, f"is not a valid regular expression ({exc})") from exc
    return value


def _psu(t: _Table) -> PsuConfig:
    from harness.protocols.scpi import DIALECTS

    resource = t.text("resource", hint='a VISA resource like "TCPIP::127.0.0.1::5025::SOCKET"')
    dialect = t.text("dialect", allowed=tuple(sorted(DIALECTS)))
    outputs_table = t.table("outputs")
    outputs: dict[str, PsuOutput] = {}
    for name in list(outputs_table.data):
        o = outputs_table.table(name)
        volts = o.number("volts", low=0, high=1000)
        amps = o.number("amps", low=0, high=100)
        max_volts = o.number("max_volts", volts, low=0, high=1000)
        max_amps = o.number("max_amps", amps, low=0, high=100)
        if volts > max_volts:
            raise o.fail("volts", f"is {volts} V, above this output's max_volts {max_volts} V")
        if amps > max_amps:
            raise o.fail("amps", f"is {amps} A, above this output's max_amps {max_amps} A")
        outputs[name] = PsuOutput(
            name, o.integer("channel", low=1, high=8), volts, amps, max_volts, max_amps
        )
        o.done()
    if not outputs:
        raise t.fail("outputs", "is empty; name at least one output (e.g. terminal)")
    channels = [o.channel for o in outputs.values()]
    if len(set(channels)) != len(channels):
        raise t.fail("outputs", "uses one channel for two outputs; give each its own channel")
    outputs_table.done()
    t.done()
    return PsuConfig(resource, dialect, outputs)


def _host(t: _Table) -> HostConfig:
    ledger = t.text(
        "ledger",
        pattern=r"(sim\+http://[^\s/]+:\d+/?|settlement-csv:.+)",
        hint='"sim+http://host:port" or "settlement-csv:/path/export.csv"',
    )
    t.done()
    return HostConfig(ledger)


def _sim(t: _Table, rig: RigInfo, psu: PsuConfig | None) -> SimConfig:
    state_dir = Path(t.text("state_dir", f".hil/{rig.name}"))
    firmware = t.text("firmware", "correct", allowed=tuple(FIRMWARE_PROFILES))

    h = t.table("host")
    host = SimHost(
        listen=h.address("listen", loopback=True),
        ledger_listen=h.address("ledger_listen", loopback=True),
        rules=h.list_of("rules", [], lambda v, i: _host_rule(h, v, i)),
    )
    h.done()

    term = t.table("terminal")
    terminal = SimTerminal(
        zvt_listen=term.address("zvt_listen", loopback=True),
        host=term.address("host", loopback=True),
        printer=term.address("printer", loopback=True),
        host_timeout_s=term.number("host_timeout_s", 3.0, low=0.1, high=120),
        card_wait_s=term.number("card_wait_s", 5.0, low=0.1, high=120),
        reversal_retry_s=term.number("reversal_retry_s", 1.0, low=0.05, high=600),
        mid=term.text("mid", "POSHILMERCHANT1", pattern=r".{15}", hint="15 characters"),
        language=term.text("language", "zh", allowed=("en", "zh")),
        min_volts=term.number("min_volts", 10.0, low=0, high=1000),
        flash_write_ms=term.number("flash_write_ms", 15.0, low=0, high=1000),
    )
    term.done()

    p = t.table("printer")
    printer = SimPrinter(
        listen=p.address("listen", loopback=True),
        min_volts=p.number("min_volts", 20.0, low=0, high=1000),
        line_ms=p.number("line_ms", 4.0, low=0, high=1000),
    )
    p.done()

    s = t.table("psu")
    sim_psu = SimPsu(
        listen=s.address("listen", loopback=True),
        idn=s.text("idn", "RIGOL TECHNOLOGIES,DP832,DP8SIM000001,00.01.16"),
    )
    s.done()
    if psu is not None:
        unknown = sorted(set(psu.outputs) - {"terminal", "printer"})
        if unknown:
            raise RigError(
                f"{t.path}: [psu.outputs.{unknown[0]}] on a simulated rig outputs must be named "
                "after the device they feed; allowed: terminal, printer"
            )
    t.done()
    return SimConfig(state_dir, firmware, host, terminal, printer, sim_psu)


def _host_rule(h: _Table, value: Any, index: int) -> HostRule:
    if not isinstance(value, dict):
        raise h.fail(f"rules[{index}]", 'must be a table like { amount = 5100, response = "51" }')
    r = _Table(h.path, f"{h.name}.rules[{index}]", value)
    rule = HostRule(
        amount=r.integer("amount", None, low=1, high=999_999_999_999),
        card=r.text("card", None, pattern=r"\d{12,19}", hint="a 12-19 digit test card number"),
        response=r.text("response", "00", allowed=("00", "05", "51", "91", "96")),
        delay_ms=r.integer("delay_ms", 0, low=0, high=600_000),
        silent=r.boolean("silent", False),
    )
    r.done()
    if rule.amount is None and rule.card is None:
        raise r.fail("amount", "is missing: a rule needs an amount, a card, or both")
    return rule
