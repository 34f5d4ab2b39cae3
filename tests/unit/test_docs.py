"""The docs stay true: every option they name exists, and the examples parse."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import ci_skips
from uses import Uses

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    ROOT / "examples" / "kind" / "run.sh",
    ROOT / "examples" / "github" / "rollout-gate.yml",
    ROOT / "docker" / "worker.Dockerfile",
]


def test_every_option_the_docs_name_exists(pytester: pytest.Pytester) -> None:
    help_text = pytester.runpytest("--help").stdout.str()
    named = set()
    for path in DOCS:
        named |= set(re.findall(r"--(?:rollout-[a-z-]+[a-z]|prometheus-url)\b", path.read_text()))
    assert named >= {"--rollout-platform", "--rollout-html", "--rollout-compare", "--rollout-prometheus-service"}
    missing = sorted(flag for flag in named if flag not in help_text)
    assert missing == [], f"the docs name options pytest does not know: {missing}"


def test_the_example_workflow_and_script_are_well_formed() -> None:
    workflow = yaml.safe_load((ROOT / "examples" / "github" / "rollout-gate.yml").read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    gate = next(step for step in steps if step.get("id") == "gate")
    assert "--rollout-platform kubernetes" in gate["run"] and '"$status" = 6' in gate["run"]
    subprocess.run(["bash", "-n", str(ROOT / "examples" / "kind" / "run.sh")], check=True)
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "build-control-plane")], check=True)


def test_ci_fails_on_every_skip_the_readme_does_not_list(pytester: pytest.Pytester) -> None:
    """``.ci/skips.py`` on a real run's output: each skip is matched by how its reason begins, and counted."""
    skips = ci_skips()
    assert skips.allowed_skips((ROOT / "README.md").read_text()) == []  # "What may skip": none at present
    readme = "## Two\n\n### What may skip\n\nText.\n\n- `not root`: why\n- `no gpu`: why\n\n## Next\n\n- `x`: no\n"
    assert skips.allowed_skips(readme) == ["not root", "no gpu"]
    with pytest.raises(ValueError, match="What may skip"):
        skips.allowed_skips("# a README without the section\n")
    pytester.makepyfile(
        test_skips="""
        import pytest
        def test_a(): pytest.skip("haproxy is not installed")
        @pytest.mark.parametrize("n", [1, 2])
        def test_b(n): pytest.skip("not root: the node tier")
        def test_c(): pass
        """
    )
    out = pytester.runpytest("-ra").stdout.str()
    assert "1 passed, 3 skipped" in out
    unlisted = skips.unlisted_skips(out, ["not root"])
    assert len(unlisted) == 1 and unlisted[0].startswith("SKIPPED [1]") and "haproxy is not installed" in unlisted[0]
    assert len(skips.unlisted_skips(out, [])) == 2
    assert skips.unlisted_skips(out, ["not root", "haproxy"]) == []
    # counted but not listed (no -ra): fails too
    quiet = pytester.runpytest("-rN").stdout.str()
    assert skips.unlisted_skips(quiet, ["not root", "haproxy"]) == [
        "3 skipped, not listed by -ra (is -ra still in the addopts?)"
    ]
    assert len(skips.unlisted_skips(pytester.runpytest("-ra", "-q").stdout.str(), [])) == 2  # -q: no ==== borders
    assert skips.unlisted_skips("no summary at all", []) != []
    assert skips.unlisted_skips(pytester.runpytest("-ra", "-k", "test_c").stdout.str(), []) == []


