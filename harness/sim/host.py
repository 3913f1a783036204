"""The simulated acquirer host: ISO 8583 over TCP in front of a SQLite ledger, the money truth.

Run as `python -m harness.sim.host --rig RIG`. It answers sign-on, sale, reversal and settlement
on `[sim.host] listen` (thread per connection, length-prefixed messages) and serves its ledger,
the stand-in for an acquirer's settlement report, over HTTP on `[sim.host] ledger_listen`.
The one thing to know: every decision is committed to the ledger (WAL, synchronous=FULL) before
its answer is sent, so a host killed at any instant never answered something it forgot; the
ledger and every export hold masked card numbers only.

Duplicates and reversals are matched on TID + STAN within the TID's open batch (a batch closed
by settlement is final): a repeated 0200 gets the stored answer and never captures twice; a
0200 reusing a STAN for a different amount or card gets 94 (duplicate transmission), unrecorded.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import re
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar

from harness.json_http import JsonHandler, JsonHttpServer
from harness.protocols import iso8583 as iso
from harness.protocols.cards import is_test_card, mask_pan
from harness.protocols.settlement_csv import CSV_HEADER
from harness.rig import Address, HostRule, Rig
from harness.sim.process import listen, start_device

log = logging.getLogger("harness.sim.host")

LEDGER_FILE = "ledger.sqlite3"
POLL_S = 0.2  # how often blocked loops look at the stop event
SEND_TIMEOUT_S = 5.0
RULE_KEYS = ("amount", "card", "response", "delay_ms", "silent")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    id INTEGER PRIMARY KEY,
    tid TEXT NOT NULL,
    stan INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    currency INTEGER NOT NULL,
    card_masked TEXT NOT NULL,
    rrn TEXT NOT NULL UNIQUE,
    auth_code TEXT NOT NULL,
    response_code TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('captured', 'declined', 'reversed')),
    silent INTEGER NOT NULL,
    response_json TEXT NOT NULL,
    received_at TEXT NOT NULL,
    reversed_at TEXT,
    UNIQUE (tid, batch, stan)
);
CREATE TABLE IF NOT EXISTS reversals (
    id INTEGER PRIMARY KEY,
    tid TEXT NOT NULL,
    stan INTEGER NOT NULL,
    original_stan INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    mti TEXT NOT NULL,
    reason TEXT NOT NULL,
    response_code TEXT NOT NULL,
    effect TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settlements (
    id INTEGER PRIMARY KEY,
    tid TEXT NOT NULL,
    stan INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    currency INTEGER,
    terminal_count INTEGER NOT NULL,
    terminal_amount INTEGER NOT NULL,
    host_count INTEGER NOT NULL,
    host_amount INTEGER NOT NULL,
    result TEXT NOT NULL,
    response_json TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    tid TEXT PRIMARY KEY,
    open_batch INTEGER NOT NULL
);
"""


