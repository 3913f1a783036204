"""The embedded toxiproxy server against the toxiproxy 2.12.0 reference: API answers byte for byte,
driven through unmodified toxiproxy-python where it can and raw requests elsewhere, and the data
plane on real sockets (what arrives, when, and when connections close).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import toxiproxy.api
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from harness.sim.toxiproxy import ToxiproxyServer

TEXT = "text/plain; charset=utf-8"
WAIT_S = 3.0


# -- helpers (also used by test_network_driver.py) ----------------------------------------------


class Upstream:
    """A TCP server in threads standing for the acquirer host: records bytes, echoes if asked."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._cond = threading.Condition()
        self.received = bytearray()
        self.received_at: list[float] = []
        self.sockets: list[socket.socket] = []
        self.eofs = 0
        self._threads: list[threading.Thread] = []
        self._start(self._accept_loop)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._cond:
                self.sockets.append(conn)
                self._cond.notify_all()
            self._start(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    self.eofs += 1
                    self._cond.notify_all()
                    return
                self.received += data
                self.received_at.append(time.monotonic())
                self._cond.notify_all()
            if self.echo:
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def close_connections(self) -> None:
        with self._cond:
            sockets = list(self.sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.close_connections()
        for thread in self._threads:
            thread.join(WAIT_S)
        for sock in self.sockets:
            sock.close()


def has_received(host: Upstream, size: int) -> bool:
    return len(host.received) == size


def connect(listen: str, timeout: float = WAIT_S) -> socket.socket:
    host, port = listen.rsplit(":", 1)
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"EOF after {data!r}")
        data += chunk
    return data


def read_to_end(sock: socket.socket, timeout: float = WAIT_S) -> tuple[bytes, str]:
    """Everything until the connection ends: (data, "eof" | "reset" | "open")."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, "eof"
            data += chunk
    except ConnectionResetError:
        return data, "reset"
    except TimeoutError:
        return data, "open"


def round_trip(sock: socket.socket, payload: bytes) -> float:
    started = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.monotonic() - started


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


class Api:
    """Raw HTTP against one server (requests, default user agent)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.url + path, timeout=WAIT_S, **kwargs)

    def create(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> dict[str, Any]:
        body = {"name": name, "upstream": upstream, "listen": listen}
        response = self("POST", "/proxies", json=body)
        assert response.status_code == 201, response.content
        result: dict[str, Any] = response.json()
        return result

    def toxic(self, proxy: str, **body: Any) -> dict[str, Any]:
        response = self("POST", f"/proxies/{proxy}/toxics", json=body)
        assert response.status_code == 200, response.content
        result: dict[str, Any] = response.json()
        return result


def error_body(message: str, status: int) -> bytes:
    """Go's error body: compact JSON, HTML characters escaped, newline."""
    text = json.dumps({"error": message, "status": status}, separators=(",", ":"))
    escaped = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return escaped.encode() + b"\n"


@pytest.fixture
def server() -> Iterator[ToxiproxyServer]:
    with ToxiproxyServer(seed=7) as srv:
        yield srv


@pytest.fixture
def api(server: ToxiproxyServer) -> Iterator[Api]:
    client = Api(server.url)
    yield client
    client.session.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    host = Upstream()
    yield host
    host.close()


@pytest.fixture
def listen(api: Api, upstream: Upstream) -> str:
    """A proxy "acq" towards the echo upstream; its bound address."""
    return str(api.create("acq", upstream.address)["listen"])


@pytest.fixture
def client(server: ToxiproxyServer, monkeypatch: pytest.MonkeyPatch) -> Toxiproxy:
    """Unmodified toxiproxy-python pointed at the server (its endpoint is process-global)."""
    monkeypatch.setattr(toxiproxy.api.APIConsumer, "host", "127.0.0.1")
    monkeypatch.setattr(toxiproxy.api.APIConsumer, "port", server.port)
    return Toxiproxy()


# -- the API through toxiproxy-python ----------------------------------------------------------


def test_python_client_full_cycle(client: Toxiproxy, upstream: Upstream) -> None:
    assert client.version() == b'{"version": "2.12.0"}\n'
    proxy = client.create(upstream=upstream.address, name="acq")
    assert re.fullmatch(r"127\.0\.0\.1:\d+", proxy.listen) and proxy.listen != "127.0.0.1:0"
    assert set(client.proxies()) == {"acq"}
    assert client.get_proxy("acq").upstream == upstream.address
    assert client.get_proxy("nope") is None

    proxy.add_toxic(type="latency", attributes={"latency": 100, "jitter": 10})
    toxic = proxy.get_toxic("latency_downstream")
    assert (toxic.type, toxic.stream, toxic.toxicity) == ("latency", "downstream", 1)
    assert toxic.attributes == {"latency": 100, "jitter": 10}
    with pytest.raises(ProxyExists) as exists:
        proxy.add_toxic(type="latency", attributes={"latency": 5})
    assert exists.value.args[0] == error_body("toxic already exists", 409)
    with pytest.raises(InvalidToxic) as invalid:
        proxy.add_toxic(type="latency", name="bad", attributes={"latency": 1.5})
    assert invalid.value.args[0] == error_body(
        "bad request body: json: cannot unmarshal number 1.5 into Go struct field "
        "LatencyToxic.attributes.latency of type int64",
        400,
    )
    assert proxy.destroy_toxic("latency_downstream") is True
    with pytest.raises(NotFound) as missing:
        proxy.destroy_toxic("latency_downstream")
    assert missing.value.args[0] == error_body("toxic not found", 404)

    proxy.disable()
    assert client.get_proxy("acq").enabled is False
    with pytest.raises(ConnectionRefusedError):
        connect(proxy.listen)
    proxy.enable()
    with connect(proxy.listen) as sock:
        assert round_trip(sock, b"ping") < 1
    proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 0})
    proxy.disable()
    assert client.reset() is True
    restored = client.get_proxy("acq")
    assert restored.enabled is True and proxy.toxics() == {}
    assert proxy.destroy() is True
    assert client.proxies() == {}


