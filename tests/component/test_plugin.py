"""The plugin as users meet it, through pytester: options, marker errors, clear failures."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from xml.etree import ElementTree

import matplotlib.figure  # noqa: F401  (see below)
import pytest
from helpers import APP, closed_port

from pytest_rollout.errors import (
    FleetError,
    KubernetesError,
    LoadBalancerError,
    ProcessStartError,
    PrometheusError,
    ReplicaNotReady,
    RolloutError,
    RolloutUsageError,
    SLOSpecError,
    UpgradeFailed,
)
from pytest_rollout.judge.verdict import Outcome, Verdict, VerdictEntry
from pytest_rollout.plugin.outcome import TEST_FAILED, Blame, Fault, exit_status, fault_of, result_of

# The HTML report draws with matplotlib, which imports numpy. In-process pytester runs (runpytest) unload
# every module they imported when they end, and numpy cannot be loaded twice in one process: imported here,
# before any inline run, it stays loaded for them and for the tests that run after this module.

pytestmark = pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")

HEADER = f"""
import sys, pytest
APP = {str(APP)!r}
def app(*flags):
    return [sys.executable, APP, "--startup-s", "0", *flags]
"""


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.slo(rps, error_rate=0.001*"])


def test_strict_markers_accepts_slo(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.slo(rps=10)\ndef test_x():\n    pass\n")
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


def test_bad_marker_is_a_usage_error_naming_test_and_argument(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.slo(rps=100, error_rate=1.5)
        def test_one(): pass
        @pytest.mark.slo(rps=100, hold="soon")
        def test_two(): pass
        @pytest.mark.slo(rps=100, latency=5)
        def test_three(): pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: invalid slo marker:",
            "*test_one: @pytest.mark.slo: error_rate=1.5 must be in [0, 1)*",
            "*test_two: @pytest.mark.slo: hold='soon' is not a duration*",
            "*test_three: @pytest.mark.slo: unknown argument 'latency'*",
        ]
    )
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rollout-rps-scale", "fast"], "--rollout-rps-scale='fast': expected a number*"),
        (["--rollout-rps-scale", "-1"], "--rollout-rps-scale='-1': must be a number greater than 0"),
        (["--rollout-workers", "0"], "--rollout-workers='0': expected a whole number >= 1"),
        (["--rollout-risk", "0.7"], "--rollout-risk='0.7': expected a fraction in (0, 0.5], e.g. 0.01"),
        (["--rollout-risk", "often"], "--rollout-risk='often': expected a fraction in (0, 0.5]*"),
        (["--prometheus-url", "localhost:9090"], "--prometheus-url='localhost:9090': expected an http(s) URL*"),
        (["--rollout-platform", "Local!"], "--rollout-platform='Local!': expected a platform name*"),
        (["--rollout-upgrade-timeout", "ages"], "*--rollout-upgrade-timeout='ages' is not a duration*"),
        (["--rollout-platform", "kubernetes"], "--rollout-platform kubernetes needs the cluster's Prometheus: *"),
        (
            ["--rollout-platform", "kubernetes", "--rollout-prometheus-service", "prometheus"],
            "--rollout-prometheus-service='prometheus': expected NAMESPACE/NAME:PORT, e.g. monitoring/prometheus:9090",
        ),
        (
            ["--rollout-platform", "kubernetes", "--prometheus-url", "http://p:9090", "--rollout-namespace", "Team_A"],
            "--rollout-namespace='Team_A': not a valid namespace name",
        ),
        (["--rollout-endpoint-delay", "soon"], "*--rollout-endpoint-delay*soon*"),
        (
            ["--rollout-platform", "kubernetes", "--prometheus-url", "http://p:9090", "--rollout-kube-timeout", "x"],
            "*--rollout-kube-timeout='x' is not a duration*",
        ),
        (
            [
                "--rollout-platform",
                "kubernetes",
                "--prometheus-url",
                "http://p:9090",
                "--rollout-prometheus-service",
                "m/p:9090",
            ],
            "give --prometheus-url or --rollout-prometheus-service, not both",
        ),
    ],
)
def test_bad_options(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.slo(rps=10)\ndef test_x(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_a_session_without_slo_tests_is_left_alone(pytester: pytest.Pytester) -> None:
    """Options parsed and nothing else: no settings checked, no file read, no signal handler."""
    pytester.makeconftest(
        """
