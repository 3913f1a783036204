"""Proxies of the embedded toxiproxy server: their listeners, connections and toxics.

`ProxyCollection` holds the proxies by name and implements what the HTTP API does to them (create,
update, delete, /populate, /reset) with toxiproxy 2.12.0's rules: 409 is checked before binding,
a proxy's `listen` becomes the bound address once started, an update that "differs" (resolved
listen or upstream) restarts the proxy and closes its connections, /populate keeps an identical
proxy untouched and replaces a differing one with a fresh proxy without toxics. Every API call
runs under the collection's lock, one at a time, like the Go server's collection lock.

The one thing to know: a `Proxy` owns its accept thread and every `Connection`; `stop()` closes
the listener (so new clients get ECONNREFUSED at once), then aborts and waits for each
connection, so when an API call that disables a proxy returns, its clients have been closed.
Toxic changes are applied to every open connection under the proxy's lock, so a connection
accepted concurrently either sees the change in its snapshot or receives it live.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass

from harness.sim.toxics import Toxic
from harness.sim.toxiproxy_link import DOWNSTREAM, UPSTREAM, Connection
from harness.sim.toxiproxy_net import NetError, dial, listen, resolve

log = logging.getLogger("harness.sim.toxiproxy")

DIAL_TIMEOUT_S = 10.0  # Go has none; a blackholed upstream must not hold a thread forever
STOP_WAIT_S = 2.0  # how long stop() waits for each thread it ended
ACCEPT_BACKOFF_S = 0.05  # after a transient accept error (out of file descriptors)
_TRANSIENT_ACCEPT = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED}


class ApiError(Exception):
    """An error the API answers with: Go's `ApiError{Message, StatusCode}`."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def joined(self, cause: str) -> ApiError:
        """Go's `joinError(err, apiErr)`: "bad request body: <cause>"."""
        return ApiError(f"{self.message}: {cause}", self.status)


def proxy_not_found() -> ApiError:
    return ApiError("proxy not found", 404)


def proxy_already_exists() -> ApiError:
    return ApiError("proxy already exists", 409)


def toxic_not_found() -> ApiError:
    return ApiError("toxic not found", 404)


def toxic_already_exists() -> ApiError:
    return ApiError("toxic already exists", 409)


def internal(exc: Exception) -> ApiError:
    """A Go error without a status becomes a 500 with its text."""
    return ApiError(str(exc), 500)


class ProxyAlreadyStarted(Exception):
    """Go's ErrProxyAlreadyStarted: ignored by /reset."""


