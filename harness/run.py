"""`hil run`: the nightly job. Runs the scenario suite, shows progress, writes the evidence.

pytest runs in this process on the suite (scenarios/ and the project's pytest plugin) with
`--alluredir` and `--junitxml`; a live display shows the current scenario and the counts, and
pytest's own output goes to <out>/pytest.log. Afterwards: the scenario x invariant summary
(console, summary.txt, summary.json), the failing scenarios with their first violation, and the
Allure 3 HTML report.

The one thing to know: the exit code is the run's verdict and nothing else. 0 only when every
scenario that ran passed (skipped ones are listed prominently but do not fail the run); 1 when a
scenario failed or errored; 5 when no scenario ran (none collected, or all skipped); pytest's own
2/3/4 (interrupted, internal error, usage error) pass through. The HTML report is best effort: a
missing Node.js/npm or a failing `allure generate` prints a message and changes no exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pytest
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from harness.report.summary import (
    ScenarioResult,
    counts,
    invariant_columns,
    parse_verdict,
    render_text,
    summary_table,
)

log = logging.getLogger(__name__)

__all__ = [
    "HtmlReport",
    "RunPaths",
    "add_arguments",
    "build_html_report",
    "find_allure",
    "find_npm",
    "main",
    "run",
]

DEFAULT_SUITE = Path("scenarios")
REPORTS_DIR = Path(".hil/reports")
TOOLS_DIR = Path(".hil/tools")  # where scripts/report-tools.sh installs Allure 3
ALLURE_PACKAGE = "allure@3"
NPM_INSTALL_TIMEOUT_S = 600.0
ALLURE_TIMEOUT_S = 300.0
NO_SCENARIOS = 5  # pytest's own "no tests collected"
REWRITE_WARNING = "Module already imported so cannot be rewritten; harness"
PASSTHROUGH_CODES = frozenset({2, 3, 4})  # interrupted, internal error, usage error
# (hil run flag, attribute, pytest option the plugin defines)
PLUGIN_OPTIONS = (
    ("--rig", "rig", "--rig"),
    ("--firmware", "firmware", "--firmware"),
    ("--seed", "seed", "--seed"),
    ("--recovery-s", "recovery_s", "--recovery-s"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `hil run` flags; anything after `--` goes to pytest unchanged."""
    parser.add_argument(
        "--rig", type=Path, default=None, help="rig file (default: the plugin's, rigs/sim.toml)"
    )
    parser.add_argument("--firmware", default=None, help="terminal firmware profile to test")
    parser.add_argument("-k", dest="keyword", default=None, metavar="EXPR", help="pytest -k")
    parser.add_argument("--seed", type=int, default=None, help="seed for every scenario")
    parser.add_argument(
        "--recovery-s", type=float, default=None, help="seconds the bench may take to recover"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"evidence dir (default {REPORTS_DIR}/<timestamp>)"
    )
    parser.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="scenario suite")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="N simulated rigs side by side (pytest-xdist; each worker gets its own ports)",
    )
    parser.add_argument("--no-report", action="store_true", help="skip the Allure HTML report")
    parser.add_argument(
        "pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="passed to pytest as they are"
    )


@dataclass(frozen=True)
class RunPaths:
    """Where one run's evidence goes."""

    out: Path

    @property
    def allure_results(self) -> Path:
        return self.out / "allure-results"

    @property
    def allure_report(self) -> Path:
        return self.out / "allure-report"

    @property
    def junit(self) -> Path:
        return self.out / "junit.xml"

    @property
    def summary_txt(self) -> Path:
        return self.out / "summary.txt"

    @property
    def summary_json(self) -> Path:
        return self.out / "summary.json"

    @property
    def pytest_log(self) -> Path:
        return self.out / "pytest.log"

    @property
    def evidence(self) -> Path:
        """The plugin's per-scenario evidence (history, records, receipts, pcap)."""
        return self.out / "evidence"