# Every option and marker argument the README documents, and the tests that use it the way the README shows.
# A new option or argument without a line here fails test_every_documented_option_has_a_test.
OPTION_TESTS: dict[str, list[str]] = {
    "--rollout-platform": ["tests/kubernetes/test_kube.py::test_a_whole_slo_test_runs_on_kubernetes_with_real_workers_behind_the_pod_proxy", "tests/component/test_plugin.py::test_unknown_platform"],
    "--rollout-rps-scale": ["tests/kubernetes/test_kube.py::test_a_whole_slo_test_runs_on_kubernetes_with_real_workers_behind_the_pod_proxy", "tests/component/test_plugin.py::test_scale_below_one_rps"],
    "--rollout-risk": ["tests/component/test_plugin.py::test_bad_options"],
    "--rollout-report": ["tests/e2e/test_rollouts.py::test_good_release_passes", "tests/component/test_plugin.py::test_report_is_written_for_failures"],
    "--rollout-html": ["tests/e2e/test_reports.py::test_a_good_run_shows_progress_writes_html_that_a_browser_renders_and_saves_a_baseline", "tests/e2e/test_tutorial.py::test_step_4_the_slow_release_fails_and_the_html_report_shows_it"],
    "--rollout-save": ["tests/e2e/test_reports.py::test_a_good_run_shows_progress_writes_html_that_a_browser_renders_and_saves_a_baseline", "tests/e2e/test_tutorial.py::test_step_8_a_slower_change_fails_against_the_saved_baseline"],
    "--rollout-compare": ["tests/e2e/test_tutorial.py::test_step_8_a_slower_change_fails_against_the_saved_baseline"],
    "--rollout-baseline-dir": ["tests/e2e/test_reports.py::test_a_good_run_shows_progress_writes_html_that_a_browser_renders_and_saves_a_baseline"],
    "--prometheus-url": ["tests/e2e/test_rollouts.py::test_an_external_prometheus_through_file_sd", "tests/e2e/test_reports.py::test_a_run_that_cannot_be_judged_exits_6"],
    "--rollout-sd-dir": ["tests/e2e/test_rollouts.py::test_an_external_prometheus_through_file_sd"],
    "--rollout-keep": ["tests/e2e/test_faults.py::test_keep_leaves_the_target_serving_and_says_where"],
    "--rollout-worker-rps": ["tests/kubernetes/test_kube.py::test_a_whole_slo_test_runs_on_kubernetes_with_real_workers_behind_the_pod_proxy"],
    "--rollout-workers": ["tests/e2e/test_faults.py::test_a_fleet_of_32_workers_keeps_exact_totals"],
    "--rollout-upgrade-timeout": ["tests/kubernetes/test_kube.py::test_a_whole_slo_test_runs_on_kubernetes_with_real_workers_behind_the_pod_proxy", "tests/component/test_plugin.py::test_bad_options"],
    "--rollout-endpoint-delay": ["tests/e2e/test_service.py::test_gunicorn_with_pre_stop_passes", "tests/component/test_plugin.py::test_bad_options"],
    "--junitxml": ["tests/e2e/test_rollouts.py::test_good_release_passes"],
    "rollout_haproxy": ["tests/component/test_plugin.py::test_binary_paths_from_ini_are_used_and_a_wrong_one_is_named"],
    "rollout_prometheus": ["tests/component/test_plugin.py::test_binary_paths_from_ini_are_used_and_a_wrong_one_is_named"],
    "--rollout-kubeconfig": ["tests/kubernetes/test_kube.py::test_a_whole_slo_test_runs_on_kubernetes_with_real_workers_behind_the_pod_proxy"],
    "--rollout-kube-context": ["tests/kubernetes/test_kube.py::test_a_whole_slo_test_runs_on_kubernetes_with_real_workers_behind_the_pod_proxy"],
    "--rollout-namespace": ["tests/kubernetes/test_kube.py::test_a_whole_slo_test_runs_on_kubernetes_with_real_workers_behind_the_pod_proxy"],
    "--rollout-worker-image": ["tests/kubernetes/test_kube.py::test_a_whole_slo_test_runs_on_kubernetes_with_real_workers_behind_the_pod_proxy"],
    "--rollout-kube-timeout": ["tests/kubernetes/test_kube.py::test_a_whole_slo_test_runs_on_kubernetes_with_real_workers_behind_the_pod_proxy"],
    "--rollout-prometheus-service": ["tests/kubernetes/test_kube.py::test_an_slo_test_on_kubernetes_fails_closed_when_its_workers_cannot_be_reached"],
}  # fmt: skip

