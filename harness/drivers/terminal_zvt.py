"""The ECR side of ZVT: the harness plays the cash register and drives a payment terminal.

`ZvtTerminal` implements the `Terminal` protocol over a serial line (a device or pty path, DLE STX
framing with CRC and link ACK/NAK) or TCP (``socket://host:port``, raw APDUs), both through
pyserial. The conversation it speaks is written down in `harness.protocols.zvt`.

The one thing to know: a sale is PAID only when the terminal sent 04 0F with result 00 and then
06 0F; NOT_PAID only when it refused the command (84 xx 00) or ended it with 06 1E; everything else
(no final message in time, lost link, garbage, contradictions, an answer about another order or
amount) is UNKNOWN, returned and never raised, with the reason and the hex tail of what came in.
Commands whose result type cannot say "unknown" (status, register, repeat receipt) raise
`ZvtNoAnswer` instead of making an answer up; repeat receipt returns None only for 06 1E 83.

Timing: the terminal's 80 00 00 must come within `ack_timeout_s`; after it, every terminal message
(04 FF, 04 0F, 06 D1/D3) restarts a `timeout_s` wait for the next one, and the whole command is
capped at 3 x `timeout_s`. Each terminal message is answered 80 00 00 at once. On serial, a frame
unanswered by ACK 06 within 1 s, or answered NAK 15, is sent again (3 times at most); a good
frame received is answered ACK, a broken one NAK. Input left over from an earlier command is
logged and discarded before the next one is sent (a late 04 0F never counts for the next sale),
and a TCP stream left mid-APDU is closed and reopened to resync.

Evidence: with `log_path`, every unit sent or received is appended as one line
``<UTC time> <monotonic s> ECR>PT|PT>ECR|NOTE <hex>  # <what it is>`` and flushed before it is
acted on; incomplete input is written when the command ends, so the log is complete even when a
read times out. Card numbers are masked in the log and in every detail; UNKNOWN details and
exceptions name the log path.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import serial

from harness.closing import Closing
from harness.drivers.interfaces import (
    EndOfDayResult,
    Outcome,
    ReversalResult,
    SaleResult,
    Terminal,
    TerminalError,
    TerminalStatus,
    TransactionRecord,
)
from harness.protocols.cards import mask_pan
from harness.protocols.zvt import (
    ACK,
    ACK_APDU,
    CONFIG_INTERMEDIATE_STATUS,
    NAK,
    Abort,
    AbortRequest,
    Ack,
    Apdu,
    ApduDecoder,
    Authorization,
    BadFrame,
    Completion,
    EndOfDay,
    Frame,
    LinkAck,
    LinkNak,
    Nack,
    PrintLine,
    PtMessage,
    Registration,
    RepeatReceipt,
    ResultCode,
    ReversalRequest,
    SerialFrameDecoder,
    StatusEnquiry,
    StatusInfo,
    TextBlock,
    ZvtError,
    command_name,
    decode_apdu,
    frame,
    parse_pt_message,
    redact_pan,
    result_text,
)
from harness.rig import TerminalConfig
from harness.stamped_log import StampedLog

log = logging.getLogger(__name__)

POLL_S = 0.05  # read granularity: how soon an abort() or a deadline is noticed
LINK_ACK_S = 1.0  # serial: wait this long for the receiver's ACK 06 before retransmitting
RETRANSMISSIONS = 3  # serial: after the first attempt
TAIL_BYTES = 64  # how much of the received bytes an UNKNOWN detail quotes
BAUDRATE = 9600  # ZVT serial: 9600 8N2


class ZvtNoAnswer(TerminalError):
    """No definite answer: timeout, lost link, undecodable or contradictory bytes."""


class ZvtRefused(TerminalError):
    """The terminal refused the command (84 xx 00 or 06 1E) with `result_code`."""

    def __init__(self, message: str, result_code: int) -> None:
        super().__init__(message)
        self.result_code = result_code


class EvidenceError(OSError):
    """The byte log cannot be written: the run has no evidence, so it must fail loudly."""


class _LinkDown(Exception):
    """The connection failed: closed by the peer, a write failed, or no link ACK."""


@dataclass(frozen=True)
class _Garbled:
    """Received bytes that are not a ZVT APDU (kept in order with the good ones)."""

    reason: str
    raw: bytes


class _Evidence:
    """The append-only byte log: one timestamped hex line per unit sent or received."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._log = StampedLog(path)

    def where(self) -> str:
        return f" (log: {self.path})" if self.path is not None else ""

    def line(self, direction: str, data: bytes = b"", note: str = "") -> None:
        """Write one line and flush it; a failure to write evidence propagates."""
        text = f"{direction} {data.hex(' ')}" + (f"  # {note}" if note else "")
        try:
            log.debug("%s", self._log.write(text))
        except OSError as exc:
            raise EvidenceError(f"cannot write the ZVT log {self.path}: {exc}") from exc

    def close(self) -> None:
        self._log.close()


