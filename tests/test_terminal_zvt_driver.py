"""The ZVT driver against a scripted fake terminal, over TCP and over a pty (serial framing).

Each test scripts the terminal's side of one conversation with the codec; the fake runs in a
thread and the test checks the driver's tri-state verdict, its details and its byte log.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.drivers import terminal_zvt
from harness.drivers.interfaces import Outcome, Terminal
from harness.drivers.terminal_zvt import ZvtNoAnswer, ZvtTerminal, open_zvt_terminal
from harness.protocols import zvt
from harness.protocols.zvt import (
    ACK_APDU,
    Abort,
    Apdu,
    ApduDecoder,
    Authorization,
    Completion,
    IntermediateStatus,
    SerialFrameDecoder,
    StatusInfo,
    TotalsGroup,
)
from harness.rig import TerminalConfig

TID = "29110001"
STEP_S = 3.0  # how long the fake waits for the driver before it gives up (a failure, not a hang)

Script = Callable[["FakePt"], None]


class FakePt:
    """The terminal's end of the link: raw APDUs on TCP, DLE STX frames with ACK/NAK on a pty."""

    def __init__(
        self, serial: bool, read_fd: Callable[[float], bytes], write: Callable[[bytes], None]
    ) -> None:
        self.serial = serial
        self._read = read_fd
        self._write = write
        self._apdus = ApduDecoder()
        self._frames = SerialFrameDecoder()
        self._inbox: deque[Apdu] = deque()
        self._link: deque[str] = deque()
        self.received: list[Apdu] = []
        self.link_log: list[str] = []  # link ACK/NAK the driver sent us
        self.stop = threading.Event()  # set by the test when it is done
        self.hang_up: Callable[[], None] = lambda: None  # closes the link; set by fake_terminal

    def _pump(self, deadline: float) -> None:
        data = self._read(max(0.0, min(0.05, deadline - time.monotonic())))
        if not self.serial:
            self._inbox.extend(self._apdus.feed(data))
            return
        for event in self._frames.feed(data):
            if isinstance(event, zvt.Frame):
                self._write(bytes([zvt.ACK]))
                self._inbox.append(zvt.decode_apdu(event.apdu))
            elif isinstance(event, zvt.LinkAck | zvt.LinkNak):
                name = "ACK" if isinstance(event, zvt.LinkAck) else "NAK"
                self.link_log.append(name)
                self._link.append(name)
            elif event.in_frame:
                self._write(bytes([zvt.NAK]))

    def recv(self) -> Apdu:
        deadline = time.monotonic() + STEP_S
        while not self._inbox:
            if time.monotonic() > deadline:
                raise AssertionError("the driver sent nothing")
            self._pump(deadline)
        apdu = self._inbox.popleft()
        self.received.append(apdu)
        return apdu

    def _link_reply(self) -> str:
        deadline = time.monotonic() + STEP_S
        while not self._link:
            if time.monotonic() > deadline:
                raise AssertionError("no link ACK/NAK from the driver")
            self._pump(deadline)
        return self._link.popleft()

    def send(self, message: zvt.PtMessage | Apdu, *, bad_crc_first: bool = False) -> None:
        apdu = message if isinstance(message, Apdu) else message.to_apdu()
        raw = apdu.encode()
        if not self.serial:
            self._write(raw)
            return
        framed = zvt.frame(raw)
        if bad_crc_first:
            self._write(framed[:-1] + bytes([framed[-1] ^ 0x5A]))
            assert self._link_reply() == "NAK"
        self._write(framed)
        assert self._link_reply() == "ACK"

    def send_raw(self, data: bytes) -> None:
        self._write(data)

    def expect_ack(self) -> None:
        assert self.recv() == ACK_APDU

    def tell(self, *messages: zvt.PtMessage) -> None:
        """Send each message and require the ECR's 80 00 00 for it."""
        for message in messages:
            self.send(message)
            self.expect_ack()

    def hold(self) -> None:
        """Stay silent with the link open until the test is done."""
        self.stop.wait(10)