def pytest_arguments(args: argparse.Namespace, paths: RunPaths) -> list[str]:
    """pytest's command line: the suite, the evidence options, the plugin's options if given.

    A plugin option is passed only when `hil run` was given it, so the plugin's own defaults
    apply otherwise (and a suite without the plugin still runs).
    """
    argv = [
        str(args.suite),
        # `hil` itself imported the harness package before pytest could rewrite its asserts;
        # expected, and not the suite's problem
        "-W",
        f"ignore:{REWRITE_WARNING}:pytest.PytestAssertRewriteWarning",
        "--alluredir",
        str(paths.allure_results),
        "--clean-alluredir",
        "--junitxml",
        str(paths.junit),
    ]
    if args.keyword:
        argv += ["-k", args.keyword]
    if getattr(args, "parallel", 1) > 1:  # pytest-xdist; each worker derives its own sim rig
        argv += ["-n", str(args.parallel)]
    for _flag, attr, option in PLUGIN_OPTIONS:
        value = getattr(args, attr, None)
        if value is not None:
            argv += [option, str(value)]
    argv += list(args.pytest_args or [])
    return argv


# --- live progress -------------------------------------------------------------------------


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _failure_message(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The one line pytest would put in its short summary (the crash message)."""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", None)
    if isinstance(message, str) and message:
        return _first_line(message)
    lines = [line for line in report.longreprtext.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("E "):
            return line[1:].strip()
    return lines[-1].strip() if lines else "(no message)"


def _skip_reason(report: pytest.TestReport) -> str:
    wasxfail = getattr(report, "wasxfail", None)
    if isinstance(wasxfail, str):
        return f"xfail: {wasxfail}" if wasxfail else "xfail"
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return _first_line(report.longreprtext)


class RunProgress:
    """A pytest plugin: collects every scenario's outcome and shows progress while they run."""

    def __init__(self, console: Console, *, live: bool, evidence_dir: Path | None = None) -> None:
        self.console = console
        self.live = live
        self.evidence_dir = evidence_dir
        self.evidence_used = False
        self.results: dict[str, ScenarioResult] = {}
        self.collection_errors: list[tuple[str, str]] = []
        self.total: int | None = None
        self.done = 0
        self._progress: Progress | None = None
        self._task: Any = None

    # -- display

    def __enter__(self) -> RunProgress:
        if self.live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.fields[tally]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
                redirect_stdout=False,  # pytest owns stdout/stderr while it runs
                redirect_stderr=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("collecting", total=None, tally="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _tally(self) -> str:
        tally = counts(self.results.values())
        parts = [f"[green]✓ {tally['passed'] + tally['xpassed']}[/]"]
        failed = tally["failed"] + tally["error"]
        parts.append(f"[bold red]✗ {failed}[/]" if failed else "✗ 0")
        skipped = tally["skipped"] + tally["xfailed"]
        parts.append(f"[yellow]↷ {skipped}[/]" if skipped else "↷ 0")
        return "  ".join(parts)

    def _update(self, description: str | None = None) -> None:
        if self._progress is None:
            return
        fields: dict[str, Any] = {"tally": self._tally(), "completed": self.done}
        if description is not None:
            fields["description"] = escape(description)
        self._progress.update(self._task, total=self.total, **fields)

    # -- pytest hooks

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        """Put the plugin's per-scenario evidence (its --hil-out) inside this run's directory.

        Only when the plugin defines --hil-out and it was not given after `--`; runs before the
        plugin's own pytest_configure picks its default.
        """
        if self.evidence_dir is None or getattr(config.option, "hil_out", False) is not None:
            return
        config.option.hil_out = str(self.evidence_dir)
        self.evidence_used = True

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.total = len(session.items)
        if self.live:
            self._update("starting")
        else:
            self.console.print(f"collected {self.total} scenario(s)", highlight=False)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            where = report.nodeid or "(collection)"
            self.collection_errors.append((where, _failure_message(report)))

    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        self._update(_short(nodeid))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = self.results.setdefault(report.nodeid, ScenarioResult(report.nodeid))
        result.duration_s += report.duration
        result.phases[report.when] = report.outcome
        verdict = parse_verdict(report.user_properties)
        if verdict is not None:
            result.verdict = verdict
        xfail = hasattr(report, "wasxfail")
        if report.failed:
            if report.when == "call":
                result.outcome = "failed"
            elif result.outcome != "failed":
                result.outcome = "error"
            if not result.message:
                prefix = "" if report.when == "call" else f"error in {report.when}: "
                result.message = prefix + _failure_message(report)
        elif report.skipped and result.outcome not in ("failed", "error"):
            result.outcome = "xfailed" if xfail else "skipped"
            result.message = _skip_reason(report)
        elif report.passed and report.when == "call" and xfail:
            result.outcome = "xpassed"

    def pytest_runtest_logfinish(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        self.done += 1
        result = self.results.get(nodeid)
        if result is None:
            return
        if self.live:
            self._update()
            if result.failed:  # failures stay on screen above the live line
                self.console.print(
                    f"[bold red]✗[/] {escape(nodeid)}: {escape(result.headline)}", highlight=False
                )
            return
        mark = {"passed": "✓", "xpassed": "✓", "failed": "✗", "error": "✗"}.get(result.outcome, "↷")
        total = "?" if self.total is None else str(self.total)
        self.console.print(
            f"[{self.done}/{total}] {mark} {result.outcome:<7} {escape(nodeid)} "
            f"({result.duration_s:.1f} s)",
            highlight=False,
        )
        if result.failed:
            self.console.print(f"      {escape(result.headline)}", highlight=False)


def _short(nodeid: str, width: int = 60) -> str:
    return nodeid if len(nodeid) <= width else "…" + nodeid[-(width - 1) :]


@contextlib.contextmanager
def _progress_console() -> Iterator[Console]:
    """A console on a private copy of stdout's file descriptor.

    pytest captures fd 1 while each test runs; writing the live display through a dup'd fd keeps
    it on the screen instead of inside the tests' captured output.
    """
    stream: IO[str] | None = None
    try:
        fd = os.dup(sys.stdout.fileno())
        stream = os.fdopen(fd, "w", encoding="utf-8", errors="replace", buffering=1)
    except (OSError, ValueError, AttributeError):  # no real stdout (embedded, captured)
        stream = None
    try:
        yield Console(
            file=stream if stream is not None else sys.stdout, highlight=False, soft_wrap=True
        )
    finally:
        if stream is not None:
            stream.close()


# --- the Allure HTML report ----------------------------------------------------------------


@dataclass(frozen=True)
class HtmlReport:
    """The outcome of building the HTML report: its index.html, or why there is none."""

    index: Path | None
    message: str


def _tools_dirs() -> list[Path]:
    dirs = []
    if env := os.environ.get("HIL_TOOLS_DIR"):
        dirs.append(Path(env))
    dirs.append(TOOLS_DIR)
    dirs.append(Path(__file__).resolve().parents[1] / TOOLS_DIR)  # the checkout's own
    return dirs


def find_allure(tools_dirs: Sequence[Path] | None = None) -> Path | None:
    """Allure 3's CLI: installed by scripts/report-tools.sh into .hil/tools, else on PATH."""
    for tools in tools_dirs if tools_dirs is not None else _tools_dirs():
        candidate = tools / "node_modules" / ".bin" / "allure"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.absolute()
    found = shutil.which("allure")
    return Path(found) if found else None


def find_npm() -> str | None:
    return shutil.which("npm")


def install_allure(npm: str, tools_dir: Path) -> tuple[Path | None, str]:
    """`npm install --prefix tools_dir allure@3`; the binary, or None and npm's complaint."""
    tools_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        npm,
        "install",
        "--prefix",
        str(tools_dir),
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        ALLURE_PACKAGE,
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=NPM_INSTALL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"npm install {ALLURE_PACKAGE} timed out after {NPM_INSTALL_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return None, f"npm install {ALLURE_PACKAGE} failed: {exc}"
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return None, f"npm install {ALLURE_PACKAGE} failed ({proc.returncode}): {tail}"
    binary = find_allure([tools_dir])
    if binary is None:
        return (
            None,
            f"npm installed {ALLURE_PACKAGE} but {tools_dir}/node_modules/.bin/allure is missing",
        )
    return binary, ""


_ANALYTICS = (
    re.compile(r"<script[^>]*googletagmanager[^>]*>\s*</script>\s*", re.I),
    re.compile(r"<script>(?:(?!</script>).)*?gtag\((?:(?!</script>).)*?</script>\s*", re.S),
)


def _strip_analytics(index: Path) -> None:
    """Remove the Google Analytics tag Allure's 'awesome' report always embeds.

    The report holds bench evidence and is opened on internal machines; it has no business
    loading a tracker (and on a closed network the request only fails).
    """
    try:
        html = index.read_text(encoding="utf-8")
    except OSError as exc:
        log.warning("cannot read %s: %s", index, exc)
        return
    stripped = html
    for pattern in _ANALYTICS:
        stripped = pattern.sub("", stripped)
    if stripped != html:
        index.write_text(stripped, encoding="utf-8")


def build_html_report(results: Path, report: Path, *, name: str, allure: Path) -> HtmlReport:
    """`allure generate <results> -o <report>` with Allure 3; never raises for a tool failure."""
    if report.exists():
        shutil.rmtree(report)
    env = {**os.environ, "ALLURE_NO_ANALYTICS": "true", "NO_COLOR": "1"}
    cmd = [str(allure), "generate", str(results.resolve()), "-o", str(report.resolve())]
    cmd += ["--report-name", name]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=ALLURE_TIMEOUT_S,
            check=False,
            cwd=results.parent,  # no stray allurerc from the caller's directory
            env=env,
        )
    except subprocess.TimeoutExpired:
        return HtmlReport(None, f"allure generate timed out after {ALLURE_TIMEOUT_S:.0f} s")
    except OSError as exc:
        return HtmlReport(None, f"allure generate could not start: {exc}")
    index = report / "index.html"
    if proc.returncode != 0 or not index.is_file():
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return HtmlReport(None, f"allure generate failed ({proc.returncode}): {tail}")
    _strip_analytics(index)
    return HtmlReport(index, "")


def _no_npm_message(paths: RunPaths) -> str:
    return (
        "the HTML report needs Allure 3 from npm: install Node.js/npm, then run "
        f"`npm install --prefix {TOOLS_DIR} {ALLURE_PACKAGE}` (or `bash scripts/report-tools.sh`) "
        f"and `{TOOLS_DIR}/node_modules/.bin/allure generate {paths.allure_results} "
        f"-o {paths.allure_report}`"
    )


def _html_report(console: Console, paths: RunPaths, name: str) -> HtmlReport:
    """Find (or install) Allure 3, then build the report; explains itself when it cannot."""
    allure = find_allure()
    if allure is None:
        npm = find_npm()
        if npm is None:
            return HtmlReport(None, _no_npm_message(paths))
        tools_dir = Path(os.environ.get("HIL_TOOLS_DIR", TOOLS_DIR))
        console.print(f"installing Allure 3 into {tools_dir} (npm, once) ...", highlight=False)
        allure, problem = install_allure(npm, tools_dir)
        if allure is None:
            return HtmlReport(None, problem)
    return build_html_report(paths.allure_results, paths.allure_report, name=name, allure=allure)


def _environment_properties(args: argparse.Namespace, paths: RunPaths) -> None:
    """Allure's Environment widget: what this run was (unless the plugin already wrote one)."""
    target = paths.allure_results / "environment.properties"
    if not paths.allure_results.is_dir() or target.exists():
        return
    values = {
        "suite": str(args.suite),
        "rig": str(args.rig) if args.rig else "(plugin default)",
        "firmware": args.firmware or "(plugin default)",
        "seed": "(per scenario)" if args.seed is None else str(args.seed),
        "python": platform.python_version(),
        "host": platform.node(),
    }
    lines = [f"{k}={v}".replace("\n", " ") for k, v in values.items()]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- the run -------------------------------------------------------------------------------


def _default_out(now: datetime) -> Path:
    """.hil/reports/<timestamp>, never an earlier run's directory."""
    base = REPORTS_DIR / now.strftime("%Y%m%d-%H%M%S")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _link_latest(out: Path) -> None:
    """.hil/reports/latest -> this run, when the run went to the default place."""
    latest = REPORTS_DIR / "latest"
    try:
        tmp = REPORTS_DIR / f".latest-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(out.name)
        tmp.replace(latest)
    except OSError as exc:
        log.debug("cannot link %s: %s", latest, exc)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _write_summary(
    paths: RunPaths,
    args: argparse.Namespace,
    progress: RunProgress,
    *,
    pytest_code: int,
    exit_code: int,
    started: datetime,
    elapsed_s: float,
    pytest_argv: list[str],
    title: str,
    report: Path | None,
) -> None:
    results = list(progress.results.values())
    columns = invariant_columns(results)
    paths.summary_txt.write_text(render_text(summary_table(results, title=title)), encoding="utf-8")
    summary = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(elapsed_s, 3),
        "exit_code": exit_code,
        "pytest_exit_code": pytest_code,
        "suite": str(args.suite),
        "rig": str(args.rig) if args.rig else None,
        "firmware": args.firmware,
        "seed": args.seed,
        "pytest_args": pytest_argv,
        "invariants": columns,
        "counts": dict(counts(results)),
        "scenarios": [r.to_json(columns) for r in results],
        "collection_errors": [
            {"nodeid": nodeid, "message": message} for nodeid, message in progress.collection_errors
        ],
        "paths": {
            "junit": str(paths.junit),
            "allure_results": str(paths.allure_results),
            "allure_report": str(report) if report else None,
            "summary_txt": str(paths.summary_txt),
            "pytest_log": str(paths.pytest_log),
            "evidence": str(paths.evidence) if progress.evidence_used else None,
        },
    }
    paths.summary_json.write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def _exit_code(pytest_code: int, progress: RunProgress) -> int:
    results = progress.results.values()
    if pytest_code in PASSTHROUGH_CODES:
        return pytest_code
    if any(r.failed for r in results) or progress.collection_errors or pytest_code == 1:
        return 1
    ran = [r for r in results if r.outcome not in ("skipped", "xfailed")]
    if not ran:
        return NO_SCENARIOS
    return 0 if pytest_code == 0 else 1


def _print_outcome(
    console: Console,
    args: argparse.Namespace,
    progress: RunProgress,
    paths: RunPaths,
    *,
    pytest_code: int,
    code: int,
    elapsed: float,
    title: str,
) -> None:
    """The console verdict: pytest's own trouble, the table, failures, skips, one last line."""
    if pytest_code == 2:
        console.print("hil run: interrupted; what follows is partial", style="bold yellow")
    if pytest_code in (3, 4):
        what = "refused the command line" if pytest_code == 4 else "failed internally"
        console.print(f"hil run: pytest {what} (exit {pytest_code}):", style="bold red")
        console.print(escape(_log_tail(paths.pytest_log)), highlight=False)
        if pytest_code == 4 and "unrecognized arguments" in _log_tail(paths.pytest_log):
            console.print(
                "hint: --rig/--firmware/--seed/--recovery-s are defined by the pos-hil pytest "
                "plugin; is it installed (`pip install -e .`)?"
            )

    results = list(progress.results.values())
    if results:
        console.print(summary_table(results, title=title))
    for nodeid, message in progress.collection_errors:
        console.print(f"[bold red]✗ cannot collect[/] {escape(nodeid)}: {escape(message)}")
    failing = [r for r in results if r.failed]
    if failing:
        console.print(f"[bold red]{len(failing)} failing scenario(s):[/]")
        for r in failing:
            console.print(f"  [bold red]✗[/] {escape(r.nodeid)}")
            console.print(f"      {escape(r.headline)}")
            replay = (r.verdict or {}).get("replay")
            if replay:
                console.print(f"      replay: {escape(str(replay))}")
    skipped = [r for r in results if r.outcome in ("skipped", "xfailed")]
    if skipped:
        console.print(f"[bold yellow]{len(skipped)} skipped scenario(s) (proved nothing):[/]")
        for r in skipped:
            console.print(f"  [yellow]↷[/] {escape(r.nodeid)}: {escape(r.message)}")

    tally = counts(results)
    line = (
        f"{tally['passed'] + tally['xpassed']} passed, {tally['failed']} failed, "
        f"{tally['error']} errors, {tally['skipped'] + tally['xfailed']} skipped "
        f"in {elapsed:.1f} s"
    )
    if code == NO_SCENARIOS:
        keyword = f" matching -k {args.keyword!r}" if args.keyword else ""
        if results:
            why = "all skipped"
        elif progress.total:
            why = f"{progress.total} collected, none run"
        else:
            why = "none collected"
        console.print(
            f"[bold red]no scenario ran[/] in {escape(str(args.suite))}{escape(keyword)} ({why})"
        )
    else:
        style = "bold green" if code == 0 else "bold red"
        console.print(f"[{style}]{'PASSED' if code == 0 else 'FAILED'}[/]: {line}")


def run(args: argparse.Namespace) -> int:
    """Run the suite, print and write the summary, build the report; the exit code (see top)."""
    started = datetime.now()
    t0 = time.monotonic()
    out = Path(args.out) if args.out else _default_out(started)
    paths = RunPaths(out)
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    if not console.is_terminal:  # a log file: no need to wrap the table at 80 columns
        console.width = max(console.width, 160)

    if not Path(args.suite).exists():
        console.print(f"hil run: no scenario suite at {escape(str(args.suite))}", style="bold red")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if args.out is None:
        _link_latest(out)
    argv = pytest_arguments(args, paths)
    given = [
        f"{flag} {getattr(args, attr)}"
        for flag, attr, _ in PLUGIN_OPTIONS
        if getattr(args, attr, None) is not None
    ]
    console.print(
        f"[bold]hil run[/] {escape(' '.join([str(args.suite), *given]))} -> {escape(str(out))}",
        highlight=False,
    )

    with _progress_console() as live_console:
        progress = RunProgress(
            live_console, live=live_console.is_terminal, evidence_dir=paths.evidence
        )
        with (
            progress,
            paths.pytest_log.open("w", encoding="utf-8") as pytest_log,
            contextlib.redirect_stdout(pytest_log),
            contextlib.redirect_stderr(pytest_log),
        ):
            pytest_code = int(pytest.main(list(argv), plugins=[progress]))
    elapsed = time.monotonic() - t0
    code = _exit_code(pytest_code, progress)
    title = f"hil run {started:%Y-%m-%d %H:%M:%S}: {args.suite}"

    _print_outcome(
        console,
        args,
        progress,
        paths,
        pytest_code=pytest_code,
        code=code,
        elapsed=elapsed,
        title=title,
    )

    report: HtmlReport | None = None
    if args.no_report:
        pass
    elif not paths.allure_results.is_dir() or not any(paths.allure_results.iterdir()):
        report = HtmlReport(None, "no Allure results to build an HTML report from")
    else:
        _environment_properties(args, paths)
        report = _html_report(console, paths, name=f"pos-hil {out.name}")

    _write_summary(
        paths,
        args,
        progress,
        pytest_code=pytest_code,
        exit_code=code,
        started=started,
        elapsed_s=elapsed,
        pytest_argv=argv,
        title=title,
        report=report.index if report else None,
    )
    _print_paths(console, paths, report, evidence=progress.evidence_used)
    return code


def _print_paths(
    console: Console, paths: RunPaths, report: HtmlReport | None, *, evidence: bool
) -> None:
    console.print(f"evidence in {escape(str(paths.out))}/", highlight=False)
    rows = [
        ("summary", f"{paths.summary_txt}, {paths.summary_json}"),
        ("junit xml", str(paths.junit)),
        ("allure results", str(paths.allure_results)),
        ("pytest log", str(paths.pytest_log)),
    ]
    if evidence:
        rows.append(("scenario files", f"{paths.evidence}/"))
    for label, value in rows:
        console.print(f"  {label:<15} {escape(value)}", highlight=False)
    if report is None:
        console.print("  html report     (skipped: --no-report)", highlight=False)
    elif report.index is None:
        console.print(f"  html report     [yellow]not built[/]: {escape(report.message)}")
    else:
        index = report.index.resolve()
        allure = find_allure() or Path("allure")
        console.print(f"  html report     {escape(str(index))}", highlight=False)
        console.print(
            f"  view it with    {escape(str(allure))} open {escape(str(paths.allure_report))}"
            "   (it loads data files, so file:// alone shows an empty report)",
            highlight=False,
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.run ...`: the same as `hil run ...`."""
    parser = argparse.ArgumentParser(prog="hil run", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
