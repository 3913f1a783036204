"""The simulated acquirer host as a real process, driven by an unmodified pyiso8583 client.

Every test gets its own TID, so they share one host process; the durability tests start their own
and kill it. The ledger is read through the harness's own readers (harness.drivers.host).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import iso8583 as pyiso
import pytest
from iso8583.specs import default_ascii

from harness.drivers.host import (
    HostLedgerError,
    SettlementCsvLedger,
    SimLedger,
    ledger_totals,
    open_ledger,
)
from harness.drivers.interfaces import LedgerEntry, LedgerTotals
from harness.protocols import iso8583 as iso
from harness.protocols.cards import mask_pan, with_luhn
from harness.protocols.settlement_csv import CSV_HEADER
from harness.rig import Address, HostConfig, load_rig
from harness.sim import host as sim_host
from tests.simrig import free_port, make_sim_rig

PAN = with_luhn("476173000000001")
OTHER_PAN = with_luhn("541333987654321")
MID = "POSHILMERCHANT1"
READY_S = 10.0
IO_TIMEOUT_S = 3.0


@dataclass
class HostProcess:
    rig_path: Path
    iso: Address
    base_url: str
    state_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    tids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def ledger(self) -> SimLedger:
        return SimLedger(self.base_url, timeout_s=IO_TIMEOUT_S)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.sim.host", "--rig", str(self.rig_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + READY_S
        while not self.ledger.health():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"host exited with {self.proc.returncode}: {err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"host not healthy within {READY_S} s")
            time.sleep(0.02)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()
        return proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def next_tid(self) -> str:
        return f"{29200000 + next(self.tids):08d}"

    def connect(self) -> socket.socket:
        return socket.create_connection((self.iso.host, self.iso.port), timeout=IO_TIMEOUT_S)

    def entries(self, tid: str) -> list[LedgerEntry]:
        return [e for e in self.ledger.entries() if e.tid == tid]


def make_host(tmp_path: Path) -> HostProcess:
    rig_path = make_sim_rig(tmp_path)
    sim = load_rig(rig_path).require_sim()
    return HostProcess(rig_path, sim.host.listen, f"http://{sim.host.ledger_listen}", sim.state_dir)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    process = make_host(tmp_path_factory.mktemp("host"))
    try:
        process.start()
        yield process
    finally:
        process.stop()


@pytest.fixture
def own_host(tmp_path: Path) -> Iterator[HostProcess]:
    process = make_host(tmp_path)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def rig_rules(host: HostProcess) -> Iterator[None]:
    """Put the rig's rules back after a test that replaces them."""
    rules = load_rig(host.rig_path).require_sim().host.rules
    yield
    host.ledger.set_rules([{k: v for k, v in asdict(r).items() if v is not None} for r in rules])


# --- a plain client: pyiso8583 + struct, no harness code on the wire -------------------------


def send(sock: socket.socket, msg: dict[str, str]) -> None:
    raw, _ = pyiso.encode(copy.deepcopy(msg), default_ascii)
    sock.sendall(struct.pack(">H", len(raw)) + raw)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def receive(sock: socket.socket) -> dict[str, str]:
    (length,) = struct.unpack(">H", recv_exact(sock, 2))
    doc, _ = pyiso.decode(recv_exact(sock, length), default_ascii)
    return {k: v for k, v in doc.items() if k not in ("p", "1")}


def exchange(host: HostProcess, msg: dict[str, str]) -> dict[str, str]:
    with host.connect() as sock:
        send(sock, msg)
        return receive(sock)


def sale(tid: str, stan: int, amount: int, pan: str = PAN) -> dict[str, str]:
    return iso.sale_request(pan, "3012", amount, 978, stan, tid, MID, datetime.now())


def settlement(tid: str, stan: int, count: int, amount: int) -> dict[str, str]:
    return iso.settlement_request(stan, tid, MID, 978, count, amount, datetime.now())


# --- sales ----------------------------------------------------------------------------------


