"""Network faults on the terminal <-> acquirer link, through any toxiproxy server.

The harness injects network faults with toxics on a toxiproxy proxy that sits between the terminal
and the acquirer host: our embedded server on the sim bench, the real Go server on a real bench.
It talks to it through `toxiproxy-python` 0.1.1 and closes that client's gaps here, and only here:
- no timeouts: every request goes through this `Network`'s requests.Session with `timeout_s`;
- a process-global endpoint (`APIConsumer.host/port`): each client call points it at this
  server under one lock and restores it, so several servers can be driven from one process;
- a 500 read as a proxy (`KeyError: 'name'`) and 403/405/503 passed silently: any status >= 400
  raises `NetworkFaultError` with the status and the body, before the client parses anything;
- no toxic update, no single-proxy GET and a client-side /populate that drops toxics: those calls
  are made here (PATCH /proxies/{p}/toxics/{t}, GET /proxies/{p}, POST /populate).

The one thing to know: a proxy is only ever created towards an allowlisted upstream (the rig's
`allow_upstreams`); anything else raises `UpstreamNotAllowedError` before any request is sent.
Scenario faults (`request_lost`, `response_lost`, ...) each return a `NetworkFault` record naming
exactly what was changed, and `heal(fault)` undoes exactly that.

Directions, as toxiproxy names them: "upstream" = terminal -> host (requests), "downstream" =
host -> terminal (responses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import secrets
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests  # type: ignore[import-untyped, unused-ignore]
import toxiproxy.api  # type: ignore[import-untyped, unused-ignore]
from toxiproxy import Toxiproxy  # type: ignore[import-untyped, unused-ignore]
from toxiproxy.proxy import Proxy as ClientProxy  # type: ignore[import-untyped, unused-ignore]

from harness.closing import Closing

log = logging.getLogger("harness.drivers.network")

# toxiproxy-python keeps its endpoint and its `requests` module in process-wide globals; this lock
# serializes every call that points them at one server, so Networks never mix endpoints.
_CLIENT_LOCK = threading.Lock()


class NetworkFaultError(Exception):
    """A toxiproxy request failed: unreachable, timed out, or answered with an HTTP error."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class UpstreamNotAllowedError(NetworkFaultError):
    """A proxy towards a host the rig does not allow; refused before any request."""


@dataclass(frozen=True)
class ToxicInfo:
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, int]
    added_at: float = 0.0  # monotonic instant the server confirmed it (when we added it)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToxicInfo:
        return cls(
            name=str(data["name"]),
            type=str(data["type"]),
            stream=str(data["stream"]),
            toxicity=float(data["toxicity"]),
            attributes=dict(data.get("attributes") or {}),
        )


