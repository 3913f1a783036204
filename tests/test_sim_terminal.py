"""The `correct` terminal firmware's behaviour, seen only through the bench's real channels.

Each test drives the simulated terminal over ZVT and then reads the host ledger, the terminal's
own answers and the paper roll: the three records must tell the same story.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.drivers.interfaces import Outcome, SaleResult
from harness.protocols import iso8583
from harness.rig import Rig
from harness.sim.launcher import SimBench
from harness.sim.world import CardInSlot, PrinterPhysical, World
from tests.benchutil import (
    CARD,
    bench_rig,
    card_slot,
    ledger,
    paper,
    psu_session,
    repeat_when_up,
    running_bench,
    serial_terminal,
    wait_for,
)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return bench_rig(tmp_path, {"card_wait_s = 5": "card_wait_s = 1"})


@pytest.fixture
def bench(rig: Rig) -> Iterator[SimBench]:
    with running_bench(rig) as running:
        yield running


def sale(rig: Rig, bench: SimBench, order: str, amount: int) -> SaleResult:
    terminal = serial_terminal(rig, bench)
    try:
        return terminal.sale(order, amount)
    finally:
        terminal.close()


def receipts_for(bench: SimBench, trace: int, *, unfinished: bool = False) -> list[str]:
    """The texts of the receipts for `trace` that came out (cut or torn off); `unfinished`
    also counts one still printing (to assert that nothing at all was printed)."""
    return [
        r.text
        for r in paper(bench)
        if f"TRACE {trace:06d}" in r.text and (unfinished or r.ended_t is not None)
    ]


def test_end_of_day_totals_match_the_host_and_close_the_batch(rig: Rig, bench: SimBench) -> None:
    card_slot(rig).present(CARD)
    terminal = serial_terminal(rig, bench)
    try:
        paid = [terminal.sale(f"o{i}", amount) for i, amount in enumerate((1000, 2345))]
        declined = terminal.sale("o-declined", 9600)
        totals = terminal.end_of_day()
        again = terminal.end_of_day()
    finally:
        terminal.close()
    assert [r.outcome for r in paid] == [Outcome.PAID, Outcome.PAID]
    assert declined.outcome is Outcome.NOT_PAID and declined.result_code == 0x60
    assert totals.result_code == 0 and (totals.count, totals.total) == (2, 3345)
    assert again.result_code == 0 and (again.count, again.total) == (0, 0)
    settlements = ledger(rig).settlements()
    assert len(settlements) == 2
    assert any("END OF DAY" in r.text and "BALANCED" in r.text for r in paper(bench))


def test_cancelled_sale_is_reversed_at_the_host_and_left_out_of_the_totals(
    rig: Rig, bench: SimBench
) -> None:
    card_slot(rig).present(CARD)
    terminal = serial_terminal(rig, bench)
    try:
        first = terminal.sale("keep", 1500)
        second = terminal.sale("cancel-me", 2500)
        assert second.receipt_no is not None
        cancelled = terminal.reverse(second.receipt_no)
        cancelled_again = terminal.reverse(second.receipt_no)
        record = terminal.repeat_receipt(second.trace)
        totals = terminal.end_of_day()
    finally:
        terminal.close()
    assert first.outcome is Outcome.PAID and cancelled.outcome is Outcome.PAID
    assert cancelled_again.outcome is Outcome.NOT_PAID and cancelled_again.result_code == 0xB4
    assert record is not None and not record.approved  # the sale no longer counts as paid
    statuses = {e.stan: e.status for e in ledger(rig).entries()}
    assert statuses[first.trace or 0] == "captured" and statuses[second.trace or 0] == "reversed"
    assert (totals.count, totals.total) == (1, 1500)
    assert any("REVERSAL" in r.text and "CANCELS TRACE" in r.text for r in paper(bench))


def test_late_answer_is_ignored_and_the_sale_reversed(rig: Rig, bench: SimBench) -> None:
    """The host approves but answers after the terminal's timeout (F3)."""
    card_slot(rig).present(CARD)
    result = sale(rig, bench, "late", 7700)
    assert result.outcome is Outcome.NOT_PAID and result.result_code == 0xA1
    entries = [e for e in ledger(rig).entries() if e.stan == result.trace]
    assert [e.status for e in entries] == ["reversed"]
    texts = wait_for("the receipt", lambda: receipts_for(bench, result.trace or 0))
    assert all("APPROVED" not in t for t in texts)
    assert "NOT PAID" in texts[0]


