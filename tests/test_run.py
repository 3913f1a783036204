"""`hil run` on a tiny synthetic suite (tests/report_fixture): summary, evidence, exit codes.

The fixture's conftest stands in for the pos-hil plugin (same options, same verdict property,
an Allure attachment per test), so these tests need no bench. The installed plugin, if any, is
switched off for these runs (`-p no:<its entry point>`): the fixture must be the only verdict
source. Also here: the receipt images (harness.report.receipt_image).
"""

from __future__ import annotations

import argparse
import io
import json
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

import harness.run as hil_run
from harness.report import receipt_image
from harness.report.summary import ScenarioResult, parse_verdict, render_text, summary_table

FIXTURE = Path(__file__).parent / "report_fixture"
PASSING = "scenario_sales.py::test_sale_approved"
FAILING = "scenario_sales.py::test_response_lost"
SKIPPED = "scenario_sales.py::test_printer_jam"
DIAGNOSIS = "host captured order-2 (STAN 000042) but the terminal journal says NOT_PAID"


def project_plugins_off() -> list[str]:
    """pytest args that switch off the project's own pytest11 plugin(s)."""
    args: list[str] = []
    for ep in entry_points(group="pytest11"):
        if ep.value.split(".")[0] == "harness":
            args += ["-p", f"no:{ep.name}"]
    return args


def parse_run_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hil run")
    hil_run.add_arguments(parser)
    return parser.parse_args(list(argv))


def run_fixture(out: Path, *flags: str, report: bool = False) -> int:
    """`hil run` on the fixture suite into `out`."""
    argv = ["--suite", str(FIXTURE), "--out", str(out), *flags]
    if not report:
        argv.append("--no-report")
    return hil_run.run(parse_run_args(*argv, "--", *project_plugins_off()))


# --- the whole run -------------------------------------------------------------------------


def test_a_failing_scenario_fails_the_run_and_every_artifact_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_fixture(tmp_path, "--seed", "42")
    printed = capsys.readouterr().out
    assert code == 1

    # the console: the table, the failure with its first violation and replay, the skip reason
    for nodeid in (PASSING, FAILING, SKIPPED):
        assert nodeid in printed
    assert f"I2: {DIAGNOSIS}" in printed
    assert "replay: hil run --rig rigs/sim.toml -k test_response_lost --seed 42" in printed
    assert "printer tap not wired on this rig" in printed
    assert "FAILED: 1 passed, 1 failed, 0 errors, 1 skipped" in printed

    # summary.txt: one row per scenario with the right cells
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in (tmp_path / "summary.txt").read_text(encoding="utf-8").splitlines()
        if line.startswith("│")
    }
    assert rows[PASSING][:8] == ["✓", "✓", "✓", "✓", "✓", "·", "?", "passed"]
    assert rows[FAILING][:8] == ["✓", "✗", "✓", "✓", "✓", "·", "✓", "failed"]
    assert rows[SKIPPED][:8] == ["-"] * 7 + ["skipped"]

    # summary.json
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["exit_code"] == 1
    assert summary["counts"]["passed"] == summary["counts"]["failed"] == 1
    assert summary["counts"]["skipped"] == 1
    by_id = {s["nodeid"]: s for s in summary["scenarios"]}
    assert list(by_id) == [PASSING, FAILING, SKIPPED]
    assert by_id[FAILING]["invariants"]["I2"] == "fail"
    assert by_id[FAILING]["valid"] is False
    assert by_id[FAILING]["violations"] == [{"invariant": "I2", "diagnosis": DIAGNOSIS}]
    assert by_id[FAILING]["seed"] == 42
    assert by_id[PASSING]["invariants"]["I7"] == "unknown"
    assert by_id[SKIPPED]["has_verdict"] is False
    assert set(by_id[SKIPPED]["invariants"].values()) == {None}
    assert by_id[SKIPPED]["message"] == "printer tap not wired on this rig"

    # junit.xml lists the three
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")}
    assert set(cases) == {"test_sale_approved", "test_response_lost", "test_printer_jam"}
    assert cases["test_response_lost"].find("failure") is not None
    assert cases["test_printer_jam"].find("skipped") is not None

    # allure-results: one result per scenario, the attachment referenced and on disk
    results_dir = tmp_path / "allure-results"
    results = [json.loads(p.read_text()) for p in results_dir.glob("*-result.json")]
    assert {r["name"] for r in results} == set(cases)
    failing = next(r for r in results if r["name"] == "test_response_lost")
    (attachment,) = failing["attachments"]
    assert attachment["name"] == "history test_response_lost"
    content = (results_dir / attachment["source"]).read_text(encoding="utf-8")
    assert "HISTORY-OF-test_response_lost" in content

    # pytest's own output went to the log, tracebacks included
    log = (tmp_path / "pytest.log").read_text(encoding="utf-8")
    assert "AssertionError: I2 violated" in log
    assert "html report     (skipped: --no-report)" in printed