@contextmanager
def fake_terminal(transport: str, script: Script) -> Iterator[tuple[str, FakePt]]:
    """Run `script` as the terminal in a thread; yield the URL the driver should open."""
    errors: list[BaseException] = []
    if transport == "tcp":
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(STEP_S)
        url = f"socket://127.0.0.1:{server.getsockname()[1]}"
        holder: dict[str, socket.socket] = {}

        def read(timeout: float) -> bytes:
            conn = holder["conn"]
            ready, _, _ = select.select([conn], [], [], timeout)
            return conn.recv(4096) if ready else b""

        pt = FakePt(False, read, lambda data: holder["conn"].sendall(data))
        pt.hang_up = lambda: holder["conn"].close()

        def run() -> None:
            try:
                conn, _ = server.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                holder["conn"] = conn
                with conn:
                    script(pt)
                    pt.hold()  # keep the link up until the test is done with it
            except BaseException as exc:  # reported in the test's thread
                errors.append(exc)

        cleanup: Callable[[], None] = server.close
    else:
        master, slave = os.openpty()
        tty.setraw(slave)
        url = os.ttyname(slave)
        closed = threading.Event()

        def read(timeout: float) -> bytes:
            ready, _, _ = select.select([master], [], [], timeout)
            return os.read(master, 4096) if ready else b""

        def write(data: bytes) -> None:
            os.write(master, data)

        pt = FakePt(True, read, write)

        def close_master() -> None:
            if not closed.is_set():
                closed.set()
                os.close(master)

        pt.hang_up = close_master

        def run() -> None:
            try:
                script(pt)
                pt.hold()  # closing the master flushes what the driver has not read yet
            except BaseException as exc:
                errors.append(exc)
            finally:
                close_master()

        def cleanup() -> None:
            os.close(slave)

    thread = threading.Thread(target=run, name=f"fake-pt-{transport}")
    thread.start()
    try:
        yield url, pt
    finally:
        pt.stop.set()
        thread.join(STEP_S * 3)
        cleanup()
    assert not thread.is_alive(), "the fake terminal did not finish"
    if errors:
        raise errors[0]