def test_owed_reversal_survives_power_cuts_until_the_host_is_back(
    rig: Rig, bench: SimBench
) -> None:
    """Host captures and dies; the terminal reboots twice; the reversal still gets there."""
    card_slot(rig).present(CARD)
    results: list[SaleResult] = []
    thread = threading.Thread(target=lambda: results.append(sale(rig, bench, "crash", 7900)))
    thread.start()
    host = ledger(rig)
    captured = wait_for(
        "the silent host to capture", lambda: [e for e in host.entries() if e.amount == 7900]
    )
    bench.kill("host")  # the host crashes after deciding: the terminal will time out
    thread.join(timeout=30)
    assert results and results[0].outcome is Outcome.NOT_PAID
    psu = psu_session(rig)
    try:
        for _ in range(2):  # two reboots while the host is away
            psu.write(":OUTP CH1,OFF")
            psu.write(":OUTP CH1,ON")
            assert psu.query(":OUTP? CH1").strip() == "ON"
    finally:
        psu.close()
    assert host.health() is False  # still down: the reversal is only in the terminal's flash
    bench.respawn("host")
    stan = captured[0].stan
    wait_for(
        "the stored reversal to reach the host",
        lambda: [e for e in host.entries() if e.stan == stan and e.status == "reversed"],
        timeout=rig.rig.recovery_s,
    )
    reversals = [r for r in host.reversals() if int(r["stan"]) == stan]
    assert reversals and all(r["effect"] in ("reversed", "already_reversed") for r in reversals)


def test_the_terminal_refuses_a_card_outside_the_test_bins(rig: Rig, bench: SimBench) -> None:
    assert rig.sim is not None
    World(rig.sim.state_dir).present_card(CardInSlot("4111111111111111"))  # not a test BIN
    result = sale(rig, bench, "real-card", 1000)
    assert result.outcome is Outcome.NOT_PAID and result.result_code == 0x76
    assert ledger(rig).entries() == []


def test_no_card_ends_the_sale_not_paid(rig: Rig, bench: SimBench) -> None:
    result = sale(rig, bench, "no-card", 1000)
    assert result.outcome is Outcome.NOT_PAID and result.result_code == 0x6C
    assert ledger(rig).entries() == []


def test_ecr_abort_while_waiting_for_the_card(rig: Rig, bench: SimBench) -> None:
    terminal = serial_terminal(rig, bench)
    results: list[SaleResult] = []
    thread = threading.Thread(target=lambda: results.append(terminal.sale("abort", 1000)))
    thread.start()
    wait_for("the sale to wait for a card", lambda: terminal.abort())
    thread.join(timeout=10)
    terminal.close()
    assert results and results[0].outcome is Outcome.NOT_PAID
    assert results[0].result_code == 0x6C


def test_ecr_printing_gets_the_receipt_as_text_blocks(rig: Rig, bench: SimBench) -> None:
    card_slot(rig).present(CARD)
    terminal = serial_terminal(rig, bench, config_byte=0x0A)  # ECR prints payment receipts
    try:
        terminal.register()
        result = terminal.sale("ecr-prints", 1200)
        printout = terminal.last_printout
    finally:
        terminal.close()
    assert result.outcome is Outcome.PAID
    text = "\n".join(printout)
    assert "APPROVED" in text and CARD.masked in text and CARD.pan not in text
    # nothing on the terminal's printer
    assert receipts_for(bench, result.trace or 0, unfinished=True) == []


def test_receipt_held_by_a_jam_prints_as_the_original_once_cleared(
    rig: Rig, bench: SimBench
) -> None:
    assert rig.sim is not None
    world = World(rig.sim.state_dir)
    world.set_printer(PrinterPhysical(jam=True))
    card_slot(rig).present(CARD)
    result = sale(rig, bench, "jammed", 1300)
    assert result.outcome is Outcome.PAID  # a printer problem never fails a payment
    assert receipts_for(bench, result.trace or 0, unfinished=True) == []
    world.set_printer(PrinterPhysical())
    texts = wait_for("the receipt after the jam", lambda: receipts_for(bench, result.trace or 0))
    assert len(texts) == 1 and "APPROVED" in texts[0] and "COPY" not in texts[0]