def test_python_client_sees_404_for_unknown_proxy(client: Toxiproxy) -> None:
    from toxiproxy.proxy import Proxy

    ghost = Proxy(name="ghost", upstream="x:1", enabled=True, listen="x:2")
    with pytest.raises(NotFound) as missing:
        ghost.toxics()
    assert missing.value.args[0] == error_body("proxy not found", 404)


# -- proxies over raw HTTP ----------------------------------------------------------------------


def test_create_returns_exact_bytes_and_headers(api: Api, upstream: Upstream) -> None:
    response = api("POST", "/proxies", json={"name": "acq", "upstream": upstream.address})
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"[0-9a-v]{20}", response.headers["X-Toxiproxy-Request-Id"])
    assert "Server" not in response.headers
    listen = response.json()["listen"]
    assert re.fullmatch(r"\[::\]:\d+", listen)  # "" listens on every interface, like Go
    expected = (
        f'{{"name":"acq","listen":"{listen}","upstream":"{upstream.address}",'
        f'"enabled":true,"Logger":{{}},"toxics":[]}}'
    )
    assert response.content == expected.encode()


def test_listen_is_resolved_when_started_and_kept_verbatim_when_not(api: Api) -> None:
    started = api.create("a", "127.0.0.1:1", listen="localhost:0")
    assert re.fullmatch(r"127\.0\.0\.1:\d+", started["listen"])
    response = api(
        "POST",
        "/proxies",
        json={"name": "b", "upstream": "x:1", "listen": "localhost:0", "enabled": False},
    )
    assert response.status_code == 201
    assert response.json()["listen"] == "localhost:0" and response.json()["enabled"] is False


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "bad request body: EOF"),
        (b"   ", 400, "bad request body: EOF"),
        (b'{"name":"a"', 400, "bad request body: unexpected EOF"),
        (b"zz", 400, "bad request body: invalid character 'z' looking for beginning of value"),
        (b'{"name" "a"}', 400, "bad request body: invalid character '\"' after object key"),
        (b"<x>", 400, "bad request body: invalid character '<' looking for beginning of value"),
        (b"{}", 400, "missing required field: name"),
        (b'{"name":"a"}', 400, "missing required field: upstream"),
        (b'{"name":"a","upstream":null}', 400, "missing required field: upstream"),
        (
            b'{"name":5,"upstream":"x:1"}',
            400,
            "bad request body: json: cannot unmarshal number into Go struct field Proxy.name "
            "of type string",
        ),
        (
            b'{"name":"a","upstream":"x:1","enabled":"yes"}',
            400,
            "bad request body: json: cannot unmarshal string into Go struct field Proxy.enabled "
            "of type bool",
        ),
        (
            b"[]",
            400,
            "bad request body: json: cannot unmarshal array into Go value of type toxiproxy.Proxy",
        ),
        (
            b'{"name":"a","upstream":"x:1","listen":"local373"}',
            500,
            "listen tcp: address local373: missing port in address",
        ),
    ],
)
def test_create_errors_match_go(api: Api, body: bytes, status: int, message: str) -> None:
    response = api("POST", "/proxies", data=body)
    assert response.status_code == status
    assert response.headers["Content-Type"] == TEXT
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.content == error_body(message, status)