TX, RX, NOTE = "ECR>PT", "PT>ECR", "NOTE  "


class _Link:
    """One connection to the terminal: opens it, frames and unframes, logs every byte first.

    `rx_tail` is the end of what was received during the current command, as logged (card
    numbers masked): the hex an UNKNOWN detail quotes.
    """

    def __init__(self, url: str, evidence: _Evidence, write_timeout_s: float) -> None:
        self.url = url
        self.serial_mode = not url.startswith("socket://")
        self._evidence = evidence
        self._write_timeout_s = write_timeout_s
        self._port: Any = None
        self._fd: int | None = None
        self._apdus = ApduDecoder()
        self._frames = SerialFrameDecoder()
        self._inbox: deque[Apdu | _Garbled] = deque()
        self._link_replies: deque[LinkAck | LinkNak] = deque()
        self.rx_tail = bytearray()
        self.desynced = False

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        try:
            port = serial.serial_for_url(
                self.url,
                baudrate=BAUDRATE,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_TWO,
                timeout=0,  # reads take what is there; select() below bounds every wait
                write_timeout=self._write_timeout_s,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _LinkDown(f"cannot open {self.url}: {exc}") from exc
        try:
            self._fd = port.fileno()
        except (AttributeError, NotImplementedError, serial.SerialException, OSError):
            self._fd = None  # a URL handler without a descriptor: poll with a read timeout
            port.timeout = POLL_S
        sock = getattr(port, "_socket", None)  # pyserial's socket:// leaves Nagle on
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._port = port
        self._evidence.line(NOTE, note=f"opened {self.url}")

    def close(self, why: str = "closed") -> None:
        port, self._port = self._port, None
        if port is None:
            return
        _close_port(port, self.url)
        self._apdus.reset()
        self._frames.reset()
        self._inbox.clear()
        self._link_replies.clear()
        self._evidence.line(NOTE, note=f"{why}: {self.url}")

    def begin(self) -> None:
        """Start a command: discard (and log) anything stale, forget the last tail."""
        self.desynced = False
        while self._pump(0.0):
            pass
        stale = list(self._inbox)
        self._inbox.clear()
        self._link_replies.clear()
        if stale:
            names = ", ".join(str(item) if isinstance(item, Apdu) else "garbage" for item in stale)
            self._evidence.line(NOTE, note=f"discarded stale input before the command: {names}")
        self.rx_tail.clear()

    def end(self) -> None:
        """Finish a command: log an incomplete tail; resync the stream if it is out of step."""
        self._flush_pending()
        if self.desynced and not self.serial_mode:
            self.close("closed to resync the TCP stream")

    def _flush_pending(self) -> None:
        pending = self._frames.reset() if self.serial_mode else self._apdus.reset()
        if pending:
            self._rx(pending, "incomplete, discarded")
            self.desynced = True

    # -- sending ------------------------------------------------------------------------------

    def _write(self, data: bytes, note: str) -> None:
        if self._port is None:
            raise _LinkDown("the link is closed")
        self._evidence.line(TX, data, note)
        try:
            written = self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            self.close("write failed")
            raise _LinkDown(f"write failed: {exc}") from exc
        if written is not None and written != len(data):
            self.close("short write")
            raise _LinkDown(f"short write: {written} of {len(data)} bytes")

    def send(self, apdu: Apdu) -> None:
        """Send one APDU; on serial, until the receiver ACKs it (at most 1 + 3 attempts)."""
        raw = apdu.encode()
        name = command_name(apdu.cls, apdu.instr)
        if not self.serial_mode:
            self._write(raw, name)
            return
        data = frame(raw)
        for attempt in range(1 + RETRANSMISSIONS):
            self._link_replies.clear()
            note = name if attempt == 0 else f"{name}, retransmission {attempt}"
            self._write(data, note)
            deadline = time.monotonic() + LINK_ACK_S
            while not self._link_replies:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._evidence.line(NOTE, note=f"no link ACK within {LINK_ACK_S} s")
                    break
                self._pump(min(POLL_S, remaining))
            else:
                if isinstance(self._link_replies.popleft(), LinkAck):
                    return
                # NAK: retransmit
        raise _LinkDown(f"no link ACK for {name} after {1 + RETRANSMISSIONS} attempts")

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, deadline: float) -> Apdu | _Garbled | None:
        """The next APDU (or garbled unit) received, or None after at most one poll interval."""
        remaining = deadline - time.monotonic()
        if not self._inbox and remaining > 0:
            self._pump(min(POLL_S, remaining))
        return self._inbox.popleft() if self._inbox else None

    def _pump(self, wait_s: float) -> bool:
        """One bounded read, decoded and logged unit by unit before anything acts on it.

        Returns whether any byte came in.
        """
        port = self._port
        if port is None:
            raise _LinkDown("the link is closed")
        try:
            if self._fd is not None:
                ready, _, _ = select.select([self._fd], [], [], wait_s)
                data = port.read(65536) if ready else b""
            else:
                data = port.read(port.in_waiting or 1)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._flush_pending()
            self.close("link lost")
            raise _LinkDown(f"link lost: {exc}") from exc
        if not data:
            return False
        if self.serial_mode:
            for event in self._frames.feed(data):
                self._on_frame_event(event)
        else:
            for apdu, raw in self._apdus.feed_raw(data):
                self._rx(raw, str(apdu))
                self._inbox.append(apdu)
        return True

    def _rx(self, raw: bytes, note: str) -> None:
        """Log received bytes (card numbers masked) and keep them for the tail."""
        shown = redact_pan(raw)
        if shown != raw:
            note += " [card number masked in this log]"
        self._evidence.line(RX, shown, note)
        self.rx_tail += shown
        del self.rx_tail[:-TAIL_BYTES]

    def _on_frame_event(self, event: Frame | BadFrame | LinkAck | LinkNak) -> None:
        if isinstance(event, Frame):
            unit: Apdu | _Garbled
            try:
                unit = decode_apdu(event.apdu)
                name = str(unit)
            except ZvtError as exc:
                unit = _Garbled(f"frame is not an APDU: {exc}", event.apdu)
                name = unit.reason
            shown = redact_pan(event.apdu)
            if shown != event.apdu:  # re-frame so the logged frame still reads as one
                self._rx(frame(shown), f"{name} [card number masked in this log, CRC recomputed]")
            else:
                self._rx(event.raw, name)
            self._write(bytes([ACK]), "link ACK")
            self._inbox.append(unit)
        elif isinstance(event, BadFrame):
            self._rx(event.raw, event.reason)
            if event.in_frame:
                self._write(bytes([NAK]), "link NAK")
        else:
            self._rx(event.raw, "link ACK" if isinstance(event, LinkAck) else "link NAK")
            self._link_replies.append(event)