def test_receipt_torn_by_a_jam_mid_print_is_reprinted_as_a_copy(
    tmp_path: Path,
) -> None:
    rig = bench_rig(tmp_path, {"[sim.printer]\n": "[sim.printer]\nline_ms = 60\n"})
    assert rig.sim is not None
    world = World(rig.sim.state_dir)
    with running_bench(rig) as bench:
        card_slot(rig).present(CARD)
        results: list[SaleResult] = []
        thread = threading.Thread(target=lambda: results.append(sale(rig, bench, "torn", 1400)))
        thread.start()
        wait_for("printing to start", lambda: paper(bench) and paper(bench)[-1].lines)
        world.set_printer(PrinterPhysical(jam=True))
        thread.join(timeout=30)
        assert results and results[0].outcome is Outcome.PAID
        world.set_printer(PrinterPhysical())  # the operator clears the jam
        trace = results[0].trace or 0
        copies = wait_for(
            "the reprint", lambda: [r for r in paper(bench) if "COPY" in r.text and r.complete]
        )
        torn = [r for r in paper(bench) if r.ended_by == "torn"]
        assert len(torn) == 1 and not torn[0].complete
        assert len(copies) == 1 and f"TRACE {trace:06d}" in copies[0].text
        originals = [r for r in paper(bench) if r.complete and "COPY" not in r.text]
        assert originals == []  # the only original is the torn one


def test_power_cut_while_printing_confirms_the_sale_after_boot(tmp_path: Path) -> None:
    """The ECR saw 04 0F approved but no completion: after boot the journal says paid."""
    rig = bench_rig(tmp_path, {"[sim.printer]\n": "[sim.printer]\nline_ms = 40\n"})
    with running_bench(rig) as bench:
        card_slot(rig).present(CARD)
        terminal = serial_terminal(rig, bench)
        results: list[SaleResult] = []
        thread = threading.Thread(target=lambda: results.append(terminal.sale("cut", 1600)))
        thread.start()
        wait_for("printing to start", lambda: paper(bench) and paper(bench)[-1].lines)
        psu = psu_session(rig)
        try:
            psu.write(":OUTP CH1,OFF")
            thread.join(timeout=30)
            psu.write(":OUTP CH1,ON")
        finally:
            psu.close()
        assert results and results[0].outcome is Outcome.UNKNOWN
        record = wait_for("the terminal after boot", lambda: repeat_when_up(terminal, None))
        terminal.close()
        assert record.approved and record.order_ref == "cut"
        entries = ledger(rig).entries()
        assert [e.status for e in entries] == ["captured"] and entries[0].stan == record.trace
        texts = wait_for(
            "original and copy",
            lambda: t if len(t := receipts_for(bench, record.trace)) >= 2 else None,
        )
        assert sum("COPY" not in t for t in texts) == 1  # one original, the rest copies
        assert all("APPROVED" in t for t in texts)


def test_garbage_from_the_host_means_reversal(tmp_path: Path) -> None:
    """A fake host answers the 0200 with bytes that are no ISO 8583, then acks the 0400."""
    fake = socket.socket()
    fake.bind(("127.0.0.1", 0))
    fake.listen()
    port = fake.getsockname()[1]
    seen: list[str] = []

    def serve() -> None:
        for _ in range(2):
            conn, _ = fake.accept()
            with conn:
                conn.settimeout(5)
                decoder = iso8583.FrameDecoder()
                bodies: list[bytes] = []
                while not bodies:
                    bodies = decoder.feed(conn.recv(4096))
                request = iso8583.decode(bodies[0])
                seen.append(request["t"])
                if request["t"] == "0200":
                    conn.sendall(b"\x00\x06GARBAG")
                else:
                    conn.sendall(iso8583.encode(iso8583.response_for(request, "00")))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    rig = bench_rig(tmp_path, {'host = "127.0.0.1:18583"': f'host = "127.0.0.1:{port}"'})
    try:
        with running_bench(rig) as bench:
            card_slot(rig).present(CARD)
            result = sale(rig, bench, "garbage", 1700)
            server.join(timeout=10)
    finally:
        fake.close()
    assert result.outcome is Outcome.NOT_PAID and result.result_code == 0xA1
    assert seen == ["0200", "0400"]