def now_iso() -> str:
    """Local wall clock with milliseconds and offset: for people reading the ledger."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def auth_code_for(rrn: str) -> str:
    """A 6-digit approval code derived from the RRN (reproducible across runs)."""
    return f"{int(hashlib.sha256(rrn.encode()).hexdigest(), 16) % 1_000_000:06d}"


def safe_hex(data: bytes, limit: int = 64) -> str:
    """Hex of the first `limit` bytes with every run of 12+ digits masked (it may be a PAN)."""
    head = re.sub(rb"\d{12,}", lambda m: mask_pan(m.group().decode()).encode(), data[:limit])
    return head.hex(" ")


# --- answer rules ---------------------------------------------------------------------------


class RulesError(ValueError):
    """A rules document is wrong; names the entry and the key."""

    def __init__(self, message: str, entry: int | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.entry = entry
        self.key = key


def parse_rules(data: Any) -> tuple[HostRule, ...]:
    """Validate a JSON rules list (as sent to PUT /rules) into HostRules."""
    if not isinstance(data, list):
        raise RulesError("the body must be a JSON list of rules")
    return tuple(_parse_rule(entry, index) for index, entry in enumerate(data))


def _parse_rule(entry: Any, index: int) -> HostRule:
    where = f"rules[{index}]"
    if not isinstance(entry, dict):
        raise RulesError(
            f'{where}: must be an object like {{"amount": 5100, "response": "51"}}', index
        )
    for key in entry:
        if key not in RULE_KEYS:
            raise RulesError(
                f"{where}.{key}: unknown key; allowed: {', '.join(RULE_KEYS)}", index, key
            )

    def fail(key: str, problem: str) -> RulesError:
        return RulesError(f"{where}.{key}: {problem}, got {entry[key]!r}", index, key)

    amount = entry.get("amount")
    if amount is not None and (
        isinstance(amount, bool)
        or not isinstance(amount, int)
        or not 1 <= amount <= 999_999_999_999
    ):
        raise fail("amount", "must be an integer amount in minor units, 1 to 999999999999")
    card = entry.get("card")
    if card is not None and (not isinstance(card, str) or not re.fullmatch(r"\d{12,19}", card)):
        raise RulesError(f"{where}.card: must be a 12-19 digit test card number", index, "card")
    response = entry.get("response", iso.APPROVED)
    if not isinstance(response, str) or not re.fullmatch(r"[0-9A-Z]{2}", response):
        raise fail("response", 'must be a 2-character response code like "00" or "51"')
    delay_ms = entry.get("delay_ms", 0)
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or not 0 <= delay_ms <= 600_000:
        raise fail("delay_ms", "must be an integer from 0 to 600000")
    silent = entry.get("silent", False)
    if not isinstance(silent, bool):
        raise fail("silent", "must be true or false")
    if amount is None and card is None:
        raise RulesError(
            f"{where}.amount: a rule needs an amount, a card, or both", index, "amount"
        )
    return HostRule(amount, card, response, delay_ms, silent)


def rule_to_json(rule: HostRule) -> dict[str, Any]:
    """A rule as GET /rules shows it: the card masked."""
    return {
        "amount": rule.amount,
        "card": mask_pan(rule.card) if rule.card is not None else None,
        "response": rule.response,
        "delay_ms": rule.delay_ms,
        "silent": rule.silent,
    }


class RuleBook:
    """The active answer rules; replaced as a whole at run time by PUT /rules."""

    def __init__(self, rules: tuple[HostRule, ...]) -> None:
        self._lock = threading.Lock()
        self._rules = rules

    def get(self) -> tuple[HostRule, ...]:
        with self._lock:
            return self._rules

    def replace(self, rules: tuple[HostRule, ...]) -> None:
        with self._lock:
            self._rules = rules

    def match(self, amount: int, pan: str) -> HostRule | None:
        return next((rule for rule in self.get() if rule.matches(amount, pan)), None)


# --- the ledger -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """The host's answer to one message: `response` None means it stays silent."""

    response: dict[str, str] | None
    delay_ms: int = 0