def test_selecting_only_the_passing_scenario_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_fixture(tmp_path, "-k", "test_sale_approved") == 0
    assert "PASSED: 1 passed, 0 failed, 0 errors, 0 skipped" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert [s["nodeid"] for s in summary["scenarios"]] == [PASSING]
    assert summary["exit_code"] == 0


def test_by_default_each_run_gets_its_own_timestamped_dir_and_latest_points_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        argv = ["--suite", str(FIXTURE), "-k", "test_sale_approved", "--no-report", "--"]
        assert hil_run.run(parse_run_args(*argv, *project_plugins_off())) == 0
    runs = sorted(p for p in (tmp_path / ".hil" / "reports").iterdir() if p.name != "latest")
    assert len(runs) == 2
    assert all((run / "summary.json").is_file() for run in runs)
    latest = (tmp_path / ".hil" / "reports" / "latest").resolve()
    assert latest in {r.resolve() for r in runs}
    assert f"evidence in {Path('.hil/reports') / latest.name}/" in capsys.readouterr().out


def test_nothing_collected_or_all_skipped_is_exit_5_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_fixture(tmp_path / "none", "-k", "no_such_scenario") == 5
    assert "no scenario ran" in capsys.readouterr().out
    assert run_fixture(tmp_path / "skipped", "-k", "test_printer_jam") == 5
    printed = capsys.readouterr().out
    assert "no scenario ran" in printed
    assert "all skipped" in printed


def test_without_allure_and_npm_the_rest_is_still_produced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hil_run, "find_allure", lambda *a, **k: None)
    monkeypatch.setattr(hil_run, "find_npm", lambda: None)
    code = run_fixture(tmp_path, report=True)
    printed = capsys.readouterr().out
    assert code == 1  # the exit code is the scenarios' verdict, not the report's
    assert "the HTML report needs Allure 3 from npm: install Node.js/npm" in printed
    for name in ("summary.txt", "summary.json", "junit.xml", "pytest.log"):
        assert (tmp_path / name).is_file()
    assert any((tmp_path / "allure-results").glob("*-result.json"))
    assert not (tmp_path / "allure-report").exists()
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["paths"]["allure_report"] is None


FAKE_NPM = """#!/bin/sh
# a stand-in for `npm install --prefix DIR ... allure@3`: installs a fake allure into DIR
while [ $# -gt 0 ]; do [ "$1" = "--prefix" ] && prefix=$2; shift; done
mkdir -p "$prefix/node_modules/.bin"
cat > "$prefix/node_modules/.bin/allure" <<'FAKE'
#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out=$2; shift; done
tracker='<script async src="https://www.googletagmanager.com/gtag/js"></script>'
mkdir -p "$out" && echo "<html>$tracker</html>" > "$out/index.html"
FAKE
chmod +x "$prefix/node_modules/.bin/allure"
"""