def test_create_accepts_go_leniencies(api: Api) -> None:
    body = b'{"NAME":"a","Upstream":"x:1","listen":"127.0.0.1:0","enabled":null,"bogus":[1]} trail'
    response = api("POST", "/proxies", data=body)
    assert response.status_code == 201
    assert response.json()["name"] == "a" and response.json()["enabled"] is True


def test_duplicate_is_409_before_binding_and_address_in_use_is_500(api: Api) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        response = api(
            "POST", "/proxies", json={"name": "a", "upstream": "x:1", "listen": f"127.0.0.1:{port}"}
        )
        assert response.status_code == 500
        assert response.content == error_body(
            f"listen tcp 127.0.0.1:{port}: bind: address already in use", 500
        )
        assert api("GET", "/proxies").content == b"{}"
        api.create("a", "x:1")
        duplicate = api(
            "POST", "/proxies", json={"name": "a", "upstream": "x:1", "listen": f"127.0.0.1:{port}"}
        )
        assert duplicate.status_code == 409
        assert duplicate.content == error_body("proxy already exists", 409)


def test_proxy_index_is_sorted_map_and_show_404(api: Api) -> None:
    for name in ("zeta", "alpha", "mid"):
        api.create(name, "x:1")
    assert list(api("GET", "/proxies").json()) == ["alpha", "mid", "zeta"]
    assert api("GET", "/proxies/alpha").json()["name"] == "alpha"
    missing = api("GET", "/proxies/nope")
    assert (missing.status_code, missing.content) == (404, error_body("proxy not found", 404))


def test_update_with_patch_and_post(api: Api, upstream: Upstream, listen: str) -> None:
    sock = connect(listen)
    round_trip(sock, b"x")  # accepted and linked: one still in the backlog would be reset
    response = api("PATCH", "/proxies/acq", json={"enabled": False, "name": "renamed"})
    assert response.status_code == 200
    assert response.json()["name"] == "acq" and response.json()["enabled"] is False
    assert response.json()["listen"] == listen
    assert read_to_end(sock)[1] == "eof"  # disabling closes open connections
    response = api("POST", "/proxies/acq", json={"enabled": True})
    assert response.json()["enabled"] is True and response.json()["listen"] == listen
    sock = connect(listen)
    round_trip(sock, b"x")
    other = Upstream()
    try:
        response = api("POST", "/proxies/acq", json={"upstream": other.address})
        assert response.json()["upstream"] == other.address
        assert read_to_end(sock)[1] == "eof"  # a new upstream restarts the proxy
        with connect(listen) as fresh:
            round_trip(fresh, b"y")
        assert other.wait_for(lambda: bytes(other.received) == b"y")
    finally:
        other.close()
    sock.close()


def test_update_errors(api: Api, listen: str) -> None:
    assert api("PATCH", "/proxies/nope", data=b"garbage").content == error_body(
        "proxy not found", 404
    )
    assert api("PATCH", "/proxies/acq", data=b"").content == error_body(
        "bad request body: EOF", 400
    )
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        response = api("PATCH", "/proxies/acq", json={"listen": f"127.0.0.1:{port}"})
        assert response.status_code == 500
        assert response.content == error_body(
            f"listen tcp 127.0.0.1:{port}: bind: address already in use", 500
        )
    shown = api("GET", "/proxies/acq").json()
    assert shown["enabled"] is False and shown["listen"] == f"127.0.0.1:{port}"


def test_delete_proxy_closes_connections(api: Api, listen: str) -> None:
    sock = connect(listen)
    round_trip(sock, b"x")
    response = api("DELETE", "/proxies/acq")
    assert (response.status_code, response.content) == (204, b"")
    assert read_to_end(sock)[1] == "eof"
    with pytest.raises(ConnectionRefusedError):
        connect(listen)
    assert api("DELETE", "/proxies/acq").content == error_body("proxy not found", 404)


# -- toxics over raw HTTP -----------------------------------------------------------------------