@dataclass(frozen=True)
class ProxyInfo:
    name: str
    listen: str  # the address the proxy is bound to, as the server reports it
    upstream: str
    enabled: bool
    toxics: tuple[ToxicInfo, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProxyInfo:
        return cls(
            name=str(data["name"]),
            listen=str(data["listen"]),
            upstream=str(data["upstream"]),
            enabled=bool(data["enabled"]),
            toxics=tuple(ToxicInfo.from_json(t) for t in data.get("toxics") or ()),
        )


@dataclass(frozen=True)
class NetworkFault:
    """One applied network fault: what it means and exactly what it changed, to heal it."""

    fault_id: str
    name: str  # "request_lost", "response_lost", ...
    proxy: str
    toxics: tuple[ToxicInfo, ...]  # toxics this fault created
    disabled: bool  # this fault disabled the proxy (partition, flapping)
    meaning: str  # what it means for the terminal, in words, for the report
    params: Mapping[str, object] = field(default_factory=dict)
    applied_at: float = 0.0  # monotonic seconds


class _Transport:
    """Stands in for the `requests` module inside toxiproxy-python: timeout + error mapping."""

    def __init__(self, network: Network) -> None:
        self._network = network

    def get(self, url: str, params: Any = None, **kwargs: Any) -> Any:
        return self._network._send("GET", url, params=params)

    def post(self, url: str, data: Any = None, json: Any = None, **kwargs: Any) -> Any:
        return self._network._send("POST", url, data=data, json=json)

    def delete(self, url: str, **kwargs: Any) -> Any:
        return self._network._send("DELETE", url)


class _Flapper:
    """Toggles one proxy: down for half a period, up for half, `cycles` times; ends up."""

    def __init__(self, network: Network, proxy: str, period_s: float, cycles: int) -> None:
        self.network = network
        self.proxy = proxy
        self.period_s = period_s
        self.cycles = cycles
        self.stop = threading.Event()
        self.error: NetworkFaultError | None = None
        self.transitions: list[tuple[float, bool]] = []  # (monotonic time, enabled)
        self.thread = threading.Thread(target=self._run, name=f"flapping-{proxy}", daemon=True)

    def _set(self, enabled: bool) -> None:
        self.network.set_enabled(self.proxy, enabled)
        self.transitions.append((time.monotonic(), enabled))

    def _run(self) -> None:
        half = self.period_s / 2
        try:
            for _ in range(self.cycles):
                self._set(False)
                if self.stop.wait(half):
                    break
                self._set(True)
                if self.stop.wait(half):
                    break
        except NetworkFaultError as exc:
            self.error = exc
            log.error("flapping %s stopped: %s", self.proxy, exc)
        finally:
            try:
                self._set(True)
            except NetworkFaultError as exc:
                self.error = self.error or exc
                log.error("flapping %s could not re-enable the proxy: %s", self.proxy, exc)


class Network(Closing):
    """Drives one toxiproxy server; proxies only towards `allow_upstreams` ("host:port")."""

    def __init__(
        self, api_url: str, allow_upstreams: Collection[str], timeout_s: float = 5.0
    ) -> None:
        parts = urlsplit(api_url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"toxiproxy API must be http://HOST:PORT, got {api_url!r}")
        self.api_url = api_url.rstrip("/")
        self._host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self._port = parts.port
        self._allowed = frozenset(u.strip().lower() for u in allow_upstreams)
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._io_lock = threading.RLock()
        self._transport = _Transport(self)
        self._flappers: dict[str, _Flapper] = {}

    # -- transport ----------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> Any:
        """One HTTP request with the timeout; NetworkFaultError for failures and status >= 400."""
        try:
            with self._io_lock:
                response = self._session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.Timeout as exc:
            raise NetworkFaultError(
                f"toxiproxy {method} {url}: no answer within {self.timeout_s} s"
            ) from exc
        except requests.RequestException as exc:
            raise NetworkFaultError(f"toxiproxy {method} {url}: unreachable: {exc}") from exc
        if response.status_code >= 400:
            body = response.content.decode("utf-8", errors="replace")
            raise NetworkFaultError(
                f"toxiproxy {method} {url}: HTTP {response.status_code}: {body.strip()}",
                status=response.status_code,
                body=body,
            )
        return response

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, self.api_url + path, **kwargs)

    @contextlib.contextmanager
    def _client(self) -> Iterator[Any]:
        """toxiproxy-python pointed at this server (and this transport) for one call."""
        with self._io_lock, _CLIENT_LOCK:
            consumer = toxiproxy.api.APIConsumer
            saved = consumer.host, consumer.port, toxiproxy.api.requests
            consumer.host, consumer.port = self._host, self._port
            toxiproxy.api.requests = self._transport
            try:
                yield Toxiproxy()
            finally:
                consumer.host, consumer.port, toxiproxy.api.requests = saved

    def close(self) -> None:
        """Stop every flapping thread this Network started, then close its HTTP session."""
        for fault_id in list(self._flappers):
            self._stop_flapper(fault_id)
        self._session.close()

    # -- plain API ----------------------------------------------------------------------------

    def version(self) -> str:
        with self._client():
            content = toxiproxy.api.APIConsumer.get("/version").content
        return str(json.loads(content)["version"])

    def proxies(self) -> dict[str, ProxyInfo]:
        """Every proxy of the server by name (without their toxics; see `proxy`)."""
        with self._client() as client:
            found = client.proxies()
        return {
            name: ProxyInfo(p.name, p.listen, p.upstream, bool(p.enabled))
            for name, p in found.items()
        }

    def proxy(self, name: str) -> ProxyInfo:
        """One proxy with its toxics."""
        return ProxyInfo.from_json(self._call("GET", f"/proxies/{quote(name, safe='')}").json())

    def ensure_proxy(self, name: str, listen: str, upstream: str) -> ProxyInfo:
        """Create the proxy, or keep it untouched (toxics, connections, enabled state) when it
        exists with the same listen and upstream. Idempotent for a fixed listen port; a
        differing one is replaced by a fresh proxy without toxics (server-side /populate)."""
        self._check_upstream(upstream)
        body = [{"name": name, "listen": listen, "upstream": upstream}]
        created = self._call("POST", "/populate", json=body).json()["proxies"]
        return ProxyInfo.from_json(created[0])

    def delete_proxy(self, name: str) -> None:
        with self._client():
            ClientProxy(name=name, upstream="", enabled=True, listen="").destroy()

    def set_enabled(self, proxy: str, enabled: bool) -> None:
        """Disabled: the listener is closed, open connections are closed, connects are refused."""
        with self._client():
            client_proxy = ClientProxy(name=proxy, upstream="", enabled=not enabled, listen="")
            if enabled:
                client_proxy.enable()
            else:
                client_proxy.disable()

    def reset(self) -> None:
        """POST /reset: every proxy enabled again and every toxic removed (proxies are kept)."""
        for fault_id in list(self._flappers):
            self._stop_flapper(fault_id)
        with self._client() as client:
            client.reset()

    def toxics(self, proxy: str) -> list[ToxicInfo]:
        with self._client():
            found = ClientProxy(name=proxy, upstream="", enabled=True, listen="").toxics()
        return [
            ToxicInfo(t.name, t.type, t.stream, float(t.toxicity), dict(t.attributes))
            for t in found.values()
        ]

    def add_toxic(
        self,
        proxy: str,
        type: str,
        stream: str,
        attributes: Mapping[str, int],
        name: str | None = None,
        toxicity: float = 1.0,
    ) -> ToxicInfo:
        """Attach a toxic; it also affects connections that are already open."""
        toxic_name = name or f"{type}_{stream}"
        with self._client():
            ClientProxy(name=proxy, upstream="", enabled=True, listen="").add_toxic(
                type=type,
                stream=stream,
                name=toxic_name,
                toxicity=toxicity,
                attributes=dict(attributes),
            )
        added_at = time.monotonic()  # the POST was answered: the toxic is in the live chains
        return dataclasses.replace(self.toxic(proxy, toxic_name), added_at=added_at)

    def toxic(self, proxy: str, name: str) -> ToxicInfo:
        path = f"/proxies/{quote(proxy, safe='')}/toxics/{quote(name, safe='')}"
        return ToxicInfo.from_json(self._call("GET", path).json())

    def update_toxic(
        self,
        proxy: str,
        name: str,
        attributes: Mapping[str, int] | None = None,
        toxicity: float | None = None,
    ) -> ToxicInfo:
        """Change some attributes (the others are kept) and/or the toxicity, live."""
        body: dict[str, object] = {}
        if attributes is not None:
            body["attributes"] = dict(attributes)
        if toxicity is not None:
            body["toxicity"] = toxicity
        path = f"/proxies/{quote(proxy, safe='')}/toxics/{quote(name, safe='')}"
        return ToxicInfo.from_json(self._call("PATCH", path, json=body).json())

    def remove_toxic(self, proxy: str, name: str) -> None:
        """Buffered data is delivered in order; removing a `timeout` toxic closes connections."""
        with self._client():
            ClientProxy(name=proxy, upstream="", enabled=True, listen="").destroy_toxic(name)

    def remove_toxics(self, proxy: str) -> None:
        for toxic in self.toxics(proxy):
            self.remove_toxic(proxy, toxic.name)

    def _check_upstream(self, upstream: str) -> None:
        if upstream.strip().lower() not in self._allowed:
            allowed = ", ".join(sorted(self._allowed)) or "nothing"
            raise UpstreamNotAllowedError(
                f"upstream {upstream!r} is not allowed (allow_upstreams: {allowed})"
            )

    # -- scenario faults ----------------------------------------------------------------------

    def _apply(
        self,
        name: str,
        proxy: str,
        toxics: list[tuple[str, str, dict[str, int]]],
        meaning: str,
        params: Mapping[str, object],
    ) -> NetworkFault:
        """Add the toxics (type, stream, attributes) as one fault; all or nothing."""
        fault_id = f"{name}_{secrets.token_hex(3)}"
        added: list[ToxicInfo] = []
        try:
            for index, (toxic_type, stream, attributes) in enumerate(toxics):
                suffix = f"_{index}" if len(toxics) > 1 else ""
                added.append(
                    self.add_toxic(proxy, toxic_type, stream, attributes, f"{fault_id}{suffix}")
                )
        except NetworkFaultError:
            for toxic in added:
                with contextlib.suppress(NetworkFaultError):
                    self.remove_toxic(proxy, toxic.name)
            raise
        applied_at = max(toxic.added_at for toxic in added) if added else time.monotonic()
        return NetworkFault(fault_id, name, proxy, tuple(added), False, meaning, params, applied_at)

    def request_lost(self, proxy: str) -> NetworkFault:
        """Upstream black hole (timeout 0): the host never sees the request (0200, 0400...).

        For the terminal this is "no answer": it must treat the sale as unknown, reverse it or
        ask, never print "declined"; the host has nothing to capture, so any PAID claim is false.
        The connection stays open; healing closes it (removing a timeout toxic closes)."""
        return self._apply(
            "request_lost",
            proxy,
            [("timeout", "upstream", {"timeout": 0})],
            "the host never receives the terminal's request",
            {},
        )

    def response_lost(self, proxy: str) -> NetworkFault:
        """Downstream black hole (timeout 0): the host received the request and decided, but the
        answer never arrives. The classic dropped-order case: the host may have captured the
        sale, so the terminal must reverse (0400) or recover the outcome, never say "unpaid"."""
        return self._apply(
            "response_lost",
            proxy,
            [("timeout", "downstream", {"timeout": 0})],
            "the host decided, its response never reaches the terminal",
            {},
        )

    def late_response(self, proxy: str, delay_ms: int) -> NetworkFault:
        """Downstream latency: every host answer arrives `delay_ms` later. Beyond the terminal's
        host timeout it reverses, and the late 0210 must then be ignored, not acted upon."""
        return self._apply(
            "late_response",
            proxy,
            [("latency", "downstream", {"latency": delay_ms, "jitter": 0})],
            f"host answers arrive {delay_ms} ms late",
            {"delay_ms": delay_ms},
        )

    def reset_mid_message(self, proxy: str, after_bytes: int) -> NetworkFault:
        """Downstream limit_data: the host's answer is cut after `after_bytes` bytes and the
        connection closes. The terminal gets a truncated response after the host decided:
        outcome unknown, so reversal or recovery, never a definite "declined"."""
        return self._apply(
            "reset_mid_message",
            proxy,
            [("limit_data", "downstream", {"bytes": after_bytes})],
            f"the host's answer is cut after {after_bytes} bytes, then the link closes",
            {"after_bytes": after_bytes},
        )

    def slow_link(self, proxy: str, rate_kbps: int, latency_ms: int = 0) -> NetworkFault:
        """Both directions limited to `rate_kbps` kilobytes per second (toxiproxy's unit,
        1 KB = 1000 bytes), plus `latency_ms` each way: a poor GPRS/dial-up line. Messages
        arrive late but whole; timeouts tuned for a LAN fire on it."""
        if rate_kbps < 1:
            raise ValueError("rate_kbps must be >= 1 (0 stalls the link on the real server)")
        # Latency first: toxiproxy measures latency from a chunk's arrival, so a latency toxic
        # after the bandwidth one would hide inside the bandwidth delay.
        toxics: list[tuple[str, str, dict[str, int]]] = []
        if latency_ms > 0:
            toxics += [
                ("latency", "upstream", {"latency": latency_ms, "jitter": 0}),
                ("latency", "downstream", {"latency": latency_ms, "jitter": 0}),
            ]
        toxics += [
            ("bandwidth", "upstream", {"rate": rate_kbps}),
            ("bandwidth", "downstream", {"rate": rate_kbps}),
        ]
        return self._apply(
            "slow_link",
            proxy,
            toxics,
            f"the link carries {rate_kbps} KB/s with {latency_ms} ms latency each way",
            {"rate_kbps": rate_kbps, "latency_ms": latency_ms},
        )

    def partition(self, proxy: str) -> NetworkFault:
        """The proxy is disabled: open connections close and new connects are refused. For the
        terminal the host is unreachable; a sale in flight is unknown, a new one cannot start."""
        self.set_enabled(proxy, False)
        applied_at = time.monotonic()  # the server answered: connections closed, connects refused
        return NetworkFault(
            f"partition_{secrets.token_hex(3)}",
            "partition",
            proxy,
            (),
            True,
            "the host is unreachable: connections closed, connects refused",
            {},
            applied_at,
        )

    def flapping(self, proxy: str, period_ms: int, cycles: int) -> NetworkFault:
        """The link goes down for half of `period_ms`, up for the other half, `cycles` times, in a
        background thread (it ends up). Connections die at every down edge: the terminal must
        reconnect and still resolve every in-doubt sale exactly once."""
        if period_ms <= 0 or cycles <= 0:
            raise ValueError("period_ms and cycles must be positive")
        fault_id = f"flapping_{secrets.token_hex(3)}"
        flapper = _Flapper(self, proxy, period_ms / 1000.0, cycles)
        self._flappers[fault_id] = flapper
        applied_at = time.monotonic()
        flapper.thread.start()
        return NetworkFault(
            fault_id,
            "flapping",
            proxy,
            (),
            True,
            f"the link goes down and up every {period_ms} ms, {cycles} times",
            {"period_ms": period_ms, "cycles": cycles},
            applied_at,
        )

    def join(self, fault: NetworkFault, timeout_s: float) -> bool:
        """Wait for a flapping fault to finish its cycles; True if it has (raises its error)."""
        flapper = self._flappers.get(fault.fault_id)
        if flapper is None:
            return True
        flapper.thread.join(timeout_s)
        if flapper.thread.is_alive():
            return False
        if flapper.error is not None:
            raise flapper.error
        return True

    def transitions(self, fault: NetworkFault) -> list[tuple[float, bool]]:
        """(monotonic time, enabled) of every toggle a flapping fault made so far."""
        flapper = self._flappers.get(fault.fault_id)
        return list(flapper.transitions) if flapper is not None else []

    def _stop_flapper(self, fault_id: str) -> None:
        flapper = self._flappers.pop(fault_id, None)
        if flapper is not None:
            flapper.stop.set()
            flapper.thread.join(self.timeout_s * 2 + flapper.period_s)

    def heal(self, fault: NetworkFault) -> None:
        """Undo exactly this fault: its toxics removed (already gone is fine), proxy re-enabled
        if the fault disabled it, its flapping thread stopped."""
        self._stop_flapper(fault.fault_id)
        for toxic in fault.toxics:
            try:
                self.remove_toxic(fault.proxy, toxic.name)
            except NetworkFaultError as exc:
                if exc.status != 404:
                    raise
        if fault.disabled:
            self.set_enabled(fault.proxy, True)

    def heal_all(self, proxy: str) -> None:
        """Every fault on this proxy undone: flapping stopped, all toxics removed, enabled."""
        for fault_id, flapper in list(self._flappers.items()):
            if flapper.proxy == proxy:
                self._stop_flapper(fault_id)
        self.remove_toxics(proxy)
        self.set_enabled(proxy, True)