import pytest_rollout.load.calibration as calibration

READS = []
real = calibration.measured_worker_rps
calibration.measured_worker_rps = lambda *a, **k: READS.append(1) or real(*a, **k)
"""
    )
    pytester.makepyfile(
        """
import signal

def test_plain(request):
    from conftest import READS
    from pytest_rollout.plugin.session import SESSION_KEY

    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert SESSION_KEY not in request.config.stash
    assert READS == []
"""
    )
    # a bad value is not even looked at: nothing here would use it
    result = pytester.runpytest_subprocess("--rollout-rps-scale", "fast", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    # the same session with an SLO test reads and checks its settings
    pytester.makepyfile(test_slo="import pytest\n@pytest.mark.slo(rps=10)\ndef test_x(): pass")
    result = pytester.runpytest_subprocess("--rollout-rps-scale", "fast", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_bad_ini_value(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nrollout_rps_scale = lots\n")
    pytester.makepyfile("import pytest\n@pytest.mark.slo(rps=10)\ndef test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --rollout-rps-scale='lots': expected a number*"])


def test_fixture_without_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(rollout): pass")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*the rollout fixture needs an @pytest.mark.slo(rps=...) marker*"])
    result.assert_outcomes(errors=1)


def test_scale_below_one_rps(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.slo(rps=50)\ndef test_x(rollout): pass")
    result = pytester.runpytest("--rollout-rps-scale", "0.01")
    result.stdout.fnmatch_lines(["*rps=50 scaled by --rollout-rps-scale=0.01 is 0.5, less than 1 request per second*"])


def test_a_missing_kubeconfig_is_a_clear_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\n@pytest.mark.slo(rps=10)\ndef test_x(rollout):\n    rollout.deploy(image='a/b:1')\n"
    )
    result = pytester.runpytest(
        "--rollout-platform=kubernetes",
        "--prometheus-url=http://127.0.0.1:9",
        f"--rollout-kubeconfig={pytester.path / 'nowhere.yaml'}",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*cannot load the kubeconfig *nowhere.yaml*Point --rollout-kubeconfig*"])
    assert "Traceback" not in result.stdout.str()


def test_unknown_platform(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(HEADER + "@pytest.mark.slo(rps=10)\ndef test_x(rollout):\n    rollout.deploy(command=app())\n")
    result = pytester.runpytest("--rollout-platform", "mesos")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no platform called 'mesos'*"])


def test_command_that_does_not_exist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\n@pytest.mark.slo(rps=10)\ndef test_x(rollout):\n    rollout.deploy(command=['./no-such-app'])\n"
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    assert result.ret == 1  # the test's own input, not a run that fell short (6)
    result.stdout.fnmatch_lines(
        ["*cannot start replica-v1-0: command not found: './no-such-app'*(the command the test gave for v1)*"]
    )
    assert "Traceback" not in result.stdout.str() and "NOT PROVEN" not in result.stdout.str()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("rollout.ramp()", "*call rollout.deploy(...) before rollout.ramp()*"),
        ("rollout.deploy(command=app()); rollout.upgrade(command=app())", "*before rollout.upgrade()*"),
        ("rollout.deploy(command='python app.py')", "*must be a list of strings (an argv)*"),
        ("rollout.deploy(command=app(), replicas=0)", "*replicas=0) must be an int >= 1*"),
        ("rollout.deploy(command=app(), env={'PORT': '1'})", "*must not set PORT*"),
        ("rollout.deploy(image='shop/app:v1')", "*rollout.deploy(image=...) needs --rollout-platform kubernetes*"),
        ("rollout.deploy(manifests=['d.yaml'])", "*rollout.deploy(manifests=...) needs --rollout-platform kubernetes*"),
        (
            "rollout.deploy(command=app(), image='a:1')",
            "*takes one of command=, image=, manifests=; got command and image*",
        ),
        ("rollout.deploy()", "*rollout.deploy() needs command=*or image=* (kubernetes platform)*"),
        ("rollout.deploy(image='shop app')", "*image='shop app') must be an image reference*"),
        ("rollout.deploy(command=app(), port=0)", "*port=0) must be a TCP port*"),
        ("rollout.deploy(command=app(), pre_stop='soon')", "*pre_stop='soon') must be a duration such as '5s'*"),
        ("rollout.deploy(command=app(), pre_stop=10)", "*pre_stop=10) must be shorter than grace_period=10.0*"),
    ],
)
def test_fixture_misuse(pytester: pytest.Pytester, body: str, message: str) -> None:
    pytester.makepyfile(HEADER + f"@pytest.mark.slo(rps=10)\ndef test_x(rollout):\n    {body}\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])


def test_replica_that_crashes_at_start(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HEADER + "@pytest.mark.slo(rps=10)\ndef test_x(rollout):\n"
        "    rollout.deploy(command=[sys.executable, '-c', 'import sys; print(\"boom\"); sys.exit(3)'])\n"
    )
    result = pytester.runpytest("--rollout-report", "r.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*replica v1-0 (pid *) exited with code 3 before it was ready*", "*boom*"])
    # a ReleaseError is the release's: SLO broken, exit 1 (it once read "not proven", exit 6)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*::test_x SLO BROKEN: *"])
    assert "NOT PROVEN" not in result.stdout.str() and "not proven" not in result.stdout.str()
    assert json.loads((pytester.path / "r.json").read_text())["tests"][0]["result"] == "slo_broken"


@pytest.fixture
def not_prometheus() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_unreachable_prometheus(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HEADER
        + "@pytest.mark.slo(rps=10)\ndef test_x(rollout):\n    rollout.deploy(command=app())\n    rollout.ramp()\n"
    )
    result = pytester.runpytest_subprocess(
        "--prometheus-url", f"http://127.0.0.1:{closed_port()}", "--rollout-report", "r.json"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Prometheus at http://127.0.0.1:* is unreachable*Check --prometheus-url*"])
    # a RunError is the tool's side: not proven, exit 6, never a traceback
    assert result.ret == 6
    result.stdout.fnmatch_lines(["*::test_x NOT PROVEN: *", "rollout: 1 SLO test(s) not proven*"])
    assert "Traceback" not in result.stdout.str() and "\nE   " not in result.stdout.str()
    (record,) = json.loads((pytester.path / "r.json").read_text())["tests"]
    assert record["result"] == "not_proven"
    # the test did call rollout.ramp(): the summary says what failed instead
    assert "call rollout.ramp()" not in result.stdout.str()
    result.stdout.fnmatch_lines(
        ["  load in -: no load was run: PrometheusError: Prometheus at http://127.0.0.1:* is unreachable*"]
    )
    assert record["verdicts"][0]["reason"].startswith("no load was run: PrometheusError: Prometheus at ")


def test_url_that_is_not_prometheus(pytester: pytest.Pytester, not_prometheus: str) -> None:
    pytester.makepyfile(
        HEADER
        + "@pytest.mark.slo(rps=10)\ndef test_x(rollout):\n    rollout.deploy(command=app())\n    rollout.ramp()\n"
    )
    result = pytester.runpytest_subprocess("--prometheus-url", not_prometheus)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*answered HTTP 200 but is not a Prometheus API*"])


def test_report_is_written_for_failures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(HEADER + "@pytest.mark.slo(rps=10)\ndef test_x(rollout):\n    rollout.ramp()\n")
    report = pytester.path / "out" / "report.json"
    result = pytester.runpytest("--rollout-report", str(report))
    result.assert_outcomes(failed=1)
    data = json.loads(report.read_text())
    (test,) = data["tests"]
    assert test["nodeid"].endswith("::test_x") and test["outcome"] == "failed"
    assert test["requested_rps"] == 10 and test["phases"] == {}


def test_promql_syntax_error_in_a_check_is_a_clear_error_before_any_load(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HEADER
        + "@pytest.mark.slo(rps=10, checks={'lb_5xx': ('sum(rate(haproxy_backend_http_responses_total[$window]', '<=', 0)})\n"
        "def test_x(rollout):\n    rollout.deploy(command=app())\n    rollout.ramp()\n"
    )
    report = pytester.path / "r.json"
    result = pytester.runpytest_subprocess("--rollout-report", str(report))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            # (in these patterns [[] is a literal "[")
            "*slo check 'lb_5xx': Prometheus at http://127.0.0.1:* rejected the query "
            "'sum(rate(haproxy_backend_http_responses_total[[]1s]': bad_data: *parse error: unclosed left parenthesis. "
            "Fix the expression in @pytest.mark.slo(checks=...)"
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert json.loads(report.read_text())["tests"][0]["phases"] == {}  # no load was started


def test_a_failing_report_renderer_never_hides_the_verdict_or_the_exit_status(pytester: pytest.Pytester) -> None:
    """A bug in a renderer is reported as the renderer's; the result and exit status stand (issue: a crash in
    the terminal summary once buried the verdict under a traceback)."""
    pytester.makeconftest(
        """