def _close_port(port: Any, url: str) -> None:
    """Close a pyserial port; for socket:// without the 0.3 s sleep pyserial 3.5 adds."""
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already reset by the peer
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        port._socket = None
        port.is_open = False
        return
    try:
        port.close()
    except (serial.SerialException, OSError) as exc:
        log.warning("closing %s: %s", url, exc)


@dataclass
class _Conversation:
    """What happened to one command: the replies, the final message, or why there was none."""

    name: str
    started: float
    sent: bool = False
    acked: bool = False
    refused: int | None = None  # 84 xx 00
    messages: list[PtMessage] = field(default_factory=list)
    final: Completion | Abort | None = None
    problem: str | None = None
    tail: bytes = b""

    @property
    def info(self) -> StatusInfo | None:
        infos = [m for m in self.messages if isinstance(m, StatusInfo)]
        return infos[-1] if infos else None

    @property
    def printout(self) -> tuple[str, ...]:
        lines: list[str] = []
        for message in self.messages:
            if isinstance(message, PrintLine):
                lines.append(message.text)
            elif isinstance(message, TextBlock):
                lines.extend(message.lines)
        return tuple(lines)


class ZvtTerminal(Closing):
    """A payment terminal driven over ZVT; see the module docstring for the outcome rules."""

    def __init__(
        self,
        port: str,
        tid: str,
        password: str = "000000",
        currency: int = 978,
        timeout_s: float = 30.0,
        ack_timeout_s: float = 5.0,
        log_path: Path | None = None,
        *,
        config_byte: int = CONFIG_INTERMEDIATE_STATUS,
    ) -> None:
        if len(password) != 6 or not password.isdigit():
            raise ValueError("password must be 6 digits")
        if not 0 < currency < 1000:
            raise ValueError(f"currency must be an ISO 4217 numeric code, got {currency}")
        if timeout_s <= 0 or ack_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        self.port = port
        self.tid = tid
        self.password = password
        self.currency = currency
        self.timeout_s = timeout_s
        self.ack_timeout_s = ack_timeout_s
        self.log_path = log_path
        self.config_byte = config_byte
        self._command_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._sale_running = False
        self._abort = threading.Event()
        self._last_printout: tuple[str, ...] = ()
        self._closed = False
        # called with (command, monotonic instant) when the terminal takes a command (its
        # 80 00 00): the instant it began working on it, which the bench turns into an event
        self.on_accepted: Callable[[str, float], None] | None = None
        self._evidence = _Evidence(log_path)
        self._link = _Link(port, self._evidence, ack_timeout_s)
        try:
            self._link.open()
        except _LinkDown as exc:
            self._evidence.close()
            raise ZvtNoAnswer(f"{exc}{self._evidence.where()}") from exc

    @property
    def last_printout(self) -> tuple[str, ...]:
        """Receipt lines the terminal sent for the ECR to print (06 D1 / 06 D3) last command."""
        return self._last_printout

    def drop_link(self) -> None:
        """Close the link at once, even mid-command: the ECR crashed or the cable was pulled.

        A running command then ends UNKNOWN (the link is lost); `reopen()` connects again.
        """
        self._evidence.line(NOTE, note="link dropped by the harness (ECR crash / cable pulled)")
        self._link.close()

    def reopen(self) -> None:
        """The ECR came back: open the link again (the byte log goes on)."""
        with self._command_lock:
            self._link.close()
            self._link = _Link(self.port, self._evidence, self.ack_timeout_s)
            try:
                self._link.open()
            except _LinkDown as exc:
                raise ZvtNoAnswer(f"{exc}{self._evidence.where()}") from exc

    def close(self) -> None:
        """Close the link and the log (waits for a running command to end)."""
        with self._command_lock:
            self._closed = True
            self._link.close()
            self._evidence.close()

    # -- the Terminal protocol ----------------------------------------------------------------

    def register(self) -> TerminalStatus:
        command = Registration(self.password, self.config_byte, self.currency).to_apdu()
        conv = self._run("registration", command)
        if isinstance(conv.final, Completion):
            tid = conv.final.tid
            detail = "registered" + self._tid_remark(tid)
            if conv.final.status_byte is not None:
                detail += f", status byte 0x{conv.final.status_byte:02X}"
            return TerminalStatus(0, tid, detail)
        code = self._refusal_code(conv)
        if code is not None:
            return TerminalStatus(code, None, f"registration refused: {_code(code)}")
        raise ZvtNoAnswer(self._why(conv))

    def status(self) -> TerminalStatus:
        conv = self._run("status enquiry", StatusEnquiry(self.password).to_apdu())
        info = conv.info
        if isinstance(conv.final, Completion):
            if info is None or info.result_code is None:
                raise ZvtNoAnswer(self._why(conv, "06 0F without a 04 0F result code"))
            detail = result_text(info.result_code) + self._tid_remark(info.tid)
            return TerminalStatus(info.result_code, info.tid, detail)
        code = self._refusal_code(conv)
        if code is not None:
            return TerminalStatus(code, info.tid if info else None, f"not ready: {_code(code)}")
        raise ZvtNoAnswer(self._why(conv))

    def sale(self, order_id: str, amount: int) -> SaleResult:
        """One sale, judged PAID, NOT_PAID or UNKNOWN as the module docstring says.

        Never raises for anything the terminal or the link does; ValueError only for arguments
        that cannot be sent (then nothing reached the terminal).
        """
        if not 0 < amount < 10**12:
            raise ValueError(f"amount must be 1..999999999999 minor units, got {amount}")
        command = Authorization(amount, self.currency, order_id).to_apdu()
        with self._state_lock:
            self._abort.clear()
            self._sale_running = True
        try:
            conv = self._run(f"sale order={order_id} amount={amount}", command, abortable=True)
        finally:
            with self._state_lock:
                self._sale_running = False
                self._abort.clear()
        outcome, detail = self._judge_sale(conv, order_id, amount)
        info = conv.info
        code: int | None
        if isinstance(conv.final, Abort) and outcome is Outcome.NOT_PAID:
            code = conv.final.result_code
        elif conv.refused is not None and outcome is Outcome.NOT_PAID:
            code = conv.refused
        else:
            code = info.result_code if info else None
        result = SaleResult(
            order_id=order_id,
            amount=amount,
            currency=self.currency,
            outcome=outcome,
            result_code=code,
            trace=info.trace if info else None,
            receipt_no=info.receipt_no if info else None,
            terminal_id=info.tid if info else None,
            card_masked=_masked(info.card_masked) if info else None,
            detail=detail,
            started=conv.started,
            ended=time.monotonic(),
        )
        self._evidence.line(NOTE, note=f"sale order={order_id}: {outcome.value}, {detail}")
        return result

    def reverse(self, receipt_no: int) -> ReversalResult:
        conv = self._run(
            f"reversal receipt={receipt_no}", ReversalRequest(self.password, receipt_no).to_apdu()
        )
        info = conv.info
        if isinstance(conv.final, Completion):
            if info is not None and info.result_code == 0:
                return ReversalResult(Outcome.PAID, 0, info.receipt_no, "reversed")
            why = "06 0F without a 04 0F" if info is None else "04 0F non-zero before 06 0F"
            return ReversalResult(Outcome.UNKNOWN, None, None, self._why(conv, why))
        code = self._refusal_code(conv)
        if code is not None:
            return ReversalResult(Outcome.NOT_PAID, code, None, f"not reversed: {_code(code)}")
        return ReversalResult(Outcome.UNKNOWN, None, None, self._why(conv))

    def repeat_receipt(self, trace: int | None = None) -> TransactionRecord | None:
        command = RepeatReceipt(self.password, trace).to_apdu()
        conv = self._run(f"repeat receipt trace={trace}", command)
        info = conv.info
        if isinstance(conv.final, Completion):
            if info is None or None in (info.trace, info.amount, info.result_code):
                raise ZvtNoAnswer(self._why(conv, "no 04 0F with 27, 04 and 0B before 06 0F"))
            assert info.trace is not None and info.amount is not None
            assert info.result_code is not None
            if trace is not None and info.trace != trace:
                raise ZvtNoAnswer(
                    self._why(conv, f"asked for trace {trace}, got trace {info.trace}")
                )
            return TransactionRecord(
                trace=info.trace,
                receipt_no=info.receipt_no,
                amount=info.amount,
                currency=info.currency if info.currency is not None else self.currency,
                result_code=info.result_code,
                order_ref=info.order_ref,
                card_masked=_masked(info.card_masked),
                terminal_id=info.tid,
            )
        code = self._refusal_code(conv)
        if isinstance(conv.final, Abort) and code == ResultCode.FUNCTION_NOT_POSSIBLE:
            return None
        if code is not None:
            raise ZvtRefused(f"repeat receipt refused: {_code(code)}{self._where()}", code)
        raise ZvtNoAnswer(self._why(conv))

    def end_of_day(self) -> EndOfDayResult:
        conv = self._run("end of day", EndOfDay(self.password).to_apdu())
        info = conv.info
        count, total, remark = _totals(info)
        currency = info.currency if info and info.currency is not None else self.currency
        if isinstance(conv.final, Completion):
            if info is None or info.result_code is None:
                why = "06 0F without a 04 0F result code"
                return EndOfDayResult(None, 0, 0, self.currency, self._why(conv, why))
            detail = result_text(info.result_code) + remark
            return EndOfDayResult(info.result_code, count, total, currency, detail)
        code = self._refusal_code(conv)
        if code is not None:
            return EndOfDayResult(code, count, total, currency, f"{_code(code)}{remark}")
        return EndOfDayResult(None, 0, 0, self.currency, self._why(conv))

    def abort(self) -> bool:
        """Ask the running sale to send 06 B0 (from any thread); False if no sale is running.

        The sale's own thread writes the 06 B0 within POLL_S, so the port has a single writer;
        the sale then ends as the terminal says (06 1E 6C if the abort took effect).
        """
        with self._state_lock:
            if not self._sale_running:
                return False
            self._abort.set()
            return True

    # -- the conversation ---------------------------------------------------------------------

    def _run(self, name: str, command: Apdu, *, abortable: bool = False) -> _Conversation:
        with self._command_lock:
            conv = _Conversation(name, time.monotonic())
            self._evidence.line(NOTE, note=f"command: {name}")
            try:
                self._converse(conv, command, abortable)
            except EvidenceError:
                raise
            except Exception as exc:  # a driver bug must still end as "no answer", never raise
                log.exception("%s: unexpected error", name)
                conv.problem = f"driver error: {exc!r}"
            finally:
                try:
                    self._link.end()
                except _LinkDown as exc:
                    conv.problem = conv.problem or str(exc)
                conv.tail = bytes(self._link.rx_tail)
                self._last_printout = conv.printout
            if conv.problem:
                self._evidence.line(NOTE, note=f"{name}: {conv.problem}")
            return conv

    def _converse(self, conv: _Conversation, command: Apdu, abortable: bool) -> None:
        link = self._link
        if self._closed:
            conv.problem = f"{command} not sent: the driver is closed"
            return
        try:
            if not link.is_open:
                link.open()
            try:
                link.begin()
            except _LinkDown:  # the peer closed the idle link: one fresh connection
                link.open()
                link.begin()
            link.send(command)
        except _LinkDown as exc:
            conv.problem = f"{command} not sent: {exc}"
            return
        conv.sent = True
        cap = conv.started + 3 * self.timeout_s
        deadline = min(time.monotonic() + self.ack_timeout_s, cap)
        abort_acks = 0
        abort_sent = False
        try:
            while True:
                if abortable and conv.acked and not abort_sent and self._abort.is_set():
                    link.send(AbortRequest().to_apdu())
                    abort_sent = True
                    abort_acks += 1
                item = link.receive(deadline)
                now = time.monotonic()
                if item is None:
                    if now < deadline:
                        continue
                    conv.problem = self._timeout_text(conv, now >= cap)
                    return
                if isinstance(item, _Garbled):
                    link.desynced = True
                    conv.problem = f"undecodable reply: {item.reason}"
                    return
                try:
                    message = parse_pt_message(item)
                except ZvtError as exc:
                    link.desynced = True
                    conv.problem = f"undecodable {item}: {exc}"
                    return
                if isinstance(message, Ack | Nack):
                    if not conv.acked:
                        if isinstance(message, Nack):
                            conv.refused = message.code
                            return
                        conv.acked = True
                        deadline = min(now + self.timeout_s, cap)
                        self._accepted(conv.name, now)
                    elif abort_acks:
                        abort_acks -= 1
                        if isinstance(message, Nack):
                            self._evidence.line(NOTE, note=f"abort refused: 84 {message.code:02X}")
                    else:
                        conv.problem = f"unexpected {item} in the middle of the command"
                        return
                    continue
                if not conv.acked:
                    # The end of an earlier conversation (e.g. the ECR restarted while the
                    # terminal was finishing a sale): acknowledge it so the terminal moves on,
                    # keep it out of this command, and keep waiting for our own 80 00 00.
                    self._evidence.line(NOTE, note=f"late {item} from an earlier command: ACKed")
                    link.send(ACK_APDU)
                    continue
                conv.messages.append(message)
                link.send(ACK_APDU)
                if isinstance(message, Completion | Abort):
                    conv.final = message
                    return
                deadline = min(now + self.timeout_s, cap)
        except _LinkDown as exc:
            conv.problem = str(exc)

    def _accepted(self, name: str, t: float) -> None:
        if self.on_accepted is not None:
            try:
                self.on_accepted(name, t)
            except Exception:  # a listener's bug must not end the command
                log.exception("on_accepted listener failed for %s", name)

    def _timeout_text(self, conv: _Conversation, capped: bool) -> str:
        if not conv.acked:
            return f"no 80 00 00 within {self.ack_timeout_s} s"
        if capped:
            return f"no final message (06 0F / 06 1E) within the {3 * self.timeout_s} s cap"
        last = "80 00 00"
        if conv.messages:
            cls, instr = getattr(conv.messages[-1], "COMMAND", (0, 0))
            last = f"{cls:02X} {instr:02X} ({command_name(cls, instr)})"
        last = f"after {last}"
        return f"no final message (06 0F / 06 1E) within {self.timeout_s} s {last}"

    # -- judging ------------------------------------------------------------------------------

    def _judge_sale(self, conv: _Conversation, order_id: str, amount: int) -> tuple[Outcome, str]:
        info = conv.info
        if isinstance(conv.final, Completion):
            if info is None:
                return Outcome.UNKNOWN, self._why(conv, "06 0F without a 04 0F result")
            if info.result_code != 0:
                said = "no result code" if info.result_code is None else _code(info.result_code)
                why = f"04 0F said {said} but the terminal completed with 06 0F"
                return Outcome.UNKNOWN, self._why(conv, why)
            mismatch = self._mismatch(info, order_id, amount)
            if mismatch:
                return Outcome.UNKNOWN, self._why(conv, mismatch)
            return Outcome.PAID, f"approved, trace {info.trace}, receipt {info.receipt_no}"
        if isinstance(conv.final, Abort):
            code = conv.final.result_code
            if code == 0:
                return Outcome.UNKNOWN, self._why(conv, "06 1E with result code 00")
            detail = f"not paid: {_code(code)}"
            if info is not None and info.result_code == 0:
                detail += f" (after a 04 0F that said approved, trace {info.trace})"
            return Outcome.NOT_PAID, detail
        if conv.refused:
            return Outcome.NOT_PAID, f"terminal refused the sale: 84 {conv.refused:02X} 00"
        if conv.refused == 0:
            return Outcome.UNKNOWN, self._why(conv, "refused with 84 00 00 (no reason)")
        return Outcome.UNKNOWN, self._why(conv)

    def _mismatch(self, info: StatusInfo, order_id: str, amount: int) -> str | None:
        """Why a 04 0F is not about this sale (a stale or misrouted answer), or None."""
        if info.order_ref is not None and info.order_ref != order_id:
            return f"04 0F is for order {info.order_ref!r}, not {order_id!r}"
        if info.amount is not None and info.amount != amount:
            return f"04 0F is for amount {info.amount}, not {amount}"
        if info.currency is not None and info.currency != self.currency:
            return f"04 0F is in currency {info.currency}, not {self.currency}"
        return None

    def _refusal_code(self, conv: _Conversation) -> int | None:
        """The code of a definite refusal (06 1E or 84 xx 00), if that is how the command ended."""
        if isinstance(conv.final, Abort) and conv.final.result_code != 0:
            return conv.final.result_code
        if conv.refused:
            return conv.refused
        return None

    def _tid_remark(self, tid: str | None) -> str:
        if tid is not None and tid != self.tid:
            return f" (terminal reports TID {tid}, the rig says {self.tid})"
        return ""

    def _where(self) -> str:
        return self._evidence.where()

    def _why(self, conv: _Conversation, problem: str | None = None) -> str:
        reason = problem or conv.problem or "no final message"
        tail = conv.tail.hex(" ") if conv.tail else "nothing"
        return f"{conv.name}: {reason}; received tail: {tail}{self._where()}"


