"""``pytest-rollout attack`` and ``calibrate``, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import start_app

from pytest_rollout.procs import ProcessSet

CLI = [sys.executable, "-m", "pytest_rollout.cli"]


def test_attack_json(procs: ProcessSet) -> None:
    port = start_app(procs, "app", "--delay-ms", "0")
    out = subprocess.run(
        [*CLI, "attack", "--url", f"http://127.0.0.1:{port}/", "--rps", "300", "--duration", "2s", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    summary = json.loads(out)
    assert summary["engine"] == "fast"
    assert summary["requested_rps"] == 300
    assert summary["requests"] == 600  # exactly the schedule, sent or not
    # a request a busy machine made over 50 ms late is not sent (counted late and dropped): no other error
    late = summary["late"]
    assert summary["errors"] == {"http_4xx": 0, "http_5xx": 0, "timeout": 0, "connection": 0, "dropped": late}
    assert summary["ok"] + late == 600 and summary["ok"] > 0
    assert (late > 0) == (summary["max_lag_ms"] > 50)  # late exactly when the worker says it fell behind
    assert summary["held_rps"] == round(summary["ok"] / 2, 1)  # the requests sent on time, per second
    assert set(summary["latency_ms"]) == {"p50", "p90", "p99", "p999"}
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p999"]


def test_attack_bad_url() -> None:
    result = subprocess.run([*CLI, "attack", "--url", "localhost:80", "--rps", "10"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "--url 'localhost:80': expected an http(s) URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_calibrate_records_what_sizes_fleets(
    procs: ProcessSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = start_app(procs, "app", "--delay-ms", "0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    out = subprocess.run(
        [*CLI, "calibrate", "--url", f"http://127.0.0.1:{port}/", "--seconds", "0.5", "--start-rps", "400", "--json"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    result = json.loads(out)
    # the example app serves far more than 400 rps, but what one worker holds depends on how busy the machine is
    assert result["held_rps"] > 0
    confirm = result["runs"][-1]  # the rate found, held for a run twice as long as a trial
    assert confirm["duration_s"] == 1.0 and confirm["held_rps"] >= confirm["requested_rps"] * 0.99
    assert round(confirm["requested_rps"]) == result["held_rps"]
    recorded = json.loads((tmp_path / "pytest-rollout" / "calibration.json").read_text())
    assert recorded["engines"]["fast"]["held_rps"] == result["held_rps"]

    from pytest_rollout.load.calibration import measured_worker_rps

    assert measured_worker_rps() == pytest.approx(0.7 * result["held_rps"])


def test_rbac_prints_the_role_the_platform_needs_bound_to_a_service_account() -> None:
    import yaml

    from pytest_rollout.platforms.kubernetes.rbac import rbac_documents

    out = subprocess.run(
        [sys.executable, "-m", "pytest_rollout.cli", "rbac", "--namespace", "team", "--service-account", "ci-bot"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = list(yaml.safe_load_all(out))
    assert docs == rbac_documents("team", "ci-bot", "team")  # what the kubernetes tier proves sufficient
    out = subprocess.run(
        [sys.executable, "-m", "pytest_rollout.cli", "rbac"], capture_output=True, text=True, check=True
    ).stdout
    assert [d["kind"] for d in yaml.safe_load_all(out)] == ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
    assert "#   secrets: the fleet's Secret" in out  # each permission says why
    bad = subprocess.run(
        [sys.executable, "-m", "pytest_rollout.cli", "rbac", "--namespace", "Team"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--namespace='Team' is not a valid Kubernetes name" in bad.stderr


@pytest.mark.slow
def test_a_fleet_of_64_workers_sends_exactly_its_schedule(procs: ProcessSet) -> None:
    """The size a million needs (64 pods at ~16k rps each), started at once on this machine.

    No timing is asserted (two cores cannot hold 64 workers on time): the merged totals must equal the
    schedule exactly, every request must be accounted for in one class, and nothing the target answered
    may be an error.
    """
    port = start_app(procs, "app", "--delay-ms", "0")
    out = subprocess.run(
        [*CLI, "attack", "--url", f"http://127.0.0.1:{port}/", "--workers", "64", "--rps", "640",
         "--duration", "2s", "--json"],
        capture_output=True, text=True, timeout=240, check=True,
    ).stdout  # fmt: skip
    summary = json.loads(out)
    assert summary["workers"] == 64
    assert summary["requests"] == 1280  # 64 workers x 10 rps x 2 s, each with its own arrival phase
    assert summary["ok"] + sum(summary["errors"].values()) == 1280
    assert {k: summary["errors"][k] for k in ("http_4xx", "http_5xx", "connection")} == dict.fromkeys(
        ("http_4xx", "http_5xx", "connection"), 0
    )
    assert 0 <= summary["held_rps"] <= 640 and summary["late"] <= summary["errors"]["dropped"]
    assert summary["fleet_start_s"] > 0 and summary["plan_s"] > 0 and summary["controller_cpu_s"] >= 0
