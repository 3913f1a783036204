"""Names of the simulated terminal's firmware profiles: `correct` plus the bug zoo.

Kept apart from the firmware itself so the rig loader can validate `--firmware` / `[sim] firmware`
without importing the simulator.
"""

FIRMWARE_PROFILES: dict[str, str] = {
    "correct": "persists before it sends, reverses on doubt, reprints lost receipts as copies",
}
