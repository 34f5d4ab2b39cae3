"""The gate fails closed: real faults injected into real runs.

Faults come from an inner conftest through the plugin's own phase hooks (a
worker killed, Prometheus killed or frozen, a replica killed mid-upgrade), or
as real signals to a real pytest process. Every inner run gets its own TMPDIR,
which every process it starts inherits, so anything left behind is found by
reading /proc/*/environ, never by name.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import APP, listening

from pytest_rollout.procs import reap_stale_runs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")]

TEST = """
import sys, pytest
APP = {app!r}
def app(*flags):
    return [sys.executable, APP, *flags]

@pytest.mark.slo({slo})
def test_release(rollout):
    rollout.deploy(command=app("--version", "1"{v1_flags}), replicas=3, pre_stop="2s")
    rollout.ramp()
    rollout.upgrade(command=app("--version", "2"))
"""

SLO = 'rps=400, error_rate=0.01, ramp="2s", hold="{hold}", after="3s"'

MARK_PHASES = """
import os
def pytest_rollout_phase_start(rollout, phase, at):
    open(os.path.join({dir!r}, "phase-" + phase), "w").close()
"""


def started_by(tmpdir: Path) -> list[int]:
    """PIDs of live processes whose environment carries TMPDIR=*tmpdir* (this process excluded)."""
    needle = f"TMPDIR={tmpdir}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                if (entry / "stat").read_text().split(") ")[1][0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.Pytester]:
    tmp = pytester.path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    yield pytester
    # if this test failed or was interrupted with an inner run still going, stop what that run recorded
    reap_stale_runs(tmp)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End an inner pytest the way a user would (Ctrl-C), and only then by force."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write(pytester: pytest.Pytester, conftest: str = "", hold: str = "3s", slo: str = SLO, v1_flags: str = "") -> Path:
    pytester.makepyfile(test_release=TEST.format(app=str(APP), slo=slo.format(hold=hold), v1_flags=v1_flags))
    if conftest:
        pytester.makeconftest(conftest)
    return pytester.path / "report.json"


def run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess("--rollout-report", str(report), *args, timeout=240)
    assert started_by(pytester.path / "tmp") == [], "the run left processes behind"
    (test,) = json.loads(report.read_text())["tests"]
    return result, test


def test_a_dead_worker_fails_the_run_within_seconds(inner: pytest.Pytester) -> None:
    write(
        inner,
        """
import os, signal, time
def pytest_rollout_phase_start(rollout, phase, at):
    if phase == "baseline":
        proc, _ = rollout.load.fleet.workers[1]
        os.kill(proc.pid, signal.SIGKILL)
        open("killed-at", "w").write(repr(time.time()))
""",
        hold="20s",
    )
    result, test = run(inner, "--rollout-workers", "2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*load not reached: 1 of 2 load workers died during phase baseline (worker-* (pid *) exit code -9)*"]
    )
    killed_at = float((inner.path / "killed-at").read_text())
    assert test["phases"]["baseline"]["end"] - killed_at < 2.0  # noticed within seconds, not at the end
    assert "upgrade" not in test["phases"]
    assert not test["passed"]


def test_prometheus_gone_is_insufficient_data(inner: pytest.Pytester) -> None:
    write(
        inner,
        """
import os, signal
def pytest_rollout_phase_start(rollout, phase, at):
    if phase == "baseline":
        os.kill(rollout.session._prometheus.process.pid, signal.SIGKILL)
""",
    )
    result, test = run(inner)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*not proven: Prometheus at http://127.0.0.1:* is unreachable*"])
    assert test["verdicts"] and not any(v["passed"] for v in test["verdicts"])
    # not proven (exit 6), never a pass, and never broken either: nothing was measured to break
    assert result.ret == 6 and test["result"] == "not_proven", result.stdout.str()[-3000:]
    assert all(v["outcome"] == "not_proven" for v in test["verdicts"]), test["verdicts"]


def test_missed_scrapes_are_insufficient_data(inner: pytest.Pytester) -> None:
    """Prometheus frozen (SIGSTOP) for most of the baseline: that phase cannot be judged."""
    write(
        inner,
        """
