"""The history: written before acting, Jepsen op types, card numbers masked, listeners told."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.drivers.interfaces import Card, Outcome
from harness.history import History, Traced, mask_text, read_history, traced
from harness.protocols.cards import with_luhn

PAN = with_luhn("476173" + "987654321")


class Device:
    def __init__(self, history_path: Path) -> None:
        self.history_path = history_path
        self.seen_on_disk: list[dict[str, object]] = []

    def act(self, value: int) -> int:
        self.seen_on_disk = list(read_history(self.history_path))
        return value * 2

    def unsure(self) -> object:
        return type("R", (), {"outcome": Outcome.UNKNOWN})()

    def refused(self) -> object:
        return type("R", (), {"outcome": Outcome.NOT_PAID})()

    def boom(self) -> None:
        raise RuntimeError("device unplugged")

    def present(self, card: Card) -> None:
        pass


def test_invoke_is_on_disk_before_the_call_runs(tmp_path: Path) -> None:
    history = History(tmp_path / "h.jsonl")
    device = Device(history.path)
    assert Traced(device, history, "dev").act(21) == 42
    assert [r["type"] for r in device.seen_on_disk] == ["invoke"]
    records = history.records()
    assert [r["type"] for r in records] == ["invoke", "ok"]
    assert records[1]["value"] == 42 and records[1]["invoke"] == records[0]["seq"]
    assert records[0]["t"] <= records[1]["t"]


def test_outcomes_map_to_ok_fail_info(tmp_path: Path) -> None:
    history = History(tmp_path / "h.jsonl")
    device = Traced(Device(history.path), history, "dev")
    device.unsure()
    device.refused()
    with pytest.raises(RuntimeError):
        device.boom()
    types = [r["type"] for r in history.records() if r["type"] != "invoke"]
    assert types == ["info", "fail", "info"]
    assert "device unplugged" in history.records()[-1]["error"]


def test_card_numbers_never_reach_the_file(tmp_path: Path) -> None:
    history = History(tmp_path / "h.jsonl")
    Traced(Device(history.path), history, "cards").present(Card(PAN))
    traced(history, "x", "f", lambda text: text)(f"pan={PAN} stan=000123")
    raw = history.path.read_text()
    assert PAN not in raw and "476173*****4321"[:6] in raw
    assert mask_text(f"card {PAN}") == f"card {PAN[:6]}{'*' * (len(PAN) - 10)}{PAN[-4:]}"
    assert mask_text("amount 000000001234") == "amount 000000001234"  # not Luhn-valid: kept


def test_listeners_hear_every_record(tmp_path: Path) -> None:
    history = History(tmp_path / "h.jsonl")
    heard: list[str] = []
    unsubscribe = history.subscribe(lambda r: heard.append(r["type"]))
    history.record("bench", event="open")
    unsubscribe()
    history.record("bench", event="after")
    assert heard == ["bench"]
    history.close()
    with pytest.raises(ValueError, match="closed"):
        history.record("bench")