def test_toxic_create_exact_bytes_and_ordering(api: Api, listen: str) -> None:
    response = api(
        "POST",
        "/proxies/acq/toxics",
        json={"type": "latency", "attributes": {"latency": 100, "jitter": 10}},
    )
    assert response.status_code == 200
    assert response.content == (
        b'{"attributes":{"latency":100,"jitter":10},"name":"latency_downstream",'
        b'"type":"latency","stream":"downstream","toxicity":1}'
    )
    api.toxic("acq", type="timeout", stream="UpStream", toxicity=0.5)
    api.toxic("acq", type="noop", stream="downstream", name="n")
    api.toxic("acq", type="slicer", stream="upstream")
    toxics = api("GET", "/proxies/acq/toxics").json()
    assert [t["name"] for t in toxics] == [
        "timeout_UpStream",
        "slicer_upstream",
        "latency_downstream",
        "n",
    ]
    assert toxics[0]["stream"] == "UpStream" and toxics[0]["toxicity"] == 0.5
    assert toxics[1]["attributes"] == {"average_size": 0, "size_variation": 0, "delay": 0}
    assert toxics[3]["attributes"] == {}
    assert api("GET", "/proxies/acq").json()["toxics"] == toxics
    assert b'"toxicity":0.5' in api("GET", "/proxies/acq/toxics/timeout_UpStream").content


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "bad request body: EOF"),
        (b"{}", 400, "invalid toxic type"),
        (
            b'{"type":"nope","stream":"sideways"}',
            400,
            "stream was invalid, can be either upstream or downstream",
        ),
        (
            b'{"type":"latency","stream":""}',
            400,
            "stream was invalid, can be either upstream or downstream",
        ),
        (b'{"type":"nope","attributes":{"latency":1.5}}', 400, "invalid toxic type"),
        (
            b'{"type":"latency","name":"taken","attributes":{"latency":1.5}}',
            409,
            "toxic already exists",
        ),
        (b'{"type":"latency","stream":"upstream","name":"taken"}', 409, "toxic already exists"),
        (
            b'{"type":"latency","attributes":{"latency":"5"}}',
            400,
            "bad request body: json: cannot unmarshal string into Go struct field "
            "LatencyToxic.attributes.latency of type int64",
        ),
        (
            b'{"type":"latency","attributes":{"jitter":true}}',
            400,
            "bad request body: json: cannot unmarshal bool into Go struct field "
            "LatencyToxic.attributes.jitter of type int64",
        ),
        (
            b'{"type":"slicer","attributes":{"delay":2.5}}',
            400,
            "bad request body: json: cannot unmarshal number 2.5 into Go struct field "
            "SlicerToxic.attributes.delay of type int",
        ),
        (
            b'{"type":"latency","toxicity":"1"}',
            400,
            "bad request body: json: cannot unmarshal string into Go struct field "
            "ToxicWrapper.toxicity of type float32",
        ),
        (
            b'{"type":"latency","attributes":5}',
            400,
            "bad request body: json: cannot unmarshal number into Go struct field "
            "ToxicWrapper.attributes of type toxics.NoopToxic",
        ),
    ],
)
def test_toxic_create_validation_order(
    api: Api, listen: str, body: bytes, status: int, message: str
) -> None:
    api.toxic("acq", type="noop", name="taken")
    response = api("POST", "/proxies/acq/toxics", data=body)
    assert (response.status_code, response.content) == (status, error_body(message, status))
    assert response.headers["Content-Type"] == TEXT


def test_toxic_create_leniencies(api: Api, listen: str) -> None:
    created = api(
        "POST",
        "/proxies/acq/toxics",
        data=b'{"TYPE":"timeout","Attributes":{"TIMEOUT":7,"bogus":1},"toxicity":null} junk',
    ).json()
    assert created["attributes"] == {"timeout": 7} and created["toxicity"] == 1
    assert api.toxic("acq", type="noop", name="a", toxicity=7)["toxicity"] == 7
    assert api.toxic("acq", type="noop", name="b", toxicity=-0.25)["toxicity"] == -0.25
    assert api.toxic("acq", type="latency", name="c", attributes=None)["attributes"] == {
        "latency": 0,
        "jitter": 0,
    }
    assert api("POST", "/proxies/nope/toxics", data=b"zz").content == error_body(
        "proxy not found", 404
    )


