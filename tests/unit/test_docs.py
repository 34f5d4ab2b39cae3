"""The docs stay true: every option they name exists, and the examples parse."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

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


# Every option and marker argument the README documents, and the tests that use it the way the README shows.
# A new option or argument without a line here fails test_every_documented_option_has_a_test.
OPTION_TESTS: dict[str, list[str]] = {
    "--rollout-platform": ["tests/kubernetes/test_kube.py::test_a_whole_slo_test_runs_on_kubernetes_with_real_workers_behind_the_pod_proxy", "tests/component/test_plugin.py::test_unknown_platform"],
    "--rollout-rps-scale": ["tests/kubernetes/test_kube.py::test_a_whole_slo_test_runs_on_kubernetes_with_real_workers_behind_the_pod_proxy", "tests/component/test_plugin.py::test_scale_below_one_rps"],
    "--rollout-risk": ["tests/component/test_plugin.py::test_bad_options"],
    "--rollout-report": ["tests/e2e/test_rollouts.py::test_good_release_passes", "tests/component/test_plugin.py::test_report_is_written_for_failures"],
    "--rollout-html": ["tests/e2e/test_reports.py::test_a_good_run_shows_progress_writes_html_that_a_browser_renders_and_saves_a_baseline", "tests/e2e/test_tutorial.py::test_step_4_the_slow_release_fails_and_the_html_report_shows_it"],
    "--rollout-save": ["tests/e2e/test_reports.py::test_a_slower_release_is_a_regression_against_the_baseline_and_exits_1", "tests/e2e/test_tutorial.py::test_step_8_a_slower_change_fails_against_the_saved_baseline"],
    "--rollout-compare": ["tests/e2e/test_reports.py::test_a_slower_release_is_a_regression_against_the_baseline_and_exits_1", "tests/e2e/test_tutorial.py::test_step_8_a_slower_change_fails_against_the_saved_baseline"],
    "--rollout-baseline-dir": ["tests/e2e/test_reports.py::test_a_slower_release_is_a_regression_against_the_baseline_and_exits_1"],
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
    "regression": ["tests/e2e/test_reports.py::test_a_slower_release_is_a_regression_against_the_baseline_and_exits_1"],
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
    for name, nodeids in [*OPTION_TESTS.items(), *ARGUMENT_TESTS.items()]:
        for nodeid in nodeids:
            path, _, function = nodeid.partition("::")
            source = (ROOT / path).read_text()
            match = re.search(rf"^def {function}\(.*?(?=^def |\Z)", source, re.S | re.M)
            assert match is not None, f"{nodeid} (listed for {name}) does not exist"
            # the test, or the module text it runs, names the option or argument as the README does
            spelled = name if name.startswith("--") or name.startswith("rollout_") else f"{name}="
            assert spelled in source, f"{nodeid} is listed for {name} but its module never uses {spelled!r}"
