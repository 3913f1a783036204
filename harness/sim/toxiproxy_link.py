"""The data plane of the embedded toxiproxy: one proxied TCP connection and its two links.

A `Connection` joins the client socket and the upstream socket with two `Link`s: upstream
(client -> server) and downstream (server -> client). Each link has a reader thread doing blocking
`recv` of up to 32 KiB. With no toxic on the link the reader writes each chunk straight to the
destination (the fast path: one thread hop, TCP_NODELAY). As soon as a toxic is attached the link
switches to its chain: chunks go into the first `Stage` and a pump thread drives the stages with
the monotonic clock and writes what comes out, one `send` per chunk so slicing stays visible. When
the last toxic goes and the chain is drained the pump hands the writing back to the reader.

Close propagation mirrors Go's: an EOF or error on a link's source (or a toxic's close) travels
down that link and closes its destination; the other link then reads EOF from that socket and
closes its own destination, so either side closing closes both, and a half-close is not kept.

The one thing to know: a socket is read by one link and written by the other, so it is closed
only when both have let go (`Endpoint`). `request_close` does `shutdown(SHUT_RD)`, which wakes the
blocked reader without sending anything; the final `close()` then sends FIN, or RST when
SO_LINGER is 0 (reset_peer present at accept) or unread data is left, exactly like Go's
`Close()`. Sends use SO_SNDTIMEO so a writer blocked on a peer that never reads still notices an
abort. Relay reads have no timeout by design (a proxy must not cut idle connections); they end
through `request_close`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from harness.sim.toxics import EOF, Chunk, Item, Stage

log = logging.getLogger("harness.sim.toxiproxy")

CHUNK_SIZE = 32 * 1024  # Go's io.Copy buffer
MAX_QUEUED_CHUNKS = 1024  # Go's latency channel buffer; past this the reader waits
SEND_POLL_S = 0.1  # SO_SNDTIMEO: how often a blocked send looks for an abort
MAX_WAIT_S = 3600.0  # longest single condition wait (huge toxic values must not overflow)
UPSTREAM, DOWNSTREAM = "upstream", "downstream"


def prepare_socket(sock: socket.socket, linger_zero: bool) -> None:
    """TCP_NODELAY like Go, a send timeout for abort checks, and SO_LINGER 0 for reset_peer."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    seconds = int(SEND_POLL_S)
    micros = int((SEND_POLL_S - seconds) * 1_000_000)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, micros))
    if linger_zero:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Endpoint:
    """One socket of a connection: read by one link, written by the other, closed by the last."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._users = 2
        self.close_requested = False

    def request_close(self) -> None:
        """Wake the reader (SHUT_RD sends nothing); the socket closes when both users let go."""
        with self._lock:
            if self.close_requested or self._users == 0:
                self.close_requested = True
                return
            self.close_requested = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RD)

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self.sock.close()


class Link:
    """One direction of a connection: source socket -> toxic stages -> destination socket."""

    def __init__(
        self,
        name: str,
        conn: Connection,
        source: Endpoint,
        dest: Endpoint,
        stages: list[Stage],
    ) -> None:
        self.name = name
        self.conn = conn
        self.source = source
        self.dest = dest
        self.cond = threading.Condition(threading.Lock())
        self.stages = stages
        self.out: deque[Item] = deque()  # through the whole chain, waiting for the writer
        self.direct = not stages  # the reader writes itself (fast path)
        self.pump_running = False
        self.input_closed = False  # source EOF seen, or a stage closed the link
        self.writer_done = False  # the destination has been let go
        self.aborted = False
        self._source_released = False

    # -- reader thread ---------------------------------------------------------------------

    def start(self) -> None:
        self.conn.spawn(self._read_loop, f"toxiproxy-{self.name}-read")
        with self.cond:
            if self.stages:
                self._ensure_pump()

    def _read_loop(self) -> None:
        source = self.source
        recv, send = source.sock.recv, self.dest.sock.send
        try:
            while not source.close_requested:
                try:
                    data = recv(CHUNK_SIZE)
                except OSError:
                    break
                if not data:
                    break
                # Fast path, read without the lock: a mode switch racing with this check is
                # harmless because only this thread feeds the chain, so order is kept.
                if self.direct and not (self.aborted or self.writer_done or self.input_closed):
                    try:
                        sent = send(data)
                    except BlockingIOError:  # SO_SNDTIMEO: the peer is slow; take the slow path
                        sent = 0
                    except OSError:
                        self._let_go_of_dest()  # Go: a failed write closes the destination
                        break
                    if sent == len(data):
                        continue
                    data = data[sent:]
                if not self._deliver(data):
                    break
        finally:
            self._reader_exit()

    def _deliver(self, data: bytes) -> bool:
        with self.cond:
            while True:
                if self.aborted or self.writer_done or self.input_closed:
                    return False
                if self.direct:
                    break
                if not self.stages or len(self.stages[0].inbox) < MAX_QUEUED_CHUNKS:
                    self._push(Chunk(data, time.monotonic()))
                    self.cond.notify_all()
                    return True
                self.cond.wait(MAX_WAIT_S)
        if self._send(data, reader=True):
            return True
        self._let_go_of_dest()  # Go: a failed write closes the destination
        return False

    def _reader_exit(self) -> None:
        with self.cond:
            if not (self.aborted or self.writer_done or self.input_closed):
                self.input_closed = True
                if self.pump_running:
                    self._push(EOF)
                    self.cond.notify_all()
            writer = not self.pump_running
        if writer:
            self._let_go_of_dest()
        self._release_source()

    def _release_source(self) -> None:
        if not self._source_released:
            self._source_released = True
            self.source.release()

    # -- writing -------------------------------------------------------------------------------

    def _send(self, data: bytes, reader: bool) -> bool:
        view = memoryview(data)
        sock = self.dest.sock
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:  # SO_SNDTIMEO expired: the peer is not reading
                if self.aborted:
                    return False
                if reader and self.source.close_requested:
                    self._release_source()  # let the other side's close complete meanwhile
                continue
            except OSError:
                return False
            view = view[sent:]
        return True

    def _let_go_of_dest(self) -> None:
        """The writer's close of the destination (Go: `dest.Close()` when the link ends)."""
        with self.cond:
            if self.writer_done:
                return
            self.writer_done = True
            self.input_closed = True
            self.cond.notify_all()
        self.dest.request_close()
        self.dest.release()

    # -- the chain and its pump (all under self.cond) ------------------------------------------

    def _push(self, item: Item) -> None:
        if self.stages:
            self.stages[0].inbox.append(item)
        else:
            self.out.append(item)

    def _ensure_pump(self) -> None:
        self.direct = False
        if not self.pump_running:
            self.pump_running = True
            self.conn.spawn(self._pump, f"toxiproxy-{self.name}-pump")

    def _advance(self, now: float) -> float | None:
        """Run every live stage once, in order; returns the earliest deadline."""
        first = 0
        for index, stage in enumerate(self.stages):
            if stage.closed:
                first = index + 1  # everything before a closed stage is dead
        deadline: float | None = None
        carry: list[Item] = []
        for stage in self.stages[first:]:
            if carry:
                stage.inbox.extend(carry)
                carry = []
            wake = stage.run(now, carry)
            if stage.closed:
                self.input_closed = True
            if wake is not None and (deadline is None or wake < deadline):
                deadline = wake
        self.out.extend(carry)
        return deadline

    def _next_batch(self) -> list[Item] | None:
        """What the pump must write next; None when it must stop (or hand back to the reader)."""
        while True:
            if self.aborted or self.writer_done:
                return None
            now = time.monotonic()
            deadline = self._advance(now)
            if self.out:
                batch = list(self.out)
                self.out.clear()
                self.cond.notify_all()  # a reader may wait for room
                return batch
            if not self.stages and not self.input_closed:
                self.direct = True
                self.cond.notify_all()
                return None
            wait = MAX_WAIT_S if deadline is None else min(max(deadline - now, 0.0), MAX_WAIT_S)
            self.cond.wait(wait)

    def _pump(self) -> None:
        finished = False
        try:
            while not finished:
                with self.cond:
                    batch = self._next_batch()
                    if batch is None:
                        if self.direct and not (self.aborted or self.writer_done):
                            self.pump_running = False  # the reader writes again
                            return
                        break
                for item in batch:
                    if not isinstance(item, Chunk) or not self._send(item.data, reader=False):
                        finished = True  # EOF reached the end of the chain, or the write failed
                        break
        finally:
            with self.cond:
                was_writer = self.pump_running
                self.pump_running = False
            if was_writer:
                self._let_go_of_dest()

    # -- toxic changes (called with the proxy's lock held) ------------------------------------

    def _find(self, name: str) -> Stage | None:
        for stage in self.stages:
            if stage.name == name and not stage.removed:
                return stage
        return None

    def add_stage(self, stage: Stage) -> None:
        with self.cond:
            if self.writer_done or self.aborted:
                return
            self.stages.append(stage)
            self._ensure_pump()
            self.cond.notify_all()

    def update_stage(self, name: str, attributes: dict[str, int], active: bool) -> None:
        with self.cond:
            stage = self._find(name)
            if stage is None or self.writer_done:
                return
            carry: list[Item] = []
            stage.update(attributes, active, time.monotonic(), carry)
            self._pass_on(self.stages.index(stage) + 1, carry)
            self.cond.notify_all()

    def remove_stage(self, name: str) -> None:
        with self.cond:
            stage = self._find(name)
            if stage is None:
                return
            carry: list[Item] = []
            if stage.remove(time.monotonic(), carry):
                stage.removed = True  # an armed reset_peer still fires
                self.cond.notify_all()
                return
            index = self.stages.index(stage)
            del self.stages[index]
            if EOF in carry:  # the removal closes the link: what came before it is dead
                for earlier in self.stages[:index]:
                    earlier.closed = True
                    earlier.inbox.clear()
                self.input_closed = True
            self._pass_on(index, carry)
            self.cond.notify_all()

    def _pass_on(self, index: int, items: Iterable[Item]) -> None:
        target = self.stages[index].inbox if index < len(self.stages) else self.out
        target.extend(items)

    def abort(self) -> None:
        with self.cond:
            self.aborted = True
            self.cond.notify_all()