def _code(code: int) -> str:
    return f"0x{code:02X} ({result_text(code)})"


def _masked(card: str | None) -> str | None:
    if card is None or "*" in card:
        return card
    return mask_pan(card)


def _totals(info: StatusInfo | None) -> tuple[int, int, str]:
    """(count, total, remark) from an end-of-day 04 0F; the 04 amount wins over BMP 60."""
    if info is None:
        return 0, 0, ""
    count = info.totals_count or 0
    total = info.amount if info.amount is not None else info.totals_amount or 0
    remark = ""
    if None not in (info.totals_amount, info.amount) and info.amount != info.totals_amount:
        remark = f"; BMP 04 total {info.amount} differs from BMP 60 {info.totals_amount}"
    return count, total, remark


def open_zvt_terminal(
    config: TerminalConfig, port: str | None = None, log_path: Path | None = None
) -> ZvtTerminal:
    """A ZvtTerminal from the rig's [terminal] section; `port` overrides it (e.g. for "sim")."""
    url = port or config.port
    if url == "sim":
        raise ValueError(
            'terminal port "sim" must be resolved to the simulated terminal\'s address first'
        )
    return ZvtTerminal(
        url,
        config.tid,
        password=config.password,
        currency=config.currency,
        timeout_s=config.timeout_s,
        log_path=log_path,
    )


if TYPE_CHECKING:

    def _is_a_terminal(driver: ZvtTerminal) -> Terminal:
        return driver  # mypy proves ZvtTerminal implements the Terminal protocol
