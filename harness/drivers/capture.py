"""Records the terminal<->acquirer-host link off the wire: one pcap per capture, plus every ISO
8583 message reassembled from it, live, so the history holds the wire's own account.

`LinkCapture` sniffs an interface with a scapy AsyncSniffer (a kernel BPF filter when libpcap can
compile one, else an lfilter on the TCP ports), drops loopback's second sighting of each packet,
appends each frame to the pcap as it arrives (the evidence survives a crash), reassembles every
TCP stream by sequence number and hands each complete message to `on_message` from the sniffer
thread, typically 0.3-0.4 ms after its last byte. `read_pcap` runs the same reassembly over a
saved pcap. Without the privilege to capture, `start()` warns and the capture is a no-op whose
result says why.
The one thing to know: a `WireMessage.t` is the harness's monotonic clock (the packet's kernel
wall-clock timestamp minus the wall-monotonic offset measured at start), taken when the message's
*last* byte crossed the wire; `on_message` runs on the sniffer thread, so keep it short. The pcap
holds the wire's bytes verbatim (test cards only: the rig's BIN allowlist); messages, summaries
and logs hold masked card numbers only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from scapy.arch.linux import L2ListenSocket, get_last_packet_timestamp
from scapy.config import conf
from scapy.data import (
    DLT_EN10MB,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_NULL,
    DLT_RAW,
    DLT_RAW_ALT,
    MTU,
)
from scapy.error import Scapy_Exception
from scapy.packet import Packet, Raw
from scapy.sendrecv import AsyncSniffer
from scapy.utils import RawPcapReader, RawPcapWriter

from harness.protocols import iso8583 as iso
from harness.protocols.cards import mask_pan
from harness.protocols.iso8583_scapy import PREFIX, frames_from_stream, prefix_error

log = logging.getLogger("harness.drivers.capture")

Direction = Literal["to_host", "from_host"]
FilterMode = Literal["bpf", "lfilter", "none"]

DUPLICATE_WINDOW_S = 0.05  # loopback's two sightings of a packet are microseconds apart
DUPLICATE_MEMORY = 1024  # recent packets remembered for de-duplication
MAX_PENDING = 256  # out-of-order segments held per stream before it is declared broken
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0
RECEIVE_BUFFER = 4 * 1024 * 1024  # kernel buffer for the packet socket: a slow moment drops nothing
_ETH_P_ALL = 0x0003
_SOL_PACKET = 263
_PACKET_STATISTICS = 6
_SO_RCVBUFFORCE = 33
_SEQ_MOD = 1 << 32
_ARPHRD_LOOPBACK = 772
_TCP = 6
_FIN, _SYN, _RST = 0x01, 0x02, 0x04
SNAPLEN = 262144  # loopback carries 64 KiB segments: never truncate one
# Bytes before the IP header for the link types without an ethertype to follow.
_LINK_HEADER = {
    DLT_NULL: 4,
    DLT_RAW: 0,
    DLT_RAW_ALT: 0,
    DLT_LINUX_SLL: 16,
    DLT_LINUX_SLL2: 20,
}


@dataclass(frozen=True)
class WireMessage:
    """One ISO 8583 message as the wire carried it (card masked; never the full number)."""

    t: float  # monotonic seconds, when its last byte was seen
    wall: str  # the same instant, UTC ISO 8601 with microseconds
    direction: Direction  # "to_host": terminal -> host (destination port is a configured port)
    src: str  # "ip:port"
    dst: str
    mti: str  # "????" when the body does not start with 4 digits
    stan: int | None
    response_code: str | None
    amount: int | None
    card_masked: str | None
    length: int  # body bytes (the length prefix's value)
    decode_error: str | None  # None = decoded; else why (bad field, truncated, broken stream)

    def summary(self) -> str:
        """One log-safe line."""
        parts = [self.direction, self.mti]
        if self.stan is not None:
            parts.append(f"stan={self.stan:06d}")
        if self.amount is not None:
            parts.append(f"amount={self.amount}")
        if self.response_code is not None:
            parts.append(f"rc={self.response_code}")
        if self.card_masked is not None:
            parts.append(f"pan={self.card_masked}")
        if self.decode_error is not None:
            parts.append(f"error={self.decode_error!r}")
        return " ".join(parts)


@dataclass(frozen=True)
class CaptureResult:
    """What a capture recorded. `ok=False`: it never ran (no privilege, no interface: `pcap` is
    None) or failed part way (what it got is kept); `reason` says which."""

    ok: bool
    reason: str
    messages: list[WireMessage]
    pcap: Path | None
    filter_mode: FilterMode = "none"
    packets: int = 0  # written to the pcap, after de-duplication
    duplicates: int = 0  # second sightings dropped (loopback shows each packet twice)
    dropped: int = 0  # packets the kernel dropped (socket buffer full): evidence incomplete
    clock_offset: float = 0.0  # wall - monotonic at start; read_pcap(..., clock_offset) reuses it
    latencies_s: list[float] = field(default_factory=list)  # per message: last byte -> delivered


# --- privilege ------------------------------------------------------------------------------


def _probe_packet_socket() -> None:
    """Open and close a raw packet socket: the one operation capture needs privilege for."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.close()