def test_unmodified_client_sale_is_approved_and_captured_once(host: HostProcess) -> None:
    tid = host.next_tid()
    request = {
        "t": "0200",
        "2": PAN,
        "3": "000000",
        "4": "000000001234",
        "11": "000123",
        "12": "153012",
        "13": "0614",
        "14": "3012",
        "22": "051",
        "25": "00",
        "41": tid,
        "42": MID,
        "49": "978",
    }
    answer = exchange(host, request)
    assert answer["t"] == "0210" and answer["39"] == "00"
    assert answer["11"] == "000123" and answer["4"] == "000000001234" and answer["41"] == tid
    assert len(answer["37"]) == 12 and answer["37"].isdigit()
    assert len(answer["38"]) == 6
    assert "2" not in answer
    [entry] = host.entries(tid)
    assert entry.status == "captured" and entry.captured
    assert (entry.stan, entry.amount, entry.currency, entry.batch) == (123, 1234, 978, 1)
    assert entry.card_masked == mask_pan(PAN)
    assert (entry.rrn, entry.auth_code, entry.response_code) == (answer["37"], answer["38"], "00")
    assert entry.reversed_at is None and entry.received_at
    assert host.ledger.totals(tid) == LedgerTotals(1, 1234, 978)


def test_many_messages_on_one_connection_are_answered_in_order(host: HostProcess) -> None:
    tid = host.next_tid()
    with host.connect() as sock:
        send(sock, iso.signon_request(1, tid, datetime.now()))
        send(sock, sale(tid, 2, 100))
        send(sock, sale(tid, 3, 200))
        answers = [receive(sock) for _ in range(3)]
    assert [(a["t"], a["11"], a["39"]) for a in answers] == [
        ("0810", "000001", "00"),
        ("0210", "000002", "00"),
        ("0210", "000003", "00"),
    ]
    assert answers[0]["70"] == "001"
    rrns = {a["37"] for a in answers[1:]}
    assert len(rrns) == 2
    assert host.ledger.totals(tid) == LedgerTotals(2, 300, 978)


def test_duplicate_stan_gets_the_identical_answer_and_one_capture(host: HostProcess) -> None:
    tid = host.next_tid()
    request = sale(tid, 77, 4200)
    first = exchange(host, request)
    again = exchange(host, request)  # a new connection, as a retrying terminal would
    with host.connect() as sock:  # and on one connection
        send(sock, request)
        third = receive(sock)
    assert first["39"] == "00"
    assert again == first and third == first
    [entry] = host.entries(tid)
    assert entry.status == "captured"
    assert host.ledger.totals(tid) == LedgerTotals(1, 4200, 978)


def test_a_stan_reused_for_another_sale_is_94_and_not_captured(host: HostProcess) -> None:
    tid = host.next_tid()
    assert exchange(host, sale(tid, 78, 4200))["39"] == "00"
    other_amount = exchange(host, sale(tid, 78, 4300))
    other_card = exchange(host, sale(tid, 78, 4200, pan=OTHER_PAN))
    assert (other_amount["t"], other_amount["39"], other_amount["4"]) == (
        "0210",
        "94",
        "0" * 8 + "4300",
    )
    assert other_card["39"] == "94" and "38" not in other_card
    assert host.ledger.totals(tid) == LedgerTotals(1, 4200, 978)
    assert len(host.entries(tid)) == 1


@pytest.mark.parametrize(
    ("amount", "code"), [(5100, "51"), (500, "05"), (9100, "91"), (9600, "96")]
)
def test_rig_rules_decline(host: HostProcess, amount: int, code: str) -> None:
    tid = host.next_tid()
    answer = exchange(host, sale(tid, 1, amount))
    assert answer["t"] == "0210" and answer["39"] == code
    assert "38" not in answer
    [entry] = host.entries(tid)
    assert (entry.status, entry.response_code, entry.auth_code) == ("declined", code, "")
    assert host.ledger.totals(tid).count == 0


def test_a_card_outside_the_test_bins_is_declined_14(host: HostProcess) -> None:
    tid = host.next_tid()
    real_looking = with_luhn("411111000000001")
    answer = exchange(host, sale(tid, 1, 100, pan=real_looking))
    assert answer["39"] == "14"
    [entry] = host.entries(tid)
    assert entry.status == "declined" and entry.card_masked == mask_pan(real_looking)