ARGUMENT_TESTS: dict[str, list[str]] = {
    "rps": ["tests/e2e/test_rollouts.py::test_good_release_passes"],
    "error_rate": ["tests/e2e/test_rollouts.py::test_release_that_drops_requests_on_sigterm_fails_on_error_rate"],
    "risk": ["tests/e2e/test_rollouts.py::test_every_marker_argument_as_the_readme_shows_it"],
    "end_when_held": ["tests/e2e/test_rollouts.py::test_end_when_held_ends_each_steady_phase_once_proven_held"],
    "client": ["tests/e2e/test_rollouts.py::test_a_mainstream_graceful_server_passes_as_its_real_clients_would_see_it"],
    "traffic": [
        "tests/e2e/test_traffic_mix.py::test_a_good_release_holds_every_route_each_sent_in_its_share",
        "tests/e2e/test_traffic_mix.py::test_a_release_failing_one_route_is_broken_there_while_the_others_hold",
    ],
    "seed": ["tests/e2e/test_traffic_mix.py::test_a_good_release_holds_every_route_each_sent_in_its_share"],
    "tls_ca": ["tests/e2e/test_https.py::test_a_good_release_over_https_passes_on_the_fast_engine_trusting_the_test_ca"],
    "tls_verify": ["tests/e2e/test_https.py::test_a_good_release_over_https_passes_accepting_a_test_certificate_with_tls_verify_false"],
    **{
        key: ["tests/e2e/test_rollouts.py::test_every_marker_argument_as_the_readme_shows_it"]
        for key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "path", "method", "headers", "body")
    },
    **{
        key: ["tests/e2e/test_rollouts.py::test_every_marker_argument_as_the_readme_shows_it"]
        for key in ("hold", "ramp", "after", "min_load", "timeout", "judge_ramp", "abort_on_breach")
    },
    "checks": ["tests/e2e/test_rollouts.py::test_good_release_passes"],
    "secret_headers": ["tests/e2e/test_faults.py::test_secrets_in_headers_stay_out_of_reports_logs_and_labels"],
    "availability": ["tests/e2e/test_reports.py::test_a_good_run_shows_progress_writes_html_that_a_browser_renders_and_saves_a_baseline"],
    "regression": ["tests/e2e/test_reports.py::test_a_good_run_shows_progress_writes_html_that_a_browser_renders_and_saves_a_baseline"],
}  # fmt: skip


def documented_options() -> set[str]:
    text = (ROOT / "README.md").read_text()
    flags = set(re.findall(r"^\| `(--[a-z-]+)", text, re.M))
    inis = {
        name
        for group in re.findall(r"^\| \((`rollout_[a-z_]+`(?:, `rollout_[a-z_]+`)*)\)", text, re.M)
        for name in re.findall(r"`(\w+)`", group)
    }
    return flags | inis


def documented_arguments() -> set[str]:
    text = (ROOT / "README.md").read_text()
    signature = re.search(r"## The marker\s+`@pytest\.mark\.slo\((.*?)\)`", text)
    assert signature is not None, "the README lost the marker's signature"
    return {part.split("=")[0].strip() for part in signature.group(1).split(", ")}


def test_every_documented_option_and_argument_has_a_test_that_uses_it() -> None:
    options, arguments = documented_options(), documented_arguments()
    assert {"--rollout-platform", "--rollout-endpoint-delay", "rollout_haproxy"} <= options
    assert {"rps", "judge_ramp", "abort_on_breach", "regression"} <= arguments
    assert sorted(options - set(OPTION_TESTS)) == [], "documented options without a test in OPTION_TESTS"
    assert sorted(arguments - set(ARGUMENT_TESTS)) == [], "documented marker arguments without a test in ARGUMENT_TESTS"
    unused = []
    for table, name, nodeids in [
        *(("option", n, ids) for n, ids in OPTION_TESTS.items()),
        *(("argument", n, ids) for n, ids in ARGUMENT_TESTS.items()),
    ]:
        for nodeid in nodeids:
            path, _, function = nodeid.partition("::")
            uses = Uses(ROOT / path, function)
            assert uses.found, f"{nodeid} (listed for {name}) does not exist"
            if not (uses.option(name) if table == "option" else uses.argument(name)):
                unused.append(f"{nodeid} is listed for {name} but its code never uses it")
    assert unused == []


def test_a_name_in_a_docstring_or_comment_is_not_a_use(tmp_path: Path) -> None:
    module = tmp_path / "test_example.py"
    module.write_text(
        '''"""Mentions --rollout-keep and slo(rps=5) in the module docstring."""
ARGS = ("--rollout-report", "r.json")
CODE = "@pytest.mark.slo(p99_ms=300)\\ndef test_inner(rollout): ..."


def helper():
    return ARGS


def test_outer(pytester):
    """Uses --rollout-html and rollout_haproxy, and sets error_rate=0.01, in words only."""
    # --rollout-save in a comment; risk=0.05 too
    pytester.makepyfile(CODE)
    pytester.makeini("[pytest]\\nrollout_prometheus = /bin/prometheus\\n")
    return pytester.runpytest(*helper(), "--rollout-workers=4")


@pytest.mark.slo(hold="2s")
def test_decorated(rollout): ...
'''
    )
    outer, decorated = Uses(module, "test_outer"), Uses(module, "test_decorated")
    assert outer.found and decorated.found and not Uses(module, "test_missing").found
    assert [f for f in ("--rollout-report", "--rollout-workers", "rollout_prometheus") if not outer.option(f)] == []
    assert [
        f for f in ("--rollout-keep", "--rollout-html", "rollout_haproxy", "--rollout-save") if outer.option(f)
    ] == []
    assert outer.argument("p99_ms") and decorated.argument("hold")
    assert not outer.argument("rps") and not outer.argument("error_rate") and not outer.argument("risk")
    assert not outer.option("--rollout-work")  # a prefix of a used option is not a use


