"""`hil demo` / `make run`: one sale end to end on the simulated bench, and what each record says.

The sale goes through the harness's own drivers exactly as a scenario's would: the card slot, the
ZVT driver over the terminal's serial line, the host ledger export and the paper roll. The exit
code is 0 only when the host, the terminal and the receipt all agree the sale is paid.
"""

from __future__ import annotations

import time

from harness.drivers.cards import SimCardSlot
from harness.drivers.host import open_ledger
from harness.drivers.interfaces import Card, Outcome
from harness.drivers.terminal_zvt import open_zvt_terminal
from harness.protocols.cards import with_luhn
from harness.rig import Rig
from harness.sim.launcher import SimBench
from harness.sim.paper_roll import read_roll

DEMO_CARD = with_luhn("476173" + "000000001")


def _money(amount: int) -> str:
    return f"{amount // 100}.{amount % 100:02d}"


def run_demo(rig: Rig, amount: int) -> int:
    sim = rig.require_sim()
    if rig.host is None:
        raise RuntimeError(f"{rig.path}: the demo needs a [host] ledger")
    order_id = f"demo-{int(time.time())}"
    print(f"starting the simulated bench of {rig.path} (fresh state in {sim.state_dir}) ...")
    with SimBench(rig, fresh=True) as bench:
        assert bench.endpoints is not None
        print("ready")
        for line in bench.endpoints.lines():
            print(f"  {line}")
        slot = SimCardSlot(sim.state_dir, rig.rig.card_bins)
        card = Card(DEMO_CARD)
        slot.present(card)
        terminal = open_zvt_terminal(rig.terminal, port=str(bench.endpoints.terminal_serial))
        try:
            terminal.register()
            print(
                f"\nsale of {_money(amount)} (currency {rig.terminal.currency}), order "
                f"{order_id}, card {card.masked}, over ZVT on {bench.endpoints.terminal_serial}"
            )
            result = terminal.sale(order_id, amount)
            print(f"  ECR outcome: {result.outcome.value} ({result.detail})")
            journal = terminal.repeat_receipt(result.trace) if result.trace else None
        finally:
            terminal.close()
            slot.remove()
        entries = [e for e in open_ledger(rig.host).entries() if e.stan == result.trace]
        roll = read_roll(bench.endpoints.paper_roll)

    print("\nhost ledger (the money truth):")
    for entry in entries:
        print(
            f"  TID {entry.tid} STAN {entry.stan:06d} {_money(entry.amount)} "
            f"{entry.card_masked} -> {entry.response_code} {entry.status} RRN {entry.rrn}"
        )
    if not entries:
        print("  (no transaction with this trace number)")
    print("terminal journal (repeat receipt over ZVT):")
    if journal is None:
        print("  (the terminal has no such transaction)")
    else:
        state = "approved" if journal.approved else f"not paid (result 0x{journal.result_code:02X})"
        print(
            f"  trace {journal.trace:06d} receipt {journal.receipt_no} "
            f"{_money(journal.amount)} {journal.card_masked}: {state}"
        )
    print("paper roll (what physically printed):")
    for receipt in roll:
        print(f"  --- receipt {receipt.index} ({receipt.ended_by}) ---")
        for line in receipt.lines:
            print(f"  | {line}")

    host_paid = len(entries) == 1 and entries[0].captured
    terminal_paid = result.outcome is Outcome.PAID and journal is not None and journal.approved
    originals = [r for r in roll if r.complete and "COPY" not in r.text]
    receipt_paid = len(originals) == 1 and "APPROVED" in originals[0].text
    agree = host_paid and terminal_paid and receipt_paid
    print(
        f"\nhost captured: {host_paid}; terminal approved: {terminal_paid}; "
        f"one original receipt saying approved: {receipt_paid}"
    )
    print("all three records agree: the sale is paid" if agree else "THE RECORDS DISAGREE")
    return 0 if agree else 1