def test_toxic_update_show_delete(api: Api, listen: str) -> None:
    api.toxic("acq", type="latency", attributes={"latency": 100, "jitter": 10})
    path = "/proxies/acq/toxics/latency_downstream"
    response = api(
        "PATCH", path, json={"attributes": {"latency": 1000}, "type": "x", "stream": "upstream"}
    )
    assert response.status_code == 200
    assert response.json()["attributes"] == {"latency": 1000, "jitter": 10}
    assert response.json()["stream"] == "downstream" and response.json()["type"] == "latency"
    response = api("POST", path, json={"toxicity": 0.25, "attributes": None})
    assert response.json()["toxicity"] == 0.25 and response.json()["attributes"]["latency"] == 1000
    assert api("GET", path).json() == response.json()
    assert api("PATCH", path, data=b'{"toxicity":"x"}').content == error_body(
        "bad request body: json: cannot unmarshal string into Go struct field .toxicity of type "
        "float32",
        400,
    )
    assert api("PATCH", path, data=b'{"attributes":{"jitter":1.5}}').content == error_body(
        "bad request body: json: cannot unmarshal number 1.5 into Go struct field "
        "LatencyToxic.attributes.jitter of type int64",
        400,
    )
    missing = "/proxies/acq/toxics/nope"
    for method in ("GET", "PATCH", "POST", "DELETE"):
        assert api(method, missing, data=b"zz").content == error_body("toxic not found", 404)
    assert api("DELETE", path).status_code == 204
    assert api("GET", "/proxies/acq/toxics").content == b"[]"


# -- /populate, /reset, /version, routing --------------------------------------------------------


def test_populate_creates_keeps_and_replaces(api: Api, upstream: Upstream) -> None:
    port = free_port()
    entries: list[dict[str, Any]] = [
        {"name": "b", "listen": f"127.0.0.1:{port}", "upstream": upstream.address},
        {"name": "a", "listen": "127.0.0.1:0", "upstream": upstream.address, "enabled": False},
    ]
    response = api("POST", "/populate", json=entries)
    assert response.status_code == 201 and response.headers["Content-Type"] == "application/json"
    assert [p["name"] for p in response.json()["proxies"]] == ["b", "a"]
    api.toxic("b", type="latency", attributes={"latency": 1})
    sock = connect(f"127.0.0.1:{port}")
    round_trip(sock, b"x")
    again = api("POST", "/populate", json=entries[:1]).json()["proxies"]
    assert again[0]["toxics"][0]["name"] == "latency_downstream"  # identical: untouched
    round_trip(sock, b"y")  # and its connections kept
    moved = {**entries[0], "upstream": "127.0.0.1:1"}
    replaced = api("POST", "/populate", json=[moved]).json()["proxies"]
    assert replaced[0]["toxics"] == [] and replaced[0]["upstream"] == "127.0.0.1:1"
    assert read_to_end(sock)[1] == "eof"
    sock.close()
    assert api("POST", "/populate", json=[]).content == b'{"proxies":null}'


def test_populate_errors(api: Api) -> None:
    response = api(
        "POST", "/populate", json=[{"name": "a", "upstream": "x:1"}, {"upstream": "x:1"}]
    )
    assert response.status_code == 400 and response.headers["Content-Type"] == "application/json"
    assert response.content == (
        b'{"error":"missing required field: name at proxy 2","status":400,"proxies":null}'
    )
    assert api("GET", "/proxies").content == b"{}"  # validated before creating anything
    response = api("POST", "/populate", json={"name": "a"})
    assert response.json() == {
        "error": "bad request body: json: cannot unmarshal object into Go value of type "
        '[]struct { toxiproxy.Proxy; Enabled *bool "json:\\"enabled\\"" }',
        "status": 400,
        "proxies": None,
    }
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        entries = [
            {"name": "first", "upstream": "x:1", "listen": "127.0.0.1:0"},
            {"name": "second", "upstream": "x:1", "listen": f"127.0.0.1:{port}"},
            {"name": "third", "upstream": "x:1", "listen": "127.0.0.1:0"},
        ]
        response = api("POST", "/populate", json=entries)
    body = response.json()
    assert response.status_code == 500
    assert body["error"] == f"listen tcp 127.0.0.1:{port}: bind: address already in use"
    assert [p["name"] for p in body["proxies"]] == ["first"]
    assert list(api("GET", "/proxies").json()) == ["first"]


def test_reset_enables_and_removes_toxics_keeping_connections(api: Api, listen: str) -> None:
    api.create("other", "x:1")
    api("PATCH", "/proxies/other", json={"enabled": False})
    api.toxic("acq", type="latency", attributes={"latency": 400})
    sock = connect(listen)
    response = api("POST", "/reset", data=b"ignored garbage")
    assert (response.status_code, response.content) == (204, b"")
    assert round_trip(sock, b"kept") < 0.3  # same connection, latency gone
    proxies = api("GET", "/proxies").json()
    assert all(p["enabled"] and p["toxics"] == [] for p in proxies.values())
    sock.close()


