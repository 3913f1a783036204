"""What a scenario test holds: the opened bench, its orders, and its seeded choices.

A scenario plays the cash register: `scenario.sale()` sends one order through the terminal and
remembers it (the oracle reconciles every order afterwards), `scenario.cancel()` cancels one,
`scenario.rng` makes every random choice from the run's seed, so the same seed replays the same
faults at the same offsets. The plugin builds one per test and reconciles it when the test ends.
"""

from __future__ import annotations

import itertools
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from harness.bench import Bench
from harness.drivers.interfaces import Card, Outcome, SaleResult
from harness.faults import AppliedFault, Fault, MissingEquipment
from harness.protocols.cards import with_luhn
from harness.protocols.iso8583 import REVERSAL_MTIS
from harness.records import Order
from harness.rig import Rig
from harness.timing import BenchEvent, Expected, Scheduled, sleep_until


def reversal_on_the_wire(event: BenchEvent) -> bool:
    """A reversal (0400/0420, first or repeated) seen on its way to the host."""
    return event.name == "host_request" and event.data.get("mti") in REVERSAL_MTIS


def bench_card(rig: Rig, number: int = 1) -> Card:
    """A valid test card from the rig's first allowlisted BIN."""
    bin_ = rig.rig.card_bins[0]
    body = f"{bin_}{number:0{15 - len(bin_)}d}"
    return Card(with_luhn(body))


@dataclass
class ScenarioInfo:
    """What the report needs to replay it."""

    nodeid: str
    seed: int
    firmware: str | None
    rig_path: str
    started: float = field(default_factory=time.monotonic)