def test_a_missing_allure_is_installed_with_npm_into_the_tools_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir, tools = tmp_path / "bin", tmp_path / "tools"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(FAKE_NPM)
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("HIL_TOOLS_DIR", str(tools))
    monkeypatch.setattr(hil_run, "_tools_dirs", lambda: [tools])
    assert run_fixture(tmp_path / "out", "-k", "test_sale_approved", report=True) == 0
    printed = capsys.readouterr().out
    assert f"installing Allure 3 into {tools}" in printed
    assert (tools / "node_modules" / ".bin" / "allure").is_file()
    index = tmp_path / "out" / "allure-report" / "index.html"
    assert f"html report     {index}" in printed
    assert "googletagmanager" not in index.read_text()


def test_an_allure_failure_is_reported_and_changes_no_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "allure"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'boom: cannot read results' >&2\nexit 7\n")
    fake.chmod(0o755)
    monkeypatch.setattr(hil_run, "find_allure", lambda *a, **k: fake)
    assert run_fixture(tmp_path / "out", "-k", "test_sale_approved", report=True) == 0
    assert "allure generate failed (7): boom: cannot read results" in capsys.readouterr().out


def test_a_pytest_usage_error_passes_through_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = hil_run.run(
        parse_run_args(
            "--suite", str(FIXTURE), "--out", str(tmp_path), "--no-report", "--", "--no-such-flag"
        )
    )
    assert code == 4
    printed = capsys.readouterr().out
    assert "pytest refused the command line" in printed
    assert "--no-such-flag" in printed


def test_a_missing_suite_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = hil_run.run(parse_run_args("--suite", str(tmp_path / "nope"), "--out", str(tmp_path)))
    assert code == 2
    assert "no scenario suite at" in capsys.readouterr().out


# --- pieces --------------------------------------------------------------------------------


def test_the_live_display_runs_on_a_terminal_and_keeps_failures_on_screen() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160)
    with hil_run.RunProgress(console, live=True) as progress:
        code = pytest.main(
            [str(FIXTURE), "-p", "no:terminal", *project_plugins_off()], plugins=[progress]
        )
    assert code == 1
    assert progress.total == 3 and progress.done == 3
    outcomes = {nodeid: r.outcome for nodeid, r in progress.results.items()}
    assert outcomes == {PASSING: "passed", FAILING: "failed", SKIPPED: "skipped"}
    assert f"{FAILING}: I2: {DIAGNOSIS}" in screen.getvalue()


def test_arguments_after_double_dash_go_to_pytest_and_only_given_plugin_options_pass() -> None:
    top = argparse.ArgumentParser(prog="hil")
    sub = top.add_subparsers(dest="command", required=True)
    hil_run.add_arguments(sub.add_parser("run"))
    args = top.parse_args(["run", "--seed", "3", "-k", "sale", "--", "-x", "--maxfail", "2"])
    assert args.pytest_args == ["-x", "--maxfail", "2"]
    argv = hil_run.pytest_arguments(args, hil_run.RunPaths(Path("out")))
    assert argv[0] == "scenarios"
    assert argv[argv.index("-k") + 1] == "sale"
    assert argv[argv.index("--seed") + 1] == "3"
    assert "--rig" not in argv and "--firmware" not in argv  # the plugin's defaults apply
    assert argv[-3:] == ["-x", "--maxfail", "2"]
    assert argv[argv.index("--alluredir") + 1] == str(Path("out/allure-results"))


def test_the_report_never_loads_a_tracker(tmp_path: Path) -> None:
    index = tmp_path / "index.html"
    index.write_text(
        "<head></head><body><div id='app'></div>\n"
        '    <script async src="https://www.googletagmanager.com/gtag/js?id=G-X"></script>\n'
        "    <script>\n        window.dataLayer = window.dataLayer || [];\n"
        "        function gtag(){dataLayer.push(arguments);}\n        gtag('js', new Date());\n"
        "    </script>\n    <script src='app.js'></script></body>"
    )
    hil_run._strip_analytics(index)
    html = index.read_text()
    assert "googletagmanager" not in html and "gtag" not in html
    assert "<script src='app.js'></script>" in html and "<div id='app'>" in html