def capture_available(iface: str) -> tuple[bool, str]:
    """Whether this process can capture on `iface`, and in words why (not)."""
    if not hasattr(socket, "AF_PACKET"):
        return False, "packet capture needs Linux AF_PACKET sockets"
    try:
        socket.if_nametoindex(iface)
    except OSError:
        return False, f"interface {iface!r} does not exist"
    try:
        _probe_packet_socket()
    except PermissionError:
        return False, (
            f"no privilege to capture on {iface!r}: needs root or CAP_NET_RAW "
            f"(running as uid {os.geteuid()})"
        )
    except OSError as exc:
        return False, f"cannot open a packet socket on {iface!r}: {exc}"
    return True, f"can capture on {iface!r}"


def bpf_filter(ports: Iterable[int]) -> str:
    """The BPF expression for the link: `tcp port A or tcp port B`."""
    return " or ".join(f"tcp port {port}" for port in sorted(set(ports)))


def bpf_available(iface: str, expression: str) -> tuple[bool, str]:
    """Whether libpcap is present to compile `expression` for `iface` (scapy needs it for BPF)."""
    from scapy.arch.common import compile_filter

    try:
        compile_filter(expression, iface=iface)
    except (ImportError, OSError, Scapy_Exception) as exc:
        return False, str(exc)
    return True, "libpcap compiled the filter"


# --- the pipeline: de-duplicate, reassemble, dissect (no I/O, no threads) --------------------