def test_unknown_mti_is_answered_12(host: HostProcess) -> None:
    tid = host.next_tid()
    auth = {**sale(tid, 5, 100), "t": "0100"}
    answer = exchange(host, auth)
    assert (answer["t"], answer["39"], answer["11"]) == ("0110", "12", "000005")
    assert host.entries(tid) == []


def test_a_sale_without_an_amount_is_a_format_error(host: HostProcess) -> None:
    tid = host.next_tid()
    request = sale(tid, 6, 100)
    del request["4"]
    assert exchange(host, request)["39"] == "30"
    assert host.entries(tid) == []


# --- reversals ------------------------------------------------------------------------------


def test_reversal_reverses_once_and_repeats_are_harmless(host: HostProcess) -> None:
    tid = host.next_tid()
    original = sale(tid, 10, 2500)
    assert exchange(host, original)["39"] == "00"
    first = exchange(host, iso.reversal_request(original, "98", repeat=False))
    assert (first["t"], first["39"], first["11"]) == ("0410", "00", "000010")
    [entry] = host.entries(tid)
    assert entry.status == "reversed" and entry.reversed_at is not None
    repeat = exchange(host, iso.reversal_request(original, "98", repeat=True))
    assert (repeat["t"], repeat["39"]) == ("0430", "00")
    assert host.entries(tid) == [entry]  # unchanged, reversed_at included
    assert host.ledger.totals(tid).count == 0
    reversals = [r for r in host.ledger.reversals() if r["tid"] == tid]
    assert [(r["mti"], r["effect"], r["reason"]) for r in reversals] == [
        ("0400", "reversed", "98"),
        ("0420", "already_reversed", "98"),
    ]


def test_reversal_of_a_declined_sale_answers_00_and_changes_nothing(host: HostProcess) -> None:
    tid = host.next_tid()
    original = sale(tid, 11, 5100)
    assert exchange(host, original)["39"] == "51"
    assert exchange(host, iso.reversal_request(original, "06", repeat=False))["39"] == "00"
    [entry] = host.entries(tid)
    assert entry.status == "declined" and entry.reversed_at is None


def test_reversal_of_an_unknown_stan_is_25_and_a_no_op(host: HostProcess) -> None:
    tid = host.next_tid()
    kept = sale(tid, 20, 700)
    assert exchange(host, kept)["39"] == "00"
    before = host.entries(tid)
    ghost = sale(tid, 21, 700)
    answer = exchange(host, iso.reversal_request(ghost, "98", repeat=False))
    assert (answer["t"], answer["39"]) == ("0410", "25")
    assert host.entries(tid) == before
    [record] = [r for r in host.ledger.reversals() if r["tid"] == tid]
    assert (record["original_stan"], record["effect"], record["response_code"]) == (
        21,
        "not_found",
        "25",
    )


# --- timing rules ---------------------------------------------------------------------------


@pytest.mark.usefixtures("rig_rules")
def test_a_late_answer_is_decided_and_recorded_before_it_is_sent(host: HostProcess) -> None:
    tid = host.next_tid()
    host.ledger.set_rules([{"amount": 4242, "delay_ms": 1000}])
    with host.connect() as sock:
        started = time.monotonic()
        send(sock, sale(tid, 1, 4242))
        deadline = started + 0.8
        seen: list[LedgerEntry] = []
        while not seen and time.monotonic() < deadline:
            seen = host.entries(tid)
        waiting, _, _ = select.select([sock], [], [], 0)
        assert seen and seen[0].status == "captured"
        assert not waiting, "the answer arrived before the ledger was checked"
        assert time.monotonic() - started < 1.0
        answer = receive(sock)
        elapsed = time.monotonic() - started
    assert answer["39"] == "00" and answer["37"] == seen[0].rrn
    assert elapsed >= 0.95


def test_a_silent_rule_records_and_never_answers(host: HostProcess) -> None:
    tid = host.next_tid()
    with host.connect() as sock:
        send(sock, sale(tid, 1, 7900))  # the rig's silent rule
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        sock.settimeout(IO_TIMEOUT_S)
        send(sock, iso.signon_request(2, tid, datetime.now()))  # the link stays open
        assert receive(sock)["t"] == "0810"
        send(sock, sale(tid, 1, 7900))  # a duplicate of a silent decision stays silent
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)
    [entry] = host.entries(tid)
    assert entry.status == "captured"