import os, signal, threading
def pytest_rollout_phase_start(rollout, phase, at):
    if phase == "baseline":
        pid = rollout.session._prometheus.process.pid
        os.kill(pid, signal.SIGSTOP)
        threading.Timer(5.0, os.kill, (pid, signal.SIGCONT)).start()
""",
        hold="7s",
    )
    result, test = run(inner)
    result.assert_outcomes(failed=1)
    baseline = [v for v in test["verdicts"] if v["phase"] == "baseline"]
    assert baseline and all(v["outcome"] == "not_proven" and "scrapes were missed" in v["reason"] for v in baseline)
    assert "without scraping some worker" in baseline[0]["reason"]
    # the phases Prometheus did see are still judged on their merits
    assert all(v["passed"] for v in test["verdicts"] if v["phase"] == "after")


def test_replica_crash_during_upgrade_is_caught(inner: pytest.Pytester) -> None:
    write(
        inner,
        """
import os, signal, time
def pytest_rollout_phase_start(rollout, phase, at):
    if phase == "upgrade":
        # the hook is told ahead of the edge: kill once the upgrade is 0.5 s old, so that the requests lost
        # in flight (sent up to 300 ms before) were all sent in the upgrade phase
        time.sleep(max(0.0, at + 0.5 - time.time()))
        victim = [r for r in rollout.platform.replicas if r.name == "v1-2"][0]
        os.kill(victim.process.pid, signal.SIGKILL)
""",
        # 300 ms a request: about 40 requests in flight on the victim when it dies, each one lost: decisively over
        # 0.001 of an upgrade's ~2,000 requests (a dozen, at 100 ms, was not always proven: 9 of 1,866 straddled it)
        slo=SLO.replace("error_rate=0.01", "error_rate=0.001"),
        v1_flags=', "--delay-ms", "300"',
    )
    result, test = run(inner)
    result.assert_outcomes(failed=1)
    upgrade = test["phases"]["upgrade"]
    assert upgrade["errors"] > 0 and test["result"] == "slo_broken"
    result.stdout.fnmatch_lines(["*error_rate in phase upgrade: measured *, bound <= 0.00100*failed*"])
    # the upgrade itself still completed: every old replica was replaced
    assert {e["replica"] for e in test["events"] if e["action"] == "ready"} >= {"v2-0", "v2-1", "v2-2"}


def test_secrets_in_headers_stay_out_of_reports_logs_and_labels(inner: pytest.Pytester) -> None:
    secret = "s3cr3t-token-7f1d"
    inner.makepyfile(
        test_release=TEST.format(
            app=str(APP),
            slo=SLO.format(hold="3s")
            + f', headers={{"Authorization": "Bearer {secret}", "Cookie": "sid={secret}", "X-Api-Key": "{secret}"}}'
            + ', secret_headers=["X-Api-Key"]',
            v1_flags="",
        )
    )
    inner.makeconftest(
        """
import json, urllib.request, urllib.parse
def pytest_rollout_phase_end(rollout, phase, start, end):
    if phase == "baseline":
        url = rollout.session._prometheus.url + "/api/v1/series?" + urllib.parse.urlencode({"match[]": '{run="%s"}' % rollout.run_id})
        open("series.json", "w").write(urllib.request.urlopen(url).read().decode())
        logs = "".join(p.read_text(errors="replace") for p in rollout.session.root.rglob("*") if p.is_file() and p.suffix in (".log", ".json", ".yml", ".cfg"))
        open("logs.txt", "w").write(logs)
