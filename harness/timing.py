"""Schedule a fault at an offset from an event the harness observes.

Events come from the harness's own history (a sale started), the wire capture (a request
reached the host link) and the printer tap (the first receipt byte), each stamped with the
monotonic instant it happened at its source. `Scheduler.after(...)` arms a fault; when a matching
event arrives, a dedicated thread sleeps until `event.t + offset` (the last 2 ms spinning, since
a sleep overshoots) and injects the fault through the bench, which records the requested and the
actual instant; their difference is the scheduling error bench/ measures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.faults import AppliedFault, Fault

SPIN_S = 0.002


@dataclass(frozen=True)
class BenchEvent:
    name: str  # "sale_started", "host_request", "host_response", "receipt_first_byte", ...
    t: float  # monotonic instant at the source
    data: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[BenchEvent], None]


class EventBus:
    """Fan-out of bench events to whoever listens (the scheduler, the live view)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: BenchEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber(event)

    def expect(self, name: str, match: Callable[[BenchEvent], bool] | None = None) -> Expected:
        """Listen for the next matching event from now on: subscribe before the act that
        causes it, then `wait` (an event cannot slip between the act and the wait)."""
        return Expected(self, name, match)


class Expected:
    """The first `name` event (that `match` accepts) published after this was created."""

    def __init__(
        self, bus: EventBus, name: str, match: Callable[[BenchEvent], bool] | None
    ) -> None:
        self.name = name
        self._match = match
        self._seen: BenchEvent | None = None
        self._arrived = threading.Event()
        self._unsubscribe = bus.subscribe(self._on_event)

    def _on_event(self, event: BenchEvent) -> None:
        wanted = event.name == self.name and (self._match is None or self._match(event))
        if wanted and self._seen is None:
            self._seen = event
            self._arrived.set()
            self._unsubscribe()

    @property
    def seen(self) -> BenchEvent | None:
        """The event if it has arrived (without waiting)."""
        return self._seen

    def wait(self, timeout: float) -> BenchEvent:
        """The event; TimeoutError naming it when it did not come within `timeout` s."""
        try:
            if not self._arrived.wait(timeout):
                raise TimeoutError(f"no {self.name!r} event within {timeout} s")
            assert self._seen is not None
            return self._seen
        finally:
            self._unsubscribe()


def sleep_until(target: float) -> float:
    """Wait for a monotonic instant: sleep most of the way, spin the rest; returns now."""
    while True:
        remaining = target - time.monotonic()
        if remaining <= 0:
            return time.monotonic()
        if remaining > SPIN_S:
            time.sleep(remaining - SPIN_S)


@dataclass
class Scheduled:
    """A fault armed to fire `offset_s` after the first matching event."""

    fault: Fault
    event: str
    offset_s: float
    match: Callable[[BenchEvent], bool] | None
    trigger: BenchEvent | None = None
    target: float | None = None  # the requested instant
    applied: AppliedFault | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False

    def wait(self, timeout: float) -> AppliedFault:
        """The applied fault; raises if it never fired or failed to apply."""
        if not self.done.wait(timeout) or self.cancelled:
            if self.cancelled:
                raise RuntimeError(f"{self.fault.label} was cancelled before it applied")
            raise TimeoutError(
                f"{self.fault.label} armed on {self.event!r} never fired within {timeout} s"
            )
        if self.error is not None:
            raise RuntimeError(f"{self.fault.label} failed to apply: {self.error}") from self.error
        assert self.applied is not None
        return self.applied

    @property
    def lateness_s(self) -> float | None:
        """Actual minus requested instant: the scheduling error (negative = early)."""
        if self.applied is None or self.target is None:
            return None
        return self.applied.effective_at - self.target


class Scheduler:
    """Arms faults on events; fires each once, from its own thread."""

    def __init__(
        self, bus: EventBus, inject: Callable[[Fault, float | None], AppliedFault]
    ) -> None:
        self._inject = inject
        self._lock = threading.Lock()
        self._armed: list[Scheduled] = []
        self._in_flight: list[Scheduled] = []  # triggered, waiting for their instant
        self._lead: dict[str, float] = {}  # fault kind -> learned actuation time (s)
        self._threads: list[threading.Thread] = []
        self._unsubscribe = bus.subscribe(self._on_event)

    def after(
        self,
        event: str,
        offset_ms: float,
        fault: Fault,
        match: Callable[[BenchEvent], bool] | None = None,
    ) -> Scheduled:
        scheduled = Scheduled(fault, event, offset_ms / 1000.0, match)
        with self._lock:
            self._armed.append(scheduled)
        return scheduled

    def cancel_all(self) -> None:
        """Disarm everything: armed faults never fire, triggered ones do not apply."""
        with self._lock:
            for scheduled in self._armed + self._in_flight:
                scheduled.cancelled = True
                scheduled.done.set()
            self._armed.clear()
            self._in_flight.clear()

    def close(self) -> None:
        self._unsubscribe()
        self.cancel_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _on_event(self, event: BenchEvent) -> None:
        with self._lock:
            fired = [
                s
                for s in self._armed
                if s.event == event.name and (s.match is None or s.match(event))
            ]
            for scheduled in fired:
                self._armed.remove(scheduled)
                self._in_flight.append(scheduled)
        for scheduled in fired:
            scheduled.trigger = event
            scheduled.target = event.t + scheduled.offset_s
            thread = threading.Thread(
                target=self._fire, args=(scheduled,), name=f"fault-{scheduled.fault.name}"
            )
            self._threads.append(thread)
            thread.start()

    def _fire(self, scheduled: Scheduled) -> None:
        kind = f"{scheduled.fault.family}.{scheduled.fault.name}"
        try:
            assert scheduled.target is not None
            started = sleep_until(scheduled.target - self._lead.get(kind, 0.0))
            with self._lock:
                go = not scheduled.cancelled
                if scheduled in self._in_flight:
                    self._in_flight.remove(scheduled)
            if go:
                scheduled.applied = self._inject(scheduled.fault, scheduled.target)
                actuation = max(0.0, scheduled.applied.effective_at - started)
                with self._lock:
                    previous = self._lead.get(kind)
                    self._lead[kind] = (
                        actuation if previous is None else 0.7 * previous + 0.3 * actuation
                    )
        except BaseException as exc:  # recorded and re-raised by wait()
            scheduled.error = exc
        finally:
            scheduled.done.set()