def test_verdicts_that_are_garbled_or_absent_show_dashes() -> None:
    assert parse_verdict([("pos_hil_verdict", "{not json")]) is None
    assert parse_verdict([("other", "{}"), ("pos_hil_verdict", "[1]")]) is None
    verdict = parse_verdict([("pos_hil_verdict", '{"invariants": {"I1": "pass", "I9": "fail"}}')])
    assert verdict == {"invariants": {"I1": "pass", "I9": "fail"}}
    results = [
        ScenarioResult("s.py::a[power-cut]", verdict=verdict),
        ScenarioResult("s.py::b", outcome="error", message="error in setup: rig unreachable"),
    ]
    text = render_text(summary_table(results))
    header = next(line for line in text.splitlines() if "scenario" in line)
    assert "I9" in header  # an extra invariant gets its own column
    row_a = next(line for line in text.splitlines() if "s.py::a[power-cut]" in line)
    assert [c.strip() for c in row_a.split("│")[2:10]] == ["✓", "-", "-", "-", "-", "-", "-", "✗"]
    assert "error" in next(line for line in text.splitlines() if "s.py::b" in line)
    assert results[1].headline == "error in setup: rig unreachable"


# --- receipt images ------------------------------------------------------------------------

RECEIPT = [
    "      SIM STORE 01",
    "TID 52500001    TRACE 000042",
    "SALE              EUR 12.34",
    "交易成功  支付完成",
    "APPROVED 00",
]


def _decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_a_receipt_renders_as_a_plausible_png() -> None:
    plain = _decode(render := receipt_image.render_receipt_png(RECEIPT, title="order-1"))
    assert plain.format == "PNG"
    assert 250 <= plain.width <= 1200 and 150 <= plain.height <= 800
    assert render.startswith(b"\x89PNG")
    torn = _decode(receipt_image.render_receipt_png(RECEIPT, copy=True, complete=False))
    assert torn.size != plain.size or torn.tobytes() != plain.tobytes()
    # the COPY stamp and the "(no cut)" marker are red ink
    rgb = torn.convert("RGB").tobytes()
    assert any(rgb[i] > 150 and rgb[i + 1] < 90 > rgb[i + 2] for i in range(0, len(rgb), 3))
    # longer receipts are taller; nothing crashes on controls, tabs or an empty receipt
    longer = _decode(receipt_image.render_receipt_png([*RECEIPT, *RECEIPT]))
    assert longer.height > plain.height
    _decode(receipt_image.render_receipt_png([]))
    _decode(receipt_image.render_receipt_png(["\x1b@\tESC\x00", "x" * 500]))


def test_chinese_text_is_drawn_with_real_glyphs() -> None:
    if receipt_image.cjk_font() is None:
        pytest.skip("no CJK font installed (scripts/report-tools.sh installs fonts-wqy-zenhei)")
    # two different strings of the same width: with tofu boxes they would render identically
    first = _decode(receipt_image.render_receipt_png(["支付成功"]))
    second = _decode(receipt_image.render_receipt_png(["重打印单"]))
    assert first.size == second.size
    assert first.tobytes() != second.tobytes()
    # and the glyphs carry real ink (more than a box outline would)
    assert receipt_image.receipt_font().cjk


def test_without_any_cjk_font_it_warns_and_still_renders(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(receipt_image, "_fc_list", lambda pattern: [])
    monkeypatch.setattr(receipt_image, "_KNOWN_CJK_FONTS", ())
    monkeypatch.setattr(receipt_image, "_KNOWN_MONO_FONTS", ())
    receipt_image.cjk_font.cache_clear()
    receipt_image.receipt_font.cache_clear()
    try:
        with caplog.at_level("WARNING", logger=receipt_image.__name__):
            png = receipt_image.render_receipt_png(RECEIPT, copy=True)
        assert "no CJK or monospace font found" in caplog.text
        assert _decode(png).width > 100
    finally:
        receipt_image.cjk_font.cache_clear()
        receipt_image.receipt_font.cache_clear()
