"""The `hil run` summary: one row per scenario, one column per invariant (I1..I7).

What a QA engineer reads first, on the console and as summary.txt / summary.json. The one thing
to know: a cell comes from the plugin's `pos_hil_verdict` user property (JSON); a scenario
without one (skipped, opted out, errored before the verdict) shows "-" in every invariant column.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

log = logging.getLogger(__name__)

__all__ = [
    "INVARIANTS",
    "VERDICT_PROPERTY",
    "ScenarioResult",
    "counts",
    "invariant_columns",
    "parse_verdict",
    "render_text",
    "summary_table",
]

VERDICT_PROPERTY = "pos_hil_verdict"
INVARIANTS: tuple[str, ...] = tuple(f"I{n}" for n in range(1, 8))

# cell text and style per invariant status; anything else shows as itself
CELLS: dict[str, tuple[str, str]] = {
    "pass": ("✓", "green"),
    "fail": ("✗", "bold red"),
    "unknown": ("?", "yellow"),
    "n/a": ("·", "dim"),
}
ABSENT = ("-", "dim")
OUTCOME_STYLES = {
    "passed": "green",
    "failed": "bold red",
    "error": "bold red",
    "skipped": "yellow",
    "xfailed": "yellow",
    "xpassed": "green",
}
FAILING = frozenset({"failed", "error"})


@dataclass
class ScenarioResult:
    """What one scenario came to: pytest's outcome plus the plugin's verdict, if any."""

    nodeid: str
    outcome: str = "passed"  # passed | failed | error | skipped | xfailed | xpassed
    duration_s: float = 0.0
    verdict: dict[str, Any] | None = None
    message: str = ""  # first line of the failure, or the skip reason
    phases: dict[str, str] = field(default_factory=dict)  # when -> outcome

    @property
    def failed(self) -> bool:
        return self.outcome in FAILING

    @property
    def invariants(self) -> dict[str, str]:
        if self.verdict is None:
            return {}
        value = self.verdict.get("invariants")
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    @property
    def violations(self) -> list[dict[str, Any]]:
        value = (self.verdict or {}).get("violations")
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    @property
    def headline(self) -> str:
        """Why it failed, in one line: the first violation's diagnosis, else pytest's message."""
        for violation in self.violations:
            inv = violation.get("invariant", "?")
            return f"{inv}: {violation.get('diagnosis', '(no diagnosis)')}"
        return self.message

    def to_json(self, columns: Sequence[str]) -> dict[str, Any]:
        verdict = self.verdict or {}
        invariants = self.invariants
        return {
            "nodeid": self.nodeid,
            "outcome": self.outcome,
            "duration_s": round(self.duration_s, 3),
            "invariants": {inv: invariants.get(inv) for inv in columns},
            "valid": verdict.get("valid"),
            "violations": self.violations,
            "seed": verdict.get("seed"),
            "replay": verdict.get("replay"),
            "message": self.message,
            "has_verdict": self.verdict is not None,
        }


def parse_verdict(user_properties: Iterable[tuple[str, object]]) -> dict[str, Any] | None:
    """The last `pos_hil_verdict` among a report's user properties; None if absent or garbled."""
    verdict: dict[str, Any] | None = None
    for item in user_properties:
        try:
            name, value = item
        except (TypeError, ValueError):
            continue
        if name != VERDICT_PROPERTY:
            continue
        try:
            parsed = json.loads(value) if isinstance(value, str | bytes) else value
        except ValueError as exc:
            log.warning("unreadable %s property: %s", VERDICT_PROPERTY, exc)
            continue
        if isinstance(parsed, dict):
            verdict = parsed
        else:
            log.warning("%s property is not a JSON object: %r", VERDICT_PROPERTY, value)
    return verdict


def invariant_columns(results: Iterable[ScenarioResult]) -> list[str]:
    """I1..I7, then any other invariant a verdict names (in name order)."""
    extra = {k for r in results for k in r.invariants if k not in INVARIANTS}
    return [*INVARIANTS, *sorted(extra, key=lambda k: (len(k), k))]


def _cell(status: str | None) -> Text:
    if status is None:
        return Text(ABSENT[0], style=ABSENT[1])
    symbol, style = CELLS.get(status, (status, "magenta"))
    return Text(symbol, style=style)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def summary_table(results: Sequence[ScenarioResult], *, title: str | None = None) -> Table:
    """The scenario x invariant table (✓ pass, ✗ fail, ? unknown, · n/a, - no verdict)."""
    columns = invariant_columns(results)
    # Text, not str: node ids like test_x[power-cut] are not rich markup
    table = Table(title=Text(title) if title else None, title_justify="left")
    table.add_column("scenario", overflow="fold")
    for inv in columns:
        table.add_column(inv, justify="center", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    for result in results:
        invariants = result.invariants
        table.add_row(
            Text(result.nodeid),
            *(_cell(invariants.get(inv)) if result.verdict else _cell(None) for inv in columns),
            Text(result.outcome, style=OUTCOME_STYLES.get(result.outcome, "")),
            _duration(result.duration_s),
        )
    table.caption = "✓ pass  ✗ fail  ? unknown  · n/a  - no verdict"
    table.caption_justify = "left"
    return table


def render_text(table: Table, width: int = 200) -> str:
    """The table as plain text (no colour codes), for summary.txt."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False)
    console.print(table)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


def counts(results: Iterable[ScenarioResult]) -> Mapping[str, int]:
    """How many scenarios ended in each outcome (every outcome key present)."""
    tally = dict.fromkeys(OUTCOME_STYLES, 0)
    for result in results:
        tally[result.outcome] = tally.get(result.outcome, 0) + 1
    return tally