class Ledger:
    """The SQLite ledger and every decision that changes it, one at a time under a lock."""

    def __init__(self, path: Path, rules: RuleBook, card_bins: tuple[str, ...]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._rules = rules
        self._card_bins = card_bins
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"{path}: journal_mode is {mode}, WAL is required")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @staticmethod
    def _open_batch(db: sqlite3.Connection, tid: str) -> int:
        row = db.execute("SELECT open_batch FROM batches WHERE tid = ?", (tid,)).fetchone()
        if row is not None:
            return int(row[0])
        db.execute("INSERT INTO batches (tid, open_batch) VALUES (?, 1)", (tid,))
        return 1

    def sale(self, request: Mapping[str, str]) -> Decision:
        """0200: a duplicate gets the stored answer; otherwise the first matching rule decides."""
        tid = iso.field_of(request, "41")
        stan = iso.stan_of(request)
        amount = iso.amount_of(request)
        currency = int(iso.field_of(request, "49"))
        pan = iso.field_of(request, "2")
        with self._transaction() as db:
            batch = self._open_batch(db, tid)
            row = db.execute(
                "SELECT response_json, silent, amount, card_masked FROM transactions"
                " WHERE tid = ? AND batch = ? AND stan = ?",
                (tid, batch, stan),
            ).fetchone()
            if row is not None and (row[2], row[3]) != (amount, mask_pan(pan)):
                log.warning(
                    "0200 tid=%s stan=%06d reuses the STAN of a different sale (%d %s): 94",
                    tid,
                    stan,
                    row[2],
                    row[3],
                )
                return Decision(iso.response_for(request, iso.DUPLICATE_TRANSMISSION))
            if row is not None:
                log.info(
                    "duplicate 0200 tid=%s stan=%06d batch=%d: stored answer", tid, stan, batch
                )
                return Decision(None if row[1] else json.loads(row[0]))
            rule = self._rules.match(amount, pan)
            code = rule.response if rule else iso.APPROVED
            if not is_test_card(pan, self._card_bins):
                log.warning("card %s is not an allowlisted test card: declined 14", mask_pan(pan))
                rule, code = None, iso.INVALID_CARD
            (next_id,) = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM transactions").fetchone()
            rrn = f"{next_id:012d}"
            auth = auth_code_for(rrn) if code == iso.APPROVED else ""
            extra = {"37": rrn, "38": auth} if auth else {"37": rrn}
            response = iso.response_for(request, code, **extra)
            silent = bool(rule and rule.silent)
            db.execute(
                "INSERT INTO transactions (id, tid, stan, batch, amount, currency, card_masked,"
                " rrn, auth_code, response_code, status, silent, response_json, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    next_id,
                    tid,
                    stan,
                    batch,
                    amount,
                    currency,
                    mask_pan(pan),
                    rrn,
                    auth,
                    code,
                    "captured" if code == iso.APPROVED else "declined",
                    int(silent),
                    json.dumps(response),
                    now_iso(),
                ),
            )
        return Decision(None if silent else response, rule.delay_ms if rule else 0)

    def reverse(self, request: Mapping[str, str]) -> Decision:
        """0400/0420: undo a capture of the open batch; idempotent; unknown original -> 25."""
        tid = iso.field_of(request, "41")
        original = iso.original_stan(request)
        stan = iso.stan_of(request) if "11" in request else original
        with self._transaction() as db:
            batch = self._open_batch(db, tid)
            row = db.execute(
                "SELECT id, status, amount FROM transactions"
                " WHERE tid = ? AND batch = ? AND stan = ?",
                (tid, batch, original),
            ).fetchone()
            code = iso.APPROVED
            if row is None:
                code, effect = iso.ORIGINAL_NOT_FOUND, "not_found"
            elif row[1] == "captured":
                effect = "reversed"
                db.execute(
                    "UPDATE transactions SET status = 'reversed', reversed_at = ? WHERE id = ?",
                    (now_iso(), row[0]),
                )
            elif row[1] == "reversed":
                effect = "already_reversed"
            else:
                effect = "original_declined"
            if row is not None and "4" in request and iso.amount_of(request) != row[2]:
                log.warning(
                    "reversal tid=%s stan=%06d amount %s differs from the original %d",
                    tid,
                    original,
                    request["4"],
                    row[2],
                )
            db.execute(
                "INSERT INTO reversals (tid, stan, original_stan, batch, mti, reason,"
                " response_code, effect, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tid,
                    stan,
                    original,
                    batch,
                    request["t"],
                    request.get("39", ""),
                    code,
                    effect,
                    now_iso(),
                ),
            )
        log.info("reversal tid=%s orig stan=%06d: %s", tid, original, effect)
        return Decision(iso.response_for(request, code))

    def settle(self, request: Mapping[str, str]) -> Decision:
        """0500: compare the terminal's totals with the open batch, answer 00 / 95, close it.

        A retransmission (same STAN and totals as the settlement that closed the previous batch)
        gets the stored answer and closes nothing.
        """
        tid = iso.field_of(request, "41")
        stan = iso.stan_of(request)
        count = int(iso.field_of(request, "76"))
        amount = int(iso.field_of(request, "88"))
        currency = int(request["49"]) if "49" in request else None
        with self._transaction() as db:
            batch = self._open_batch(db, tid)
            last = db.execute(
                "SELECT stan, batch, terminal_count, terminal_amount, response_json"
                " FROM settlements WHERE tid = ? ORDER BY id DESC LIMIT 1",
                (tid,),
            ).fetchone()
            if last is not None and tuple(last[:4]) == (stan, batch - 1, count, amount):
                log.info("duplicate 0500 tid=%s stan=%06d: stored answer", tid, stan)
                return Decision(json.loads(last[4]))
            host_count, host_amount, others = db.execute(
                "SELECT COUNT(*) FILTER (WHERE ?1 IS NULL OR currency = ?1),"
                " COALESCE(SUM(amount) FILTER (WHERE ?1 IS NULL OR currency = ?1), 0),"
                " COUNT(*) FILTER (WHERE ?1 IS NOT NULL AND currency != ?1)"
                " FROM transactions WHERE tid = ?2 AND batch = ?3 AND status = 'captured'",
                (currency, tid, batch),
            ).fetchone()
            balanced = (host_count, host_amount) == (count, amount) and others == 0
            result = iso.APPROVED if balanced else iso.RECONCILE_ERROR
            response = iso.response_for(
                request, result, **{"76": f"{host_count:010d}", "88": f"{host_amount:016d}"}
            )
            db.execute(
                "INSERT INTO settlements (tid, stan, batch, currency, terminal_count,"
                " terminal_amount, host_count, host_amount, result, response_json, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tid,
                    stan,
                    batch,
                    currency,
                    count,
                    amount,
                    host_count,
                    host_amount,
                    result,
                    json.dumps(response),
                    now_iso(),
                ),
            )
            db.execute("UPDATE batches SET open_batch = open_batch + 1 WHERE tid = ?", (tid,))
        log.info(
            "settlement tid=%s batch=%d terminal %d/%d host %d/%d: %s",
            tid,
            batch,
            count,
            amount,
            host_count,
            host_amount,
            result,
        )
        return Decision(response)

    # exports ----------------------------------------------------------------------------------

    def transactions(self) -> list[dict[str, Any]]:
        """Every sale decision, with exactly the keys of `LedgerEntry`."""
        with self._lock:
            return self._transactions()

    def _transactions(self) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT tid, stan, amount, currency, card_masked, rrn, auth_code, response_code,"
            " status, batch, received_at, reversed_at FROM transactions ORDER BY id"
        )

    def export(self) -> dict[str, Any]:
        """The whole ledger as GET /ledger serves it: one consistent snapshot."""
        with self._lock:
            transactions = self._transactions()
            reversals = self._rows(
                "SELECT tid, stan, original_stan, batch, mti, reason, response_code, effect,"
                " received_at FROM reversals ORDER BY id"
            )
            settlements = self._rows(
                "SELECT tid, stan, batch, currency, terminal_count, terminal_amount, host_count,"
                " host_amount, result, at FROM settlements ORDER BY id"
            )
            batches = dict(self._db.execute("SELECT tid, open_batch FROM batches").fetchall())
        return {
            "transactions": transactions,
            "reversals": reversals,
            "settlements": settlements,
            "batches": batches,
        }

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        cursor = self._db.execute(sql)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def settlement_csv(self) -> str:
        """The transactions in the settlement-report CSV format `SettlementCsvLedger` reads."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for t in self.transactions():
            writer.writerow(
                [
                    t["tid"],
                    t["stan"],
                    t["batch"],
                    t["amount"],
                    t["currency"],
                    t["card_masked"],
                    t["rrn"],
                    t["auth_code"],
                    t["response_code"],
                    t["status"],
                    t["received_at"],
                    t["reversed_at"] or "",
                ]
            )
        return out.getvalue()


# --- the host -------------------------------------------------------------------------------


class AcquirerHost:
    """Owns the ISO 8583 listener, its connection threads, the HTTP ledger server and the ledger."""

    def __init__(self, rig: Rig, stop: threading.Event) -> None:
        sim = rig.require_sim()
        self.stop = stop
        self.rules = RuleBook(sim.host.rules)
        self.ledger = Ledger(sim.state_dir / "host" / LEDGER_FILE, self.rules, rig.rig.card_bins)
        self._threads: set[threading.Thread] = set()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        try:
            self._listener = listen(sim.host.listen)
            try:
                self._http = LedgerHttpServer(sim.host.ledger_listen, self)
            except OSError:
                self._listener.close()
                raise
        except OSError:
            self.ledger.close()
            raise
        self._acceptor = threading.Thread(target=self._accept_loop, name="iso-accept")
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": POLL_S}, name="ledger-http"
        )

    def start(self) -> None:
        self._acceptor.start()
        self._http_thread.start()
        log.info(
            "host up: iso8583 on %s, ledger http on %s, %d rules",
            self._listener.getsockname(),
            self._http.server_address,
            len(self.rules.get()),
        )

    def close(self) -> None:
        """Stop accepting, wake and join every thread, close every socket and the ledger."""
        self.stop.set()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=2)
        self._listener.close()
        if self._http_thread.is_alive():
            self._http.shutdown()
            self._http_thread.join(timeout=2)
        self._http.server_close()
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=SEND_TIMEOUT_S)
        self.ledger.close()
        log.info("host stopped")

    def handle(self, request: Mapping[str, str]) -> Decision:
        """Decide the answer to one decoded message (committed before this returns)."""
        mti = request["t"]
        try:
            if mti == iso.SALE:
                return self.ledger.sale(request)
            if mti in (iso.REVERSAL, iso.REVERSAL_REPEAT):
                return self.ledger.reverse(request)
            if mti == iso.SETTLEMENT:
                return self.ledger.settle(request)
            if mti == iso.SIGNON:
                return Decision(iso.response_for(request, iso.APPROVED))
        except iso.Iso8583Error as exc:
            log.warning("format error in %s: %s", iso.summary(request), exc)
            return Decision(iso.response_for(request, iso.FORMAT_ERROR))
        log.warning("unsupported MTI %s: answering 12", mti)
        return Decision(iso.response_for(request, iso.INVALID_TRANSACTION))

    def _accept_loop(self) -> None:
        self._listener.settimeout(POLL_S)
        while not self.stop.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if not self.stop.is_set():
                    log.error("accept failed: %s", exc)
                    self.stop.wait(POLL_S)
                continue
            thread = threading.Thread(
                target=self._serve, args=(conn, peer), name=f"iso-{peer[0]}:{peer[1]}"
            )
            with self._lock:
                self._connections.add(conn)
                self._threads.add(thread)
            thread.start()

    def _serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        """One terminal connection: many framed messages, answered in order."""
        log.info("connection from %s:%d", *peer)
        decoder = iso.FrameDecoder()
        try:
            conn.settimeout(POLL_S)
            while not self.stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError as exc:
                    log.info("connection %s:%d failed: %s", *peer, exc)
                    return
                if not data:
                    if decoder.buffered:
                        log.warning("peer closed mid-message (%d bytes)", decoder.buffered)
                    return
                try:
                    bodies = decoder.feed(data)
                except iso.Iso8583Error as exc:
                    log.warning("garbage from %s:%d (%s): %s", *peer, exc, safe_hex(data))
                    return
                for body in bodies:
                    if not self._answer(conn, body, peer):
                        return
        finally:
            conn.close()
            with self._lock:
                self._connections.discard(conn)
                self._threads.discard(threading.current_thread())
            log.info("connection from %s:%d closed", *peer)

    def _answer(self, conn: socket.socket, body: bytes, peer: tuple[str, int]) -> bool:
        """Decode, decide, then (after any delay) answer one message; False = close."""
        try:
            request = iso.decode(body)
        except iso.Iso8583Error as exc:
            log.warning("undecodable message from %s:%d (%s): %s", *peer, exc, safe_hex(body))
            return False
        log.info("in  %s", iso.summary(request))
        try:
            decision = self.handle(request)
        except sqlite3.Error:
            log.exception("ledger failure on %s: no answer", iso.summary(request))
            return False
        if decision.response is None:
            log.info("silent: no answer to %s", iso.summary(request))
            return True
        if decision.delay_ms and self.stop.wait(decision.delay_ms / 1000):
            return False
        try:
            data = iso.encode(decision.response)
            conn.settimeout(SEND_TIMEOUT_S)
            conn.sendall(data)
            conn.settimeout(POLL_S)
        except iso.Iso8583Error as exc:
            log.error("cannot encode the answer to %s: %s", iso.summary(request), exc)
            return False
        except OSError as exc:
            log.warning("answer %s not sent: %s", iso.summary(decision.response), exc)
            return False
        pan = f" pan={mask_pan(request['2'])}" if "2" in request else ""
        log.info("out %s%s", iso.summary(decision.response), pan)
        return True


# --- the ledger over HTTP -------------------------------------------------------------------


class LedgerHttpServer(JsonHttpServer):
    """GET /health, /ledger, /ledger/settlement.csv, /rules; PUT /rules."""

    def __init__(self, address: Address, host: AcquirerHost) -> None:
        self.acquirer = host
        super().__init__((address.host, address.port), LedgerHandler)


class LedgerHandler(JsonHandler):
    server: LedgerHttpServer
    error_fields: ClassVar[dict[str, Any]] = {"entry": None, "key": None}

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        host = self.server.acquirer
        if path == "/health":
            self.send_body(HTTPStatus.OK, b"ok", "text/plain; charset=utf-8")
        elif path == "/ledger":
            self.send_json(HTTPStatus.OK, host.ledger.export())
        elif path == "/ledger/settlement.csv":
            body = host.ledger.settlement_csv().encode("utf-8")
            self.send_body(HTTPStatus.OK, body, "text/csv; charset=utf-8")
        elif path == "/rules":
            self.send_json(HTTPStatus.OK, [rule_to_json(rule) for rule in host.rules.get()])
        else:
            self.send_not_found(path)

    def do_PUT(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/rules":
            self.send_not_found(path)
            return
        ok, data = self.read_json()
        if not ok:
            return
        try:
            rules = parse_rules(data)
        except RulesError as exc:
            self.send_error_json(str(exc), entry=exc.entry, key=exc.key)
            return
        self.server.acquirer.rules.replace(rules)
        log.info("rules replaced: %s", [rule_to_json(rule) for rule in rules])
        self.send_json(HTTPStatus.OK, [rule_to_json(rule) for rule in rules])


def main(argv: list[str] | None = None) -> int:
    rig, stop = start_device("host", argv, "Simulated acquirer host (ISO 8583 + ledger).")
    try:
        host = AcquirerHost(rig, stop)
    except (OSError, sqlite3.Error) as exc:
        log.error("host cannot start: %s", exc)
        return 1
    host.start()
    try:
        while not stop.wait(POLL_S):
            pass
    finally:
        host.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
