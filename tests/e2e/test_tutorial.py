"""The README's tutorial, step by step, exactly as written, against the real local platform.

The gate file is read from the README's own code block, and each later step
edits it the way its text says, so the tutorial cannot drift from what runs.
Each step checks what the README says the user will see: the outcome, the
exit status, the message's key words, and the report.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import textwrap

import pytest
from helpers import APP, ROOT

README = (ROOT / "README.md").read_text()
TUTORIAL = README[README.index("## Tutorial:") : README.index("## How a verdict is reached")]
SLOW = '"--delay-ms", "600"'


def gate_file() -> str:
    """The ``test_release.py`` of step 3, as the README shows it."""
    block = re.search(r"3\. Write the gate.*?```python\n(.*?)```", TUTORIAL, re.S)
    assert block is not None, "the tutorial's step 3 lost its code block"
    return textwrap.dedent(block.group(1))


def step(number: int) -> str:
    found = re.search(rf"^{number}\. (.*?)(?=^\d+\. |\Z)", TUTORIAL, re.S | re.M)
    assert found is not None, f"the tutorial has no step {number}"
    return " ".join(found.group(1).split())


@pytest.fixture
def tutorial(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copy(APP, pytester.path / "app.py")  # step 2: "copy it next to your tests"
    (pytester.path / "test_release.py").write_text(gate_file())
    return pytester


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    (pytester.path / "test_release.py").write_text(source)
    return pytester.runpytest_subprocess("test_release.py", *args, timeout=300)


def test_step_1_install_gives_the_fast_engine_and_the_plugin() -> None:
    assert "`pip install pytest-rollout`" in step(1)
    requires = " ".join(importlib.metadata.requires("pytest-rollout") or [])
    for package in ("aiohttp", "uvloop", "httptools", "prometheus-api-client"):
        assert package in requires, f"{package} is not a declared dependency"
    (entry,) = [e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "rollout"]
    assert entry.value == "pytest_rollout.plugin"
    from pytest_rollout.load.engine import fast_engine_refusal
    from pytest_rollout.load.protocol import Plan

    assert fast_engine_refusal(Plan(url="http://127.0.0.1:1/", segments=(), start_at=0, deadline=0)) is None


def test_step_3_the_gate_is_the_file_the_readme_shows() -> None:
    source = gate_file()
    assert SLOW in source and 'pre_stop="2s"' in source
    compile(source, "test_release.py", "exec")


@pytest.mark.slow
@pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")
def test_step_4_the_slow_release_fails_and_the_html_report_shows_it(tutorial: pytest.Pytester) -> None:
    assert "`pytest test_release.py --rollout-html report.html`" in step(4)
    result = run(tutorial, gate_file(), "--rollout-html", "report.html")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*stopped early: *s into phase *, the live data proved p99_ms broken*",
            "*p99_ms in phase upgrade: measured *.?? ms [[]*.?? ms, *.?? ms[]], bound <= 400.00 ms*",
        ]
    )
    html = (tutorial.path / "report.html").read_text()
    assert "<svg" in html and "upgrade" in html and "slo_broken" in html


@pytest.mark.slow
@pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ('"--error-rate", "0.01"', "*error_rate in phase * measured 0.0*, bound <= 0.00100: * failed (http_5xx=*"),
        (
            '"--never-ready"',
            "*upgrade to v2 failed: replica v2-0 * did not become ready*3 replica(s) still in rotation*",
        ),
    ],
)
def test_step_5_the_other_bad_releases_fail(tutorial: pytest.Pytester, flags: str, expected: str) -> None:
    assert flags in step(5)
    result = run(tutorial, gate_file().replace(SLOW, flags), "--rollout-report", "report.json")
    assert result.ret == 1
    result.stdout.fnmatch_lines([expected])


@pytest.mark.slow
@pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")
def test_step_6_the_fixed_release_passes(tutorial: pytest.Pytester) -> None:
    assert f"drop `{SLOW}`" in step(6)
    result = run(tutorial, gate_file().replace(", " + SLOW, ""))
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*test_v2_upgrades_cleanly PASSED: asked 1,000 rps*"])


@pytest.mark.slow
@pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")
def test_step_7_without_pre_stop_the_endpoint_race_is_broken_and_with_it_passes(tutorial: pytest.Pytester) -> None:
    text = step(7)
    assert "`pytest test_endpoint_delay.py`" in text and '`"examples/app.py"` to `"app.py"`' in text
    source = (ROOT / "examples" / "test_endpoint_delay.py").read_text().replace('"examples/app.py"', '"app.py"')
    (tutorial.path / "test_endpoint_delay.py").write_text(source)
    result = tutorial.runpytest_subprocess("test_endpoint_delay.py", "--rollout-report", "report.json", timeout=300)
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_without_pre_stop_the_endpoint_race_is_caught SLO BROKEN*",
            "*<=0.005 BROKEN*",
            "*error_rate in upgrade: * failed (connection=*",
        ]
    )


@pytest.mark.slow
@pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")
def test_step_8_a_slower_change_fails_against_the_saved_baseline(tutorial: pytest.Pytester) -> None:
    text = step(8)
    assert "`pytest test_release.py --rollout-save main`" in text
    assert "`pytest test_release.py --rollout-compare main`" in text
    fixed = gate_file().replace(", " + SLOW, "")
    assert "five times" in text
    for _ in range(5):  # the spread of five runs of the unchanged release on this machine
        result = run(tutorial, fixed, "--rollout-save", "main")
        assert result.ret == 0, result.stdout.str()[-3000:]
    assert (tutorial.path / ".pytest-rollout" / "baselines" / "main.json").exists()
    # the unchanged release once more is no regression: every phase within the saved runs' spread
    assert "the unchanged release passes it" in text
    result = run(tutorial, fixed, "--rollout-compare", "main", "--rollout-report", "same.json")
    assert result.ret == 0, result.stdout.str()[-3000:]
    (record,) = json.loads((tutorial.path / "same.json").read_text())["tests"]
    compared = [v for v in record["verdicts"] if v["slo"].startswith("regression:")]
    assert compared and all(v["outcome"] == "held" for v in compared), compared
    slower = fixed.replace('"--version", "2"', '"--version", "2", "--delay-ms", "300"')
    assert '"--version", "2", "--delay-ms", "300"' in text
    result = run(tutorial, slower, "--rollout-compare", "main", "--rollout-report", "slower.json")
    assert result.ret == 1, result.stdout.str()[-3000:]  # an SLO broken (here: a regression), not "could not run"
    (record,) = json.loads((tutorial.path / "slower.json").read_text())["tests"]
    assert record["result"] == "slo_broken"
    regressions = {v["phase"]: v for v in record["verdicts"] if v["slo"] == "regression:p99_ms"}
    # v2 serves in upgrade and after: the regression is proven in at least one of them. A phase may escape:
    # its bound comes from the five saved runs' spread in that phase, and one saved run stalled on a busy
    # machine (p99 25 ms among 6-13 ms, seen in CI) widens it past 300 ms. (The baseline phase runs the same v1
    # in every run: it is judged against the saved runs' spread too.)
    broken = [phase for phase in ("upgrade", "after") if not regressions[phase]["passed"]]
    assert broken and all(regressions[phase]["measured"] > 100 for phase in broken), regressions
    phase = broken[0]
    result.stdout.fnmatch_lines([f"*regression:p99_ms in phase {phase}: *regression (at least *% sure): p99 *"])
    # the terminal summary shows the regression entries as entries of their own (it once crashed on them)
    result.stdout.fnmatch_lines(["*rollout SLO summary*", f"*regression regression:p99_ms in {phase}: * BROKEN*"])
    assert "Traceback" not in result.stdout.str()


def mix_gate() -> str:
    """Step 9's gate: step 3's file with the marker replaced by the step's mix, as the step says."""
    block = re.search(r"^9\. .*?```python\n(.*?)```", TUTORIAL, re.S | re.M)
    assert block is not None, "the tutorial's step 9 lost its code block"
    mix = textwrap.dedent(block.group(1))
    source = gate_file()
    marker = re.search(r"^@pytest\.mark\.slo\(.*\)$", source, re.M)
    assert marker is not None
    return source[: marker.start()] + mix + source[marker.end() + 1 :]


def test_step_9_the_mix_is_step_3_with_its_marker_replaced() -> None:
    source = mix_gate()
    compile(source, "test_release.py", "exec")
    assert "traffic=MIX" in source and "def test_v2_upgrades_cleanly" in source


@pytest.mark.slow
@pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")
def test_step_9_a_release_failing_only_the_checkout_is_broken_on_that_route(tutorial: pytest.Pytester) -> None:
    text = step(9)
    broken = '"--version", "2", "--error-rate", "0.2", "--fault-path", "/cart"'
    assert f"`app({broken})`" in text
    source = mix_gate().replace(f'"--version", "2", {SLOW}', broken)
    assert broken in source
    result = run(tutorial, source, "--rollout-report", "report.json")
    assert result.ret == 1, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*error_rate of route checkout in phase upgrade: measured *"])
    (test,) = json.loads((tutorial.path / "report.json").read_text())["tests"]
    broken_routes = {v.get("route") for v in test["verdicts"] if v["outcome"] == "broken"}
    assert broken_routes == {"checkout"}
    upgrade = test["phases"]["upgrade"]["routes"]
    assert upgrade["home"]["errors"] == 0 and upgrade["search"]["errors"] == 0
