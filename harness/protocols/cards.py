"""Card numbers: masking (first 6 / last 4), the Luhn check, and the test-BIN allowlist.

Every module that shows, logs or exports a card number goes through `mask_pan`; every place that
accepts one goes through `is_test_card`, so a real card number never enters the bench.
"""

from __future__ import annotations


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits, the rest as '*': the only form a card number may leave memory."""
    if len(pan) <= 10:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def luhn_ok(pan: str) -> bool:
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        return False
    total = 0
    for index, char in enumerate(reversed(pan)):
        digit = int(char)
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def with_luhn(prefix: str) -> str:
    """Complete a digit string with its Luhn check digit (to make test card numbers)."""
    for check in "0123456789":
        if luhn_ok(prefix + check):
            return prefix + check
    raise ValueError(f"cannot complete {prefix!r}")


def is_test_card(pan: str, card_bins: tuple[str, ...]) -> bool:
    """A card the bench may use: a valid number whose BIN is on the rig's test allowlist."""
    return luhn_ok(pan) and any(pan.startswith(b) for b in card_bins)