class Connection:
    """A client connection and its upstream, owning every thread that serves them."""

    def __init__(self, name: str, on_done: Callable[[Connection], None]) -> None:
        self.name = name
        self._on_done = on_done
        self._lock = threading.Lock()
        self._threads = 0
        self.aborted = False
        self.done = threading.Event()
        self.links: dict[str, Link] = {}
        self.endpoints: list[Endpoint] = []

    def spawn(self, target: Callable[[], None], name: str) -> None:
        with self._lock:
            self._threads += 1
        thread = threading.Thread(target=self._run, args=(target,), name=name, daemon=True)
        thread.start()

    def _run(self, target: Callable[[], None]) -> None:
        try:
            target()
        except Exception:
            log.exception("connection %s: thread failed", self.name)
        finally:
            with self._lock:
                self._threads -= 1
                last = self._threads == 0
            if last:
                self.done.set()
                self._on_done(self)

    def attach(
        self,
        client: socket.socket,
        upstream: socket.socket,
        upstream_stages: list[Stage],
        downstream_stages: list[Stage],
        linger_zero: bool,
    ) -> None:
        """Build both links and start their threads (called with the proxy's lock held)."""
        for sock in (client, upstream):
            prepare_socket(sock, linger_zero)
        client_end, upstream_end = Endpoint(client), Endpoint(upstream)
        self.endpoints = [client_end, upstream_end]
        self.links = {
            UPSTREAM: Link(f"{self.name}-up", self, client_end, upstream_end, upstream_stages),
            DOWNSTREAM: Link(
                f"{self.name}-down", self, upstream_end, client_end, downstream_stages
            ),
        }
        for link in self.links.values():
            link.start()

    def abort(self) -> None:
        """Close both sockets now (proxy disabled, deleted or moved); buffered data is dropped."""
        with self._lock:
            self.aborted = True
        for link in self.links.values():
            link.abort()
        for endpoint in self.endpoints:
            endpoint.request_close()