# --- settlement -----------------------------------------------------------------------------


def test_settlement_balanced_unbalanced_and_the_batch_advances(host: HostProcess) -> None:
    tid = host.next_tid()
    for stan, amount in ((1, 1000), (2, 2000), (3, 5100), (4, 300)):
        exchange(host, sale(tid, stan, amount))
    exchange(host, iso.reversal_request(sale(tid, 4, 300), "98", repeat=False))
    balanced = settlement(tid, 5, 2, 3000)
    answer = exchange(host, balanced)
    assert (answer["t"], answer["39"], answer["11"]) == ("0510", "00", "000005")
    assert (answer["76"], answer["88"]) == ("0000000002", "0" * 12 + "3000")
    assert host.ledger.batches()[tid] == 2
    assert exchange(host, balanced) == answer  # a retransmission closes nothing more
    assert host.ledger.batches()[tid] == 2

    exchange(host, sale(tid, 6, 800))
    [entry] = [e for e in host.entries(tid) if e.stan == 6]
    assert entry.batch == 2
    unbalanced = exchange(host, settlement(tid, 7, 2, 1600))
    assert (unbalanced["39"], unbalanced["76"], unbalanced["88"]) == (
        "95",
        "0000000001",
        "0" * 13 + "800",
    )
    assert host.ledger.batches()[tid] == 3
    records = [s for s in host.ledger.settlements() if s["tid"] == tid]
    assert [
        (s["batch"], s["terminal_count"], s["terminal_amount"], s["host_count"], s["result"])
        for s in records
    ] == [(1, 2, 3000, 2, "00"), (2, 2, 1600, 1, "95")]
    assert host.ledger.totals(tid, batch=1) == LedgerTotals(2, 3000, 978)
    assert host.ledger.totals(tid, batch=2) == LedgerTotals(1, 800, 978)
    # the STAN space of a closed batch is free again: STAN 1 in batch 3 is a new sale
    assert exchange(host, sale(tid, 1, 50))["39"] == "00"
    assert host.ledger.totals(tid, batch=3) == LedgerTotals(1, 50, 978)


# --- rules over HTTP ------------------------------------------------------------------------


@pytest.mark.usefixtures("rig_rules")
def test_put_rules_changes_the_answers(host: HostProcess) -> None:
    tid = host.next_tid()
    host.ledger.set_rules(
        [{"amount": 3333, "response": "05"}, {"card": OTHER_PAN, "response": "91"}]
    )
    rules = host.ledger.rules()
    assert rules[0] == {
        "amount": 3333,
        "card": None,
        "response": "05",
        "delay_ms": 0,
        "silent": False,
    }
    assert rules[1]["card"] == mask_pan(OTHER_PAN)
    assert exchange(host, sale(tid, 1, 3333))["39"] == "05"
    assert exchange(host, sale(tid, 2, 5100))["39"] == "00"  # the rig's 51 rule is gone
    assert exchange(host, sale(tid, 3, 100, pan=OTHER_PAN))["39"] == "91"


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ([{"amount": 1, "delay": 5}], "delay", "rules[0].delay: unknown key"),
        ([{"amount": 1}, {"amount": "ten"}], "amount", "rules[1].amount: must be an integer"),
        ([{"amount": 1, "delay_ms": -1}], "delay_ms", "rules[0].delay_ms"),
        ([{"amount": 1, "silent": "yes"}], "silent", "rules[0].silent"),
        ([{"amount": 1, "response": "5"}], "response", "rules[0].response"),
        ([{"response": "05"}], "amount", "needs an amount, a card, or both"),
        ({"amount": 1}, None, "JSON list"),
    ],
)
def test_a_bad_rules_body_is_refused_with_the_key_named(
    host: HostProcess, body: Any, key: str | None, words: str
) -> None:
    before = host.ledger.rules()
    request = urllib.request.Request(
        host.base_url + "/rules", data=json.dumps(body).encode(), method="PUT"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=IO_TIMEOUT_S)
    assert info.value.code == 400
    error = json.loads(info.value.read())
    info.value.close()
    assert error["key"] == key and words in error["error"]
    with pytest.raises(HostLedgerError, match="HTTP 400") as raised:
        host.ledger.set_rules(body)
    assert words in str(raised.value) and "/rules" in str(raised.value)
    assert host.ledger.rules() == before