def test_version_routing_and_browser_guard(api: Api) -> None:
    version = api("GET", "/version")
    assert version.content == b'{"version": "2.12.0"}\n'
    assert version.headers["Content-Type"] == "application/json;charset=utf-8"
    for method, path in [
        ("DELETE", "/proxies"),
        ("GET", "/populate"),
        ("PUT", "/proxies/x"),
        ("GET", "/reset"),
        ("POST", "/version"),
    ]:
        response = api(method, path)
        assert (response.status_code, response.content) == (405, b""), (method, path)
    unknown = api("GET", "/nope")
    assert (unknown.status_code, unknown.content) == (404, b"404 page not found\n")
    assert unknown.headers["Content-Type"] == TEXT
    assert "X-Toxiproxy-Request-Id" not in unknown.headers
    assert api("GET", "/proxies/").status_code == 404
    browser = api("GET", "/proxies", headers={"User-Agent": "Mozilla/5.0 (X11)"})
    assert (browser.status_code, browser.content) == (403, b"User agent not allowed\n")
    assert browser.headers["Content-Type"] == TEXT
    assert "X-Toxiproxy-Request-Id" in browser.headers
    assert api("GET", "/nope", headers={"User-Agent": "Mozilla/5.0"}).status_code == 404


def test_request_ids_are_unique(api: Api) -> None:
    ids = {api("GET", "/version").headers["X-Toxiproxy-Request-Id"] for _ in range(5)}
    assert len(ids) == 5


# -- data plane -------------------------------------------------------------------------------


def test_toxic_free_proxy_forwards_both_ways(listen: str, upstream: Upstream) -> None:
    with connect(listen) as sock:
        payload = bytes(range(256)) * 400
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
    assert upstream.wait_for(lambda: upstream.eofs == 1)  # client close reaches the host


def test_host_close_reaches_client(listen: str, upstream: Upstream) -> None:
    with connect(listen) as sock:
        round_trip(sock, b"x")
        upstream.close_connections()
        assert read_to_end(sock) == (b"", "eof")


def test_half_close_is_not_kept(api: Api) -> None:
    host = Upstream(echo=False)
    try:
        listen = api.create("quiet", host.address)["listen"]
        with connect(listen) as sock:
            sock.sendall(b"request")
            sock.shutdown(socket.SHUT_WR)
            assert read_to_end(sock) == (b"", "eof")  # though the host never closed
        assert host.wait_for(lambda: bytes(host.received) == b"request" and host.eofs == 1)
    finally:
        host.close()


def test_dial_failure_is_connect_then_eof(api: Api) -> None:
    listen = api.create("dead", f"127.0.0.1:{free_port()}")["listen"]
    with connect(listen) as sock:
        assert read_to_end(sock) == (b"", "eof")


@pytest.mark.parametrize("stream", ["downstream", "upstream"])
def test_latency(api: Api, listen: str, upstream: Upstream, stream: str) -> None:
    api.toxic("acq", type="latency", stream=stream, attributes={"latency": 150})
    with connect(listen) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert upstream.wait_for(lambda: len(upstream.received) == 4)
        host_delay = upstream.received_at[0] - started
        assert recv_exactly(sock, 4) == b"ping"
        total = time.monotonic() - started
    if stream == "upstream":
        assert 0.145 <= host_delay < 0.4
    else:
        assert host_delay < 0.1
    assert 0.145 <= total < 0.4


def test_latency_is_pipelined_and_jitter_bounded(api: Api, listen: str) -> None:
    api.toxic("acq", type="latency", attributes={"latency": 100, "jitter": 20})
    with connect(listen) as sock:
        started = time.monotonic()
        for index in range(5):
            sock.sendall(bytes([index]))
            time.sleep(0.01)  # five separate chunks, 10 ms apart (pacing, not synchronisation)
        assert recv_exactly(sock, 5) == bytes(range(5))
        assert 0.08 <= time.monotonic() - started < 0.35  # pipelined: not 5 x 100 ms


def test_toxic_added_updated_and_removed_on_open_connection(api: Api, listen: str) -> None:
    with connect(listen) as sock:
        assert round_trip(sock, b"a") < 0.1
        api.toxic("acq", type="latency", attributes={"latency": 120})
        assert 0.115 <= round_trip(sock, b"b") < 0.4
        api(
            "PATCH", "/proxies/acq/toxics/latency_downstream", json={"attributes": {"latency": 250}}
        )
        assert 0.245 <= round_trip(sock, b"c") < 0.6
        api("DELETE", "/proxies/acq/toxics/latency_downstream")
        assert round_trip(sock, b"d") < 0.1


