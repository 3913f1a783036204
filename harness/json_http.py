"""JSON over HTTP on the bench: the one client call and the one server base every service uses.

The sim host's ledger API and the printer tap's control API speak the same small dialect: JSON
bodies, errors as `{"error": ...}` with a 4xx status, plain loopback or bench-LAN addresses.
The client never goes through an `http_proxy` from the environment (a bench is never behind
one, and a proxy would turn "device down" into a confusing 502); the server never looks up its
FQDN on bind (that stalls for seconds on a closed network).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, ClassVar

log = logging.getLogger(__name__)

MAX_BODY = 65536
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    timeout_s: float,
    error: type[Exception],
    service: str,
) -> Any:
    """Send `body` as JSON, return the decoded answer; every failure raises `error` naming `url`.

    `service` names what is unreachable in the message ("the host ledger").
    """
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=timeout_s) as reply:
            raw = reply.read()
    except urllib.error.HTTPError as exc:
        raise error(f"{method} {url}: HTTP {exc.code}: {_error_text(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise error(f"{method} {url}: cannot reach {service}: {reason}") from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise error(f"{method} {url}: the answer is not JSON: {exc}") from None


def get_status(url: str, timeout_s: float) -> int:
    """The HTTP status of GET `url`; OSError (with its reason) when nothing answers."""
    try:
        with _OPENER.open(url, timeout=timeout_s) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def get_ok(url: str, timeout_s: float) -> bool:
    """True when `url` answers 200 (no exception: for readiness polling)."""
    try:
        return get_status(url, timeout_s) == 200
    except (OSError, ValueError):
        return False


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read()
        exc.close()
    except OSError:
        return str(exc.reason or "no body")
    try:
        document = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(document, dict) and "error" in document:
        return str(document["error"])
    return str(document)[:200]


class JsonHttpServer(ThreadingHTTPServer):
    """A threading HTTP server whose `server_close()` joins its request threads."""

    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # skips HTTPServer's FQDN lookup
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


class JsonHandler(BaseHTTPRequestHandler):
    """Replies and request bodies in JSON; errors as `{"error": message, **fields}`.

    `error_fields` are the fields every 400 of a service carries (None when they do not
    apply), so a client can read them without guessing which error it got.
    """

    timeout = 5.0
    error_fields: ClassVar[dict[str, Any]] = {}

    def read_json(self) -> tuple[bool, Any]:
        """(True, the decoded body), or (False, None) once a 400 has been answered."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self.send_error_json(
                f"a JSON body with a Content-Length up to {MAX_BODY} bytes is required"
            )
            return False, None
        try:
            return True, json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError) as exc:
            self.send_error_json(f"the body is not JSON: {exc}")
        except OSError as exc:
            log.info("request body not received: %s", exc)
        return False, None

    def send_error_json(self, message: str, **fields: Any) -> None:
        """Answer 400 with `message` and the service's error fields."""
        self.send_json(HTTPStatus.BAD_REQUEST, {"error": message, **self.error_fields, **fields})

    def send_not_found(self, path: str) -> None:
        self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no such resource: {path}"})

    def send_json(self, status: HTTPStatus, document: Any) -> None:
        self.send_body(status, json.dumps(document).encode("utf-8"), "application/json")

    def send_body(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError as exc:
            log.info("http client went away: %s", exc)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s %s", self.address_string(), format % args)
