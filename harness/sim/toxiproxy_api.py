"""The HTTP API of the embedded toxiproxy server, answering byte for byte like toxiproxy 2.12.0.

Routing follows gorilla/mux: an unknown path is `404 page not found\\n` (text/plain), a known path
with the wrong method is an empty 405, and only routed requests get an `X-Toxiproxy-Request-Id`
(a 20-character xid) and the browser guard (`User-Agent: Mozilla/...` -> 403). Errors are
`{"error":"...","status":N}\\n` as text/plain with `X-Content-Type-Options: nosniff`, except
/populate whose errors are application/json with the proxies created so far. Success bodies are
compact JSON without a trailing newline; /version is `{"version": "2.12.0"}\\n`.

The one thing to know: request bodies go through `toxiproxy_json`, which reproduces Go's
`encoding/json` (case-insensitive keys, null = default, trailing garbage ignored, Go's error
texts), and toxic creation validates in Go's order: proxy, body, stream, name, type, name clash,
attributes.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from harness.sim.toxics import NOOP_ATTRIBUTES, TOXIC_KINDS, Toxic
from harness.sim.toxiproxy_json import (
    BOOL,
    FLOAT32,
    STRING,
    GoJsonError,
    bind,
    decode_value,
    marshal,
    slice_type,
    struct_type,
)
from harness.sim.toxiproxy_proxy import (
    ApiError,
    Proxy,
    ProxyCollection,
    ProxySpec,
    internal,
    toxic_already_exists,
    toxic_not_found,
)

log = logging.getLogger("harness.sim.toxiproxy.api")

VERSION = "2.12.0"
REQUEST_ID_HEADER = "X-Toxiproxy-Request-Id"
HANDLER_TIMEOUT_S = 60.0  # Go's IdleTimeout; every socket read of a request has this timeout
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"

_LOGGER = struct_type("zerolog.Logger", "Logger")
_PROXY_FIELDS = (
    ("name", STRING),
    ("listen", STRING),
    ("upstream", STRING),
    ("enabled", BOOL),
    ("Logger", _LOGGER),
)
PROXY_INPUT = struct_type("toxiproxy.Proxy", "Proxy", *_PROXY_FIELDS)
POPULATE_INPUT = slice_type(
    struct_type(
        'struct { toxiproxy.Proxy; Enabled *bool "json:\\"enabled\\"" }', "", *_PROXY_FIELDS
    )
)
TOXIC_INPUT = struct_type(
    "toxics.ToxicWrapper",
    "ToxicWrapper",
    ("attributes", NOOP_ATTRIBUTES),
    ("name", STRING),
    ("type", STRING),
    ("stream", STRING),
    ("toxicity", FLOAT32),
)
BAD_BODY = ApiError("bad request body", 400)
MISSING_FIELD = ApiError("missing required field", 400)
INVALID_STREAM = ApiError("stream was invalid, can be either upstream or downstream", 400)
INVALID_TYPE = ApiError("invalid toxic type", 400)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


RouteHandler = Callable[[dict[str, str], bytes], Response]


def json_response(status: int, value: Any) -> Response:
    return Response(status, marshal(value), [("Content-Type", JSON)])


def error_response(error: ApiError) -> Response:
    """Go's `http.Error` with the marshalled ApiError."""
    body = marshal({"error": error.message, "status": error.status}) + b"\n"
    return Response(
        error.status, body, [("Content-Type", TEXT), ("X-Content-Type-Options", "nosniff")]
    )


def _decode(body: bytes, gotype: Any) -> Any:
    try:
        return bind(decode_value(body), gotype)
    except GoJsonError as exc:
        raise BAD_BODY.joined(str(exc)) from None


class RequestIds:
    """xid-style request ids: 4-byte time, 3-byte machine, 2-byte pid, 3-byte counter."""

    def __init__(self) -> None:
        self._machine = os.urandom(3)
        self._pid = (os.getpid() & 0xFFFF).to_bytes(2, "big")
        self._counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            count = next(self._counter) & 0xFFFFFF
        raw = int(time.time()).to_bytes(4, "big") + self._machine + self._pid
        raw += count.to_bytes(3, "big")
        return base64.b32hexencode(raw).decode("ascii").rstrip("=").lower()


