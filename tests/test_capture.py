"""The link capture: real traffic to the simulated host on lo, recorded, reassembled, re-read.

The live tests need the privilege to capture (root or CAP_NET_RAW) and skip with the reason
otherwise; the reassembly, dissector and no-privilege tests run anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, Ether
from scapy.packet import Packet, Raw
from scapy.utils import rdpcap, wrpcap, wrpcapng

from harness.drivers import capture as capture_mod
from harness.drivers.capture import (
    CaptureResult,
    LinkCapture,
    WireMessage,
    bpf_available,
    bpf_filter,
    capture_available,
    read_pcap,
)
from harness.protocols import iso8583 as iso
from harness.protocols.cards import mask_pan, with_luhn
from harness.protocols.iso8583_scapy import (
    Iso8583,
    bind_iso8583,
    frames_from_stream,
    prefix_error,
    unbind_iso8583,
)
from harness.rig import Address, load_rig
from tests.simrig import make_sim_rig

log = logging.getLogger("tests.test_capture")

PAN = with_luhn("476173000000001")
TID = "29330001"
MID = "POSHILMERCHANT1"
READY_S = 10.0
IO_TIMEOUT_S = 3.0
SEEN_S = 2.0  # how long the capture may take to report a message the client already has
LATENCY_BOUND_S = 0.1

CAN_CAPTURE, WHY_NOT = capture_available("lo")
live = pytest.mark.skipif(not CAN_CAPTURE, reason=f"live capture impossible here: {WHY_NOT}")


def sale(stan: int, amount: int = 1234) -> dict[str, str]:
    return iso.sale_request(PAN, "3012", amount, 978, stan, TID, MID, datetime.now())


# --- the simulated host, and a plain socket client -------------------------------------------


@dataclass
class Host:
    address: Address
    proc: subprocess.Popen[bytes]

    def connect(self) -> socket.socket:
        sock = socket.create_connection(
            (self.address.host, self.address.port), timeout=IO_TIMEOUT_S
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    tmp = tmp_path_factory.mktemp("capture-host")
    rig_path = make_sim_rig(tmp)
    address = load_rig(rig_path).require_sim().host.listen
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.sim.host", "--rig", str(rig_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + READY_S
        while True:
            try:
                socket.create_connection((address.host, address.port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"sim host not listening on {address}") from None
                time.sleep(0.02)
        yield Host(address, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def receive(sock: socket.socket, decoder: iso.FrameDecoder, count: int = 1) -> list[dict[str, str]]:
    bodies: list[bytes] = []
    while len(bodies) < count:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("host closed the connection")
        bodies += decoder.feed(data)
    return [iso.decode(body) for body in bodies]


def exchange(sock: socket.socket, msg: dict[str, str]) -> dict[str, str]:
    sock.sendall(iso.encode(msg))
    return receive(sock, iso.FrameDecoder())[0]


def assert_no_full_pan(messages: list[WireMessage]) -> None:
    for msg in messages:
        assert PAN not in repr(msg) and PAN not in msg.summary()


# --- live: real traffic on lo ------------------------------------------------------------------


@live
def test_sale_and_reversal_are_recorded_both_ways_live_and_in_the_pcap(
    host: Host, tmp_path: Path
) -> None:
    pcap = tmp_path / "link.pcap"
    fired: list[tuple[WireMessage, float]] = []

    def on_message(msg: WireMessage) -> None:
        fired.append((msg, time.monotonic()))

    began = time.monotonic()
    with LinkCapture("lo", [host.address.port], pcap, on_message) as cap:
        with host.connect() as sock:
            request = sale(stan=101)
            answer = exchange(sock, request)
            reversal = iso.reversal_request(request, iso.REASON_NO_RESPONSE, repeat=False)
            reversal_answer = exchange(sock, reversal)
            assert cap.wait_for(lambda m: m.mti == "0410" and m.stan == 101, SEEN_S)
        result = cap.stop()
    ended = time.monotonic()

    assert result.ok, result.reason
    assert result.filter_mode in ("bpf", "lfilter")
    assert result.duplicates > 0, "loopback shows every packet twice; none was de-duplicated"
    assert result.dropped == 0
    mine = [m for m in result.messages if m.stan == 101]
    assert [(m.mti, m.direction) for m in mine] == [
        ("0200", "to_host"),
        ("0210", "from_host"),
        ("0400", "to_host"),
        ("0410", "from_host"),
    ]
    assert [m.response_code for m in mine] == [None, answer["39"], "98", reversal_answer["39"]]
    assert answer["39"] == "00"
    assert all(m.amount == 1234 and m.decode_error is None for m in mine)
    assert mine[0].card_masked == mask_pan(PAN) and mine[2].card_masked == mask_pan(PAN)
    assert mine[1].card_masked is None
    assert mine[0].dst == str(host.address) and mine[1].src == str(host.address)
    assert mine[0].src == mine[1].dst
    times = [m.t for m in mine]
    assert began < times[0] < times[1] < times[2] < times[3] < ended
    assert all(datetime.fromisoformat(m.wall).tzinfo is not None for m in mine)
    assert_no_full_pan(result.messages)

    # on_message fired live, once per message, shortly after each message's last byte.
    assert [m for m, _ in fired] == result.messages
    latencies = [at - m.t for m, at in fired]
    assert all(0 <= lat < LATENCY_BOUND_S for lat in latencies), latencies
    log.info(
        "on_message latency: p50 %.2f ms, max %.2f ms over %d messages (%s)",
        statistics.median(latencies) * 1e3,
        max(latencies) * 1e3,
        len(latencies),
        result.filter_mode,
    )

    # The pcap is on disk, re-reads with scapy and re-dissects to the same messages.
    assert result.pcap == pcap and pcap.stat().st_size > 24
    packets = rdpcap(str(pcap))
    assert len(packets) == result.packets
    reread = read_pcap(pcap, [host.address.port], result.clock_offset)
    assert_same_messages(reread, result.messages)
    bind_iso8583([host.address.port])
    try:
        summaries = [p.summary() for p in rdpcap(str(pcap))]
        shown = "".join(str(p.show(dump=True)) for p in rdpcap(str(pcap)))
    finally:
        unbind_iso8583([host.address.port])
    assert any("ISO8583 0200 stan=000101" in s for s in summaries)
    assert any("ISO8583 0410 stan=000101" in s for s in summaries)
    assert mask_pan(PAN) in shown
    assert PAN not in shown and not any(PAN in s for s in summaries)


def assert_same_messages(got: list[WireMessage], want: list[WireMessage]) -> None:
    """Equal, but for `t`, which the pcap keeps to the nanosecond."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.t == pytest.approx(b.t, abs=1e-6)
        assert {**a.__dict__, "t": 0} == {**b.__dict__, "t": 0}