def _wall(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="microseconds")


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _digits(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def dissect(
    body: bytes,
    *,
    t: float,
    wall: str,
    direction: Direction,
    src: str,
    dst: str,
) -> WireMessage:
    """One complete frame body to a `WireMessage`; a body that does not decode says why."""
    head = body[:4]
    mti = head.decode("ascii") if len(head) == 4 and head.isdigit() and head.isascii() else "????"
    try:
        msg = iso.decode(body)
    except iso.Iso8583Error as exc:
        return WireMessage(
            t, wall, direction, src, dst, mti, None, None, None, None, len(body), str(exc)
        )
    pan = msg.get("2")
    return WireMessage(
        t=t,
        wall=wall,
        direction=direction,
        src=src,
        dst=dst,
        mti=msg["t"],
        stan=_digits(msg.get("11")),
        response_code=msg.get("39"),
        amount=_digits(msg.get("4")),
        card_masked=mask_pan(pan) if pan is not None else None,
        length=len(body),
        decode_error=None,
    )


class _Duplicates:
    """Remembers recent frames: a capture that sees each packet twice (scapy on loopback without
    the packet type, or a pcap written that way) shows the same bytes microseconds apart.

    A genuine retransmission differs (IP id, TCP timestamp) and comes at least an RTO later.
    """

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def is_duplicate(self, frame: bytes, ts: float) -> bool:
        while self._seen and (
            len(self._seen) >= DUPLICATE_MEMORY
            or next(iter(self._seen.values())) < ts - DUPLICATE_WINDOW_S
        ):
            self._seen.popitem(last=False)
        first = self._seen.pop(frame, None)
        if first is not None and abs(ts - first) <= DUPLICATE_WINDOW_S:
            return True  # forgotten: a third identical copy would count as new
        self._seen[frame] = ts
        return False


@dataclass(frozen=True)
class _Segment:
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    flags: int
    payload: bytes


def _network_start(frame: bytes, linktype: int) -> tuple[int, int] | None:
    """(offset of the IP header, IP version) in a captured frame, or None when it has none."""
    if linktype == DLT_EN10MB:
        offset, ethertype = 14, int.from_bytes(frame[12:14], "big")
        while ethertype in (0x8100, 0x88A8):  # VLAN tags
            ethertype = int.from_bytes(frame[offset + 2 : offset + 4], "big")
            offset += 4
        version = {0x0800: 4, 0x86DD: 6}.get(ethertype)
        return (offset, version) if version else None
    start = _LINK_HEADER.get(linktype)
    if start is None or len(frame) <= start:
        return None
    version = frame[start] >> 4
    return (start, version) if version in (4, 6) else None


def _ports_of(frame: bytes, linktype: int) -> tuple[int, int] | None:
    """(source port, destination port) of a TCP frame, else None: the BPF filter's job."""
    where = _network_start(frame, linktype)
    if where is None:
        return None
    offset, version = where
    if version == 4:
        if len(frame) < offset + 20 or frame[offset + 9] != _TCP:
            return None
        offset += 4 * (frame[offset] & 0x0F)
    else:
        if len(frame) < offset + 40 or frame[offset + 6] != _TCP:
            return None  # IPv6 extension headers: not on a terminal link
        offset += 40
    if len(frame) < offset + 4:
        return None
    sport, dport = struct.unpack_from("!HH", frame, offset)
    return sport, dport


def _parse_segment(frame: bytes, linktype: int) -> _Segment | None:
    """The TCP segment in one captured frame (IPv4 or IPv6), or None for anything else."""
    where = _network_start(frame, linktype)
    if where is None:
        return None
    ip, version = where
    if version == 4:
        if len(frame) < ip + 20 or frame[ip + 9] != _TCP:
            return None
        if int.from_bytes(frame[ip + 6 : ip + 8], "big") & 0x3FFF:
            return None  # a fragment: TCP on a terminal link does not fragment (DF)
        tcp = ip + 4 * (frame[ip] & 0x0F)
        end = ip + int.from_bytes(frame[ip + 2 : ip + 4], "big")  # padding excluded
        src = socket.inet_ntop(socket.AF_INET, frame[ip + 12 : ip + 16])
        dst = socket.inet_ntop(socket.AF_INET, frame[ip + 16 : ip + 20])
    else:
        if len(frame) < ip + 40 or frame[ip + 6] != _TCP:
            return None
        tcp = ip + 40
        end = tcp + int.from_bytes(frame[ip + 4 : ip + 6], "big")
        src = socket.inet_ntop(socket.AF_INET6, frame[ip + 8 : ip + 24])
        dst = socket.inet_ntop(socket.AF_INET6, frame[ip + 24 : ip + 40])
    if len(frame) < tcp + 20:
        return None
    sport, dport, seq, _ack, offset_flags = struct.unpack_from("!HHIIH", frame, tcp)
    data = tcp + 4 * (offset_flags >> 12)
    return _Segment(src, sport, dst, dport, seq, offset_flags & 0xFF, frame[data:end])


@dataclass
class _Stream:
    """One direction of one TCP connection."""

    direction: Direction
    src: str
    dst: str
    next_seq: int | None = None
    buffer: bytearray = field(default_factory=bytearray)
    pending: dict[int, bytes] = field(default_factory=dict)  # seq -> payload, ahead of a gap
    broken: str | None = None


class _Reassembler:
    """TCP streams by 4-tuple and direction, in sequence order, cut into messages."""

    def __init__(self, ports: Collection[int], clock_offset: float) -> None:
        self._ports = frozenset(ports)
        self._offset = clock_offset
        self._streams: dict[tuple[str, int, str, int], _Stream] = {}

    def segment(self, seg: _Segment, ts: float) -> list[WireMessage]:
        """Feed one (de-duplicated) segment seen at wall time `ts`; the messages it completed."""
        if seg.dport in self._ports:
            direction: Direction = "to_host"
        elif seg.sport in self._ports:
            direction = "from_host"
        else:
            return []
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        stream = self._streams.get(key)
        if stream is None or seg.flags & _SYN:  # SYN: a new connection on this 4-tuple
            src, dst = _endpoint(seg.src, seg.sport), _endpoint(seg.dst, seg.dport)
            stream = self._streams[key] = _Stream(direction, src, dst)
        if seg.flags & _SYN:
            stream.next_seq = (seg.seq + 1) % _SEQ_MOD
        out: list[WireMessage] = []
        if seg.payload:
            out += self._data(stream, seg.seq, seg.payload, ts)
        if seg.flags & (_FIN | _RST):  # this direction is over
            out += self._close(stream, "reset" if seg.flags & _RST else "closed", ts)
            del self._streams[key]
        return out

    def _data(self, stream: _Stream, seq: int, payload: bytes, ts: float) -> list[WireMessage]:
        if stream.broken is not None:
            return []
        if stream.next_seq is None:  # joined mid-connection: trust the first segment seen
            stream.next_seq = seq
        stream.pending[seq] = payload
        advanced = False
        while stream.pending:
            for pseq in list(stream.pending):
                rel = (pseq - stream.next_seq) % _SEQ_MOD
                if rel >= _SEQ_MOD // 2:  # starts before next_seq: a retransmission, or overlap
                    data = stream.pending.pop(pseq)[_SEQ_MOD - rel :]
                elif rel == 0:
                    data = stream.pending.pop(pseq)
                else:
                    continue
                if data:
                    stream.buffer += data
                    stream.next_seq = (stream.next_seq + len(data)) % _SEQ_MOD
                    advanced = True
                break
            else:
                break  # only segments ahead of a gap remain
        if len(stream.pending) > MAX_PENDING:
            return [self._break(stream, f"gap in the stream: {len(stream.pending)} segments", ts)]
        return self._frames(stream, ts) if advanced else []

    def _frames(self, stream: _Stream, ts: float) -> list[WireMessage]:
        frames = frames_from_stream(bytes(stream.buffer))
        out = [self._message(stream, body, ts) for _, body in frames]
        if frames:
            offset, body = frames[-1]
            del stream.buffer[: offset + PREFIX + len(body)]
        problem = prefix_error(bytes(stream.buffer), 0)
        if problem is not None:
            out.append(self._break(stream, problem, ts))
        return out

    def _break(self, stream: _Stream, problem: str, ts: float) -> WireMessage:
        """The stream cannot be cut into messages any more (the host hangs up on it too)."""
        ignored = len(stream.buffer)
        msg = self._error(stream, f"stream broken: {problem} ({ignored} bytes ignored)", ts)
        stream.broken = problem
        stream.buffer.clear()
        stream.pending.clear()
        return msg

    def _close(self, stream: _Stream, how: str, ts: float) -> list[WireMessage]:
        if stream.broken is not None or not stream.buffer:
            return []
        length = int.from_bytes(stream.buffer[:PREFIX], "big") if len(stream.buffer) > 1 else 0
        got = max(0, len(stream.buffer) - PREFIX)
        return [
            self._error(stream, f"truncated: connection {how} after {got} of {length} bytes", ts)
        ]

    def _error(self, stream: _Stream, problem: str, ts: float) -> WireMessage:
        head = bytes(stream.buffer[PREFIX : PREFIX + 4])
        mti = head.decode("ascii") if len(head) == 4 and head.isdigit() else "????"
        length = int.from_bytes(stream.buffer[:PREFIX], "big") if len(stream.buffer) > 1 else 0
        return WireMessage(
            ts - self._offset,
            _wall(ts),
            stream.direction,
            stream.src,
            stream.dst,
            mti,
            None,
            None,
            None,
            None,
            length,
            problem,
        )

    def _message(self, stream: _Stream, body: bytes, ts: float) -> WireMessage:
        return dissect(
            body,
            t=ts - self._offset,
            wall=_wall(ts),
            direction=stream.direction,
            src=stream.src,
            dst=stream.dst,
        )


def _split_time(ts: object) -> tuple[int, int]:
    """A packet time (float or scapy's exact decimal) as whole seconds and nanoseconds."""
    nanos = round(Decimal(str(ts)) * 1_000_000_000)
    return nanos // 1_000_000_000, nanos % 1_000_000_000


def _pcap_records(path: Path) -> Iterator[tuple[bytes, int, float]]:
    """(frame, link type, wall time) of every record of a pcap or pcapng file."""
    with RawPcapReader(str(path)) as reader:
        for frame, meta in reader:
            if hasattr(meta, "tsresol"):  # pcapng: its own metadata record
                ng: Any = meta
                yield frame, int(ng.linktype), ((ng.tshigh << 32) | ng.tslow) / ng.tsresol
            else:
                scale = 1e-9 if reader.nano else 1e-6
                yield frame, int(reader.linktype), meta.sec + meta.usec * scale


def read_pcap(path: Path, ports: Collection[int], clock_offset: float = 0.0) -> list[WireMessage]:
    """Re-dissect a saved pcap (or pcapng), offline, exactly as the live capture did.

    `t` is the packet's wall time minus `clock_offset`: pass the live result's `clock_offset` to
    get the harness's monotonic times back; the default 0 leaves `t` as epoch seconds.
    """
    duplicates = _Duplicates()
    streams = _Reassembler(ports, clock_offset)
    messages: list[WireMessage] = []
    for frame, linktype, ts in _pcap_records(path):
        if duplicates.is_duplicate(frame, ts):
            continue
        seg = _parse_segment(frame, linktype)
        if seg is not None:
            messages += streams.segment(seg, ts)
    return messages


# --- the live capture -----------------------------------------------------------------------


class _LinkSocket(L2ListenSocket):
    """scapy's listening socket, minus the work nobody needs: frames come back undissected (the
    pipeline reads the headers itself, some 150 us per frame cheaper), and on loopback the
    outgoing copy of each packet (the packet socket sees it leave and arrive) is dropped here,
    exactly, by its packet type.
    """

    def __init__(self, iface: str, filter: str | None = None) -> None:
        super().__init__(iface=iface, type=_ETH_P_ALL, filter=filter)
        self.outgoing_copies = 0
        self.linktype = int(conf.l2types.layer2num.get(self.LL, DLT_EN10MB))
        self._loopback = self.ins.getsockname()[3] == _ARPHRD_LOOPBACK

    def recv_raw(self, x: int = MTU) -> tuple[type[Packet] | None, bytes | None, float | None]:
        frame, sa_ll, ts = self._recv_raw(self.ins, max(x, SNAPLEN))
        if self._loopback and sa_ll[2] == socket.PACKET_OUTGOING:
            self.outgoing_copies += 1
            return None, None, None
        if ts is None:
            ts = get_last_packet_timestamp(self.ins)
        return Raw, frame, ts


def _clock_offset() -> float:
    """time.time() - time.monotonic(), bracketed so the read itself adds no bias."""
    before = time.monotonic()
    wall = time.time()
    after = time.monotonic()
    return wall - (before + after) / 2


class LinkCapture:
    """Captures the terminal<->host link on `iface` (TCP `ports` = the host side) to `pcap_path`.

    Use as a context manager, or `start()` then `stop()`. `on_message` is called on the sniffer
    thread for each message as soon as its last byte is seen; an exception in it is logged and
    does not stop the capture; it must not call `stop()`. `prefer_bpf=False` forces the Python
    port filter.
    """

    def __init__(
        self,
        iface: str,
        ports: Collection[int],
        pcap_path: Path,
        on_message: Callable[[WireMessage], None] | None = None,
        *,
        prefer_bpf: bool = True,
        redact: Callable[[bytes], bytes] | None = None,
    ) -> None:
        if not ports:
            raise ValueError("LinkCapture needs at least one TCP port of the host link")
        self.iface = iface
        self.ports = frozenset(int(port) for port in ports)
        self.pcap_path = Path(pcap_path)
        self._on_message = on_message
        self._prefer_bpf = prefer_bpf
        self._redact = redact  # the pcap never holds a full card number (same-length masking)
        self._cond = threading.Condition()
        self._messages: list[WireMessage] = []
        self._latencies: list[float] = []
        self._packets = 0
        self._duplicates = 0
        self._started = threading.Event()
        self._socket: _LinkSocket | None = None
        self._sniffer: AsyncSniffer | None = None
        self._writer: RawPcapWriter | None = None
        self._dedup = _Duplicates()
        self._linktype = DLT_EN10MB
        self._streams: _Reassembler | None = None
        self._offset = 0.0
        self._mode: FilterMode = "none"
        self._reason = "not started"
        self._result: CaptureResult | None = None
        self._failure: str | None = None  # the first error on the sniffer thread

    # -- lifecycle

    def __enter__(self) -> LinkCapture:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def active(self) -> bool:
        """True while packets are being captured (False for a no-op capture)."""
        return self._sniffer is not None

    @property
    def filter_mode(self) -> FilterMode:
        return self._mode

    def start(self) -> None:
        """Open the capture; without privilege, warn and become a no-op (never raises for that)."""
        if self._sniffer is not None or self._result is not None:
            raise RuntimeError("a LinkCapture starts once")
        ok, why = capture_available(self.iface)
        if not ok:
            self._disable(why)
            return
        expression = bpf_filter(self.ports)
        bpf_ok, bpf_why = (
            bpf_available(self.iface, expression) if self._prefer_bpf else (False, "not requested")
        )
        try:
            if bpf_ok:
                sock = _LinkSocket(self.iface, filter=expression)
                self._mode = "bpf"
                self._reason = f"capturing on {self.iface} with BPF {expression!r}"
            else:
                sock = _LinkSocket(self.iface)
                self._mode = "lfilter"
                self._reason = (
                    f"capturing on {self.iface} with a Python filter on TCP ports "
                    f"{sorted(self.ports)} (no BPF: {bpf_why})"
                )
        except (OSError, Scapy_Exception) as exc:
            self._disable(f"cannot capture on {self.iface!r}: {exc}")
            return
        with contextlib.suppress(OSError):  # root only; else the default buffer stays
            sock.ins.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RECEIVE_BUFFER)
        self._socket = sock
        self._linktype = sock.linktype
        try:
            self.pcap_path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = RawPcapWriter(
                str(self.pcap_path), linktype=sock.linktype, snaplen=SNAPLEN, sync=True, nano=True
            )
            self._writer.write_header(None)  # a valid (empty) pcap exists from the start
        except OSError as exc:
            sock.close()
            self._socket = None
            self._disable(f"cannot write {self.pcap_path}: {exc}")
            return
        self._offset = _clock_offset()
        self._streams = _Reassembler(self.ports, self._offset)
        self._sniffer = AsyncSniffer(
            opened_socket=sock,
            store=False,
            prn=self._packet,
            lfilter=self._wanted if self._mode == "lfilter" else None,
            started_callback=self._started.set,
        )
        self._sniffer.start()
        if not self._started.wait(START_TIMEOUT_S):
            log.warning("capture on %s: sniffer thread slow to start", self.iface)
        log.info("%s -> %s", self._reason, self.pcap_path)

    def stop(self) -> CaptureResult:
        """Stop sniffing, read what the kernel still holds, close the pcap; idempotent."""
        if self._result is not None:
            return self._result
        sniffer, sock, writer = self._sniffer, self._socket, self._writer
        if sniffer is None or sock is None or writer is None:
            self._result = CaptureResult(False, self._reason, [], None)
            return self._result
        failure = self._failure
        try:
            if not self._started.wait(STOP_TIMEOUT_S):
                failure = "the sniffer thread never started"
            elif sniffer.running:
                sniffer.stop(join=False)
            elif failure is None:  # the loop ended by itself: scapy closed a failing socket
                failure = "the sniffer stopped early (its socket failed; see the log)"
            if sniffer.thread is not None:
                sniffer.thread.join(STOP_TIMEOUT_S)
                if sniffer.thread.is_alive():
                    failure = "sniffer thread did not stop"
            if sniffer.exception is not None:
                failure = f"sniffer failed: {sniffer.exception}"
        except Scapy_Exception as exc:
            failure = f"sniffer failed: {exc}"
        if failure is None and not sock.closed:
            self._drain(sock)
        dropped = _kernel_drops(sock)
        sock.close()
        writer.close()
        self._sniffer = self._socket = self._writer = None
        if dropped:
            log.warning("capture on %s: the kernel dropped %d packets", self.iface, dropped)
        if failure is not None:
            log.error("capture on %s: %s", self.iface, failure)
        with self._cond:
            self._result = CaptureResult(
                ok=failure is None,
                reason=failure or self._reason,
                messages=list(self._messages),
                pcap=self.pcap_path,
                filter_mode=self._mode,
                packets=self._packets,
                duplicates=self._duplicates + sock.outgoing_copies,
                dropped=dropped,
                clock_offset=self._offset,
                latencies_s=list(self._latencies),
            )
        log.info(
            "capture on %s stopped: %d messages, %d packets -> %s",
            self.iface,
            len(self._result.messages),
            self._packets,
            self.pcap_path,
        )
        return self._result

    # -- reading while it runs

    def messages(self) -> list[WireMessage]:
        """A snapshot of the messages so far."""
        with self._cond:
            return list(self._messages)

    def wait_for(
        self, predicate: Callable[[WireMessage], bool], timeout_s: float
    ) -> WireMessage | None:
        """The first message (seen so far or arriving within `timeout_s`) that matches."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            checked = 0
            while True:
                for msg in self._messages[checked:]:
                    if predicate(msg):
                        return msg
                checked = len(self._messages)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._result is not None:
                    return None
                self._cond.wait(remaining)

    # -- internals

    def _disable(self, why: str) -> None:
        self._mode = "none"
        self._reason = why
        log.warning("link capture disabled, nothing will be recorded: %s", why)

    def _wanted(self, pkt: Packet) -> bool:
        """The Python stand-in for the BPF filter: TCP to or from one of the ports."""
        ports = _ports_of(bytes(pkt.load), self._linktype)
        return ports is not None and (ports[0] in self.ports or ports[1] in self.ports)

    def _packet(self, pkt: Packet) -> None:
        """Sniffer thread: one frame in. An error here would make scapy close the socket and
        end the capture silently: it is logged and the result says so, and capture goes on."""
        try:
            self._record(pkt)
        except Exception as exc:
            if self._failure is None:
                self._failure = f"packet handling failed: {exc!r}"
                log.exception("capture on %s: %s", self.iface, self._failure)

    def _record(self, pkt: Packet) -> None:
        """The pcap first (evidence), then the messages."""
        frame, ts = bytes(pkt.load), float(pkt.time)
        if self._dedup.is_duplicate(frame, ts):
            self._duplicates += 1
            return
        writer, streams = self._writer, self._streams
        if writer is None or streams is None:
            return
        seconds, nanos = _split_time(pkt.time)
        written = self._redact(frame) if self._redact is not None else frame
        writer.write_packet(written, sec=seconds, usec=nanos)
        self._packets += 1
        seg = _parse_segment(frame, self._linktype)
        if seg is None:
            return
        for msg in streams.segment(seg, ts):
            self._deliver(msg)

    def _deliver(self, msg: WireMessage) -> None:
        latency = time.monotonic() - msg.t  # from the kernel's timestamp of its last byte
        if self._on_message is not None:
            try:
                self._on_message(msg)
            except Exception:
                log.exception("on_message failed for %s", msg.summary())
        with self._cond:
            self._messages.append(msg)
            self._latencies.append(latency)
            self._cond.notify_all()
        log.debug("wire %s (%.2f ms after its last byte)", msg.summary(), latency * 1e3)

    def _drain(self, sock: _LinkSocket) -> None:
        """Packets already in the socket when the sniffer stopped are evidence too."""
        while select.select([sock.ins], [], [], 0)[0]:
            try:
                pkt = sock.recv()
            except (OSError, ValueError, Scapy_Exception):
                return
            if pkt is None:
                continue
            if self._mode == "lfilter" and not self._wanted(pkt):
                continue
            self._packet(pkt)


def _kernel_drops(sock: _LinkSocket) -> int:
    """Packets the kernel dropped for this socket (PACKET_STATISTICS), 0 when unknown."""
    try:
        raw = sock.ins.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)
    except (OSError, AttributeError):
        return 0
    _packets, drops = struct.unpack("II", raw)
    return int(drops)