import pytest_rollout.report.html_report, pytest_rollout.report.json_report

def broken(*args, **kwargs):
    raise ValueError("a renderer's bug")

pytest_rollout.report.json_report.format_summary = broken
pytest_rollout.report.html_report.write_html = broken
"""
    )
    pytester.makepyfile(
        HEADER
        + "@pytest.mark.slo(rps=10)\ndef test_x(rollout):\n    rollout.deploy(command=app())\n    rollout.ramp()\n"
    )
    result = pytester.runpytest_subprocess(
        "--rollout-html",
        "report.html",
        "--rollout-report",
        "report.json",
        "--prometheus-url",
        f"http://127.0.0.1:{closed_port()}",
    )
    assert result.ret == 6  # not proven: the run could not be done (Prometheus unreachable), nothing shown broken
    result.stdout.fnmatch_lines(
        [
            "*Prometheus at http://127.0.0.1:* is unreachable*",
            "*test_x NOT PROVEN: the terminal summary could not be rendered: ValueError: a renderer's bug*",
            "*rollout: the HTML report could not be written: ValueError: a renderer's bug*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert json.loads((pytester.path / "report.json").read_text())["tests"][0]["result"] == "not_proven"


@pytest.mark.parametrize(
    ("ini", "body", "message"),
    [
        (
            "rollout_haproxy",
            "rollout.deploy(command=app())",
            "*HAProxy not found: '/opt/none/haproxy'*set the ini option rollout_haproxy*",
        ),
        (
            "rollout_prometheus",
            "rollout.deploy(command=app())\n    rollout.ramp()",
            "*Prometheus not found: '/opt/none/prometheus'*set the ini option rollout_prometheus*",
        ),
    ],
)
def test_binary_paths_from_ini_are_used_and_a_wrong_one_is_named(
    pytester: pytest.Pytester, ini: str, body: str, message: str
) -> None:
    name = ini.removeprefix("rollout_")
    pytester.makeini(f"[pytest]\n{ini} = /opt/none/{name}\n")
    pytester.makepyfile(HEADER + f"@pytest.mark.slo(rps=10)\ndef test_x(rollout):\n    {body}\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str()


# -- whose failure it is (plugin/outcome.py): the test's own, the release's, the run's ---------------------------

A_BUG_IN_THE_TEST = [
    pytest.param(
        "rollout.deploy(comand=app())",
        [">*rollout.deploy(comand=app())", "E*TypeError: *unexpected keyword argument 'comand'"],
        id="a-misspelt-argument",
    ),
    pytest.param(
        "rollout.deploy(command='python app.py')",
        [
            ">*rollout.deploy(command='python app.py')",
            "E*RolloutUsageError: rollout.deploy(command=...) must be a list of strings (an argv), got 'python app.py'",
        ],
        id="a-command-as-a-string",
    ),
    pytest.param(
        "rollout.deploy(command=app())\n    rollout.rmap()",
        [">*rollout.rmap()", "E*AttributeError: *'rmap'"],
        id="an-attribute-error-before-any-load",
    ),
    pytest.param(
        "pytest.fail('my own check')",
        [">*pytest.fail('my own check')", "E*Failed: my own check"],
        id="the-test-failing-itself",
    ),
]


@pytest.mark.parametrize(("body", "traceback"), A_BUG_IN_THE_TEST)
def test_a_bug_in_the_test_fails_it_as_pytest_would_never_not_proven(
    pytester: pytest.Pytester, body: str, traceback: list[str]
) -> None:
    """Issue 22: each of these once ended the session with exit 6 and "NOT PROVEN ... no load was run"."""
    pytester.makepyfile(HEADER + f"@pytest.mark.slo(rps=10)\ndef test_x(rollout):\n    {body}\n")
    result = pytester.runpytest("--rollout-report", "r.json", "--junitxml", "junit.xml")
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(traceback)  # the test's own line, and the error under it
    out = result.stdout.str()
    assert "NOT PROVEN" not in out and "not proven" not in out and "no load was run" not in out
    assert "pytest_rollout/" not in out  # a misused fixture is shown at the test's line, not inside the plugin
    result.stdout.fnmatch_lines(["*::test_x TEST FAILED before any load: *"])
    (record,) = json.loads((pytester.path / "r.json").read_text())["tests"]
    assert record["result"] == TEST_FAILED and record["outcome"] == "failed" and record["verdicts"] == []
    assert record["failure"].split(":")[0] in traceback[-1]
    assert '<property name="rollout_result" value="test_failed"' in (pytester.path / "junit.xml").read_text()


def test_a_misused_rollout_in_another_fixture_fails_the_test_never_not_proven(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HEADER + "@pytest.fixture\ndef deployed(rollout):\n    rollout.deploy(command='python app.py')\n"
        "    return rollout\n"
        "@pytest.mark.slo(rps=10)\ndef test_x(deployed):\n    deployed.ramp()\n"
    )
    result = pytester.runpytest("--rollout-report", "r.json")
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "NOT PROVEN" not in result.stdout.str()
    assert json.loads((pytester.path / "r.json").read_text())["tests"][0]["result"] == TEST_FAILED


def test_a_bug_in_one_test_beside_a_not_proven_one_exits_1(pytester: pytest.Pytester) -> None:
    """Exit 6 only when every failed test is not proven: the bug in test_b must be fixed, not retried."""
    pytester.makepyfile(
        HEADER
        + "@pytest.mark.slo(rps=10)\ndef test_a(rollout):\n    rollout.deploy(command=app())\n    rollout.ramp()\n"
        + "@pytest.mark.slo(rps=10)\ndef test_b(rollout):\n    rollout.deploy(comand=app())\n"
    )
    result = pytester.runpytest_subprocess("--prometheus-url", f"http://127.0.0.1:{closed_port()}")
    result.assert_outcomes(failed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*E*TypeError: *unexpected keyword argument 'comand'",
            "*::test_a NOT PROVEN: *",
            "*::test_b TEST FAILED before any load: TypeError: *",
            "rollout: 1 SLO test(s) not proven*exit status 6 unless another test failed*",
        ]
    )


# A run in a pytester session through the real fixture and hooks, on the fakes (tests/support/fakes.py): no process
# starts, the whole run takes about a second, and every report (JSON, JUnit, a saved baseline) is written.
FAKE_RUN = """
import pytest
from fakes import FakePlatform, FakePrometheus
from pytest_rollout.plugin.session import SESSION_KEY