def test_removing_a_toxic_flushes_buffered_data_in_order(
    api: Api, listen: str, upstream: Upstream
) -> None:
    api.toxic("acq", type="latency", attributes={"latency": 5000})
    with connect(listen) as sock:
        for total, part in ((3, b"abc"), (6, b"def"), (9, b"ghi")):
            sock.sendall(part)  # three chunks, each echoed into the latency toxic's buffer
            assert upstream.wait_for(functools.partial(has_received, upstream, total))
        started = time.monotonic()
        api("DELETE", "/proxies/acq/toxics/latency_downstream")
        assert recv_exactly(sock, 9) == b"abcdefghi"
        assert time.monotonic() - started < 1.0
        assert round_trip(sock, b"after") < 0.2


def test_bandwidth(api: Api, listen: str, upstream: Upstream) -> None:
    api.toxic("acq", type="bandwidth", stream="upstream", attributes={"rate": 100})
    payload = b"z" * 20_000  # 20 000 B at 100 KB/s (1 KB = 1000 B): 0.2 s
    with connect(listen) as sock:
        started = time.monotonic()
        sock.sendall(payload)
        assert upstream.wait_for(lambda: len(upstream.received) == len(payload))
        assert 0.18 <= time.monotonic() - started < 0.6
        assert recv_exactly(sock, len(payload)) == payload


def test_bandwidth_rate_zero_stalls_safely_and_removal_flushes(api: Api, listen: str) -> None:
    api.toxic("acq", type="bandwidth", attributes={"rate": 0})
    with connect(listen) as sock:
        sock.sendall(b"held")
        assert read_to_end(sock, timeout=0.2) == (b"", "open")
        api("DELETE", "/proxies/acq/toxics/bandwidth_downstream")
        sock.settimeout(WAIT_S)
        assert recv_exactly(sock, 4) == b"held"


@pytest.mark.parametrize("stream", ["downstream", "upstream"])
def test_slow_close(api: Api, listen: str, upstream: Upstream, stream: str) -> None:
    api.toxic("acq", type="slow_close", stream=stream, attributes={"delay": 200})
    sock = connect(listen)
    round_trip(sock, b"x")
    started = time.monotonic()
    if stream == "downstream":
        upstream.close_connections()
        assert read_to_end(sock)[1] == "eof"
    else:
        sock.close()
        assert upstream.wait_for(lambda: upstream.eofs == 1)
    assert 0.19 <= time.monotonic() - started < 0.6
    sock.close()


def test_timeout_zero_black_holes_until_removed_then_closes(
    api: Api, listen: str, upstream: Upstream
) -> None:
    api.toxic("acq", type="timeout", stream="upstream", attributes={"timeout": 0})
    with connect(listen) as sock:
        sock.sendall(b"0200 request")
        assert read_to_end(sock, timeout=0.3) == (b"", "open")
        assert upstream.received == b""  # the host never saw it
        api("DELETE", "/proxies/acq/toxics/timeout_upstream")
        assert read_to_end(sock) == (b"", "eof")  # removing a timeout closes the connection
    assert upstream.received == b""  # dropped data is never delivered


def test_timeout_is_an_idle_timer(api: Api, listen: str, upstream: Upstream) -> None:
    api.toxic("acq", type="timeout", attributes={"timeout": 150})
    with connect(listen) as sock:
        sock.sendall(b"req")
        assert upstream.wait_for(lambda: upstream.received == b"req")  # request delivered
        started = time.monotonic()
        assert read_to_end(sock) == (b"", "eof")  # the echo was dropped, then the link closed
        assert 0.12 <= time.monotonic() - started < 0.5


def test_reset_peer_present_at_accept_sends_rst(api: Api, listen: str) -> None:
    api.toxic("acq", type="reset_peer", attributes={"timeout": 100})
    with connect(listen) as sock:
        started = time.monotonic()
        sock.sendall(b"req")  # the echo arms the downstream reset_peer
        assert read_to_end(sock)[1] == "reset"
        assert 0.09 <= time.monotonic() - started < 0.5


def test_reset_peer_added_to_open_connection_gives_fin(api: Api, listen: str) -> None:
    with connect(listen) as sock:
        round_trip(sock, b"x")
        api.toxic("acq", type="reset_peer", stream="upstream", attributes={"timeout": 0})
        sock.sendall(b"req")
        assert read_to_end(sock) == (b"", "eof")