"""
    )
    result, test = run(inner, "-v")
    result.assert_outcomes(passed=1)
    series = (inner.path / "series.json").read_text()
    assert '"run"' in series and len(json.loads(series)["data"]) > 100  # the labels were really read
    for text in (
        series,
        (inner.path / "logs.txt").read_text(),
        (inner.path / "report.json").read_text(),
        result.stdout.str(),
        result.stderr.str(),
    ):
        assert secret not in text


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", ["ramp", "baseline", "upgrade", "after"])
def test_interrupt_in_any_phase_leaves_nothing_and_writes_the_report(
    inner: pytest.Pytester, sig: signal.Signals, phase: str
) -> None:
    report = write(inner, MARK_PHASES.format(dir=str(inner.path)))
    before = listening()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rollout-report", str(report), "test_release.py"],
        cwd=inner.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (inner.path / f"phase-{phase}").exists():
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, f"phase {phase} never started"
            time.sleep(0.05)
        time.sleep(1.0)  # the ramp's hook runs 0.5 s before its first request is due
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out.decode()
    assert started_by(inner.path / "tmp") == []
    assert listening() - before == set()
    assert list((inner.path / "tmp").iterdir()) == []  # no temporary file or directory left
    data = json.loads(report.read_text())
    assert data["interrupted"] is True
    (test,) = data["tests"]
    assert test["outcome"] == "interrupted"
    assert phase in test["phases"]  # the phase cut short is reported up to the interrupt
    counted = [p for p in test["phases"].values() if p.get("requests")]
    assert counted, "what was measured before the interrupt is in the report"


def test_a_run_killed_hard_is_cleaned_up_by_the_next(inner: pytest.Pytester) -> None:
    write(inner, MARK_PHASES.format(dir=str(inner.path)), hold="30s")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_release.py"],
        cwd=inner.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (inner.path / "phase-baseline").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    except BaseException:
        stop(proc)  # the phase never came: do not leave the inner run behind
        raise
    proc.kill()
    proc.wait()
    left = started_by(inner.path / "tmp")
    assert left, "SIGKILL leaves replicas, HAProxy and Prometheus running"
    # the next run, of anything that uses the fixture, stops exactly those and removes their files
    inner.makepyfile(test_release="import pytest\n@pytest.mark.slo(rps=10)\ndef test_x(rollout):\n    pass\n")
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*rollout: stopped * left by an earlier run in *"])
    deadline = time.monotonic() + 10
    while started_by(inner.path / "tmp") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started_by(inner.path / "tmp") == []
    assert list((inner.path / "tmp").iterdir()) == []


def test_a_fleet_of_32_workers_keeps_exact_totals(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_release=TEST.format(
            app=str(APP), slo='rps=320, error_rate=0.01, ramp="3s", hold="5s", after="3s"', v1_flags=""
        )
    )
    result, test = run(inner, "--rollout-workers", "32")
    result.assert_outcomes(passed=1)
    assert test["workers"] == 32
    assert test["phases"]["baseline"]["requests"] == pytest.approx(1600, abs=2)
    for phase in test["phases"].values():
        assert phase["requests"] == phase["fleet_requests"]


def test_keep_leaves_the_target_serving_and_says_where(inner: pytest.Pytester) -> None:
    write(inner)
    result = inner.runpytest_subprocess("--rollout-keep", timeout=240)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*rollout: left running (--rollout-keep)*",
            "HAProxy: http://127.0.0.1:* (admin socket *",
            "*Prometheus: http://127.0.0.1:* (pid *)*",
        ]
    )
    url = re.search(r"HAProxy: (http://127.0.0.1:\d+)", result.stdout.str()).group(1)  # type: ignore[union-attr]
    with urllib.request.urlopen(url + "/", timeout=5) as resp:
        assert resp.read() == b"hello from v2\n"  # the upgraded target still serves
    assert started_by(inner.path / "tmp"), "kept processes are running"
    assert not any(
        "pytest_rollout.load.worker" in _cmdline(pid) for pid in started_by(inner.path / "tmp")
    )  # load stopped
    reap_stale_runs(inner.path / "tmp")
    assert started_by(inner.path / "tmp") == []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