class ToxiproxyApi:
    """The routes and handlers; transport-free so the HTTP layer stays thin."""

    def __init__(self, collection: ProxyCollection) -> None:
        self.collection = collection
        self.request_ids = RequestIds()
        self.routes: list[tuple[re.Pattern[str], dict[str, RouteHandler]]] = [
            (re.compile(r"/reset"), {"POST": self.reset}),
            (re.compile(r"/proxies"), {"GET": self.proxy_index, "POST": self.proxy_create}),
            (re.compile(r"/populate"), {"POST": self.populate}),
            (
                re.compile(r"/proxies/(?P<proxy>[^/]+)"),
                {
                    "GET": self.proxy_show,
                    "POST": self.proxy_update,
                    "PATCH": self.proxy_update,
                    "DELETE": self.proxy_delete,
                },
            ),
            (
                re.compile(r"/proxies/(?P<proxy>[^/]+)/toxics"),
                {"GET": self.toxic_index, "POST": self.toxic_create},
            ),
            (
                re.compile(r"/proxies/(?P<proxy>[^/]+)/toxics/(?P<toxic>[^/]+)"),
                {
                    "GET": self.toxic_show,
                    "POST": self.toxic_update,
                    "PATCH": self.toxic_update,
                    "DELETE": self.toxic_delete,
                },
            ),
            (re.compile(r"/version"), {"GET": self.version}),
        ]

    def handle(self, method: str, target: str, user_agent: str, body: bytes) -> Response:
        path = unquote(urlsplit(target).path)
        allowed = False
        for pattern, methods in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            handler = methods.get(method)
            if handler is None:
                allowed = True
                continue
            return self._routed(handler, match.groupdict(), user_agent, body)
        if allowed:
            return Response(405, b"", [("Content-Length", "0")])
        return Response(
            404,
            b"404 page not found\n",
            [("Content-Type", TEXT), ("X-Content-Type-Options", "nosniff")],
        )

    def _routed(
        self,
        handler: RouteHandler,
        params: dict[str, str],
        user_agent: str,
        body: bytes,
    ) -> Response:
        request_id = self.request_ids.next()
        if user_agent.startswith("Mozilla/"):
            response = Response(
                403,
                b"User agent not allowed\n",
                [("Content-Type", TEXT), ("X-Content-Type-Options", "nosniff")],
            )
        else:
            try:
                with self.collection.lock:
                    response = handler(params, body)
            except ApiError as exc:
                response = error_response(exc)
            except Exception as exc:  # a bug here must still answer, like Go's recover
                log.exception("toxiproxy API handler failed")
                response = error_response(internal(exc))
        response.headers.append((REQUEST_ID_HEADER, request_id))
        return response

    # -- proxies -----------------------------------------------------------------------------------

    def proxy_index(self, params: dict[str, str], body: bytes) -> Response:
        return json_response(200, {p.name: p.to_json() for p in self.collection.sorted()})

    def proxy_create(self, params: dict[str, str], body: bytes) -> Response:
        fields = _decode(body, PROXY_INPUT) or {}
        spec = ProxySpec(
            name=fields.get("name", ""),
            listen=fields.get("listen", ""),
            upstream=fields.get("upstream", ""),
            enabled=fields.get("enabled", True),
        )
        if not spec.name:
            raise MISSING_FIELD.joined("name")
        if not spec.upstream:
            raise MISSING_FIELD.joined("upstream")
        return json_response(201, self.collection.create(spec).to_json())

    def proxy_show(self, params: dict[str, str], body: bytes) -> Response:
        return json_response(200, self.collection.get(params["proxy"]).to_json())

    def proxy_update(self, params: dict[str, str], body: bytes) -> Response:
        proxy = self.collection.get(params["proxy"])
        fields = _decode(body, PROXY_INPUT) or {}
        self.collection.update(
            proxy,
            fields.get("listen", proxy.listen),
            fields.get("upstream", proxy.upstream),
            fields.get("enabled", proxy.enabled),
        )
        return json_response(200, proxy.to_json())

    def proxy_delete(self, params: dict[str, str], body: bytes) -> Response:
        self.collection.delete(params["proxy"])
        return Response(204)

    def populate(self, params: dict[str, str], body: bytes) -> Response:
        proxies, error = self.run_populate(body)
        out: dict[str, Any] = {}
        if error is not None:
            out = {"error": error.message, "status": error.status}
        out["proxies"] = [p.to_json() for p in proxies] or None
        return json_response(201 if error is None else error.status, out)

    def run_populate(self, body: bytes) -> tuple[list[Proxy], ApiError | None]:
        """/populate (also used for --config): validate every entry, then create in order."""
        try:
            entries = _decode(body, POPULATE_INPUT) or []
        except ApiError as exc:
            return [], exc
        specs = []
        for number, entry in enumerate(entries, start=1):
            entry = entry or {}
            for required in ("name", "upstream"):
                if not entry.get(required):
                    return [], MISSING_FIELD.joined(f"{required} at proxy {number}")
            specs.append(
                ProxySpec(
                    entry["name"],
                    entry.get("listen", ""),
                    entry["upstream"],
                    entry.get("enabled", True),
                )
            )
        return self.collection.populate(specs)

    def reset(self, params: dict[str, str], body: bytes) -> Response:
        self.collection.reset()
        return Response(204)

    def version(self, params: dict[str, str], body: bytes) -> Response:
        body_text = f'{{"version": "{VERSION}"}}\n'.encode()
        return Response(200, body_text, [("Content-Type", "application/json;charset=utf-8")])

    # -- toxics ------------------------------------------------------------------------------------

    def _toxic(self, params: dict[str, str]) -> tuple[Proxy, Toxic]:
        proxy = self.collection.get(params["proxy"])
        toxic = proxy.find_toxic(params["toxic"])
        if toxic is None:
            raise toxic_not_found()
        return proxy, toxic

    def toxic_index(self, params: dict[str, str], body: bytes) -> Response:
        proxy = self.collection.get(params["proxy"])
        return json_response(200, [t.to_json() for t in proxy.toxics()])

    def toxic_create(self, params: dict[str, str], body: bytes) -> Response:
        proxy = self.collection.get(params["proxy"])
        try:
            value = decode_value(body)
            wrapper = bind(value, TOXIC_INPUT) or {}
        except GoJsonError as exc:
            raise BAD_BODY.joined(str(exc)) from None
        stream = wrapper.get("stream", "downstream")
        if stream.lower() not in ("upstream", "downstream"):
            raise INVALID_STREAM
        type_name = wrapper.get("type", "")
        name = wrapper.get("name", "") or f"{type_name}_{stream}"
        kind = TOXIC_KINDS.get(type_name)
        if kind is None:
            raise INVALID_TYPE
        if proxy.find_toxic(name) is not None:
            raise toxic_already_exists()
        try:
            given = bind(value, struct_type("", "", ("attributes", kind.attributes))) or {}
        except GoJsonError as exc:
            raise BAD_BODY.joined(str(exc)) from None
        toxic = Toxic(
            name=name,
            kind=kind,
            stream=stream,
            upstream=stream.lower() == "upstream",
            toxicity=wrapper.get("toxicity", 1.0),
            attributes={**kind.defaults(), **given.get("attributes", {})},
        )
        proxy.add_toxic(toxic)
        return json_response(200, toxic.to_json())

    def toxic_show(self, params: dict[str, str], body: bytes) -> Response:
        return json_response(200, self._toxic(params)[1].to_json())

    def toxic_update(self, params: dict[str, str], body: bytes) -> Response:
        proxy, toxic = self._toxic(params)
        update_type = struct_type(
            "", "", ("attributes", toxic.kind.attributes), ("toxicity", FLOAT32)
        )
        fields = _decode(body, update_type) or {}
        attributes = {**toxic.attributes, **fields.get("attributes", {})}
        proxy.update_toxic(toxic, attributes, fields.get("toxicity", toxic.toxicity))
        return json_response(200, toxic.to_json())

    def toxic_delete(self, params: dict[str, str], body: bytes) -> Response:
        proxy, toxic = self._toxic(params)
        proxy.remove_toxic(toxic)
        return Response(204)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive transport for `ToxiproxyApi`; no Server header, like Go."""

    protocol_version = "HTTP/1.1"
    timeout = HANDLER_TIMEOUT_S
    server: ApiHttpServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_response(self, code: int, message: str | None = None) -> None:
        """Python's own error replies (e.g. 501) without a Server header, like Go."""
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        body = self._read_body()
        response = self.server.api.handle(
            self.command, self.path, self.headers.get("User-Agent", ""), body
        )
        headers = [("Date", self.date_time_string()), *response.headers]
        if response.status != 204 and not any(n == "Content-Length" for n, _ in headers):
            headers.append(("Content-Length", str(len(response.body))))
        phrase = self.responses.get(response.status, ("",))[0]
        head = f"{self.protocol_version} {response.status} {phrase}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        body = b"" if self.command == "HEAD" else response.body
        self.log_request(response.status)
        self.wfile.write(head.encode("latin-1") + body)  # one send: no Nagle/delayed-ACK stall

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve
    do_HEAD = do_OPTIONS = do_TRACE = _serve


class ApiHttpServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its idle keep-alive connections when it stops."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], api: ToxiproxyApi) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api = api
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every handler blocked on an idle keep-alive connection so it can finish."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