def test_http_unknown_paths_and_non_json(host: HostProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(host.base_url + "/nope", timeout=IO_TIMEOUT_S)
    assert info.value.code == 404
    info.value.close()
    request = urllib.request.Request(host.base_url + "/rules", data=b"{not json", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=IO_TIMEOUT_S)
    assert info.value.code == 400
    error = json.loads(info.value.read())
    info.value.close()
    assert error["error"].startswith("the body is not JSON")
    assert error["entry"] is None and error["key"] is None  # every 400 has the same fields
    with pytest.raises(HostLedgerError, match="HTTP 404"):
        SimLedger(host.base_url + "/nope").entries()


# --- robustness -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x05hello",  # a frame, but no ISO 8583 message
        b"\xff\xffGET / HTTP/1.1\r\n\r\n",  # an absurd length
        b"\x00\x00",  # a zero length
    ],
)
def test_garbage_closes_that_connection_only(host: HostProcess, garbage: bytes) -> None:
    tid = host.next_tid()
    with host.connect() as bystander, host.connect() as bad:
        bad.sendall(garbage)
        assert bad.recv(16) == b""  # closed by the host, no answer
        send(bystander, sale(tid, 1, 100))
        assert receive(bystander)["39"] == "00"
    assert exchange(host, sale(tid, 2, 100))["39"] == "00"  # and new connections too
    log = (host.state_dir / "logs" / "host.log").read_text(encoding="utf-8")
    assert "garbage from" in log or "undecodable message" in log


def test_sigterm_stops_cleanly(own_host: HostProcess) -> None:
    own_host.start()
    with own_host.connect() as idle:  # an open connection must not hold the host up
        started = time.monotonic()
        assert own_host.stop() == 0
        assert time.monotonic() - started < 3
        idle.settimeout(IO_TIMEOUT_S)
        assert idle.recv(1) == b""


def test_a_capture_survives_sigkill_right_after_the_answer(own_host: HostProcess) -> None:
    own_host.start()
    tid = own_host.next_tid()
    request = sale(tid, 31, 1999)
    with own_host.connect() as sock:
        send(sock, request)
        answer = receive(sock)
        own_host.kill()  # no clean shutdown, no chance to flush anything
    own_host.start()
    [entry] = own_host.entries(tid)
    assert (entry.stan, entry.amount, entry.status, entry.rrn) == (
        31,
        1999,
        "captured",
        answer["37"],
    )
    assert exchange(own_host, request) == answer  # the restarted host still knows the duplicate
    assert len(own_host.entries(tid)) == 1


def test_no_full_card_number_leaves_the_host(host: HostProcess, tmp_path: Path) -> None:
    tid = host.next_tid()
    exchange(host, sale(tid, 1, 100))
    exchange(host, sale(tid, 2, 5100, pan=OTHER_PAN))
    exchange(host, iso.reversal_request(sale(tid, 1, 100), "98", repeat=False))
    with urllib.request.urlopen(host.base_url + "/ledger", timeout=IO_TIMEOUT_S) as reply:
        document = reply.read()
    with urllib.request.urlopen(
        host.base_url + "/ledger/settlement.csv", timeout=IO_TIMEOUT_S
    ) as reply:
        exported = reply.read()
    stored = b"".join(p.read_bytes() for p in (host.state_dir / "host").iterdir() if p.is_file())
    log = (host.state_dir / "logs" / "host.log").read_bytes()
    assert mask_pan(PAN).encode() in document and mask_pan(PAN).encode() in exported
    for pan in (PAN, OTHER_PAN):
        for blob in (document, exported, stored, log):
            assert pan.encode() not in blob


