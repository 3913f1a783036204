"""The physical world of the simulated bench: the card in the slot, printer faults, power draw.

On a real bench these are physical: a card robot inserts a card, a jam is paper stuck in the
cutter, a device draws current. Here they are small JSON files in `<state_dir>/world/`, written
atomically (write + rename) so a reader never sees half a state, and kept outside every device
process so they survive power cuts exactly as physical state does. Devices read them on every
action; the harness writes them through its sim-only drivers (card presenter, printer faults).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from harness.protocols.cards import mask_pan

Activity = Literal["off", "booting", "idle", "transacting", "printing"]
PaperState = Literal["ok", "near_end", "out"]


@dataclass(frozen=True)
class CardInSlot:
    """A test card sitting in the terminal's card slot (what the card robot inserted)."""

    pan: str
    expiry: str = "3012"  # YYMM

    @property
    def masked(self) -> str:
        return mask_pan(self.pan)


@dataclass(frozen=True)
class PrinterPhysical:
    """Physical printer conditions: a jam at the cutter, the paper roll, the cover."""

    jam: bool = False
    paper: PaperState = "ok"
    cover_open: bool = False

    @property
    def faulted(self) -> bool:
        return self.jam or self.paper == "out" or self.cover_open


class World:
    """Reads and writes the physical state files under `<state_dir>/world/`."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "world"
        (self.root / "load").mkdir(parents=True, exist_ok=True)

    # -- card slot ---------------------------------------------------------------------------
    def present_card(self, card: CardInSlot) -> None:
        self._write("card_slot.json", asdict(card))

    def remove_card(self) -> None:
        self._remove("card_slot.json")

    def card(self) -> CardInSlot | None:
        data = self._read("card_slot.json")
        return None if data is None else CardInSlot(str(data["pan"]), str(data["expiry"]))

    # -- printer -----------------------------------------------------------------------------
    def set_printer(self, state: PrinterPhysical) -> None:
        self._write("printer.json", asdict(state))

    def printer(self) -> PrinterPhysical:
        data = self._read("printer.json")
        if data is None:
            return PrinterPhysical()
        return PrinterPhysical(bool(data["jam"]), data["paper"], bool(data["cover_open"]))

    # -- power draw --------------------------------------------------------------------------
    def set_activity(self, device: str, activity: Activity) -> None:
        """What a device is doing now; the simulated PSU turns it into a measured current."""
        (self.root / "load" / device).write_text(activity, encoding="ascii")

    def activity(self, device: str) -> Activity:
        try:
            text = (self.root / "load" / device).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return "off"
        if text in ("off", "booting", "idle", "transacting", "printing"):
            return text  # type: ignore[return-value]
        return "idle"

    # -- files -------------------------------------------------------------------------------
    def _write(self, name: str, data: dict[str, Any]) -> None:
        path = self.root / name
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        if not isinstance(data, dict):
            raise ValueError(f"{self.root / name}: expected a JSON object")
        return data

    def _remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / name).unlink()