@pytest.hookimpl
def pytest_rollout_make_platform(config, name, run_dir, procs, rollout):
    platform = FakePlatform()
    client = FakePrometheus(platform)
    config.stash[SESSION_KEY].prometheus = lambda: (client, None)
    return platform
"""
FAKE_SLO = "@pytest.mark.slo(rps=20_000, ramp='0.2s', hold='0.4s', after='0.4s', p99_ms=250, abort_on_breach=False)\n"
FAKE_OPTIONS = ("--rollout-platform", "fake", "--rollout-report", "r.json", "--junitxml", "junit.xml")


def _fake_run(pytester: pytest.Pytester, body: str, conftest: str = "", *args: str) -> pytest.RunResult:
    pytester.makeconftest(FAKE_RUN + conftest)
    pytester.makepyfile(HEADER + FAKE_SLO + f"def test_x(rollout):\n    {body}\n")
    return pytester.runpytest(*FAKE_OPTIONS, *args)


def _reports(pytester: pytest.Pytester) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON report's record of test_x, and the rollout properties its JUnit test case carries."""
    (record,) = json.loads((pytester.path / "r.json").read_text())["tests"]
    junit = ElementTree.parse(pytester.path / "junit.xml")
    properties = {p.get("name", ""): p.get("value", "") for p in junit.iter("property")}
    return record, properties