class Proxy:
    """One listener forwarding every accepted client to `upstream`, through its toxics."""

    def __init__(self, name: str, listen_addr: str, upstream: str, rng: random.Random) -> None:
        self.name = name
        self.listen = listen_addr
        self.upstream = upstream
        self.enabled = False
        self._rng = rng
        self._lock = threading.Lock()
        self._toxics: list[Toxic] = []
        self._connections: set[Connection] = set()
        self._generation = 0
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None

    # -- what the API shows ---------------------------------------------------------------------

    def toxics(self) -> list[Toxic]:
        """All upstream toxics, then all downstream ones, each in insertion order (as Go)."""
        with self._lock:
            return [t for t in self._toxics if t.upstream] + [
                t for t in self._toxics if not t.upstream
            ]

    def find_toxic(self, name: str) -> Toxic | None:
        with self._lock:
            return next((t for t in self._toxics if t.name == name), None)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "Logger": {},
            "toxics": [t.to_json() for t in self.toxics()],
        }

    def differs(self, listen_addr: str, upstream: str) -> bool:
        """Go 2.12.0: the resolved new listen or the upstream string differs from the stored."""
        try:
            resolved = str(resolve(listen_addr))
        except NetError as exc:
            raise internal(exc) from None
        return resolved != self.listen or upstream != self.upstream

    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    # -- start / stop ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.enabled:
            raise ProxyAlreadyStarted
        try:
            listener, bound = listen(self.listen)
        except NetError as exc:
            raise internal(exc) from None
        self.listen = bound
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._listener = listener
        thread = threading.Thread(
            target=self._accept_loop,
            args=(listener, generation),
            name=f"toxiproxy-{self.name}-accept",
            daemon=True,
        )
        self._accept_thread = thread
        thread.start()
        self.enabled = True
        log.info("proxy %s listening on %s, upstream %s", self.name, bound, self.upstream)

    def stop(self) -> None:
        if not self.enabled:
            return
        self.enabled = False
        with self._lock:
            self._generation += 1
            listener, self._listener = self._listener, None
            connections = list(self._connections)
        if listener is not None:
            with contextlib.suppress(OSError):  # shutdown wakes accept() (Linux)
                listener.shutdown(socket.SHUT_RDWR)
        if self._accept_thread is not None:
            self._accept_thread.join(STOP_WAIT_S)
            self._accept_thread = None
        if listener is not None:
            listener.close()
        for conn in connections:
            conn.abort()
        for conn in connections:
            if not conn.done.wait(STOP_WAIT_S):
                log.warning("proxy %s: connection %s did not stop in time", self.name, conn.name)
        log.info("proxy %s stopped", self.name)

    def _accept_loop(self, listener: socket.socket, generation: int) -> None:
        while True:
            try:
                client, peer = listener.accept()
            except OSError as exc:
                if exc.errno in _TRANSIENT_ACCEPT and self._generation == generation:
                    log.warning("proxy %s: accept failed: %s", self.name, exc)
                    time.sleep(ACCEPT_BACKOFF_S)
                    continue
                return
            conn = Connection(f"{self.name}-{peer[1]}", self._forget)
            conn.spawn(
                functools.partial(self._serve, conn, client, generation),
                f"toxiproxy-{self.name}-dial",
            )

    def _serve(self, conn: Connection, client: socket.socket, generation: int) -> None:
        """Dial the upstream, then join the two sockets (Go: accept, then dial)."""
        try:
            upstream = dial(self.upstream, DIAL_TIMEOUT_S)
        except OSError as exc:
            log.info("proxy %s: upstream %s unreachable: %s", self.name, self.upstream, exc)
            client.close()  # the client saw its connect succeed; now it reads EOF
            return
        with self._lock:
            if generation != self._generation:
                client.close()
                upstream.close()
                return
            now = time.monotonic()
            up = [t.new_stage(self._rng, now) for t in self._toxics if t.upstream]
            down = [t.new_stage(self._rng, now) for t in self._toxics if not t.upstream]
            linger_zero = any(t.kind.name == "reset_peer" for t in self._toxics)
            self._connections.add(conn)
            conn.attach(client, upstream, up, down, linger_zero)

    def _forget(self, conn: Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    # -- toxics ---------------------------------------------------------------------------------

    def add_toxic(self, toxic: Toxic) -> None:
        with self._lock:
            self._toxics.append(toxic)
            now = time.monotonic()
            for conn in self._connections:
                link = conn.links.get(UPSTREAM if toxic.upstream else DOWNSTREAM)
                if link is not None:
                    link.add_stage(toxic.new_stage(self._rng, now))

    def update_toxic(self, toxic: Toxic, attributes: dict[str, int], toxicity: float) -> None:
        with self._lock:
            toxic.attributes = attributes
            toxic.toxicity = toxicity
            for conn in self._connections:
                link = conn.links.get(UPSTREAM if toxic.upstream else DOWNSTREAM)
                if link is not None:
                    link.update_stage(toxic.name, dict(attributes), toxic.draw(self._rng))

    def remove_toxic(self, toxic: Toxic) -> None:
        with self._lock:
            self._toxics.remove(toxic)
            for conn in self._connections:
                link = conn.links.get(UPSTREAM if toxic.upstream else DOWNSTREAM)
                if link is not None:
                    link.remove_stage(toxic.name)

    def remove_all_toxics(self) -> None:
        for toxic in self.toxics():
            self.remove_toxic(toxic)


@dataclass(frozen=True)
class ProxySpec:
    """One proxy as /populate and --config give it."""

    name: str
    listen: str
    upstream: str
    enabled: bool


class ProxyCollection:
    """All proxies of one server; every method is one API call, serialized by `lock`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lock = threading.RLock()
        self._proxies: dict[str, Proxy] = {}

    def get(self, name: str) -> Proxy:
        with self.lock:
            proxy = self._proxies.get(name)
        if proxy is None:
            raise proxy_not_found()
        return proxy

    def sorted(self) -> list[Proxy]:
        with self.lock:
            return [self._proxies[name] for name in sorted(self._proxies)]

    def create(self, spec: ProxySpec) -> Proxy:
        with self.lock:
            if spec.name in self._proxies:
                raise proxy_already_exists()
            proxy = Proxy(spec.name, spec.listen, spec.upstream, self.rng)
            if spec.enabled:
                proxy.start()
            self._proxies[spec.name] = proxy
            return proxy

    def update(self, proxy: Proxy, listen_addr: str, upstream: str, enabled: bool) -> None:
        with self.lock:
            if proxy.differs(listen_addr, upstream):
                proxy.stop()
                proxy.listen = listen_addr
                proxy.upstream = upstream
            if enabled != proxy.enabled:
                if enabled:
                    proxy.start()
                else:
                    proxy.stop()

    def delete(self, name: str) -> None:
        with self.lock:
            proxy = self._proxies.pop(name, None)
            if proxy is None:
                raise proxy_not_found()
            proxy.stop()

    def populate(self, specs: list[ProxySpec]) -> tuple[list[Proxy], ApiError | None]:
        """Create or replace in order; stop at the first failure, keeping what was done."""
        done: list[Proxy] = []
        with self.lock:
            for spec in specs:
                try:
                    existing = self._proxies.get(spec.name)
                    if existing is not None:
                        if not existing.differs(spec.listen, spec.upstream):
                            done.append(existing)
                            continue
                        existing.stop()
                    proxy = Proxy(spec.name, spec.listen, spec.upstream, self.rng)
                    if spec.enabled:
                        proxy.start()
                except ApiError as exc:
                    return done, exc
                self._proxies[spec.name] = proxy
                done.append(proxy)
        return done, None

    def reset(self) -> None:
        """Re-enable every proxy and remove every toxic; stops at a proxy that cannot start."""
        with self.lock:
            for proxy in self.sorted():
                with contextlib.suppress(ProxyAlreadyStarted):
                    proxy.start()
                proxy.remove_all_toxics()

    def stop_all(self) -> None:
        with self.lock:
            proxies = list(self._proxies.values())
        for proxy in proxies:
            proxy.stop()
