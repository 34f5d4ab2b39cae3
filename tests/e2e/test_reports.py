"""Reports people read, from real runs: live progress, the HTML report in a real browser, baselines, exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import APP, closed_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")]

TEST = """
import sys, pytest
APP = {app!r}
def app(*flags):
    return [sys.executable, APP, *flags]

# 1,000 rps: every phase, the short upgrade included, carries the 1,000 requests a p99 needs
@pytest.mark.slo(rps=1000, error_rate=0.01, p99_ms=400, ramp="3s", hold="5s", availability=0.99,
                 regression={{"p99_ms": "10%", "error_rate": 0.01}})
def test_release(rollout):
    rollout.deploy(command=app("--delay-ms", "2"), replicas=3, pre_stop="2s")
    rollout.ramp()
    rollout.upgrade(command=app({v2}))
"""


def browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def needs_browser() -> str:
    path = browser()
    if path is None:
        pytest.skip("chromium is not installed (scripts/setup --tests installs it)")
    return path


def chromium(path: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [
            path,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={profile}",
            *args,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )


def run(pytester: pytest.Pytester, v2: str, *args: str) -> tuple[pytest.RunResult, dict]:
    pytester.makepyfile(test_release=TEST.format(app=str(APP), v2=", ".join(repr(f) for f in v2.split())))
    result = pytester.runpytest_subprocess(
        "-v", "--rollout-report", "report.json", "--rollout-baseline-dir", "baselines", *args, timeout=300
    )
    (record,) = json.loads((pytester.path / "report.json").read_text())["tests"]
    return result, record


def test_a_good_run_shows_progress_writes_html_that_a_browser_renders_and_saves_a_baseline(
    pytester: pytest.Pytester, needs_browser: str, tmp_path: Path
) -> None:
    result, record = run(pytester, "--delay-ms 2", "--rollout-html", "report.html", "--rollout-save", "main")
    assert result.ret == 0, result.stdout.str()
    out = result.stdout.str()
    # live progress: whole lines (the output is not a terminal), no carriage returns
    progress = [line for line in out.splitlines() if line.startswith("[rollout] ")]
    phases = {line.split()[1] for line in progress}
    assert {"ramp", "baseline", "upgrade", "after"} <= phases, progress
    assert len(progress) == len(set(progress))  # an unchanged line is not repeated
    assert any("new replicas ready" in line for line in progress)
    assert "\r" not in out
    assert record["result"] == "passed"
    budget = record["error_budget"]
    assert budget["availability"] == 0.99 and set(budget["phases"]) >= {"baseline", "upgrade", "after"}
    assert {"rps", "error_rate", "p99_ms"} <= set(record["series"]) and len(record["series"]["rps"]["points"]) > 5
    result.stdout.fnmatch_lines(["rollout: baseline 'main' saved to *baselines/main.json"])

    html = pytester.path / "report.html"
    text = html.read_text()
    assert "http" not in text.replace("http_", "").split("<body", 1)[0]  # nothing fetched from a network
    assert "sum(rollout_requests_total{run=" in text  # the PromQL behind the numbers
    dom = chromium(needs_browser, tmp_path, "--virtual-time-budget=5000", "--dump-dom", html.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-ready="1"' in dom.stdout and 'data-charts="1"' in dom.stdout  # the page's script ran to the end
    assert "Uncaught" not in dom.stderr and ":CONSOLE" not in dom.stderr
    assert dom.stdout.count("<svg") == 1 and dom.stdout.count('class="fail"') == 0
    shot = tmp_path / "report.png"
    chromium(needs_browser, tmp_path, "--window-size=1200,1400", f"--screenshot={shot}", html.as_uri())
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50  # charts drawn, not a blank page


def test_a_run_that_cannot_be_judged_exits_6(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_release=TEST.format(app=str(APP), v2="'--delay-ms', '2'"))
    result = pytester.runpytest_subprocess(
        "--prometheus-url", f"http://127.0.0.1:{closed_port()}", "--rollout-report", "report.json", timeout=120
    )
    assert result.ret == 6
    (record,) = json.loads((pytester.path / "report.json").read_text())["tests"]
    assert record["result"] == "not_proven"
    result.stdout.fnmatch_lines(["*SLO test(s) not proven (nothing was shown broken, nor held): exit status 6*"])


def test_on_a_terminal_the_progress_line_is_rewritten_in_place(pytester: pytest.Pytester) -> None:
    import pty
    import sys

    pytester.makepyfile(test_release=TEST.format(app=str(APP), v2="'--delay-ms', '2'"))
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--color=no"],
        cwd=pytester.path,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "COLUMNS": "200"},
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # the terminal closed: pytest exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    out = b"".join(chunks).decode(errors="replace")
    assert proc.wait(timeout=120) == 0, out[-3000:]
    rewritten = [part for part in out.split("\r") if part.lstrip().startswith("[rollout] ")]
    assert len(rewritten) >= 5  # one line, rewritten about once a second
    # pytest's own result still starts on a line of its own after the progress line
    assert re.search(r"\[rollout\] after [^\n]*\n", out)
    assert "1 passed" in out