def test_a_run_on_the_fakes_passes_through_the_fixture(pytester: pytest.Pytester) -> None:
    result = _fake_run(
        pytester, "rollout.deploy(command=app())\n    rollout.ramp()\n    rollout.upgrade(command=app())"
    )
    result.assert_outcomes(passed=1)
    record, junit = _reports(pytester)
    assert (record["result"], record["passed"], junit["rollout_result"], junit["rollout_passed"]) == (
        "passed",
        True,
        "passed",
        "true",
    )


def test_a_usage_error_after_a_clean_baseline_is_never_reported_passed(pytester: pytest.Pytester) -> None:
    """The JSON's ``passed`` once said true beside ``result`` test_failed: both come from one result now, as do
    JUnit's rollout_passed and the pass a saved baseline records."""
    body = "rollout.deploy(command=app())\n    rollout.ramp()\n    rollout.upgrade(command=app(), max_surge='lots')"
    result = _fake_run(pytester, body, "", "--rollout-save", "mine", "--rollout-html", "r.html")
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["E*RolloutUsageError: *max_surge*"])
    record, junit = _reports(pytester)
    assert record["verdicts"] and all(v["outcome"] == "held" for v in record["verdicts"])  # the baseline held
    assert (record["result"], record["passed"]) == (TEST_FAILED, False)
    assert (junit["rollout_result"], junit["rollout_passed"]) == (TEST_FAILED, "false")
    (saved,) = (pytester.path / ".pytest-rollout" / "baselines").glob("*.json")
    (entry,) = json.loads(saved.read_text())["tests"].values()
    assert [run["passed"] for run in entry["runs"]] == [False]
    page = (pytester.path / "r.html").read_text()  # its badge has a colour of its own, as every result's has
    assert '<span class="badge test_failed">' in page and ".test_failed { background:" in page