def test_an_option_only_expected_or_asserted_is_not_a_use_and_one_passed_to_a_run_is(tmp_path: Path) -> None:
    """Issue 22: a literal in an assert (its test or its message), compared with output, or given to a matcher or
    to ``pytest.raises(match=...)`` is what the test expects, not what it runs; the column of expected messages of
    a ``parametrize`` neither. What reaches a run through a helper, a local, a parametrized column or an ini file
    written with an f-string is."""
    module = tmp_path / "test_example.py"
    module.write_text(
        """import re, subprocess, pytest
EXPECTED = "*--rollout-html is not a file*"
SLO = 'rps=10, hold="1s"'
CASES = [
    pytest.param(["--rollout-risk", "2"], "--rollout-workers must be an int", id="risk"),
    (["--rollout-endpoint-delay=-1"], "--rollout-keep is not allowed here"),
]


def run(pytester, *extra, slo=SLO, expect=""):
    pytester.makepyfile(f"import pytest\\n@pytest.mark.slo({slo})\\ndef test_x(rollout): pass\\n")
    result = pytester.runpytest(*extra)
    if expect:
        result.stdout.fnmatch_lines([expect])
    return result


def test_expecting(pytester):
    result = pytester.runpytest()
    assert "--rollout-report" in result.stdout.str(), "--rollout-save should have been named"
    assert result.ret == 4, f"--rollout-compare {result.ret}"
    result.stdout.fnmatch_lines([EXPECTED, "*--rollout-sd-dir*"])
    if "--rollout-baseline-dir" in result.stdout.str():
        pytest.fail("--rollout-upgrade-timeout was named")
    assert re.search(r"--rollout-kubeconfig", result.stdout.str())
    with pytest.raises(ValueError, match="--rollout-namespace"):
        raise ValueError("--rollout-kube-context")
    run(pytester, expect="*--rollout-worker-image*")
    assert run(pytester).stdout.str().startswith("--rollout-kube-timeout")
    assert "p99_ms=" in result.stdout.str()


@pytest.mark.parametrize(("args", "message"), CASES)
def test_running(pytester, args, message):
    flags = ["--rollout-platform", "local"]
    pytester.makeini(f"[pytest]\\n{'rollout_haproxy'} = /bin/haproxy\\n")
    run(pytester, *args, *flags, "--rollout-report=r.json", slo=SLO + ", error_rate=0.01")
    subprocess.run(["pytest", "--prometheus-url", "http://p:9090"], check=False)
    result = pytester.runpytest()
    result.stderr.fnmatch_lines([message])
"""
    )
    expecting, running = Uses(module, "test_expecting"), Uses(module, "test_running")
    expected_only = [
        "--rollout-report", "--rollout-save", "--rollout-compare", "--rollout-html", "--rollout-sd-dir",
        "--rollout-baseline-dir", "--rollout-upgrade-timeout", "--rollout-kubeconfig", "--rollout-namespace",
        "--rollout-kube-context", "--rollout-worker-image", "--rollout-kube-timeout",
    ]  # fmt: skip
    assert [flag for flag in expected_only if expecting.option(flag)] == []
    assert not expecting.argument("p99_ms") and not expecting.argument("error_rate")
    assert expecting.argument("rps") and expecting.argument("hold")  # run(...)'s default slo reaches its file
    passed = ["--rollout-risk", "--rollout-endpoint-delay", "--rollout-platform", "rollout_haproxy", "--rollout-report"]
    assert [flag for flag in passed if not running.option(flag)] == []
    assert running.option("--prometheus-url") and running.argument("error_rate") and running.argument("rps")
    # the expected messages' column of the parametrize, and the matcher run() gives it, are not uses
    assert not running.option("--rollout-workers") and not running.option("--rollout-keep")


def test_a_recursive_helper_is_read_once_and_what_the_test_passes_still_counts(tmp_path: Path) -> None:
    module = tmp_path / "test_example.py"
    module.write_text(
        """def run(pytester, depth, *args):
    if depth:
        return run(pytester, depth - 1, *args, "--rollout-keep")
    return pytester.runpytest(*args)


def test_recursing(pytester):
    run(pytester, 2, "--rollout-risk=0.01")
"""
    )
    uses = Uses(module, "test_recursing")  # before: RecursionError
    assert uses.option("--rollout-risk")  # what the test passes still counts
    assert not uses.option("--rollout-keep")  # what only the recursive call adds is not followed (read once)
