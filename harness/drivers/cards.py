"""Card presenters: what puts a test card in front of the terminal.

On a real bench this is a card robot; on the simulated bench it is the terminal's card slot in
the physical-world files. Both refuse any card that is not a test card of the rig's BIN
allowlist, before anything reaches the terminal.
"""

from __future__ import annotations

from pathlib import Path

from harness.drivers.interfaces import Card
from harness.protocols.cards import is_test_card, mask_pan
from harness.sim.world import CardInSlot, World


class RefusedCard(ValueError):
    """Not a test card: real card numbers never enter the bench."""


def check_test_card(card: Card, card_bins: tuple[str, ...]) -> None:
    if not is_test_card(card.pan, card_bins):
        raise RefusedCard(
            f"card {mask_pan(card.pan)} is refused: only valid test cards whose BIN is in the "
            f"rig's [rig] card_bins ({', '.join(card_bins)}) may be used"
        )


class SimCardSlot:
    """The simulated terminal's card slot (stands for a card robot)."""

    def __init__(self, state_dir: Path, card_bins: tuple[str, ...]) -> None:
        self.world = World(state_dir)
        self.card_bins = card_bins

    def present(self, card: Card) -> None:
        check_test_card(card, self.card_bins)
        self.world.present_card(CardInSlot(card.pan, card.expiry))

    def remove(self) -> None:
        self.world.remove_card()
