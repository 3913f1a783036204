"""The toxics of the embedded toxiproxy server: their attributes and what each does to a stream.

A `Toxic` is the configuration the HTTP API shows. Every open connection runs one `Stage` per
toxic and direction: a clock-driven state machine with an inbox of chunks. The link's pump calls
`run(now, out)`, which moves whatever the toxic lets through at `now` into `out` and returns the
next instant it needs to be woken (or None). Stages never sleep and never touch sockets, so
adding, updating or removing a toxic is a plain method call on open connections and takes effect
at once, as in the real server. The one thing to know: the `EOF` item means "close this link";
a stage that emits it (timeout, reset_peer, limit_data, or a source EOF passing through) ends the
link exactly like a Go stub closing its output channel, and everything behind it is discarded.

Units as in toxiproxy: latency/jitter/timeout/delay (slow_close) in ms, slicer delay in µs,
bandwidth rate in KB/s with KB = 1000 bytes, limit_data and slicer sizes in bytes.
Where Go hangs or crashes on a value it accepted, the stage stays safe (see `toxiproxy.py`):
bandwidth rate <= 0 holds the data (no busy loop) until the toxic is updated or removed; slicer
average_size <= 0 cuts 1-byte pieces, and a size_variation that would produce empty or negative
pieces is clamped.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from harness.sim.toxiproxy_json import INT, INT64, Float32, GoType, struct_type


@dataclass(slots=True)
class Chunk:
    """Bytes read from a source in one recv, stamped with the monotonic time they arrived."""

    data: bytes
    ts: float


class _Eof:
    def __repr__(self) -> str:
        return "EOF"


EOF: Final = _Eof()
Item = Chunk | _Eof


class Stage:
    """One toxic on one direction of one connection (a Go `ToxicStub` running its `Pipe`)."""

    def __init__(
        self, name: str, attributes: Mapping[str, int], active: bool, rng: random.Random, now: float
    ) -> None:
        self.name = name
        self.attributes = dict(attributes)
        self.active = active  # the toxicity draw: False runs the stage as a noop
        self.rng = rng
        self.inbox: deque[Item] = deque()
        self.closed = False  # emitted EOF: the link ends here
        self.removed = False  # removed from the API but still draining (reset_peer)
        self.restart(now)

    def restart(self, now: float) -> None:
        """Reset what a Go `Pipe` keeps in local variables (it restarts on update)."""

    def run(self, now: float, out: list[Item]) -> float | None:
        if self.closed:
            self.inbox.clear()
            return None
        if not self.active:
            while self.inbox:
                self.emit(self.inbox.popleft(), out)
                if self.closed:
                    break
            return None
        return self.pipe(now, out)

    def pipe(self, now: float, out: list[Item]) -> float | None:
        while self.inbox and not self.closed:
            self.emit(self.inbox.popleft(), out)
        return None

    def emit(self, item: Item, out: list[Item]) -> None:
        out.append(item)
        if item is EOF:
            self.closed = True
            self.inbox.clear()

    def interrupt(self, now: float, out: list[Item]) -> None:
        """Stop the work in progress, forwarding what it holds (Go: "don't drop any data")."""

    def update(
        self, attributes: Mapping[str, int], active: bool, now: float, out: list[Item]
    ) -> None:
        """New attributes and a new toxicity draw; the data in progress is forwarded at once."""
        if self.closed:
            return
        self.interrupt(now, out)
        self.attributes = dict(attributes)
        self.active = active
        self.restart(now)

    def remove(self, now: float, out: list[Item]) -> bool:
        """Forward everything this stage holds, in order. True = keep draining until it fires."""
        if self.closed:
            return False
        self.interrupt(now, out)
        while self.inbox and not self.closed:
            self.emit(self.inbox.popleft(), out)
        return False


class LatencyStage(Stage):
    """Each chunk leaves at its arrival + latency ± jitter; pipelined, order kept."""

    current: Chunk | None
    release_at: float

    def restart(self, now: float) -> None:
        self.current = None
        self.release_at = now

    def _delay_s(self) -> float:
        latency, jitter = self.attributes["latency"], self.attributes["jitter"]
        if jitter > 0:
            latency += self.rng.randrange(2 * jitter) - jitter
        return latency / 1000.0

    def pipe(self, now: float, out: list[Item]) -> float | None:
        while True:
            if self.current is None:
                if not self.inbox:
                    return None
                item = self.inbox.popleft()
                if isinstance(item, _Eof):
                    self.emit(item, out)
                    return None
                sleep = self._delay_s() - (now - item.ts)
                item.ts += sleep
                self.current = item
                self.release_at = now + max(sleep, 0.0)
            if now < self.release_at:
                return self.release_at
            out.append(self.current)
            self.current = None

    def interrupt(self, now: float, out: list[Item]) -> None:
        if self.current is not None:
            out.append(self.current)
            self.current = None


class BandwidthStage(Stage):
    """At most `rate` KB/s: each chunk adds len/rate ms of debt; big chunks go out per 100 ms."""

    current: Chunk | None
    debt: float
    splitting: bool
    start: float
    deadline: float

    def restart(self, now: float) -> None:
        self.current = None
        self.debt = 0.0
        self.splitting = False
        self.start = self.deadline = now

    def _schedule(self, now: float, current: Chunk, rate: int) -> None:
        if len(current.data) > rate * 100:
            self.splitting = True
            self.deadline = now + 0.1
        else:
            self.splitting = False
            self.start = now
            self.deadline = now + self.debt

    def pipe(self, now: float, out: list[Item]) -> float | None:
        rate = self.attributes["rate"]
        while True:
            current = self.current
            if current is None:
                if not self.inbox:
                    return None
                item = self.inbox.popleft()
                if isinstance(item, _Eof):
                    self.emit(item, out)
                    return None
                self.current = current = item
                if rate <= 0:
                    return None  # Go stalls (rate 0) or crashes (rate < 0): we hold the data
                self.debt += len(item.data) / rate / 1000.0
                self._schedule(now, current, rate)
            if rate <= 0:
                return None
            if now < self.deadline:
                return self.deadline
            if self.splitting:
                piece = rate * 100
                current.ts += 0.1
                out.append(Chunk(current.data[:piece], current.ts))
                current.data = current.data[piece:]
                self.debt -= 0.1
                self._schedule(now, current, rate)
            else:
                self.debt -= now - self.start  # Go offsets the next sleep by the timer's error
                current.ts += self.debt
                out.append(current)
                self.current = None

    def interrupt(self, now: float, out: list[Item]) -> None:
        if self.current is not None:
            out.append(self.current)
            self.current = None


class SlowCloseStage(Stage):
    """Data passes; the EOF of this direction is held `delay` ms before the link closes."""

    closing_at: float | None

    def restart(self, now: float) -> None:
        self.closing_at = None

    def pipe(self, now: float, out: list[Item]) -> float | None:
        while self.closing_at is None:
            if not self.inbox:
                return None
            item = self.inbox.popleft()
            if isinstance(item, _Eof):
                self.closing_at = now + self.attributes["delay"] / 1000.0
            else:
                out.append(item)
        if now < self.closing_at:
            return self.closing_at
        self.emit(EOF, out)
        return None

    def interrupt(self, now: float, out: list[Item]) -> None:
        if self.closing_at is not None:  # a restarted Go stub reads the closed channel again
            self.inbox.appendleft(EOF)
            self.closing_at = None


class TimeoutStage(Stage):
    """Drops every chunk; closes after `timeout` ms without a chunk (0 = never); removal closes."""

    last: float

    def restart(self, now: float) -> None:
        self.last = now

    def pipe(self, now: float, out: list[Item]) -> float | None:
        while self.inbox:
            item = self.inbox.popleft()
            if isinstance(item, _Eof):
                self.emit(item, out)
                return None
            self.last = now  # dropped, and the idle timer starts again
        timeout = self.attributes["timeout"]
        if timeout <= 0:
            return None
        closes_at = self.last + timeout / 1000.0
        if now >= closes_at:
            self.emit(EOF, out)
            return None
        return closes_at

    def remove(self, now: float, out: list[Item]) -> bool:
        if not self.closed:  # Go's Cleanup closes the link whatever the toxicity draw was
            self.emit(EOF, out)
        return False


class ResetPeerStage(Stage):
    """The first chunk (or EOF) arms it; `timeout` ms later the link closes (RST if lingering)."""

    fires_at: float | None = None

    def pipe(self, now: float, out: list[Item]) -> float | None:
        if self.fires_at is None:
            if not self.inbox:
                return None
            self.inbox.popleft()  # the triggering chunk is dropped
            self.fires_at = now + self.attributes["timeout"] / 1000.0
        self.inbox.clear()  # nothing after the trigger is delivered
        if now >= self.fires_at:
            self.emit(EOF, out)
            return None
        return self.fires_at

    def update(
        self, attributes: Mapping[str, int], active: bool, now: float, out: list[Item]
    ) -> None:
        if self.fires_at is None:  # Go's armed wait cannot be interrupted: it fires as planned
            super().update(attributes, active, now, out)

    def remove(self, now: float, out: list[Item]) -> bool:
        if self.fires_at is not None and not self.closed:
            return True
        return super().remove(now, out)


class SlicerStage(Stage):
    """Cuts each chunk into pieces of about `average_size` bytes, `delay` µs apart."""

    pieces: deque[bytes]
    piece_ts: float
    next_at: float | None

    def restart(self, now: float) -> None:
        self.pieces = deque()
        self.piece_ts = now
        self.next_at = None

    def _cut(self, size: int) -> list[tuple[int, int]]:
        average, variation = self.attributes["average_size"], self.attributes["size_variation"]
        result: list[tuple[int, int]] = []
        todo = [(0, size)]
        while todo:
            start, end = todo.pop()
            if (end - start) - average <= variation or end - start <= 1:
                result.append((start, end))
                continue
            mid = start + (end - start) // 2
            if variation > 0:
                mid += self.rng.randrange(2 * variation) - variation
            mid = min(max(mid, start + 1), end - 1)  # Go would crash or recurse forever here
            todo.append((mid, end))
            todo.append((start, mid))
        return result

    def pipe(self, now: float, out: list[Item]) -> float | None:
        delay_s = self.attributes["delay"] / 1_000_000.0
        while True:
            if self.next_at is not None:
                if now < self.next_at:
                    return self.next_at
                self.next_at = None
                if self.pieces:
                    out.append(Chunk(self.pieces.popleft(), self.piece_ts))
                    self.next_at = now + delay_s
                continue
            if not self.inbox:
                return None
            item = self.inbox.popleft()
            if isinstance(item, _Eof):
                self.emit(item, out)
                return None
            data = item.data
            self.pieces = deque(data[start:end] for start, end in self._cut(len(data)))
            self.piece_ts = item.ts
            out.append(Chunk(self.pieces.popleft(), item.ts))
            self.next_at = now + delay_s

    def interrupt(self, now: float, out: list[Item]) -> None:
        if self.pieces:
            out.append(Chunk(b"".join(self.pieces), self.piece_ts))
            self.pieces.clear()
        self.next_at = None


class LimitDataStage(Stage):
    """Forwards `bytes` bytes in total on this link (the counter survives updates), then closes."""

    transmitted: int = 0

    def pipe(self, now: float, out: list[Item]) -> float | None:
        limit = self.attributes["bytes"]
        while self.inbox:
            item = self.inbox.popleft()
            if isinstance(item, _Eof):
                self.emit(item, out)
                return None
            remaining = max(limit - self.transmitted, 0)
            data = item.data[:remaining]
            if data:
                out.append(Chunk(data, item.ts))
                self.transmitted += len(data)
            if limit - self.transmitted <= 0:
                self.emit(EOF, out)
                return None
        return None


@dataclass(frozen=True)
class ToxicKind:
    """A toxic type: its name in the API, its Go attribute struct, and its stage."""

    name: str
    attributes: GoType
    stage: type[Stage]

    def defaults(self) -> dict[str, int]:
        return {name: 0 for name, _ in self.attributes.fields}


def _kind(name: str, struct: str, stage: type[Stage], *fields: tuple[str, GoType]) -> ToxicKind:
    return ToxicKind(name, struct_type(f"toxics.{struct}", struct, *fields), stage)


TOXIC_KINDS: Final[Mapping[str, ToxicKind]] = MappingProxyType(
    {
        kind.name: kind
        for kind in (
            _kind("latency", "LatencyToxic", LatencyStage, ("latency", INT64), ("jitter", INT64)),
            _kind("bandwidth", "BandwidthToxic", BandwidthStage, ("rate", INT64)),
            _kind("slow_close", "SlowCloseToxic", SlowCloseStage, ("delay", INT64)),
            _kind("timeout", "TimeoutToxic", TimeoutStage, ("timeout", INT64)),
            _kind("reset_peer", "ResetToxic", ResetPeerStage, ("timeout", INT64)),
            _kind(
                "slicer",
                "SlicerToxic",
                SlicerStage,
                ("average_size", INT),
                ("size_variation", INT),
                ("delay", INT),
            ),
            _kind("limit_data", "LimitDataToxic", LimitDataStage, ("bytes", INT64)),
            _kind("noop", "NoopToxic", Stage),
        )
    }
)
NOOP_ATTRIBUTES: Final = TOXIC_KINDS["noop"].attributes


@dataclass
class Toxic:
    """A toxic as the API shows it; `upstream` is the parsed direction, `stream` the given text."""

    name: str
    kind: ToxicKind
    stream: str
    upstream: bool
    toxicity: float
    attributes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.kind.name,
            "stream": self.stream,
            "toxicity": Float32(self.toxicity),
        }

    def draw(self, rng: random.Random) -> bool:
        """Whether one connection's stage applies the toxic (Go: rand.Float32() < toxicity)."""
        return rng.random() < self.toxicity

    def new_stage(self, rng: random.Random, now: float) -> Stage:
        return self.kind.stage(self.name, self.attributes, self.draw(rng), rng, now)