def test_reset_peer_with_toxicity_zero_turns_closes_into_rst(
    api: Api, listen: str, upstream: Upstream
) -> None:
    api.toxic("acq", type="reset_peer", toxicity=0, attributes={"timeout": 0})
    with connect(listen) as sock:
        round_trip(sock, b"passes")  # toxicity 0: the toxic never fires
        upstream.close_connections()
        assert read_to_end(sock)[1] == "reset"  # but SO_LINGER 0 makes the close a RST (#603)


def test_slicer_cuts_into_small_delayed_pieces(api: Api, listen: str) -> None:
    api.toxic(
        "acq", type="slicer", attributes={"average_size": 10, "size_variation": 2, "delay": 20_000}
    )
    payload = bytes(range(100))
    with connect(listen) as sock:
        started = time.monotonic()
        sock.sendall(payload)
        pieces: list[bytes] = []
        while sum(map(len, pieces)) < len(payload):
            pieces.append(sock.recv(1000))
        assert b"".join(pieces) == payload
        assert len(pieces) >= 5 and max(map(len, pieces)) <= 24
        assert time.monotonic() - started >= 0.1


def test_slicer_average_size_zero_is_safe(api: Api, listen: str) -> None:
    api.toxic("acq", type="slicer", attributes={"average_size": 0, "size_variation": 5})
    with connect(listen) as sock:
        assert round_trip(sock, b"0123456789") < 1.0


def test_limit_data_truncates_the_response_then_closes(
    api: Api, listen: str, upstream: Upstream
) -> None:
    api.toxic("acq", type="limit_data", attributes={"bytes": 5})
    with connect(listen) as sock:
        sock.sendall(b"abc")
        assert recv_exactly(sock, 3) == b"abc"
        sock.sendall(b"defg")
        assert read_to_end(sock) == (b"de", "eof")
    assert upstream.wait_for(lambda: bytes(upstream.received) == b"abcdefg")


def test_limit_data_upstream_truncates_the_request_then_closes(api: Api) -> None:
    host = Upstream(echo=False)
    try:
        listen = api.create("quiet", host.address)["listen"]
        api.toxic("quiet", type="limit_data", stream="upstream", attributes={"bytes": 5})
        with connect(listen) as sock:
            sock.sendall(b"abc")
            assert host.wait_for(lambda: bytes(host.received) == b"abc")
            sock.sendall(b"defg")
            assert read_to_end(sock) == (b"", "eof")
        assert host.wait_for(lambda: bytes(host.received) == b"abcde" and host.eofs == 1)
    finally:
        host.close()


def test_noop_and_toxicity(api: Api, listen: str) -> None:
    api.toxic("acq", type="noop", stream="upstream")
    api.toxic("acq", type="latency", toxicity=0, attributes={"latency": 300})
    with connect(listen) as sock:
        assert round_trip(sock, b"a") < 0.2  # toxicity 0: never applied
        api("PATCH", "/proxies/acq/toxics/latency_downstream", json={"toxicity": 1})
        assert round_trip(sock, b"b") >= 0.295  # re-drawn on update, on the open connection


def test_disable_closes_and_refuses_then_enable_reuses_the_port(api: Api, listen: str) -> None:
    sock = connect(listen)
    round_trip(sock, b"x")
    api("POST", "/proxies/acq", json={"enabled": False})
    assert read_to_end(sock) == (b"", "eof")
    with pytest.raises(ConnectionRefusedError):
        connect(listen)
    api("POST", "/proxies/acq", json={"enabled": True})
    with connect(listen) as again:
        round_trip(again, b"y")
    sock.close()


def _start_main(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "harness.sim.toxiproxy", *args]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True)


def test_main_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "cfg", "upstream": "x:1", "listen": "127.0.0.1:0"}]))
    process = _start_main("--port", str(port), "--config", str(config))
    assert process.stderr is not None
    try:
        for line in process.stderr:  # the log line is the readiness signal
            if "populated 1 proxies" in line:
                break
        assert list(requests.get(f"http://127.0.0.1:{port}/proxies", timeout=WAIT_S).json()) == [
            "cfg"
        ]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def test_main_refuses_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text('[{"upstream": "x:1"}]')
    process = _start_main("--port", "0", "--config", str(config))
    assert process.stderr is not None
    try:
        assert process.wait(timeout=10) == 2
        assert "missing required field: name at proxy 1" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