def test_ledger_is_sqlite_in_wal_mode(host: HostProcess) -> None:
    path = host.state_dir / "host" / sim_host.LEDGER_FILE
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"
    assert (path.parent / (path.name + "-wal")).exists()


def test_settlement_csv_reads_into_the_same_entries(host: HostProcess, tmp_path: Path) -> None:
    tid = host.next_tid()
    exchange(host, sale(tid, 1, 100))
    exchange(host, sale(tid, 2, 9600))
    exchange(host, iso.reversal_request(sale(tid, 1, 100), "98", repeat=False))
    exchange(host, sale(tid, 3, 300))
    path = tmp_path / "export.csv"
    with urllib.request.urlopen(
        host.base_url + "/ledger/settlement.csv", timeout=IO_TIMEOUT_S
    ) as reply:
        path.write_bytes(reply.read())
    from_csv = SettlementCsvLedger(path).entries()
    assert from_csv == host.ledger.entries()
    assert {e.status for e in from_csv if e.tid == tid} == {"reversed", "declined", "captured"}
    assert SettlementCsvLedger(path).totals(tid) == LedgerTotals(1, 300, 978)


# --- the readers without a host -------------------------------------------------------------


def test_open_ledger_picks_the_reader(tmp_path: Path) -> None:
    sim = open_ledger(HostConfig("sim+http://127.0.0.1:8580"))
    assert isinstance(sim, SimLedger) and sim.base_url == "http://127.0.0.1:8580"
    csv_ledger = open_ledger(HostConfig(f"settlement-csv:{tmp_path}/x.csv"))
    assert isinstance(csv_ledger, SettlementCsvLedger)
    assert csv_ledger.path == tmp_path / "x.csv"
    with pytest.raises(HostLedgerError, match="expected"):
        open_ledger(HostConfig("ftp://nowhere"))


def test_sim_ledger_names_the_url_when_the_host_is_down() -> None:
    port = free_port()
    with pytest.raises(HostLedgerError, match=rf"127\.0\.0\.1:{port}/ledger: cannot reach"):
        SimLedger(f"http://127.0.0.1:{port}", timeout_s=1).entries()
    assert not SimLedger(f"http://127.0.0.1:{port}", timeout_s=1).health()


def test_the_ledger_client_ignores_an_http_proxy_in_the_environment(host: HostProcess) -> None:
    """A bench is never behind a proxy; a stray http_proxy must not turn the host into a 502.

    A fresh process: urllib reads the proxy variables once, into its first opener.
    """
    dead = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env.update(http_proxy=dead, HTTP_PROXY=dead, all_proxy=dead)
    code = (
        "import sys; from harness.drivers.host import SimLedger; "
        "ledger = SimLedger(sys.argv[1], timeout_s=2); print(ledger.health(), len(ledger.rules()))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, host.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    health, rules = proc.stdout.split()
    assert health == "True" and int(rules) > 0


def test_csv_ledger_refuses_a_wrong_header_or_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("tid,stan\n1,2\n", encoding="utf-8")
    with pytest.raises(HostLedgerError, match="header is tid,stan"):
        SettlementCsvLedger(path).entries()
    header = ",".join(CSV_HEADER)
    path.write_text(f"{header}\n29110001,x,1,100,978,476173******0011,1,2,00,captured,t,\n")
    with pytest.raises(HostLedgerError, match=r"bad\.csv:2: malformed"):
        SettlementCsvLedger(path).entries()
    with pytest.raises(HostLedgerError, match="cannot read"):
        SettlementCsvLedger(tmp_path / "missing.csv").entries()


def test_totals_refuse_mixed_currencies() -> None:
    def entry(amount: int, currency: int, status: str = "captured") -> LedgerEntry:
        return LedgerEntry("T1", 1, amount, currency, "", "", "", "00", status, 1, "", None)

    entries = [entry(100, 978), entry(200, 840), entry(50, 978, "reversed")]
    assert ledger_totals(entries, "T1", currency=978) == LedgerTotals(1, 100, 978)
    assert ledger_totals(entries, "T2") == LedgerTotals(0, 0, 0)
    with pytest.raises(HostLedgerError, match="currencies"):
        ledger_totals(entries, "T1")
