"""Every hook in pytest_rollout/plugin/hookspecs.py, used the way a conftest.py would use it, in a real run."""

from __future__ import annotations

import json

import pytest
from helpers import APP, listening

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")]

CONFTEST = """
import json
import pytest
from pytest_rollout import VerdictEntry
from pytest_rollout.platforms.local.platform import LocalPlatform

CALLS = []
ALLOWED = 1  # deploys a run may make


class CountingPlatform(LocalPlatform):
    \"\"\"The local platform, counting the versions it deploys: a platform of the conftest's own.\"\"\"

    name = "counting"

    def deploy(self, target, on_event):
        CALLS.append(["deploy", target.version, target.replicas])
        return super().deploy(target, on_event)


def pytest_rollout_make_platform(config, name, run_dir, procs, rollout):
    if name == "counting":
        return CountingPlatform(procs, run_dir)
    return None


def pytest_rollout_upgrade(rollout, platform, target, max_surge, max_unavailable):
    CALLS.append(["upgrade", platform.name, target.version, max_surge])
    return platform.upgrade(target, max_surge, max_unavailable, rollout.note_event)


def pytest_rollout_phase_start(rollout, phase, at):
    CALLS.append(["start", phase])


def pytest_rollout_phase_end(rollout, phase, start, end):
    CALLS.append(["end", phase, round(end - start, 1)])


def pytest_rollout_add_verdicts(rollout, entries):
    CALLS.append(["verdicts", sorted({e.phase for e in entries})])
    deploys = sum(1 for call in CALLS if call[0] == "deploy")
    return [VerdictEntry("deploys", "run", deploys, ALLOWED, deploys <= ALLOWED, f"{deploys} deploy(s), {ALLOWED} allowed")]


def pytest_sessionfinish(session):
    with open("calls.json", "w") as fh:
        json.dump(CALLS, fh)
"""

TEST = """
import sys, pytest

@pytest.mark.slo(rps=300, error_rate=0.05, ramp="1s", hold="2s", after="2s", abort_on_breach=False)
def test_release(rollout):
    rollout.deploy(command=[sys.executable, {app!r}, "--delay-ms", "0"], replicas=2)
    rollout.ramp()
    rollout.upgrade(command=[sys.executable, {app!r}, "--delay-ms", "0", "--version", "v2"], max_surge=1)
"""


def test_every_hook_as_a_conftest_uses_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_release=TEST.format(app=str(APP)))
    before = listening()
    result = pytester.runpytest_subprocess(
        "--rollout-platform", "counting", "--rollout-report", "report.json", "-p", "no:cacheprovider", timeout=300
    )
    assert listening() - before == set()
    calls = json.loads((pytester.path / "calls.json").read_text())
    # make_platform: the conftest's platform deployed v1 (two replicas) ...
    assert ["deploy", "v1", 2] in calls
    # upgrade: the conftest drove the rolling upgrade itself, with the test's arguments
    assert ["upgrade", "counting", "v2", 1] in calls
    # phase_start / phase_end: every phase, in order
    starts = [c[1] for c in calls if c[0] == "start"]
    ends = [c[1] for c in calls if c[0] == "end"]
    assert starts == ends == ["ramp", "baseline", "upgrade", "after"]
    assert all(c[2] > 0 for c in calls if c[0] == "end")
    # add_verdicts: it saw the plugin's entries, and its own entry is judged like them (here it holds)
    (seen,) = [c[1] for c in calls if c[0] == "verdicts"]
    assert {"baseline", "upgrade", "after"} <= set(seen)
    result.assert_outcomes(passed=1)
    (record,) = json.loads((pytester.path / "report.json").read_text())["tests"]
    assert record["platform"] == "counting"
    (extra,) = [v for v in record["verdicts"] if v["slo"] == "deploys"]
    assert extra["outcome"] == "held" and extra["measured"] == 1


def test_a_failing_entry_from_add_verdicts_fails_the_test(pytester: pytest.Pytester) -> None:
    """A hook's veto is a broken SLO like any other: exit 1, named in the failure."""
    pytester.makeconftest(CONFTEST.replace("ALLOWED = 1", "ALLOWED = 0"))
    pytester.makepyfile(test_release=TEST.format(app=str(APP)))
    result = pytester.runpytest_subprocess("--rollout-platform", "counting", "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*SLO broken*", "*deploys in phase run*1 deploy(s), 0 allowed*"])


def test_a_bug_in_the_test_after_load_ran_fails_it_as_pytest_would_with_what_was_measured(
    pytester: pytest.Pytester,
) -> None:
    """Issue 22, the mixed case: load ran, then the test's own code failed. The test fails as pytest would (exit 1,
    its traceback); what the load measured is judged for the report (the hooks see it), and its result is
    "test_failed", never "not proven" (a CI that retries on exit 6 would retry it forever)."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_release=f"""
import sys, pytest

@pytest.mark.slo(rps=200, error_rate=0.05, ramp="1s", hold="2s", abort_on_breach=False)
def test_release(rollout):
    rollout.deploy(command=[sys.executable, {str(APP)!r}, "--delay-ms", "0"])
    rollout.ramp()
    rollout.upgrde(command=[sys.executable, {str(APP)!r}, "--version", "v2"])
"""
    )
    before = listening()
    result = pytester.runpytest_subprocess(
        "--rollout-platform", "counting", "--rollout-report", "report.json", "-p", "no:cacheprovider", timeout=300
    )
    assert listening() - before == set()
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [">*rollout.upgrde(*", "E*AttributeError: *'upgrde'*", "*::test_release TEST FAILED: *"]
    )
    assert "SLO test(s) not proven" not in result.stdout.str()
    calls = json.loads((pytester.path / "calls.json").read_text())
    (seen,) = [c[1] for c in calls if c[0] == "verdicts"]  # judged once, for the report
    assert "baseline" in seen
    (record,) = json.loads((pytester.path / "report.json").read_text())["tests"]
    assert record["result"] == "test_failed" and record["failure"].startswith("AttributeError: ")
    assert record["phases"]["baseline"]["requests"] > 0
