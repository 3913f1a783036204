"""Harness-side readers of the acquirer's record (the `HostLedger` protocol): the money truth.

Two sources: the simulated host's ledger API (`SimLedger`, which can also change the sim host's
answer rules) and a settlement / reconciliation export in CSV (`SettlementCsvLedger`, what a real
acquirer's report is mapped to). `open_ledger` picks one from the rig's `[host] ledger` string.
The one thing to know: a ledger is read after the fact and never guessed; any transport or format
problem raises `HostLedgerError` naming the URL or file, never an empty list.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.drivers.interfaces import HostLedger, LedgerEntry, LedgerTotals
from harness.json_http import call_json, get_ok
from harness.protocols.settlement_csv import CSV_HEADER
from harness.rig import HostConfig

_STATUSES = ("captured", "declined", "reversed")


class HostLedgerError(RuntimeError):
    """The ledger cannot be read (or the rules not set); names the URL or file and why."""


def ledger_totals(
    entries: Iterable[LedgerEntry], tid: str, batch: int | None = None, currency: int | None = None
) -> LedgerTotals:
    """Count and sum of the captured (not reversed) entries of one TID (one batch if given).

    Mixed currencies without a `currency` filter are an error: totals are per currency.
    """
    chosen = [
        e
        for e in entries
        if e.tid == tid
        and e.captured
        and (batch is None or e.batch == batch)
        and (currency is None or e.currency == currency)
    ]
    currencies = {e.currency for e in chosen}
    if len(currencies) > 1:
        raise HostLedgerError(
            f"TID {tid} has captures in currencies {sorted(currencies)}; pass currency="
        )
    found = currencies.pop() if currencies else (currency or 0)
    return LedgerTotals(len(chosen), sum(e.amount for e in chosen), found)


class SimLedger:
    """The simulated host's ledger over HTTP (`GET /ledger`, `PUT /rules`)."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"SimLedger({self.base_url!r})"

    def entries(self) -> list[LedgerEntry]:
        return [_entry(row, self._url("/ledger")) for row in self._section("transactions")]

    def reversals(self) -> list[dict[str, Any]]:
        """Every reversal message the host received, with what it did (effect) and answered."""
        return self._section("reversals")

    def settlements(self) -> list[dict[str, Any]]:
        """Every settlement: terminal and host totals, the result (00 / 95), the batch closed."""
        return self._section("settlements")

    def batches(self) -> dict[str, int]:
        """The open batch number per TID."""
        document = self._request("GET", "/ledger")
        batches = document.get("batches") if isinstance(document, dict) else None
        if not isinstance(batches, dict):
            raise HostLedgerError(f"{self._url('/ledger')}: no 'batches' object in the answer")
        return {str(tid): int(batch) for tid, batch in batches.items()}

    def totals(
        self, tid: str, batch: int | None = None, currency: int | None = None
    ) -> LedgerTotals:
        """Captured, not reversed: what the acquirer will pay out for this TID (and batch)."""
        return ledger_totals(self.entries(), tid, batch, currency)

    def rules(self) -> list[dict[str, Any]]:
        rules = self._request("GET", "/rules")
        if not isinstance(rules, list):
            raise HostLedgerError(f"{self._url('/rules')}: expected a JSON list")
        return rules

    def set_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the sim host's answer rules ({"amount"?, "card"?, "response", ...})."""
        self._request("PUT", "/rules", rules)

    def health(self) -> bool:
        """True when the host answers /health (no exception: for readiness polling)."""
        return get_ok(self._url("/health"), self.timeout_s)

    def _section(self, key: str) -> list[dict[str, Any]]:
        document = self._request("GET", "/ledger")
        rows = document.get(key) if isinstance(document, dict) else None
        if not isinstance(rows, list):
            raise HostLedgerError(f"{self._url('/ledger')}: no {key!r} list in the answer")
        return rows

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        return call_json(
            method,
            self._url(path),
            body,
            timeout_s=self.timeout_s,
            error=HostLedgerError,
            service="the host ledger",
        )


def _entry(row: Any, where: str) -> LedgerEntry:
    if not isinstance(row, dict):
        raise HostLedgerError(f"{where}: a transaction is not an object: {row!r}")
    try:
        entry = LedgerEntry(
            tid=str(row["tid"]),
            stan=int(row["stan"]),
            amount=int(row["amount"]),
            currency=int(row["currency"]),
            card_masked=str(row["card_masked"]),
            rrn=str(row["rrn"]),
            auth_code=str(row["auth_code"]),
            response_code=str(row["response_code"]),
            status=str(row["status"]),
            batch=int(row["batch"]),
            received_at=str(row["received_at"]),
            reversed_at=None if row["reversed_at"] is None else str(row["reversed_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise HostLedgerError(f"{where}: malformed transaction ({exc!r})") from None
    if entry.status not in _STATUSES:
        raise HostLedgerError(f"{where}: unknown status {entry.status!r}")
    return entry


class SettlementCsvLedger:
    """A settlement export in CSV (header `CSV_HEADER`), as a real acquirer report is mapped to."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SettlementCsvLedger({str(self.path)!r})"

    def entries(self) -> list[LedgerEntry]:
        try:
            with self.path.open(encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                header = tuple(reader.fieldnames or ())
                if header != CSV_HEADER:
                    raise HostLedgerError(
                        f"{self.path}: header is {','.join(header) or 'missing'};"
                        f" expected {','.join(CSV_HEADER)}"
                    )
                return [self._entry(row, reader.line_num) for row in reader]
        except OSError as exc:
            raise HostLedgerError(f"{self.path}: cannot read ({exc.strerror})") from None

    def totals(
        self, tid: str, batch: int | None = None, currency: int | None = None
    ) -> LedgerTotals:
        return ledger_totals(self.entries(), tid, batch, currency)

    def _entry(self, row: dict[str, str], line: int) -> LedgerEntry:
        mapped = {key: row.get(key) for key in CSV_HEADER}
        mapped["card_masked"] = mapped.pop("card")
        mapped["reversed_at"] = mapped["reversed_at"] or None
        return _entry(mapped, f"{self.path}:{line}")


def open_ledger(config: HostConfig) -> HostLedger:
    """The reader for a rig's `[host] ledger`: "sim+http://host:port" or "settlement-csv:PATH"."""
    ledger = config.ledger
    if ledger.startswith("sim+http://"):
        return SimLedger(ledger.removeprefix("sim+"))
    if ledger.startswith("settlement-csv:"):
        return SettlementCsvLedger(Path(ledger.removeprefix("settlement-csv:")))
    raise HostLedgerError(
        f"[host] ledger = {ledger!r}: expected sim+http://host:port or settlement-csv:PATH"
    )
