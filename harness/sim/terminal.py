"""The simulated payment terminal firmware: ZVT to the ECR, ISO 8583 to the host, ESC/POS out.

Profile `correct` is the reference behaviour every scenario must pass:
- persist before send: the pending record with its armed reversal is fsync'ed before the 0200
  leaves; the approval is fsync'ed before the ECR hears of it and before any receipt byte;
- doubt means reversal: a timeout, garbage, a closed link or a power cut with a request on the
  wire makes the sale failed for the cashier and owes the host a 0400, stored and forwarded
  before any next online message and before end of day, retried in the background, across boots;
- a late 0210 is never read: each exchange has its own connection, closed at the timeout;
- receipts are confirmed by the printer's in-order barrier; one that may have been lost (jam,
  printer power cut, terminal power cut) is reprinted marked as a copy, never as an original.

Run as `python -m harness.sim.terminal --rig RIG` (the simulated PSU does this on power-on).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.protocols import iso8583, zvt
from harness.protocols.cards import is_test_card, mask_pan
from harness.rig import Rig
from harness.sim import receipts
from harness.sim.ecr_link import EcrLink, LinkClosed, SerialEcrLink, TcpEcrLink
from harness.sim.journal import Journal, Txn
from harness.sim.printer_link import PrinterLink
from harness.sim.process import listen, start_device
from harness.sim.profiles import bugs_for
from harness.sim.world import World

log = logging.getLogger("terminal")

ECR_ACK_S = 5.0
RECEIPT_WAIT_S = 3.0

# ZVT result codes the firmware declares (see harness.protocols.zvt.result_text)
RC_OK = 0x00
RC_ABORT = 0x6C
RC_NOT_TEST_CARD = 0x76
RC_NOT_POSSIBLE = 0x83
RC_NO_RESPONSE = 0xA1  # host did not answer: sale failed, auto-reversal owed
RC_NO_CONNECTION = 0xA3  # request never left: plainly failed, nothing to reverse
RC_EOD_NOT_POSSIBLE = 0x77
RC_ALREADY_REVERSED = 0xB4
RC_REVERSAL_NOT_POSSIBLE = 0xB5

IS_WAITING_FOR_HOST = 0x04
IS_AUTO_REVERSAL = 0x05
IS_INSERT_CARD = 0x0A


@dataclass(frozen=True)
class HostAnswer:
    """How one exchange with the host ended."""

    kind: str  # "answer" | "no_connection" | "timeout" | "closed" | "garbage"
    response: dict[str, str] | None
    detail: str

    @property
    def sent(self) -> bool:
        """Whether the request may have reached the host."""
        return self.kind != "no_connection"


class Firmware:
    """One boot of the terminal: its flash journal, its ECR ports, its host and printer links."""

    def __init__(self, rig: Rig, stop: threading.Event) -> None:
        self.rig = rig
        self.sim = rig.require_sim()
        self.stop = stop
        self.tid = rig.terminal.tid
        self.world = World(self.sim.state_dir)
        self.journal = Journal(
            self.sim.state_dir / "terminal" / "flash", self.sim.terminal.flash_write_ms / 1000
        )
        self.bugs = bugs_for(self.sim.firmware)
        self.memory: dict[int, Txn] = {}  # this boot's transactions (status-from-memory bug)
        self._late: tuple[socket.socket, dict[str, str]] | None = None
        self.printer = PrinterLink(self.sim.terminal.printer)
        self.txn_lock = threading.Lock()  # one ECR command at a time, whatever the port
        self.host_lock = threading.Lock()  # one host exchange at a time
        self.print_lock = threading.Lock()
        self.ecr_prints_receipts = False  # set by registration config bit 0x02
        self.outstanding: tuple[int, bool] | None = None  # receipt awaiting its barrier
        self.threads: list[threading.Thread] = []

    # -- boot ----------------------------------------------------------------------------------
    def boot(self) -> None:
        """Replay the journal: a request that may have been on the wire is now a reversal."""
        self.world.set_activity("terminal", "booting")
        for txn in list(self.journal.state.txns.values()):
            if txn.state == "pending":
                log.info("boot: trace %06d was in flight at power loss: reversal owed", txn.trace)
                self.journal.append(
                    {
                        "op": "reversal_due",
                        "trace": txn.trace,
                        "reason": "06",
                        "result_code": RC_NO_RESPONSE,
                    }
                )
        due = self.journal.state.reversals_due()
        unprinted = self.journal.state.receipts_due()
        log.info("boot: %d reversal(s) owed, %d receipt(s) to print", len(due), len(unprinted))

    def run(self) -> None:
        listener = listen(self.sim.terminal.zvt_listen)
        listener.settimeout(0.2)
        self._thread("zvt-tcp", lambda: self._serve_tcp(listener))
        serial_fd = _ecr_serial_fd(self.sim.state_dir)
        if serial_fd is not None:
            self._thread("zvt-serial", lambda: self._serve_serial(serial_fd))
        self._thread("maintenance", self._maintenance)
        self.world.set_activity("terminal", "idle")
        log.info("terminal %s up (firmware %s)", self.tid, self.sim.firmware)
        self.stop.wait()
        log.info("stopping")
        for thread in self.threads:
            thread.join(timeout=5)
        listener.close()
        self.printer.close()
        self.journal.close()

    def _thread(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    # -- ECR ports -----------------------------------------------------------------------------
    def _serve_tcp(self, listener: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                sock, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            link = TcpEcrLink(sock, f"tcp:{peer[0]}:{peer[1]}")
            self._thread(f"ecr-{peer[1]}", lambda link=link: self._session(link))  # type: ignore[misc]

    def _serve_serial(self, fd: int) -> None:
        link = SerialEcrLink(fd, "serial")
        link.drain()
        self._session(link)

    def _session(self, link: EcrLink) -> None:
        try:
            while not self.stop.is_set():
                apdu = link.pending.pop(0) if link.pending else link.recv(0.2)
                if apdu is not None:
                    with self.txn_lock:
                        self._dispatch(link, apdu)
        except LinkClosed as exc:
            log.info("ECR %s gone: %s", link.name, exc)
        finally:
            link.close()

    def _dispatch(self, link: EcrLink, apdu: zvt.Apdu) -> None:
        log.info("ECR %s -> %s", link.name, zvt.command_name(apdu.cls, apdu.instr))
        try:
            message = zvt.parse_ecr_message(apdu)
        except zvt.ZvtError as exc:
            log.info("refusing %s: %s", apdu, exc)
            link.send(zvt.nack(RC_NOT_POSSIBLE))
            return
        if isinstance(message, zvt.Ack | zvt.Nack):
            return  # a stray acknowledgement: nothing to do
        if isinstance(message, zvt.AbortRequest):
            link.send(zvt.ack())  # nothing is waiting for a card: nothing to abort
            return
        password = getattr(message, "password", self.rig.terminal.password)
        if password != self.rig.terminal.password:
            log.info("refusing %s: wrong password", apdu)
            link.send(zvt.nack(RC_NOT_POSSIBLE))
            return
        if isinstance(message, zvt.Registration):
            self.registration(link, message)
        elif isinstance(message, zvt.Authorization):
            self.sale(link, message)
        elif isinstance(message, zvt.StatusEnquiry):
            self.status_enquiry(link)
        elif isinstance(message, zvt.RepeatReceipt):
            self.repeat_receipt(link, message)
        elif isinstance(message, zvt.ReversalRequest):
            self.cancel(link, message)
        elif isinstance(message, zvt.EndOfDay):
            self.end_of_day(link)

    def _tell(self, link: EcrLink | None, apdu: zvt.Apdu) -> EcrLink | None:
        """Send one PT message and wait for the ECR's 80 00 00; a vanished ECR is dropped."""
        if link is None:
            return None
        try:
            link.send(apdu)
            deadline = time.monotonic() + ECR_ACK_S
            while time.monotonic() < deadline:
                reply = link.recv(deadline - time.monotonic())
                if reply is None:
                    break
                if (reply.cls, reply.instr) == (0x80, 0x00):
                    return link
                if reply.cls != 0x84:  # a new command (the ECR restarted): serve it next
                    link.pending.append(reply)
                    log.info("ECR %s sent %s while we awaited an ACK: queued", link.name, reply)
                    return link
            log.info("ECR %s did not acknowledge %02X %02X", link.name, apdu.cls, apdu.instr)
            return link
        except LinkClosed as exc:
            log.info(
                "ECR %s lost while telling it %02X %02X: %s", link.name, apdu.cls, apdu.instr, exc
            )
            return None

    # -- commands ------------------------------------------------------------------------------
    def registration(self, link: EcrLink, message: zvt.Registration) -> None:
        self.ecr_prints_receipts = bool(message.config & zvt.CONFIG_ECR_PRINTS_PAYMENT)
        link.send(zvt.ack())
        self._sign_on()
        self._tell(link, zvt.completion(tid=self.tid, currency=self.rig.terminal.currency))

    def status_enquiry(self, link: EcrLink) -> None:
        link.send(zvt.ack())
        ecr = self._tell(
            link, zvt.status_information(zvt.StatusInfo(result_code=RC_OK, tid=self.tid))
        )
        self._tell(ecr, zvt.completion(tid=self.tid))

    def repeat_receipt(self, link: EcrLink, message: zvt.RepeatReceipt) -> None:
        """Answer from the journal (the truth after a reboot), and print a marked copy."""
        link.send(zvt.ack())
        state = self.journal.state
        if self.bugs.status_from_memory:  # BUG: what this boot saw, not the journal
            last = self.memory[max(self.memory)] if self.memory else None
            txn = self.memory.get(message.trace) if message.trace is not None else last
        else:
            txn = state.txns.get(message.trace) if message.trace is not None else state.last_txn()
        if txn is None or txn.state == "pending":
            self._tell(link, zvt.abort(RC_NOT_POSSIBLE))
            return
        ecr = self._tell(link, zvt.status_information(self._status_info(txn)))
        self._print(txn, copy=True, ecr=ecr)
        self._tell(ecr, zvt.completion(tid=self.tid))

    def sale(self, link: EcrLink, message: zvt.Authorization) -> None:
        link.send(zvt.ack())
        self.world.set_activity("terminal", "transacting")
        try:
            self._sale(link, message.amount, message.currency, message.order_ref)
        finally:
            self.world.set_activity("terminal", "idle")

    def _sale(self, link: EcrLink, amount: int, currency: int, order_ref: str | None) -> None:
        ecr: EcrLink | None = link
        if self.journal.state.reversals_due():
            ecr = self._tell(ecr, zvt.intermediate_status(IS_AUTO_REVERSAL))
            if not self.flush_reversals():
                self._tell(ecr, zvt.abort(RC_NO_RESPONSE))  # reverse first, then transact
                return
        card = self._wait_for_card(ecr)
        if card is None:
            self._tell(ecr, zvt.abort(RC_ABORT))
            return
        if not is_test_card(card.pan, self.rig.rig.card_bins):
            log.warning("refused card %s: not a test card of this rig", mask_pan(card.pan))
            self._tell(ecr, zvt.abort(RC_NOT_TEST_CARD))
            return
        state = self.journal.state
        now = dt.datetime.now()
        request = iso8583.sale_request(
            pan=card.pan,
            expiry_yymm=card.expiry,
            amount=amount,
            currency=currency,
            stan=state.next_trace,
            tid=self.tid,
            mid=self.sim.terminal.mid,
            when=now,
        )
        txn = Txn(
            trace=state.next_trace,
            receipt_no=state.next_receipt_no,
            kind="sale",
            amount=amount,
            currency=currency,
            card_masked=mask_pan(card.pan),
            order_ref=order_ref,
            batch=state.batch,
            request={k: v for k, v in request.items() if k not in ("2", "14", "35")},
            when=now.strftime("%Y-%m-%d %H:%M:%S"),
        )
        if self.bugs.reversal_record_after_send:  # BUG: the record follows the request
            ecr = self._tell(ecr, zvt.intermediate_status(IS_WAITING_FOR_HOST))
            begun: list[Txn] = []
            answer = self.exchange(
                request, after_send=lambda: begun.append(self.journal.begin(txn))
            )
            txn = begun[0] if begun else self.journal.begin(txn)
        else:
            txn = self.journal.begin(txn)  # durable before the request leaves: cut => reversal
            ecr = self._tell(ecr, zvt.intermediate_status(IS_WAITING_FOR_HOST))
            answer = self.exchange(request, keep_late=self.bugs.late_response_accepted)
        self.memory[txn.trace] = txn
        deferred = self._decide(txn, answer)
        timed_out = answer.sent and answer.kind != "answer"
        if self.bugs.retry_with_new_stan and txn.state == "declined" and timed_out:
            txn, deferred = self._retry_with_new_stan(txn, request)  # BUG: sent again
        if txn.state == "reversal_due":
            ecr = self._tell(ecr, zvt.intermediate_status(IS_AUTO_REVERSAL))
            self.flush_reversals()
            if self.bugs.late_response_accepted:
                self._accept_late_answer(txn)  # BUG: the late 0210 still counts
        if deferred is not None and self.bugs.ecr_result_before_journal:
            ecr = self._tell(ecr, zvt.status_information(self._status_info(txn)))
            self._tell(ecr, zvt.completion(tid=self.tid))  # BUG: told before it is durable
            self._print(txn, copy=False, ecr=None)
            self.journal.append(deferred)
            return
        ecr = self._tell(ecr, zvt.status_information(self._status_info(txn)))
        self._print(txn, copy=False, ecr=ecr)
        if deferred is not None:  # BUG (journal-after-receipt): durable only after printing
            self.journal.append(deferred)
        if txn.state == "approved":
            self._tell(ecr, zvt.completion(tid=self.tid))
        else:
            self._tell(ecr, zvt.abort(txn.result_code or RC_NOT_POSSIBLE))

    def _retry_with_new_stan(
        self, first: Txn, request: dict[str, str]
    ) -> tuple[Txn, dict[str, Any] | None]:
        """BUG retry-with-new-stan: the same sale again under a new STAN, no reversal."""
        state = self.journal.state
        retry = dict(request)
        retry["11"] = f"{state.next_trace:06d}"
        txn = Txn(
            trace=state.next_trace,
            receipt_no=state.next_receipt_no,
            kind="sale",
            amount=first.amount,
            currency=first.currency,
            card_masked=first.card_masked,
            order_ref=first.order_ref,
            batch=state.batch,
            request={k: v for k, v in retry.items() if k not in ("2", "14", "35")},
            when=first.when,
        )
        txn = self.journal.begin(txn)
        self.memory[txn.trace] = txn
        log.info("retrying trace %06d as %06d (no reversal)", first.trace, txn.trace)
        return txn, self._decide(txn, self.exchange(retry))

    def _accept_late_answer(self, txn: Txn) -> None:
        """BUG late-response-accepted: keep listening on the timed-out connection."""
        late, self._late = self._late, None
        if late is None:
            return
        sock, request = late
        with sock:
            answer = self._await_answer(sock, request, time.monotonic() + 5.0, send=False)
        if answer.kind == "answer" and answer.response and answer.response.get("39") == "00":
            log.info("trace %06d: accepting the late approval", txn.trace)
            self.journal.append(
                {
                    "op": "approved",
                    "trace": txn.trace,
                    "rrn": answer.response.get("37", ""),
                    "auth_code": answer.response.get("38", ""),
                }
            )

    def _decide(self, txn: Txn, answer: HostAnswer) -> dict[str, Any] | None:
        """Turn the host exchange into a durable verdict, before anyone hears of it.

        Returns the approval record when a buggy profile defers making it durable.
        """
        if answer.kind == "answer" and answer.response is not None:
            code = answer.response.get("39", "")
            if code == "00":
                rrn, auth = answer.response.get("37", ""), answer.response.get("38", "")
                record: dict[str, Any] = {
                    "op": "approved",
                    "trace": txn.trace,
                    "rrn": rrn,
                    "auth_code": auth,
                }
                if self.bugs.journal_after_receipt or self.bugs.ecr_result_before_journal:
                    txn.state, txn.result_code = "approved", 0  # BUG: in memory only, for now
                    txn.rrn, txn.auth_code = rrn, auth
                    return record
                self.journal.append(record)
            else:
                self.journal.append(
                    {
                        "op": "declined",
                        "trace": txn.trace,
                        "response_code": code,
                        "result_code": zvt.iso_to_result(code),
                    }
                )
        elif not answer.sent:
            self.journal.append(
                {
                    "op": "declined",
                    "trace": txn.trace,
                    "response_code": "",
                    "result_code": RC_NO_CONNECTION,
                }
            )
        elif self.bugs.no_auto_reversal or self.bugs.retry_with_new_stan:
            log.info("trace %06d: %s; declared failed, no reversal", txn.trace, answer.detail)
            self.journal.append(  # BUG: unknown treated as declined, nothing reversed
                {
                    "op": "declined",
                    "trace": txn.trace,
                    "response_code": "",
                    "result_code": RC_NO_RESPONSE,
                }
            )
        else:
            reason = "06" if answer.kind == "garbage" else "98"
            log.info(
                "trace %06d: %s; the sale failed and a reversal is owed", txn.trace, answer.detail
            )
            self.journal.append(
                {
                    "op": "reversal_due",
                    "trace": txn.trace,
                    "reason": reason,
                    "result_code": RC_NO_RESPONSE,
                }
            )
        return None

    def cancel(self, link: EcrLink, message: zvt.ReversalRequest) -> None:
        """06 30: cancel an approved sale by its receipt number (a 0400 with reason 17)."""
        link.send(zvt.ack())
        state = self.journal.state
        sale = state.by_receipt(message.receipt_no)
        if sale is None or sale.kind != "sale" or sale.state != "approved":
            self._tell(link, zvt.abort(RC_REVERSAL_NOT_POSSIBLE))
            return
        if sale.cancelled_by is not None:
            self._tell(link, zvt.abort(RC_ALREADY_REVERSED))
            return
        self.world.set_activity("terminal", "transacting")
        try:
            cancel = Txn(
                trace=state.next_trace,
                receipt_no=state.next_receipt_no,
                kind="cancel",
                amount=sale.amount,
                currency=sale.currency,
                card_masked=sale.card_masked,
                order_ref=sale.order_ref,
                batch=state.batch,
                request=dict(sale.request),
                cancels=sale.trace,
                state="reversal_due",
                result_code=RC_OK,
                reversal_reason="17",
                when=dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            )
            cancel = self.journal.begin(cancel)  # committed: reaches the host, now or later
            ecr = self._tell(link, zvt.intermediate_status(IS_WAITING_FOR_HOST))
            self.flush_reversals()
            ecr = self._tell(ecr, zvt.status_information(self._status_info(cancel)))
            self._print(cancel, copy=False, ecr=ecr)
            self._tell(ecr, zvt.completion(tid=self.tid))
        finally:
            self.world.set_activity("terminal", "idle")

    def end_of_day(self, link: EcrLink) -> None:
        """Flush owed reversals first, then settle the open batch with the host."""
        link.send(zvt.ack())
        ecr: EcrLink | None = link
        queued = self.journal.state.reversals_due()
        if queued and not self.bugs.eod_with_queued_reversals:  # the bug settles regardless
            ecr = self._tell(ecr, zvt.intermediate_status(IS_AUTO_REVERSAL))
            if not self.flush_reversals():
                self._tell(ecr, zvt.abort(RC_EOD_NOT_POSSIBLE))
                return
        state = self.journal.state
        batch = state.batch
        captured = [t for t in state.open_batch() if t.captured]
        count, total = len(captured), sum(t.amount for t in captured)
        currency = self.rig.terminal.currency
        request = iso8583.settlement_request(
            stan=state.next_trace,
            tid=self.tid,
            mid=self.sim.terminal.mid,
            currency=currency,
            debit_count=count,
            debit_amount=total,
            when=dt.datetime.now(),
        )
        ecr = self._tell(ecr, zvt.intermediate_status(IS_WAITING_FOR_HOST))
        answer = self.exchange(request)
        if answer.kind != "answer" or answer.response is None:
            self._tell(ecr, zvt.abort(RC_NO_RESPONSE))
            return
        host_code = answer.response.get("39", "")
        self.journal.append(
            {
                "op": "settled",
                "batch": batch,
                "count": count,
                "amount": total,
                "host": host_code,
                "stan": request_stan(request),
            }
        )
        result = RC_OK if host_code == "00" else zvt.iso_to_result(host_code or "96")
        info = zvt.StatusInfo(
            result_code=result,
            amount=total,
            currency=currency,
            tid=self.tid,
            trace=request_stan(request),
            totals_count=count,
            totals_amount=total,
        )
        ecr = self._tell(ecr, zvt.status_information(info))
        slip = receipts.settlement_receipt(
            self.journal.state.settlements[-1],
            tid=self.tid,
            currency=currency,
            language=self.sim.terminal.language,
            when=dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        )
        with self.print_lock:
            self.printer.send_receipt(slip, RECEIPT_WAIT_S)
        self._tell(ecr, zvt.completion(tid=self.tid))

    # -- card ----------------------------------------------------------------------------------
    def _wait_for_card(self, ecr: EcrLink | None) -> _Card | None:
        card = self.world.card()
        if card is not None:
            return _Card(card.pan, card.expiry)
        ecr = self._tell(ecr, zvt.intermediate_status(IS_INSERT_CARD))
        deadline = time.monotonic() + self.sim.terminal.card_wait_s
        while time.monotonic() < deadline and not self.stop.is_set():
            card = self.world.card()
            if card is not None:
                return _Card(card.pan, card.expiry)
            if ecr is not None:  # the ECR may abort while we wait (06 B0)
                try:
                    request = ecr.recv(0.02)
                except LinkClosed:
                    ecr = None
                    continue
                if request is not None and (request.cls, request.instr) == (0x06, 0xB0):
                    ecr.send(zvt.ack())
                    return None
            else:
                self.stop.wait(0.02)  # a card reader polls its sensor
        return None

    # -- host ----------------------------------------------------------------------------------
    def exchange(
        self,
        request: dict[str, str],
        after_send: Callable[[], object] | None = None,
        keep_late: bool = False,
    ) -> HostAnswer:
        """One request, one answer, on its own connection: a late answer is never read."""
        address = self.sim.terminal.host
        timeout = self.sim.terminal.host_timeout_s
        with self.host_lock:
            try:
                sock = socket.create_connection((address.host, address.port), timeout=timeout)
            except OSError as exc:
                return HostAnswer("no_connection", None, f"cannot connect to {address}: {exc}")
            answer = self._await_answer(
                sock, request, time.monotonic() + timeout, after_send=after_send
            )
            if keep_late and answer.kind == "timeout":
                self._late = (sock, request)  # BUG late-response-accepted: left open
            else:
                sock.close()
            return answer

    def _await_answer(
        self,
        sock: socket.socket,
        request: dict[str, str],
        deadline: float,
        after_send: Callable[[], object] | None = None,
        send: bool = True,
    ) -> HostAnswer:
        mti, stan = request["t"], request.get("11")
        expected = f"{mti[:2]}{int(mti[2]) + 1}{mti[3]}"
        if send:
            log.info("host <- %s stan %s", mti, stan)
            try:
                sock.sendall(iso8583.encode(request))
            except OSError as exc:
                return HostAnswer("closed", None, f"send failed: {exc}")
            if after_send is not None:
                after_send()
        decoder = iso8583.FrameDecoder()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return HostAnswer("timeout", None, f"no {expected} within the host timeout")
            sock.settimeout(remaining)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError as exc:
                return HostAnswer("closed", None, f"connection error: {exc}")
            if not data:
                return HostAnswer("closed", None, "the host closed the connection")
            try:
                bodies = decoder.feed(data)
                for body in bodies:
                    response = iso8583.decode(body)
                    if response.get("t") == expected and response.get("11") == stan:
                        log.info("host -> %s stan %s code %s", expected, stan, response.get("39"))
                        return HostAnswer("answer", response, "answered")
                    log.info("ignoring unexpected host message %s", response.get("t"))
            except iso8583.Iso8583Error as exc:
                return HostAnswer("garbage", None, f"undecodable answer: {exc}")

    def flush_reversals(self) -> bool:
        """Send every owed reversal in order; True when none is left (先冲正后交易)."""
        for txn in self.journal.state.reversals_due():
            if self.bugs.reversal_given_up and txn.reversal_attempts >= 3:
                log.warning("冲正不成功: giving up the reversal of trace %06d", txn.trace)
                self.journal.append({"op": "reversal_abandoned", "trace": txn.trace})  # BUG
                continue
            repeat = txn.reversal_attempts > 0
            request = iso8583.reversal_request(txn.request, txn.reversal_reason, repeat=repeat)
            self.journal.append({"op": "reversal_sent", "trace": txn.trace})
            answer = self.exchange(request)
            if answer.kind != "answer":
                log.info("reversal of trace %06d not acknowledged: %s", txn.trace, answer.detail)
                return False
            self.journal.append({"op": "reversed", "trace": txn.trace})
            log.info(
                "reversal of trace %06d acknowledged (%s)",
                txn.trace,
                (answer.response or {}).get("39"),
            )
        return True

    def _sign_on(self) -> None:
        request = iso8583.signon_request(
            stan=self.journal.state.next_trace, tid=self.tid, when=dt.datetime.now()
        )
        answer = self.exchange(request)
        log.info("sign-on: %s", answer.detail)

    # -- receipts ------------------------------------------------------------------------------
    def _print(self, txn: Txn, *, copy: bool, ecr: EcrLink | None) -> None:
        """Print a customer receipt and record it; a failure leaves it due for the maintenance."""
        sale = self.journal.state.txns.get(txn.cancels) if txn.cancels is not None else None
        data = receipts.customer_receipt(
            txn,
            tid=self.tid,
            mid=self.sim.terminal.mid,
            language=self.sim.terminal.language,
            copy=copy,
            cancelled_sale=sale,
        )
        if self.ecr_prints_receipts and ecr is not None:
            lines = receipts.text_lines(
                txn, self.tid, self.sim.terminal.mid, self.sim.terminal.language, copy, sale
            )
            self._tell(ecr, zvt.print_text_block(lines))
            if not copy:  # the ECR prints the customer's receipt; a copy for it owes nothing
                self.journal.append({"op": "receipt_printed", "trace": txn.trace, "copy": False})
            return
        with self.print_lock:
            if not self._printer_free():
                log.info("receipt for trace %06d waits for the printer", txn.trace)
                return
            self.journal.append({"op": "receipt_started", "trace": txn.trace, "copy": copy})
            self.world.set_activity("terminal", "transacting")
            if self.printer.send_receipt(data, RECEIPT_WAIT_S):
                self.journal.append({"op": "receipt_printed", "trace": txn.trace, "copy": copy})
            else:
                log.info("receipt for trace %06d not confirmed yet by the printer", txn.trace)
                self.outstanding = (txn.trace, copy)

    def _printer_free(self) -> bool:
        """Settle the previous receipt (late confirmation, or lost) and check the printer."""
        if self.outstanding is not None:
            trace, copy = self.outstanding
            fate = self.printer.settle()
            if fate == "confirmed":
                self.journal.append({"op": "receipt_printed", "trace": trace, "copy": copy})
                self.outstanding = None
            elif fate in ("lost", "none"):
                log.info("receipt for trace %06d was lost (printer power or buffer)", trace)
                self.outstanding = None
        health = self.printer.health()
        if self.outstanding is not None and health.cutter_error:
            if health.cover_open or health.paper_out:
                return False
            log.info(
                "receipt for trace %06d lost in a jam: clearing the printer", self.outstanding[0]
            )
            self.printer.clear_and_recover()  # drop what the jam left; the receipt is reprinted
            if self.bugs.jam_receipt_not_reprinted:  # BUG: counted as printed anyway
                trace, copy = self.outstanding
                self.journal.append({"op": "receipt_printed", "trace": trace, "copy": copy})
            self.outstanding = None
            health = self.printer.health()
        if health.cutter_error and not health.cover_open and not health.paper_out:
            self.printer.clear_and_recover()
            health = self.printer.health()
        return health.ready and self.outstanding is None

    def _reprint_due(self) -> None:
        for txn in self.journal.state.receipts_due():
            if self.outstanding is not None and self.outstanding[0] == txn.trace:
                with self.print_lock:
                    if not self._printer_free():
                        return
                if txn.receipt_printed:
                    continue
            # whatever may have reached the paper before counts as the original: reprint a copy
            copy = txn.receipt_started and not self.bugs.jam_reprint_as_original
            self._print(txn, copy=copy, ecr=None)
            if self.outstanding is not None:
                return

    # -- background ----------------------------------------------------------------------------
    def _maintenance(self) -> None:
        """Idle-time duty: deliver owed reversals and print owed receipts, across boots."""
        while not self.stop.wait(self.sim.terminal.reversal_retry_s):
            if not self.txn_lock.acquire(blocking=False):
                continue  # an ECR command is running; it flushes reversals itself
            try:
                if self.journal.state.reversals_due():
                    self.flush_reversals()
                self._reprint_due()
            except Exception:  # keep the firmware alive; the evidence is in the log
                log.exception("maintenance step failed")
            finally:
                self.txn_lock.release()

    def _status_info(self, txn: Txn) -> zvt.StatusInfo:
        code = txn.result_code if txn.result_code is not None else RC_NO_RESPONSE
        if txn.kind == "sale" and txn.cancelled_by is not None:
            code = RC_ALREADY_REVERSED
        return zvt.StatusInfo(
            result_code=code,
            amount=txn.amount,
            currency=txn.currency,
            trace=txn.trace,
            receipt_no=txn.receipt_no,
            card_masked=txn.card_masked,
            tid=self.tid,
            order_ref=txn.order_ref,
            when=txn.when,
        )


@dataclass(frozen=True)
class _Card:
    pan: str
    expiry: str

    def __repr__(self) -> str:
        return f"_Card({mask_pan(self.pan)})"


def request_stan(request: dict[str, str]) -> int:
    return int(request.get("11", "0"))


def _ecr_serial_fd(state_dir: Path) -> int | None:
    """The ECR serial line: the launcher's pty master, inherited across power cycles."""
    value = os.environ.get("HIL_ECR_PTY_FD")
    if value is None:
        log.info("no ECR serial line handed down (%s); ZVT over TCP only", "HIL_ECR_PTY_FD")
        return None
    return int(value)


def main(argv: list[str] | None = None) -> int:
    rig, stop = start_device("terminal", argv, "simulated payment terminal (ZVT / ISO 8583)")
    firmware = Firmware(rig, stop)
    firmware.boot()
    firmware.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