def test_a_bug_in_a_verdict_hook_at_the_automatic_verify_is_the_tests_own(pytester: pytest.Pytester) -> None:
    """A bug in a pytest_rollout_add_verdicts hook, raised by the verify() after the test body, once escaped the
    category decision: "not proven", exit 6. It is test code: exit 1, its traceback, test_failed."""
    hook = "\ndef pytest_rollout_add_verdicts(rollout, entries):\n    return [entries[0].bogus]\n"
    result = _fake_run(
        pytester, "rollout.deploy(command=app())\n    rollout.ramp()\n    rollout.upgrade(command=app())", hook
    )
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([">*.bogus]", "E*AttributeError: *'bogus'*"])
    assert "NOT PROVEN" not in result.stdout.str()
    record, junit = _reports(pytester)
    assert (record["result"], record["passed"], junit["rollout_result"]) == (TEST_FAILED, False, TEST_FAILED)


def test_the_tests_own_pytest_fail_after_a_failed_verdict_is_the_tests(pytester: pytest.Pytester) -> None:
    """The plugin's own failure is told by what it raised, not by the verdict: a test that catches a not proven
    verify() and fails itself was read as the plugin's failure (not proven, exit 6). Its own is test_failed, exit 1."""
    body = (
        "rollout.deploy(command=app())\n    rollout.ramp()\n    rollout.upgrade(command=app())\n"
        "    try:\n        rollout.verify()\n    except pytest.fail.Exception:\n        pass\n"
        "    pytest.fail('my own check')"
    )
    # a p99.9 that 20,000 requests per phase cannot prove held: not proven, never broken
    pytester.makeconftest(FAKE_RUN)
    pytester.makepyfile(
        HEADER + FAKE_SLO.replace("p99_ms=250", "error_rate=0.00001") + f"def test_x(rollout):\n    {body}\n"
    )
    result = pytester.runpytest(*FAKE_OPTIONS)
    result.assert_outcomes(failed=1)
    record, _ = _reports(pytester)
    assert any(v["outcome"] == "not_proven" for v in record["verdicts"])
    assert (record["result"], result.ret) == (TEST_FAILED, pytest.ExitCode.TESTS_FAILED)
    result.stdout.fnmatch_lines(["E*Failed: my own check"])