@live
def test_a_split_frame_and_two_frames_in_one_segment_are_both_dissected(
    host: Host, tmp_path: Path
) -> None:
    pcap = tmp_path / "split.pcap"
    port = host.address.port
    with LinkCapture("lo", [port], pcap) as cap, host.connect() as sock:
        framed = iso.encode(sale(stan=201))
        sock.sendall(framed[:9])  # TCP_NODELAY: two writes, two segments
        time.sleep(0.03)
        sock.sendall(framed[9:])
        decoder = iso.FrameDecoder()
        assert receive(sock, decoder)[0]["11"] == "000201"
        both = iso.encode(sale(stan=202)) + iso.encode(sale(stan=203))
        sock.sendall(both)
        answers = receive(sock, decoder, 2)
        assert [a["11"] for a in answers] == ["000202", "000203"]
        assert cap.wait_for(lambda m: m.mti == "0210" and m.stan == 203, SEEN_S)
        client = sock.getsockname()[1]
        result = cap.stop()

    assert result.ok, result.reason
    mine = [m for m in result.messages if m.stan in (201, 202, 203)]
    assert [(m.mti, m.stan) for m in mine if m.direction == "to_host"] == [
        ("0200", 201),
        ("0200", 202),
        ("0200", 203),
    ]
    assert all(m.decode_error is None for m in mine)
    assert len([m for m in mine if m.mti == "0210"]) == 3
    # The wire really carried the split and the pair: the request's segments in the pcap.
    sizes = [
        (len(p[TCP].payload), float(p.time))
        for p in rdpcap(str(pcap))
        if TCP in p and p[TCP].sport == client and len(p[TCP].payload)
    ]
    assert [size for size, _ in sizes] == [9, len(framed) - 9, len(both)]
    split_request = mine[0]
    assert split_request.t == pytest.approx(sizes[1][1] - result.clock_offset, abs=1e-6)
    pair = [m for m in mine if m.stan in (202, 203) and m.direction == "to_host"]
    assert pair[0].t == pair[1].t  # two messages completed by the same segment
    assert_same_messages(read_pcap(pcap, [port], result.clock_offset), result.messages)


