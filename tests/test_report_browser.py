"""The Allure HTML report of a `hil run`, opened in a real headless Chromium.

What a QA engineer does with the nightly report: open it, find the scenarios, open a failing one
and read its evidence. The report is served by a localhost http.server on a free port (the app
fetches its data files, which file:// blocks) and driven by playwright-core (npm) with Debian's
/usr/bin/chromium; both are installed by scripts/report-tools.sh, and the test skips, naming
what is missing, when they are not there.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import harness.run as hil_run
from tests.test_run import FIXTURE, run_fixture

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = FIXTURE / "browse_report.mjs"
SCENARIOS = ["test_sale_approved", "test_response_lost", "test_printer_jam"]
NODE_TIMEOUT_S = 90.0


def _playwright_modules() -> Path | None:
    allure = hil_run.find_allure()
    if allure is None:
        return None
    modules = allure.parent.parent  # <tools>/node_modules/.bin/allure
    if (modules / "playwright-core" / "package.json").is_file():
        return modules
    for tools in hil_run._tools_dirs():
        if (tools / "node_modules" / "playwright-core" / "package.json").is_file():
            return (tools / "node_modules").absolute()
    return None


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} missing (Debian's chromium: scripts/report-tools.sh installs it)"
    if shutil.which("node") is None:
        return "node missing (Node.js is needed for Allure 3 and playwright-core)"
    if hil_run.find_allure() is None:
        return "Allure 3 missing (scripts/report-tools.sh installs it into .hil/tools)"
    if _playwright_modules() is None:
        return "playwright-core missing (scripts/report-tools.sh installs it into .hil/tools)"
    return None


@pytest.fixture
def served_report(tmp_path: Path) -> Iterator[str]:
    """`hil run` on the fixture suite with the HTML report, served on a free localhost port."""
    if (reason := _missing()) is not None:
        pytest.skip(reason)
    assert run_fixture(tmp_path / "run", report=True) == 1
    report = tmp_path / "run" / "allure-report"
    assert (report / "index.html").is_file()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(report))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, name="report-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _browse(config: dict[str, object]) -> dict[str, object]:
    """Run the playwright script in its own process group; kill the group if it overstays."""
    proc = subprocess.Popen(
        ["node", str(SCRIPT), json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=NODE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stdout, stderr = "", "timed out"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        else:  # the browser's own processes, should any outlive the script
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the browser script (exit {proc.returncode}): {stderr[-2000:]}"
    result: dict[str, object] = json.loads(lines[-1])
    return result


def test_the_report_lists_every_scenario_and_shows_an_attachment(
    served_report: str, tmp_path: Path
) -> None:
    result = _browse(
        {
            "modules": str(_playwright_modules()),
            "url": served_report,
            "chromium": str(CHROMIUM),
            "userDataDir": str(tmp_path / "chromium-profile"),
            "names": SCENARIOS,
            "open": "test_response_lost",
            "attachment": "history test_response_lost",
            "expect": "HISTORY-OF-test_response_lost",
            "screenshot": str(tmp_path / "result.png"),
        }
    )
    assert "error" not in result, result
    assert result["listed"] == dict.fromkeys(SCENARIOS, True), result
    assert result["attachmentListed"] and result["attachmentShown"], result
    assert result["external"] == [], "the report must not call out to the internet"
    assert result["pageErrors"] == [], result
    assert (tmp_path / "result.png").stat().st_size > 10_000
