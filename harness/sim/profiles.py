"""The simulated terminal's firmware profiles: `correct` and the bug zoo.

Each zoo profile reproduces one real field defect by switching exactly one behaviour of the
firmware (a flag in `Bugs`); everything else stays correct, so the suite must catch it by the
invariant that defect breaks. Kept apart from the firmware so the rig loader can validate
`--firmware` / `[sim] firmware` without importing the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Bugs:
    """One flag per known field defect; `correct` has none set."""

    reversal_record_after_send: bool = False
    no_auto_reversal: bool = False
    late_response_accepted: bool = False
    journal_after_receipt: bool = False
    retry_with_new_stan: bool = False
    reversal_given_up: bool = False
    eod_with_queued_reversals: bool = False
    jam_receipt_not_reprinted: bool = False
    jam_reprint_as_original: bool = False
    status_from_memory: bool = False
    ecr_result_before_journal: bool = False


FIRMWARE_PROFILES: dict[str, str] = {
    "correct": "persists before it sends, reverses on doubt, reprints lost receipts as copies",
    "reversal-record-after-send": (
        "writes the pending record (the armed reversal) only after the 0200 left: a power cut "
        "in between loses a captured sale (the CUP template's SaveReversalTranData order)"
    ),
    "no-auto-reversal": (
        "on a timeout it prints NOT PAID and sends no reversal: the host keeps the money"
    ),
    "late-response-accepted": (
        "after its timeout queued a reversal, it still accepts the late 0210: the receipt says "
        "paid while the host reversed"
    ),
    "journal-after-receipt": (
        "journals the approval only after the receipt printed: a power cut while printing "
        "leaves a PAID receipt for a sale it then reverses"
    ),
    "retry-with-new-stan": (
        "retries a timed-out sale with a new STAN instead of reversing it: double charge"
    ),
    "reversal-given-up": (
        "drops a reversal after 3 failed sends (冲正不成功): the customer stays charged"
    ),
    "eod-with-queued-reversals": (
        "runs end of day while reversals are still queued: totals disagree with the host"
    ),
    "jam-receipt-not-reprinted": (
        "a receipt lost in a paper jam is never reprinted: the customer has no receipt"
    ),
    "jam-reprint-as-original": (
        "a receipt lost in a jam is reprinted as a second original, not marked as a copy"
    ),
    "status-from-memory": (
        "after a reboot, repeat receipt answers from memory instead of the journal: the ECR "
        "marks a paid order unpaid"
    ),
    "ecr-result-before-journal": (
        "tells the ECR the sale is paid before the approval is durable: a power cut then "
        "reverses a sale the ECR counts as paid"
    ),
}


def bugs_for(profile: str) -> Bugs:
    """The behaviour switches of a profile (its name with dashes as underscores)."""
    if profile not in FIRMWARE_PROFILES:
        raise ValueError(
            f"unknown firmware profile {profile!r}; known: {', '.join(FIRMWARE_PROFILES)}"
        )
    flag = profile.replace("-", "_")
    names = {f.name for f in fields(Bugs)}
    if profile == "correct":
        return Bugs()
    if flag not in names:
        raise ValueError(f"profile {profile!r} has no behaviour switch {flag!r} in Bugs")
    return Bugs(**{flag: True})