class Scenario:
    """One test's view of the bench as the ECR; every order it sends is reconciled."""

    def __init__(self, bench: Bench, info: ScenarioInfo, rng: random.Random) -> None:
        self.bench = bench
        self.rig = bench.rig
        self.info = info
        self.rng = rng
        self.orders: list[Order] = []
        self.expects_faults = True
        self._lock = threading.Lock()
        self._amounts = itertools.count(1)
        # order ids must never repeat, across parametrised cases, runs and replays: a terminal
        # asked "how did order X end?" after a power cut answers with whatever it has for X
        self._order_token = secrets.token_hex(3)
        self.card = bench_card(self.rig)
        self._host_before: set[tuple[str, int, int]] | None = None
        if bench.host is not None:
            self._host_before = {(e.tid, e.stan, e.batch) for e in bench.host.entries()}
        self._host_rules: list[dict[str, Any]] = [
            {k: v for k, v in vars(rule).items() if v is not None}
            for rule in (self.rig.sim.host.rules if self.rig.sim else ())
        ]
        if bench.cards is not None:
            bench.cards.present(self.card)

    # -- the ECR -------------------------------------------------------------------------------
    def unique_amount(self, base: int = 1000) -> int:
        """An amount no other order of this scenario uses (orders stay tellable apart)."""
        return base + next(self._amounts) * 7

    def sale(self, amount: int | None = None, order_id: str | None = None) -> SaleResult:
        """One sale through the terminal; the order is remembered for the oracle."""
        terminal = self.bench.terminal
        assert terminal is not None
        index = len(self.orders) + 1
        name = self.info.nodeid.rsplit("::", 1)[-1]
        order_id = order_id or f"{name[:16]}-{self._order_token}-{index}"
        amount = amount if amount is not None else self.unique_amount()
        started = time.monotonic()
        placeholder = Order(
            order_id,
            amount,
            self.rig.terminal.currency,
            started,
            None,
            "UNKNOWN",
            None,
            None,
            None,
            "in flight",
        )
        with self._lock:
            self.orders.append(placeholder)
        try:
            result = terminal.sale(order_id, amount)
        except Exception as exc:  # the ECR got no answer at all: still an order in doubt
            self._settle(placeholder, replace(placeholder, ended=time.monotonic(), detail=str(exc)))
            raise
        self._settle(placeholder, _order_from(result))
        return result

    def sale_in_background(
        self, amount: int | None = None, order_id: str | None = None
    ) -> Callable[[float], SaleResult]:
        """Start a sale on a thread (to act while it runs); returns `join(timeout)`."""
        results: list[SaleResult] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                results.append(self.sale(amount, order_id))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, name="ecr-sale", daemon=True)
        thread.start()

        def join(timeout: float) -> SaleResult:
            thread.join(timeout)
            if errors:
                raise errors[0]
            if not results:
                raise TimeoutError(f"the sale did not return within {timeout} s")
            return results[0]

        return join

    def cancel(self, result: SaleResult) -> Outcome:
        """Cancel an approved sale (06 30); the order is then expected not to be captured."""
        terminal = self.bench.terminal
        assert terminal is not None and result.receipt_no is not None
        reversal = terminal.reverse(result.receipt_no)
        if reversal.outcome is Outcome.PAID:
            with self._lock:
                for i, order in enumerate(self.orders):
                    if order.order_id == result.order_id:
                        self.orders[i] = replace(order, cancelled=True)
        return reversal.outcome

    def _settle(self, placeholder: Order, final: Order) -> None:
        with self._lock:
            index = self.orders.index(placeholder)
            self.orders[index] = replace(final, started=placeholder.started)

    @contextmanager
    def ecr_timeout(self, seconds: float) -> Iterator[None]:
        """Let the ECR give up sooner (a power-cut scenario need not wait the full timeout)."""
        target: Any = getattr(self.bench.terminal, "target", self.bench.terminal)
        saved = target.timeout_s
        target.timeout_s = seconds
        try:
            yield
        finally:
            target.timeout_s = saved

    def ecr_crash(self) -> None:
        """The cash register crashes: its link drops at once, even in the middle of a sale."""
        target: Any = getattr(self.bench.terminal, "target", self.bench.terminal)
        target.drop_link()

    def ecr_restart(self) -> None:
        """The cash register is back: its link to the terminal is opened anew."""
        target: Any = getattr(self.bench.terminal, "target", self.bench.terminal)
        target.reopen()

    def ecr_crash_fault(self) -> Fault:
        """The ECR crash as a fault: applied = the link drops, healed = the ECR is back."""
        return Fault("operator", "ecr_crash", "ecr", {}, self.ecr_crash, self.ecr_restart)

    def wait_until_host_has(self, amount: int, timeout_s: float = 10.0) -> None:
        """Block until the host recorded a new transaction of this amount (it decided).

        New: not in the ledger when this scenario began (an earlier scenario may have used the
        same amount; its entry must not release the wait before this sale reached the host).
        """
        host: Any = self.bench.host
        if self._host_before is None:
            raise RuntimeError("wait_until_host_has needs a [host] the harness can read")
        before = self._host_before
        deadline = time.monotonic() + timeout_s
        while not any(
            e.amount == amount and (e.tid, e.stan, e.batch) not in before for e in host.entries()
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the host recorded no transaction of {amount} in {timeout_s} s")
            time.sleep(0.02)  # the host's export is polled: it has no push channel

    def host_answers(
        self, amount: int, response: str = "00", delay_ms: int = 0, silent: bool = False
    ) -> None:
        """A test-host answer rule for one amount, ahead of the rig's (reset restores those)."""
        host: Any = self.bench.host
        if host is None or not hasattr(getattr(host, "target", host), "set_rules"):
            raise MissingEquipment("this scenario needs a test host whose answers can be set")
        rule = {"amount": amount, "response": response, "delay_ms": delay_ms, "silent": silent}
        self._host_rules.insert(0, rule)
        host.set_rules(self._host_rules)

    # -- faults --------------------------------------------------------------------------------
    @property
    def faults(self) -> Any:
        return self.bench.faults

    def inject(self, fault: Fault) -> AppliedFault:
        return self.bench.inject(fault)

    def heal(self, applied: AppliedFault) -> None:
        self.bench.heal(applied)

    def heal_after(self, applied: AppliedFault, held_s: float) -> None:
        """Heal once the fault has been in effect for `held_s`: how long it lasts is part of
        the scenario (a jam the cashier clears at once is another field case)."""
        sleep_until(applied.effective_at + held_s)
        self.bench.heal(applied)

    def after(
        self,
        event: str,
        offset_ms: float,
        fault: Fault,
        match: Callable[[BenchEvent], bool] | None = None,
    ) -> Scheduled:
        return self.bench.after(event, offset_ms, fault, match)

    def after_receipt(self, offset_ms: float, fault: Fault) -> Scheduled:
        """Arm `fault` `offset_ms` after the first byte of the first receipt printed once the
        terminal took a sale from now on. A receipt an earlier scenario left owed (a terminal
        prints those on its own schedule, maybe while this sale waits its turn) is not the one
        the scenario names, and a fault anchored on it would land before the sale began."""
        taken = self.expect_sale_taken()

        def ours(event: BenchEvent) -> bool:
            return taken.seen is not None and event.t >= taken.seen.t

        return self.after("receipt_first_byte", offset_ms, fault, match=ours)

    def expect(self, event: str, match: Callable[[BenchEvent], bool] | None = None) -> Expected:
        """The next matching bench event from now on; call before the act that causes it."""
        return self.bench.events.expect(event, match)

    def expect_sale_taken(self) -> Expected:
        """The terminal's 80 00 00 to the next sale: it has begun working on it."""
        return self.expect(
            "terminal_accepted", lambda e: str(e.data.get("command")).startswith("sale")
        )

    def wait_for(
        self,
        event: str,
        match: Callable[[BenchEvent], bool] | None = None,
        timeout_s: float = 10.0,
    ) -> BenchEvent:
        """Block until the bench observes the next matching event (e.g. a request on the wire):
        act on what the devices did, not on a guess of how long they take."""
        return self.expect(event, match).wait(timeout_s)

    def no_faults(self) -> None:
        """This scenario injects nothing on purpose (a baseline): passing proves something."""
        self.expects_faults = False


def _order_from(result: SaleResult) -> Order:
    return Order(
        order_id=result.order_id,
        amount=result.amount,
        currency=result.currency,
        started=result.started,
        ended=result.ended,
        outcome=result.outcome.value,
        result_code=result.result_code,
        trace=result.trace,
        receipt_no=result.receipt_no,
        detail=result.detail,
    )