@pytest.mark.parametrize(
    ("error", "blame"),
    [
        (TypeError("x"), Blame.TEST),
        (AttributeError("x"), Blame.TEST),
        (AssertionError("x"), Blame.TEST),
        (pytest.fail.Exception("x"), Blame.TEST),
        (RolloutUsageError("x"), Blame.TEST),
        (SLOSpecError("x"), Blame.TEST),
        (ReplicaNotReady("x"), Blame.RELEASE),
        (UpgradeFailed("x"), Blame.RELEASE),
        (ProcessStartError("x"), Blame.RUN),
        (LoadBalancerError("x"), Blame.RUN),
        (FleetError("x"), Blame.RUN),
        (PrometheusError("x"), Blame.RUN),
        (KubernetesError("x"), Blame.RUN),
        (RolloutError("x"), Blame.RUN),
    ],
)
def test_whose_failure_it_is_is_decided_by_the_error_category(error: BaseException, blame: Blame) -> None:
    assert fault_of(error) == Fault(blame, f"{type(error).__name__}: x")


def _verdict(outcome: Outcome | None) -> Verdict | None:
    if outcome is None:
        return None
    entry = VerdictEntry("error_rate", "baseline", 0.0, 0.01, outcome is Outcome.HELD, "r", outcome=outcome)
    return Verdict((entry,), ())


@pytest.mark.parametrize(
    ("judged", "blame", "result"),
    [
        # no fault: the verdict decides; never judged (interrupted) is not proven
        (Outcome.HELD, None, "passed"),
        (Outcome.NOT_PROVEN, None, "not_proven"),
        (Outcome.BROKEN, None, "slo_broken"),
        (None, None, "not_proven"),
        # the test's own code failed it, before any load or after a run (which stays broken if it proved a breach)
        (None, Blame.TEST, TEST_FAILED),
        (Outcome.HELD, Blame.TEST, TEST_FAILED),
        (Outcome.NOT_PROVEN, Blame.TEST, TEST_FAILED),
        (Outcome.BROKEN, Blame.TEST, "slo_broken"),
        # the release's: broken, judged or not
        (None, Blame.RELEASE, "slo_broken"),
        (Outcome.HELD, Blame.RELEASE, "slo_broken"),
        # the run's: not proven, never a pass; a breach proven first stands
        (None, Blame.RUN, "not_proven"),
        (Outcome.HELD, Blame.RUN, "not_proven"),
        (Outcome.BROKEN, Blame.RUN, "slo_broken"),
    ],
)
def test_a_tests_result_by_its_verdict_and_whose_failure_ended_it(
    judged: Outcome | None, blame: Blame | None, result: str
) -> None:
    fault = None if blame is None else Fault(blame, "E: x")
    assert result_of(_verdict(judged), fault) == result


def test_a_test_the_plugin_failed_itself_is_never_a_pass() -> None:
    """A run stopped on a breach the live data proved, which the final look did not confirm, is not proven."""
    assert result_of(_verdict(Outcome.HELD), None, failed=True) == "not_proven"
    assert result_of(_verdict(Outcome.NOT_PROVEN), None, failed=True) == "not_proven"
    assert result_of(_verdict(Outcome.BROKEN), None, failed=True) == "slo_broken"


def test_exit_6_only_when_every_failed_test_is_not_proven() -> None:
    failed = pytest.ExitCode.TESTS_FAILED
    assert exit_status(failed, {"a"}, {"a": "not_proven"}) == 6
    assert exit_status(failed, {"a", "b"}, {"a": "not_proven", "b": TEST_FAILED}) == failed
    assert exit_status(failed, {"a", "b"}, {"a": "not_proven", "b": "slo_broken"}) == failed
    assert exit_status(failed, {"a", "c"}, {"a": "not_proven"}) == failed  # c: a test without the rollout fixture
    assert exit_status(pytest.ExitCode.INTERRUPTED, {"a"}, {"a": "not_proven"}) == pytest.ExitCode.INTERRUPTED
