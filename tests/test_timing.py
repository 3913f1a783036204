"""The scheduler fires a fault at its offset from the triggering event, once."""

from __future__ import annotations

import time

from harness.faults import AppliedFault, Fault
from harness.timing import BenchEvent, EventBus, Scheduler


def test_a_fault_fires_at_its_offset_after_the_matching_event() -> None:
    bus = EventBus()
    fired: list[tuple[Fault, float, float]] = []

    def inject(fault: Fault, requested: float | None) -> AppliedFault:
        now = time.monotonic()
        assert requested is not None
        fired.append((fault, requested, now))
        return AppliedFault(fault, requested, now)

    scheduler = Scheduler(bus, inject)
    fault = Fault("power", "power_cut", "terminal")
    scheduled = scheduler.after("host_request", 30, fault, match=lambda e: e.data["mti"] == "0200")
    bus.publish(BenchEvent("host_request", time.monotonic(), {"mti": "0800"}))  # no match
    bus.publish(BenchEvent("host_response", time.monotonic(), {"mti": "0200"}))  # other event
    trigger = time.monotonic()
    bus.publish(BenchEvent("host_request", trigger, {"mti": "0200"}))
    bus.publish(BenchEvent("host_request", time.monotonic(), {"mti": "0200"}))  # fires once
    applied = scheduled.wait(2)
    scheduler.close()
    assert len(fired) == 1
    assert scheduled.target == trigger + 0.030
    lateness = scheduled.lateness_s
    assert lateness is not None and 0 <= lateness < 0.005, lateness
    assert applied.requested_at == scheduled.target


def test_cancelled_schedules_never_fire() -> None:
    bus = EventBus()
    fired: list[Fault] = []
    scheduler = Scheduler(bus, lambda f, r: fired.append(f) or AppliedFault(f, 0.0, 0.0))  # type: ignore[func-returns-value]
    scheduled = scheduler.after("sale_started", 0, Fault("power", "power_cut", "terminal"))
    scheduler.cancel_all()
    bus.publish(BenchEvent("sale_started", time.monotonic()))
    scheduler.close()
    assert fired == [] and scheduled.cancelled


def test_expect_returns_the_first_matching_event_published_after_it() -> None:
    bus = EventBus()
    bus.publish(BenchEvent("host_request", 1.0, {"mti": "0400"}))  # before: not it
    expected = bus.expect("host_request", match=lambda e: e.data["mti"] == "0400")
    bus.publish(BenchEvent("host_request", 2.0, {"mti": "0200"}))  # no match
    bus.publish(BenchEvent("host_response", 3.0, {"mti": "0400"}))  # other event
    bus.publish(BenchEvent("host_request", 4.0, {"mti": "0400"}))
    bus.publish(BenchEvent("host_request", 5.0, {"mti": "0400"}))  # later: not it
    assert expected.wait(1).t == 4.0
    assert not bus._subscribers  # the wait unsubscribed


def test_expect_times_out_naming_the_event() -> None:
    bus = EventBus()
    expected = bus.expect("receipt_cut")
    try:
        expected.wait(0.05)
    except TimeoutError as exc:
        assert "receipt_cut" in str(exc)
    else:
        raise AssertionError("no event was published, the wait must time out")
    assert not bus._subscribers


def test_expect_can_be_polled_and_stops_listening_once_it_saw_the_event() -> None:
    bus = EventBus()
    expected = bus.expect("terminal_accepted")
    assert expected.seen is None
    bus.publish(BenchEvent("terminal_accepted", 7.0, {"command": "sale"}))
    seen = expected.seen
    assert seen is not None and seen.t == 7.0
    assert not bus._subscribers  # nothing left listening, even though nobody waited