@pytest.fixture(params=["tcp", "serial"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def driver(
    url: str, log: Path, timeout_s: float = 2.0, ack_timeout_s: float = 1.0
) -> Iterator[ZvtTerminal]:
    terminal = ZvtTerminal(url, TID, timeout_s=timeout_s, ack_timeout_s=ack_timeout_s, log_path=log)
    try:
        yield terminal
    finally:
        terminal.close()


def approved_info(auth: Authorization, trace: int = 17, receipt: int = 5) -> StatusInfo:
    return StatusInfo(
        result_code=0,
        amount=auth.amount,
        currency=auth.currency,
        trace=trace,
        receipt_no=receipt,
        time="101112",
        date="1124",
        card_masked="476173******0010",
        tid=TID,
        order_ref=auth.order_ref,
    )


def approve(pt: FakePt) -> None:
    auth = Authorization.from_apdu(pt.recv())
    pt.send(ACK_APDU)
    pt.tell(
        IntermediateStatus(zvt.STATUS_INSERT_CARD), IntermediateStatus(zvt.STATUS_WAITING_FOR_HOST)
    )
    pt.tell(approved_info(auth), Completion())


# -- sales ------------------------------------------------------------------------------------


def test_approved_sale_is_paid_with_trace_and_receipt(transport: str, tmp_path: Path) -> None:
    log = tmp_path / "zvt.log"
    with fake_terminal(transport, approve) as (url, pt), driver(url, log) as terminal:
        as_protocol: Terminal = terminal  # the driver is a Terminal (checked by mypy)
        assert as_protocol is terminal
        result = terminal.sale("ORD-1", 1234)
    assert result.outcome is Outcome.PAID
    assert (result.result_code, result.trace, result.receipt_no) == (0, 17, 5)
    assert result.card_masked == "476173******0010"
    assert result.terminal_id == TID
    assert result.started <= result.ended
    assert Authorization.from_apdu(pt.received[0]) == Authorization(1234, 978, "ORD-1")
    text = log.read_text()
    assert "ECR>PT" in text and "PT>ECR" in text
    assert "06 01" in text and "04 0f" in text and "06 0f" in text
    assert "PAID" in text


def test_the_instant_the_terminal_takes_a_command_is_reported(tmp_path: Path) -> None:
    """80 00 00 = the terminal began working on the sale: the bench's "terminal_accepted"."""
    taken: list[tuple[str, float]] = []

    def slow_to_take(pt: FakePt) -> None:
        auth = Authorization.from_apdu(pt.recv())
        time.sleep(0.2)  # the fake terminal is busy with something else first
        pt.send(ACK_APDU)
        pt.tell(approved_info(auth), Completion())

    with fake_terminal("tcp", slow_to_take) as (url, _), driver(url, tmp_path / "l") as terminal:
        terminal.on_accepted = lambda command, t: taken.append((command, t))
        result = terminal.sale("ORD-9", 900)
    assert result.outcome is Outcome.PAID
    assert [c for c, _ in taken] == ["sale order=ORD-9 amount=900"]
    assert result.started + 0.2 <= taken[0][1] <= result.ended


def test_a_failing_accept_listener_does_not_end_the_sale(tmp_path: Path) -> None:
    def broken(command: str, t: float) -> None:
        raise RuntimeError("listener bug")

    with fake_terminal("tcp", approve) as (url, _), driver(url, tmp_path / "l") as terminal:
        terminal.on_accepted = broken
        assert terminal.sale("ORD-10", 1000).outcome is Outcome.PAID


def test_declined_sale_is_not_paid_with_the_host_code(transport: str, tmp_path: Path) -> None:
    def decline(pt: FakePt) -> None:
        auth = Authorization.from_apdu(pt.recv())
        pt.send(ACK_APDU)
        pt.tell(StatusInfo(result_code=0x33, amount=auth.amount, trace=18), Abort(0x33))

    with fake_terminal(transport, decline) as (url, _), driver(url, tmp_path / "l") as terminal:
        result = terminal.sale("ORD-2", 5100)
    assert result.outcome is Outcome.NOT_PAID
    assert result.result_code == 0x33
    assert "ISO 51" in result.detail


def test_abort_without_status_information_is_not_paid(tmp_path: Path) -> None:
    def no_card(pt: FakePt) -> None:
        pt.recv()
        pt.send(ACK_APDU)
        pt.tell(Abort(zvt.ResultCode.ABORTED))

    with fake_terminal("tcp", no_card) as (url, _), driver(url, tmp_path / "l") as terminal:
        result = terminal.sale("ORD-3", 100)
    assert (result.outcome, result.result_code, result.trace) == (Outcome.NOT_PAID, 0x6C, None)


def test_refused_command_is_not_paid(tmp_path: Path) -> None:
    def refuse(pt: FakePt) -> None:
        pt.recv()
        pt.send(zvt.Nack(0x83))

    with fake_terminal("tcp", refuse) as (url, _), driver(url, tmp_path / "l") as terminal:
        result = terminal.sale("ORD-4", 100)
    assert (result.outcome, result.result_code) == (Outcome.NOT_PAID, 0x83)


def test_silent_terminal_after_ack_is_unknown_within_timeout(
    transport: str, tmp_path: Path
) -> None:
    def silent(pt: FakePt) -> None:
        pt.recv()
        pt.send(ACK_APDU)
        pt.hold()

    log = tmp_path / "zvt.log"
    with fake_terminal(transport, silent) as (url, _), driver(url, log, timeout_s=0.5) as terminal:
        started = time.monotonic()
        result = terminal.sale("ORD-5", 100)
        elapsed = time.monotonic() - started
    assert result.outcome is Outcome.UNKNOWN
    assert result.result_code is None
    assert 0.45 < elapsed < 1.5
    assert "no final message" in result.detail and "0.5 s" in result.detail
    assert str(log) in result.detail
    assert "80 00 00" in result.detail  # the hex tail of what came in


def test_no_ack_at_all_is_unknown(tmp_path: Path) -> None:
    def mute(pt: FakePt) -> None:
        pt.recv()
        pt.hold()

    with (
        fake_terminal("tcp", mute) as (url, _),
        driver(url, tmp_path / "l", ack_timeout_s=0.3) as terminal,
    ):
        result = terminal.sale("ORD-6", 100)
    assert result.outcome is Outcome.UNKNOWN
    assert "no 80 00 00 within 0.3 s" in result.detail


def test_intermediate_status_resets_the_deadline(tmp_path: Path) -> None:
    def slow(pt: FakePt) -> None:
        auth = Authorization.from_apdu(pt.recv())
        pt.send(ACK_APDU)
        for _ in range(3):  # 0.36 s in all: longer than timeout_s, each gap shorter
            pt.stop.wait(0.12)
            pt.tell(IntermediateStatus(zvt.STATUS_PLEASE_WAIT))
        pt.tell(approved_info(auth), Completion())

    with (
        fake_terminal("tcp", slow) as (url, _),
        driver(url, tmp_path / "l", timeout_s=0.25) as terminal,
    ):
        result = terminal.sale("ORD-7", 100)
    assert result.outcome is Outcome.PAID


def test_endless_intermediate_status_is_capped_at_three_timeouts(tmp_path: Path) -> None:
    def chatty(pt: FakePt) -> None:
        pt.recv()
        pt.send(ACK_APDU)
        try:
            while not pt.stop.wait(0.05):
                pt.send(IntermediateStatus(zvt.STATUS_PLEASE_WAIT))
        except OSError:
            pass  # the driver gave up and closed the link

    with (
        fake_terminal("tcp", chatty) as (url, _),
        driver(url, tmp_path / "l", timeout_s=0.15) as terminal,
    ):
        started = time.monotonic()
        result = terminal.sale("ORD-8", 100)
        elapsed = time.monotonic() - started
    assert result.outcome is Outcome.UNKNOWN
    assert "cap" in result.detail
    assert 0.4 < elapsed < 1.0  # 3 x 0.15 s


def test_link_closed_mid_sale_is_unknown(transport: str, tmp_path: Path) -> None:
    def hang_up(pt: FakePt) -> None:
        pt.recv()
        pt.send(ACK_APDU)
        pt.tell(IntermediateStatus(zvt.STATUS_WAITING_FOR_HOST))
        pt.hang_up()

    with (
        fake_terminal(transport, hang_up) as (url, _),
        driver(url, tmp_path / "l", ack_timeout_s=0.3) as terminal,
    ):
        started = time.monotonic()
        result = terminal.sale("ORD-9", 100)
        assert time.monotonic() - started < 1.5
        assert result.outcome is Outcome.UNKNOWN
        assert "link lost" in result.detail
        again = terminal.sale("ORD-10", 100)  # nobody to reconnect to: still UNKNOWN, no raise
    assert again.outcome is Outcome.UNKNOWN


def test_garbage_is_unknown_with_its_hex_and_no_hang(transport: str, tmp_path: Path) -> None:
    def garble(pt: FakePt) -> None:
        pt.recv()
        pt.send(ACK_APDU)
        pt.send_raw(b"\xde\xad\xbe\xef\x42")
        pt.hold()

    with (
        fake_terminal(transport, garble) as (url, _),
        driver(url, tmp_path / "l", timeout_s=0.3) as terminal,
    ):
        result = terminal.sale("ORD-11", 100)
    assert result.outcome is Outcome.UNKNOWN
    assert "de ad be ef 42" in result.detail


def test_wrong_class_reply_is_unknown_at_once(tmp_path: Path) -> None:
    def odd(pt: FakePt) -> None:
        pt.recv()
        pt.send(ACK_APDU)
        pt.send(Apdu(0x01, 0x02, b"\x03"))
        pt.hold()

    with fake_terminal("tcp", odd) as (url, _), driver(url, tmp_path / "l") as terminal:
        started = time.monotonic()
        result = terminal.sale("ORD-12", 100)
        assert time.monotonic() - started < 1.0
    assert result.outcome is Outcome.UNKNOWN
    assert "01 02" in result.detail


def test_approval_without_completion_is_unknown(transport: str, tmp_path: Path) -> None:
    def no_completion(pt: FakePt) -> None:
        auth = Authorization.from_apdu(pt.recv())
        pt.send(ACK_APDU)
        pt.tell(approved_info(auth, trace=21))
        pt.hold()

    with (
        fake_terminal(transport, no_completion) as (url, _),
        driver(url, tmp_path / "l", timeout_s=0.3) as terminal,
    ):
        result = terminal.sale("ORD-13", 100)
    assert result.outcome is Outcome.UNKNOWN
    assert result.trace == 21  # what the ECR needs to recover with a repeat receipt
    assert "no final message" in result.detail


def test_approval_for_another_order_is_unknown(tmp_path: Path) -> None:
    def stale(pt: FakePt) -> None:
        pt.recv()
        pt.send(ACK_APDU)
        pt.tell(approved_info(Authorization(100, 978, "OTHER")), Completion())

    with fake_terminal("tcp", stale) as (url, _), driver(url, tmp_path / "l") as terminal:
        result = terminal.sale("ORD-14", 100)
    assert result.outcome is Outcome.UNKNOWN
    assert "OTHER" in result.detail


def test_abort_from_another_thread_ends_the_sale_not_paid(transport: str, tmp_path: Path) -> None:
    waiting = threading.Event()

    def card_wait(pt: FakePt) -> None:
        pt.recv()
        pt.send(ACK_APDU)
        pt.tell(IntermediateStatus(zvt.STATUS_INSERT_CARD))
        waiting.set()
        assert pt.recv() == zvt.AbortRequest().to_apdu()
        pt.send(ACK_APDU)
        pt.tell(Abort(zvt.ResultCode.ABORTED))

    with fake_terminal(transport, card_wait) as (url, _), driver(url, tmp_path / "l") as terminal:
        assert terminal.abort() is False  # nothing running
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(terminal.sale, "ORD-15", 100)
            assert waiting.wait(STEP_S)
            assert terminal.abort() is True
            result = future.result(STEP_S * 2)
    assert (result.outcome, result.result_code) == (Outcome.NOT_PAID, 0x6C)


# -- serial link layer -------------------------------------------------------------------------


def test_bad_crc_is_naked_and_the_retransmission_succeeds(tmp_path: Path) -> None:
    def noisy(pt: FakePt) -> None:
        auth = Authorization.from_apdu(pt.recv())
        pt.send(ACK_APDU)
        pt.send(approved_info(auth), bad_crc_first=True)
        pt.expect_ack()
        pt.tell(Completion())

    log = tmp_path / "zvt.log"
    with fake_terminal("serial", noisy) as (url, pt), driver(url, log) as terminal:
        result = terminal.sale("ORD-16", 1010)  # 0x10 in the amount: DLE stuffing on the wire
    assert result.outcome is Outcome.PAID
    assert pt.link_log.count("NAK") == 1  # the driver NAKed the bad frame once
    assert "link NAK" in log.read_text() and "CRC mismatch" in log.read_text()


def test_driver_retransmits_a_command_the_terminal_naks(tmp_path: Path) -> None:
    def nak_first(pt: FakePt) -> None:
        first = pt._read(STEP_S)  # the first frame, answered with NAK by hand
        assert first.startswith(b"\x10\x02")
        pt.send_raw(bytes([zvt.NAK]))
        approve(pt)

    with fake_terminal("serial", nak_first) as (url, _), driver(url, tmp_path / "l") as terminal:
        result = terminal.sale("ORD-17", 100)
    assert result.outcome is Outcome.PAID
    assert "retransmission 1" in (tmp_path / "l").read_text()


def test_no_link_ack_after_three_retransmissions_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(terminal_zvt, "LINK_ACK_S", 0.1)
    frames: list[bytes] = []

    def deaf(pt: FakePt) -> None:
        deadline = time.monotonic() + STEP_S
        stream = b""
        while stream.count(b"\x10\x02") < 4 and time.monotonic() < deadline:
            stream += pt._read(0.05)  # never answered: no ACK, no NAK
        frames.extend(b"\x10\x02" + part for part in stream.split(b"\x10\x02")[1:])

    with fake_terminal("serial", deaf) as (url, _), driver(url, tmp_path / "l") as terminal:
        result = terminal.sale("ORD-18", 100)
    assert result.outcome is Outcome.UNKNOWN
    assert "no link ACK" in result.detail and "4 attempts" in result.detail
    assert len(frames) == 4 and len(set(frames)) == 1


# -- the other commands -----------------------------------------------------------------------


def test_status_enquiry_reports_ready_and_tid(transport: str, tmp_path: Path) -> None:
    def ready(pt: FakePt) -> None:
        assert zvt.parse_ecr_message(pt.recv()) == zvt.StatusEnquiry("000000")
        pt.send(ACK_APDU)
        pt.tell(StatusInfo(result_code=0, tid=TID), Completion())

    with fake_terminal(transport, ready) as (url, _), driver(url, tmp_path / "l") as terminal:
        status = terminal.status()
    assert (status.result_code, status.terminal_id) == (0, TID)


def test_status_without_answer_raises_no_answer_with_log_path(tmp_path: Path) -> None:
    def mute(pt: FakePt) -> None:
        pt.recv()
        pt.hold()

    log = tmp_path / "zvt.log"
    with (
        fake_terminal("tcp", mute) as (url, _),
        driver(url, log, ack_timeout_s=0.3) as terminal,
        pytest.raises(ZvtNoAnswer, match="no 80 00 00") as info,
    ):
        terminal.status()
    assert str(log) in str(info.value)


def test_register_sends_config_and_reads_tid(tmp_path: Path) -> None:
    def registration(pt: FakePt) -> None:
        reg = zvt.parse_ecr_message(pt.recv())
        assert reg == zvt.Registration("000000", zvt.CONFIG_INTERMEDIATE_STATUS, 978)
        pt.send(ACK_APDU)
        pt.tell(Completion(0x00, TID, 978))

    with fake_terminal("tcp", registration) as (url, _), driver(url, tmp_path / "l") as terminal:
        status = terminal.register()
    assert (status.result_code, status.terminal_id) == (0, TID)


def _journal_answer(pt: FakePt, expect_trace: int | None, answer_trace: int = 30) -> None:
    request = zvt.parse_ecr_message(pt.recv())
    assert request == zvt.RepeatReceipt("000000", expect_trace)
    pt.send(ACK_APDU)
    info = StatusInfo(
        result_code=0,
        amount=1234,
        currency=978,
        trace=answer_trace,
        receipt_no=8,
        card_masked="476173******0010",
        tid=TID,
        order_ref="ORD-20",
    )
    pt.tell(info, zvt.TextBlock(("COPY", "APPROVED")), Completion())


@pytest.mark.parametrize("trace", [None, 30])
def test_repeat_receipt_returns_the_journal_record(
    transport: str, trace: int | None, tmp_path: Path
) -> None:
    with (
        fake_terminal(transport, lambda pt: _journal_answer(pt, trace)) as (url, _),
        driver(url, tmp_path / "l") as terminal,
    ):
        record = terminal.repeat_receipt(trace)
        assert terminal.last_printout == ("COPY", "APPROVED")
    assert record is not None
    assert (record.trace, record.receipt_no, record.amount, record.order_ref) == (
        30,
        8,
        1234,
        "ORD-20",
    )
    assert record.approved


def test_repeat_receipt_of_unknown_transaction_is_none(tmp_path: Path) -> None:
    def unknown(pt: FakePt) -> None:
        pt.recv()
        pt.send(ACK_APDU)
        pt.tell(Abort(zvt.ResultCode.FUNCTION_NOT_POSSIBLE))

    with fake_terminal("tcp", unknown) as (url, _), driver(url, tmp_path / "l") as terminal:
        assert terminal.repeat_receipt(999) is None


def test_repeat_receipt_about_another_trace_raises(tmp_path: Path) -> None:
    with (
        fake_terminal("tcp", lambda pt: _journal_answer(pt, 32, answer_trace=31)) as (url, _),
        driver(url, tmp_path / "l") as terminal,
        pytest.raises(ZvtNoAnswer, match="trace 31"),
    ):
        terminal.repeat_receipt(32)


def test_reversal_done_and_refused(transport: str, tmp_path: Path) -> None:
    def reversals(pt: FakePt) -> None:
        assert zvt.parse_ecr_message(pt.recv()) == zvt.ReversalRequest("000000", 5)
        pt.send(ACK_APDU)
        pt.tell(
            IntermediateStatus(zvt.STATUS_WAITING_FOR_HOST),
            StatusInfo(result_code=0, receipt_no=6, trace=19, amount=1234),
            Completion(),
        )
        pt.recv()
        pt.send(ACK_APDU)
        pt.tell(Abort(zvt.ResultCode.ALREADY_REVERSED))

    with fake_terminal(transport, reversals) as (url, _), driver(url, tmp_path / "l") as terminal:
        done = terminal.reverse(5)
        again = terminal.reverse(5)
    assert (done.outcome, done.result_code, done.receipt_no) == (Outcome.PAID, 0, 6)
    assert (again.outcome, again.result_code) == (Outcome.NOT_PAID, 0xB4)


def test_end_of_day_reports_totals(transport: str, tmp_path: Path) -> None:
    def settle(pt: FakePt) -> None:
        assert zvt.parse_ecr_message(pt.recv()) == zvt.EndOfDay("000000")
        pt.send(ACK_APDU)
        pt.tell(
            IntermediateStatus(zvt.STATUS_WAITING_FOR_HOST),
            StatusInfo(
                result_code=0,
                amount=3510,
                currency=978,
                trace=40,
                totals=(TotalsGroup(zvt.CARD_TYPE_ALL, 3, 3510),),
            ),
            Completion(),
        )

    with fake_terminal(transport, settle) as (url, _), driver(url, tmp_path / "l") as terminal:
        totals = terminal.end_of_day()
    assert (totals.result_code, totals.count, totals.total, totals.currency) == (0, 3, 3510, 978)


def test_end_of_day_not_possible_and_silent(tmp_path: Path) -> None:
    def refuse_then_mute(pt: FakePt) -> None:
        pt.recv()
        pt.send(ACK_APDU)
        pt.tell(Abort(zvt.ResultCode.END_OF_DAY_NOT_POSSIBLE))
        pt.recv()
        pt.send(ACK_APDU)
        pt.hold()

    with (
        fake_terminal("tcp", refuse_then_mute) as (url, _),
        driver(url, tmp_path / "l", timeout_s=0.3) as terminal,
    ):
        refused = terminal.end_of_day()
        silent = terminal.end_of_day()
    assert (refused.result_code, refused.count) == (0x77, 0)
    assert silent.result_code is None and "no final message" in silent.detail


# -- evidence ---------------------------------------------------------------------------------


def test_log_has_every_byte_and_never_a_full_card_number(transport: str, tmp_path: Path) -> None:
    full = "4761731234560010"

    def leaky(pt: FakePt) -> None:
        auth = Authorization.from_apdu(pt.recv())
        pt.send(ACK_APDU)
        info = StatusInfo(
            result_code=0, amount=auth.amount, trace=50, receipt_no=9, card_masked=full
        )
        pt.tell(info, Completion())

    log = tmp_path / "zvt.log"
    with fake_terminal(transport, leaky) as (url, _), driver(url, log) as terminal:
        result = terminal.sale("ORD-30", 700)
    assert result.outcome is Outcome.PAID
    assert result.card_masked == "476173******0010"
    text = log.read_text()
    wire = text.replace(" ", "")
    assert "4761731234560010" not in wire and full not in text
    assert "card number masked" in text
    lines = [line for line in text.splitlines() if " ECR>PT " in line or " PT>ECR " in line]
    assert lines[0].split()[2] == "ECR>PT"
    float(lines[0].split()[1])  # monotonic timestamp on every line


def test_unknown_detail_never_quotes_a_full_card_number(transport: str, tmp_path: Path) -> None:
    def leaky_then_silent(pt: FakePt) -> None:
        pt.recv()
        pt.send(ACK_APDU)
        pt.tell(StatusInfo(result_code=0, amount=100, trace=51, card_masked="4761731234560010"))
        pt.hold()

    with (
        fake_terminal(transport, leaky_then_silent) as (url, _),
        driver(url, tmp_path / "l", timeout_s=0.3) as terminal,
    ):
        result = terminal.sale("ORD-31", 100)
    assert result.outcome is Outcome.UNKNOWN
    assert "47 61 73 ee ee ee 00 10" in result.detail
    assert "12 34 56" not in result.detail


def test_late_answer_after_unknown_is_discarded_before_the_next_command(tmp_path: Path) -> None:
    gave_up = threading.Event()
    late_sent = threading.Event()

    def late(pt: FakePt) -> None:
        auth = Authorization.from_apdu(pt.recv())
        pt.send(ACK_APDU)
        assert gave_up.wait(STEP_S)
        pt.send(approved_info(auth))  # too late: the ECR has concluded UNKNOWN
        pt.send(Completion())
        late_sent.set()
        assert zvt.parse_ecr_message(pt.recv()) == zvt.StatusEnquiry()
        pt.send(ACK_APDU)
        pt.tell(StatusInfo(result_code=0, tid=TID), Completion())

    log = tmp_path / "zvt.log"
    with (
        fake_terminal("tcp", late) as (url, _),
        driver(url, log, timeout_s=0.3) as terminal,
    ):
        assert terminal.sale("ORD-32", 100).outcome is Outcome.UNKNOWN
        gave_up.set()
        assert late_sent.wait(STEP_S)
        assert terminal.status().result_code == 0
    assert "discarded stale input" in log.read_text()


def test_factory_uses_the_rig_config(tmp_path: Path) -> None:
    config = TerminalConfig("zvt", "sim", TID, "000000", 978, 3.0, 0.5)
    with pytest.raises(ValueError, match="sim"):
        open_zvt_terminal(config)
    with fake_terminal("tcp", approve) as (url, _):
        terminal = open_zvt_terminal(config, port=url, log_path=tmp_path / "l")
        try:
            assert terminal.timeout_s == 0.5 and terminal.tid == TID
            assert terminal.sale("ORD-40", 100).outcome is Outcome.PAID
        finally:
            terminal.close()


def test_a_closed_driver_sends_nothing_and_says_unknown(tmp_path: Path) -> None:
    with fake_terminal("tcp", lambda pt: None) as (url, _):
        terminal = ZvtTerminal(url, TID, log_path=tmp_path / "l")
        terminal.close()
        result = terminal.sale("ORD-50", 100)
    assert result.outcome is Outcome.UNKNOWN and "closed" in result.detail


def test_unreachable_terminal_raises_at_open(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    with pytest.raises(ZvtNoAnswer, match="cannot open"):
        ZvtTerminal(f"socket://127.0.0.1:{port}", TID, log_path=tmp_path / "l")