@live
@pytest.mark.parametrize("mode", ["bpf", "lfilter"])
def test_both_filter_paths_capture_only_the_link(host: Host, tmp_path: Path, mode: str) -> None:
    if mode == "bpf":
        ok, why = bpf_available("lo", bpf_filter([host.address.port]))
        if not ok:
            pytest.skip(f"BPF path needs libpcap (Debian libpcap0.8): {why}")
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    pcap = tmp_path / f"{mode}.pcap"
    with (
        other,
        LinkCapture("lo", [host.address.port], pcap, prefer_bpf=mode == "bpf") as cap,
    ):
        with socket.create_connection(other.getsockname(), timeout=IO_TIMEOUT_S) as noise:
            noise.sendall(b"not the host link")
        with host.connect() as sock:
            assert exchange(sock, sale(stan=301))["39"] == "00"
            assert cap.wait_for(lambda m: m.mti == "0210" and m.stan == 301, SEEN_S)
        result = cap.stop()
    assert result.ok and result.filter_mode == mode, result.reason
    assert ("with BPF" in result.reason) == (mode == "bpf")
    ports = {host.address.port}
    for pkt in rdpcap(str(pcap)):
        assert {pkt[TCP].sport, pkt[TCP].dport} & ports, pkt.summary()


@live
def test_on_message_latency_stays_low_over_many_exchanges(
    host: Host, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """The harness schedules faults from on_message: its delay after the last byte matters."""
    fired: list[float] = []
    with (
        LinkCapture(
            "lo",
            [host.address.port],
            tmp_path / "latency.pcap",
            lambda msg: fired.append(time.monotonic() - msg.t),
        ) as cap,
        host.connect() as sock,
    ):
        for stan in range(601, 621):
            exchange(sock, sale(stan=stan))
            time.sleep(0.005)  # a terminal's pace, not a flood
        assert cap.wait_for(lambda m: m.mti == "0210" and m.stan == 620, SEEN_S)
    assert len(fired) == 40
    p50, worst = statistics.median(fired), max(fired)
    record_property("on_message_latency_p50_ms", round(p50 * 1e3, 3))
    record_property("on_message_latency_max_ms", round(worst * 1e3, 3))
    log.info(
        "on_message latency over 40 messages: p50 %.2f ms, max %.2f ms", p50 * 1e3, worst * 1e3
    )
    assert min(fired) >= 0 and worst < LATENCY_BOUND_S and p50 < LATENCY_BOUND_S / 10


@live
def test_a_failing_on_message_does_not_stop_the_capture(host: Host, tmp_path: Path) -> None:
    def explode(msg: WireMessage) -> None:
        raise RuntimeError("callback bug")

    with LinkCapture("lo", [host.address.port], tmp_path / "c.pcap", explode) as cap:
        with host.connect() as sock:
            exchange(sock, sale(stan=401))
            exchange(sock, sale(stan=402))
        assert cap.wait_for(lambda m: m.mti == "0210" and m.stan == 402, SEEN_S)
    assert cap.stop().ok


@live
def test_a_failure_inside_the_capture_is_reported_and_the_pcap_kept(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(frame: bytes, linktype: int) -> None:
        raise RuntimeError("dissector bug")

    monkeypatch.setattr(capture_mod, "_parse_segment", broken)
    pcap = tmp_path / "bug.pcap"
    with LinkCapture("lo", [host.address.port], pcap) as cap, host.connect() as sock:
        exchange(sock, sale(stan=451))
    result = cap.stop()
    assert (
        not result.ok and "packet handling failed: RuntimeError('dissector bug')" in result.reason
    )
    assert result.packets > 0 and len(rdpcap(str(pcap))) == result.packets


_CAPTURE_THEN_HANG = """
import socket, sys, time
from datetime import datetime
from pathlib import Path
from harness.drivers.capture import LinkCapture
from harness.protocols import iso8583 as iso
from harness.protocols.cards import with_luhn
port = int(sys.argv[2])
cap = LinkCapture("lo", [port], Path(sys.argv[1]))
cap.start()
with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
    pan = with_luhn("476173000000001")
    when = datetime.now()
    sale = iso.sale_request(pan, "3012", 1234, 978, 501, "29330001", "POSHILMERCHANT1", when)
    sock.sendall(iso.encode(sale))
    decoder = iso.FrameDecoder()
    while not decoder.feed(sock.recv(4096)):
        pass
assert cap.wait_for(lambda m: m.mti == "0210", 3)
sys.stdout.write("captured\\n")
sys.stdout.flush()
time.sleep(60)
"""


@live
def test_the_pcap_survives_the_capturing_process_being_killed(host: Host, tmp_path: Path) -> None:
    pcap = tmp_path / "killed.pcap"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CAPTURE_THEN_HANG, str(pcap), str(host.address.port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"captured\n"
    finally:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
    got = [(m.mti, m.stan) for m in read_pcap(pcap, [host.address.port])]
    assert got == [("0200", 501), ("0210", 501)]


# --- without the privilege to capture ----------------------------------------------------------


def assert_disabled(result: CaptureResult, pcap: Path, words: str) -> None:
    assert result.ok is False
    assert words in result.reason
    assert result.messages == [] and result.pcap is None
    assert not pcap.exists()


def test_a_missing_interface_gives_a_warning_and_a_no_op_capture(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pcap = tmp_path / "none.pcap"
    caplog.set_level(logging.WARNING, logger="harness.drivers.capture")
    with LinkCapture("nosuch0", [18999], pcap) as cap:
        assert not cap.active
        assert cap.wait_for(lambda m: True, 0.01) is None
    assert_disabled(cap.stop(), pcap, "interface 'nosuch0' does not exist")
    assert "link capture disabled" in caplog.text and "nosuch0" in caplog.text


def test_no_privilege_gives_a_warning_and_a_no_op_capture(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse() -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(capture_mod, "_probe_packet_socket", refuse)
    assert capture_available("lo")[0] is False
    pcap = tmp_path / "none.pcap"
    caplog.set_level(logging.WARNING, logger="harness.drivers.capture")
    cap = LinkCapture("lo", [18999], pcap)
    cap.start()
    result = cap.stop()
    assert_disabled(result, pcap, "no privilege to capture on 'lo': needs root or CAP_NET_RAW")
    assert "no privilege" in caplog.text


NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--")
_AS_NOBODY = """
import json, logging, sys
from pathlib import Path
from harness.drivers.capture import LinkCapture
logging.basicConfig(level=logging.WARNING)
cap = LinkCapture("lo", [18999], Path(sys.argv[1]))
cap.start()
r = cap.stop()
json.dump({"ok": r.ok, "reason": r.reason, "pcap": r.pcap, "messages": len(r.messages)},
          sys.stdout)
"""


def _nobody_cannot_import_the_harness() -> str | None:
    """Why uid 65534 cannot run the harness from this checkout (a private clone dir), or None."""
    probe = subprocess.run(
        [*NOBODY, sys.executable, "-c", "import harness.drivers.capture"],
        capture_output=True,
        timeout=30,
        cwd="/",
        check=False,
    )
    return probe.stderr.decode().strip().splitlines()[-1] if probe.returncode else None


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run a child without privilege",
)
def test_a_real_unprivileged_process_gets_a_no_op_capture(tmp_path: Path) -> None:
    unreachable = _nobody_cannot_import_the_harness()
    if unreachable is not None:
        pytest.skip(f"uid 65534 cannot reach this checkout: {unreachable}")
    pcap = tmp_path / "nobody.pcap"
    proc = subprocess.run(
        [*NOBODY, sys.executable, "-c", _AS_NOBODY, str(pcap)],
        capture_output=True,
        timeout=30,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        cwd="/",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == {
        "ok": False,
        "reason": "no privilege to capture on 'lo': needs root or CAP_NET_RAW "
        "(running as uid 65534)",
        "pcap": None,
        "messages": 0,
    }
    assert "link capture disabled" in proc.stderr.decode()
    assert not pcap.exists()


# --- reassembly and dissection, offline (no privilege needed) ---------------------------------

HOST_PORT = 48583  # any port: these packets never touch a socket
T0 = 1_800_000_000.0


def segment(
    payload: bytes,
    seq: int,
    *,
    to_host: bool = True,
    flags: str = "PA",
    at: float = 0.0,
    client: int = 40001,
) -> Packet:
    sport, dport = (client, HOST_PORT) if to_host else (HOST_PORT, client)
    pkt = (
        Ether()
        / IP(src="127.0.0.1", dst="127.0.0.1")
        / TCP(sport=sport, dport=dport, flags=flags, seq=seq)
    )
    if payload:
        pkt = pkt / Raw(payload)
    pkt = Ether(bytes(pkt))
    pkt.time = T0 + at
    return pkt


def offline(tmp_path: Path, packets: list[Packet]) -> list[WireMessage]:
    path = tmp_path / "offline.pcap"
    wrpcap(str(path), packets)
    return read_pcap(path, [HOST_PORT])


def test_reassembly_handles_splits_pairs_reordering_retransmissions_and_duplicates(
    tmp_path: Path,
) -> None:
    a = iso.encode(sale(stan=1))
    b = iso.encode(sale(stan=2))
    c = iso.encode(sale(stan=3))
    answer = iso.encode(iso.response_for(sale(stan=1), "00"))
    isn = 2**32 - 30  # the sequence numbers wrap inside the stream
    stream = a + b + c
    cut1, cut2 = 50, len(a) + len(b) + 10
    packets = [
        segment(b"", isn, flags="S"),
        segment(stream[:cut1], isn + 1, at=0.001),
        segment(stream[:cut1], isn + 1, at=0.001),  # loopback's second sighting
        segment(stream[cut2:], (isn + 1 + cut2) % 2**32, at=0.003),  # arrives early
        segment(stream[cut1:cut2], (isn + 1 + cut1) % 2**32, at=0.004),  # fills the gap
        segment(stream[cut1 - 5 : cut1 + 5], (isn + 1 + cut1 - 5) % 2**32, at=0.5),  # retransmit
        segment(answer, 7000, to_host=False, at=0.006),
    ]
    got = offline(tmp_path, packets)
    assert [(m.mti, m.stan, m.direction) for m in got] == [
        ("0200", 1, "to_host"),
        ("0200", 2, "to_host"),
        ("0200", 3, "to_host"),
        ("0210", 1, "from_host"),
    ]
    assert [m.t for m in got] == pytest.approx([T0 + 0.004] * 3 + [T0 + 0.006])
    assert got[0].wall.endswith("+00:00") and got[0].length == len(a) - 2
    assert all(m.decode_error is None for m in got)
    assert_no_full_pan(got)


def test_truncated_garbled_and_broken_streams_are_reported_not_dropped(tmp_path: Path) -> None:
    framed = iso.encode(sale(stan=9))
    garbled = (25).to_bytes(2, "big") + b"0200" + b"Z" * 21
    packets = [
        segment(framed[:40], 100, at=0.01),
        segment(b"", 140, flags="RA", at=0.02),  # reset mid-message
        segment(garbled, 500, client=40002, at=0.03),
        segment(b"\x00\x00\x00", 1000, client=40003, at=0.04),  # length 0: cannot resync
        segment(framed, 1003, client=40003, at=0.05),  # ignored: the stream is broken
    ]
    got = offline(tmp_path, packets)
    assert len(got) == 3
    truncated, undecodable, broken = got
    assert truncated.mti == "0200" and truncated.length == len(framed) - 2
    assert (
        truncated.decode_error == f"truncated: connection reset after 38 of {len(framed) - 2} bytes"
    )
    assert undecodable.mti == "0200" and undecodable.decode_error is not None
    assert broken.decode_error is not None and broken.decode_error.startswith(
        "stream broken: frame length 0"
    )


def test_the_dissector_shows_frames_with_the_card_masked() -> None:
    request = iso.encode(sale(stan=77))
    response = iso.encode(iso.response_for(sale(stan=77), "51"))
    bind_iso8583([HOST_PORT])
    try:
        pkt = segment(request + response, 1)
        tail = segment(request[30:], 1)
    finally:
        unbind_iso8583([HOST_PORT])
    frames = [layer for layer in _layers(pkt) if isinstance(layer, Iso8583)]
    assert [f.safe_summary().split()[:3] for f in frames] == [
        ["ISO8583", "0200", "stan=000077"],
        ["ISO8583", "0210", "stan=000077"],
    ]
    assert "rc=51" in pkt.summary() and mask_pan(PAN) in pkt.summary()
    shown = str(pkt.show(dump=True))
    assert "476173******" in shown and PAN not in shown and PAN not in pkt.summary()
    assert Iso8583 not in tail and Raw in tail  # a split frame's tail is not a frame start
    assert bytes(Iso8583(mti=b"0800", bitmap=b"0" * 16)) == b"\x00\x140800" + b"0" * 16


def _layers(pkt: Packet) -> Iterator[Packet]:
    layer: Packet = pkt
    while layer:
        yield layer
        layer = layer.payload


def test_frames_from_stream_cuts_complete_frames_only() -> None:
    a, b = iso.encode(sale(stan=1)), iso.encode(sale(stan=2))
    assert frames_from_stream(a + b + b[:7]) == [(0, a[2:]), (len(a), b[2:])]
    assert frames_from_stream(a[:-1]) == []
    assert frames_from_stream(b"\x00") == []
    assert frames_from_stream(b"\x00\x00" + a) == []
    assert prefix_error(b"\x00\x00", 0) == "frame length 0"
    assert prefix_error(b"\xff\xff", 0) == f"frame of 65535 bytes exceeds {iso.MAX_FRAME}"
    assert prefix_error(a, 0) is None and prefix_error(b"\x00", 0) is None


def test_ipv6_cooked_and_pcapng_captures_read_the_same(tmp_path: Path) -> None:
    """Captures from other tools: tcpdump -i any (Linux cooked), Wireshark's pcapng, IPv6."""
    request = iso.encode(sale(stan=61))
    tcp = TCP(sport=40009, dport=HOST_PORT, flags="PA", seq=5) / Raw(request)
    v4 = IP(src="10.1.2.3", dst="10.1.2.4") / tcp
    v6 = IPv6(src="fd00::3", dst="fd00::4") / tcp
    mac = "02:00:00:00:00:01"
    packets = [Ether(src=mac, dst=mac) / v6, CookedLinux(proto=0x0800) / v4]
    for pkt in packets:
        pkt.time = T0
    for name, writer in (("a.pcap", wrpcap), ("a.pcapng", wrpcapng)):
        path = tmp_path / name
        writer(str(path), [packets[0]])
        (msg,) = read_pcap(path, [HOST_PORT])
        assert (msg.mti, msg.stan, msg.src) == ("0200", 61, "[fd00::3]:40009")
    cooked = tmp_path / "cooked.pcap"
    wrpcap(str(cooked), [packets[1]])
    (msg,) = read_pcap(cooked, [HOST_PORT])
    assert (msg.mti, msg.stan, msg.dst, msg.direction) == (
        "0200",
        61,
        f"10.1.2.4:{HOST_PORT}",
        "to_host",
    )
