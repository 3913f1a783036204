"""A scenario's evidence, on disk and in the Allure report.

Everything is written to the scenario's directory first (the evidence survives a report that
cannot be built), then attached through allure-pytest: the verdict, the timeline, the three
records side by side, each receipt as text and as a rendered image, the pcap of the host link,
the PSU's part of the history, the toxics applied, the seed and the one command that replays it.
A failure to write evidence is an error, never swallowed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from harness.records import Evidence


def _attach(name: str, path: Path, kind: str) -> None:
    try:
        import allure
    except ImportError:  # the report is optional; the files on disk are the evidence
        return
    types = {
        "text": allure.attachment_type.TEXT,
        "json": allure.attachment_type.JSON,
        "png": allure.attachment_type.PNG,
        "pcap": None,
    }
    attachment_type = types[kind]
    if attachment_type is None:
        allure.attach.file(str(path), name=name, extension="pcap")  # type: ignore[no-untyped-call]
    else:
        allure.attach.file(  # type: ignore[no-untyped-call]
            str(path), name=name, attachment_type=attachment_type
        )


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def timeline_text(evidence: Evidence) -> str:
    if not evidence.timeline:
        return "(empty)"
    t0 = evidence.timeline[0].t
    return "\n".join(f"{entry.t - t0:+9.3f} s  {entry.text}" for entry in evidence.timeline)


def records_json(evidence: Evidence) -> dict[str, Any]:
    def plain(items: list[Any]) -> list[dict[str, Any]]:
        return [dataclasses.asdict(item) for item in items]

    return {
        "tid": evidence.tid,
        "orders (ECR)": plain(evidence.orders),
        "host ledger": plain(evidence.host),
        "terminal journal": plain(evidence.journal),
        "receipts": [
            {k: v for k, v in dataclasses.asdict(r).items() if k != "text"}
            for r in evidence.receipts
        ],
        "end of day": dataclasses.asdict(evidence.totals) if evidence.totals else None,
        "wire": plain(evidence.wire),
        "faults": plain(evidence.faults),
        "unresolved": evidence.unresolved,
        "read errors": evidence.read_errors,
    }


def attach_evidence(
    out: Path, scenario: Any, evidence: Evidence, verdict: Any, report: str, replay: str
) -> None:
    """Write every piece of evidence under `out`, then attach it to the report."""
    out.mkdir(parents=True, exist_ok=True)
    from harness.oracle import verdict_to_json

    files: list[tuple[str, Path, str]] = [
        ("verdict", _write(out / "verdict.txt", report), "text"),
        (
            "verdict.json",
            _write(
                out / "verdict.json", json.dumps(verdict_to_json(verdict), indent=2, default=str)
            ),
            "json",
        ),
        ("timeline", _write(out / "timeline.txt", timeline_text(evidence)), "text"),
        (
            "records (host, journal, ECR, receipts, wire)",
            _write(out / "records.json", json.dumps(records_json(evidence), indent=2, default=str)),
            "json",
        ),
        (
            "seed and replay",
            _write(out / "replay.txt", f"seed {scenario.info.seed}\n{replay}\n"),
            "text",
        ),
    ]
    power = [e.text for e in evidence.timeline if "power." in e.text or "FAULT" in e.text]
    files.append(
        (
            "PSU log (power calls and faults)",
            _write(out / "psu.txt", "\n".join(power) or "(none)"),
            "text",
        )
    )
    network = [e.text for e in evidence.timeline if "network." in e.text]
    files.append(
        (
            "toxics (network calls)",
            _write(out / "toxics.txt", "\n".join(network) or "(none)"),
            "text",
        )
    )
    if scenario.rig.sim is not None:
        psu_log = scenario.rig.sim.state_dir / "psu" / "psu.log"
        if psu_log.exists():
            tail = psu_log.read_text(encoding="utf-8", errors="replace").splitlines()[-200:]
            files.append(
                ("simulated PSU log (tail)", _write(out / "psu-sim.log", "\n".join(tail)), "text")
            )
    from harness.report.receipt_image import render_receipt_png

    for receipt in evidence.receipts:
        stem = f"receipt-{receipt.index:03d}"
        label = (
            f"receipt {receipt.index} ({receipt.kind}, {receipt.verdict}"
            + (", copy" if receipt.copy else "")
            + ("" if receipt.complete else ", incomplete")
            + ")"
        )
        files.append((label, _write(out / f"{stem}.txt", receipt.text), "text"))
        image = out / f"{stem}.png"
        image.write_bytes(
            render_receipt_png(
                receipt.text.splitlines(), copy=receipt.copy, complete=receipt.complete
            )
        )
        files.append((f"{label} image", image, "png"))
    pcap = out / "link.pcap"
    if pcap.exists():
        files.append(("host link capture (pcap)", pcap, "pcap"))
    for name, path, kind in files:
        _attach(name, path, kind)
