"""The kubernetes platform on a real node: real containers, readiness probes, SIGTERM, kube-proxy.

Each test runs an inner pytest session (a subprocess, as a user would) with ``--rollout-platform
kubernetes`` against the single-node cluster of ``scripts/cluster``: the example app (docker/app.Dockerfile)
as a Deployment behind a ClusterIP Service, the fleet as worker pods from docker/worker.Dockerfile, judged
from the cluster's Prometheus. The gate is shown both ways: a graceful release with a preStop sleep passes,
the same release exiting at once on SIGTERM without one is broken by the kube-proxy race.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import listening
from realnode import SLO, app_manifests, events, run_namespaces, run_release

pytestmark = [pytest.mark.node, pytest.mark.slow]


@pytest.mark.parametrize(
    ("flags", "pre_stop_s"),
    [((), 3), (("--no-keep-alive",), 3), (("--on-sigterm", "shutdown", "--linger-s", "3"), None)],
    ids=["keep-alive", "a-connection-per-request", "serve-on-then-shut-down-without-pre-stop"],
)
def test_a_graceful_release_passes(
    pytester: pytest.Pytester, real_node: Path, flags: tuple[str, ...], pre_stop_s: int | None
) -> None:
    """Graceful on SIGTERM (stop accepting, drain with Connection: close) behind a preStop sleep: zero errors,
    over keep-alive connections and with a new connection for every request (as gunicorn's sync workers).
    And a mainstream graceful server with no preStop: it serves on for 3 s after SIGTERM, then shuts down as
    aiohttp, Go's http.Server.Shutdown and nginx do, closing idle keep-alive connections; a request that races
    such a close is sent once more, as browsers and Go clients do (counted ``resent``, never an error).
    The fleet's pods run the fast engine, the Prometheus totals equal the workers' own, and the upgrade lasts
    until the last old pod has exited."""
    v1 = app_manifests("1", *flags, pre_stop_s=pre_stop_s)
    v2 = app_manifests("2", *flags, pre_stop_s=pre_stop_s)
    result, test, _ = run_release(pytester, real_node, v1, v2)
    assert test["outcome"] == "passed", result.stdout.str()[-3000:]
    result.assert_outcomes(passed=1)
    assert test["platform"] == "kubernetes" and test["engine"] == "fast"
    for name in ("baseline", "upgrade", "after"):
        phase = test["phases"][name]
        assert phase["errors"] == 0, (name, phase["errors_by_class"])
        assert phase["requests"] == phase["fleet_requests"] > 1000, name  # Prometheus's totals = the workers'
    upgrade = test["phases"]["upgrade"]
    old = {e["replica"] for e in events(test, "out")}
    assert len(old) == 3, test["events"]  # three old pods terminated, each marked when it began...
    exits = {e["replica"]: e["at"] for e in events(test, "exit") if e["replica"] in old}
    assert set(exits) == old, test["events"]  # ...and when it was gone
    assert max(exits.values()) <= upgrade["end"] + 0.5  # the upgrade phase ran until the last old pod exited
    ready = [e for e in events(test, "ready") if upgrade["start"] <= e["at"] <= upgrade["end"]]
    assert len(ready) == 3, test["events"]  # three new pods turned Ready during the upgrade


def test_without_pre_stop_a_release_that_exits_on_sigterm_is_broken_in_upgrade(
    pytester: pytest.Pytester, real_node: Path
) -> None:
    """SIGTERM races the endpoint's removal (kubernetes/kubernetes#21418): the release above (a connection per
    request), exiting at once on SIGTERM with no preStop to wait for kube-proxy, has the new connections
    kube-proxy still sends it refused until its rules catch up. (Over keep-alive connections the same release
    loses little more than the requests in flight: a fleet that seldom opens a connection seldom meets the
    race, so the test gives the release the clients that do.)"""
    v1 = app_manifests("1", "--no-keep-alive", "--on-sigterm", "drop", pre_stop_s=None)
    v2 = app_manifests("2", "--no-keep-alive", "--on-sigterm", "drop", pre_stop_s=None)
    result, test, _ = run_release(pytester, real_node, v1, v2)
    assert result.ret == 1, result.stdout.str()[-3000:]
    broken = {(v["slo"], v["phase"]) for v in test["verdicts"] if v["outcome"] == "broken"}
    # broken in the upgrade alone: on error_rate (and, where connections to a pod already gone wait for their
    # timeout, on latency too)
    assert ("error_rate", "upgrade") in broken and {phase for _, phase in broken} == {"upgrade"}, broken
    assert test["phases"]["baseline"]["errors"] == 0
    # more failed connections than requests could have been in flight (300 rps, a few ms each): new
    # connections sent to pods already gone, not only the requests the exits cut off
    assert test["phases"]["upgrade"]["errors_by_class"]["connection"] >= 10
    # the failure message reads the cause off the run: errors after termination began, the pods' own facts
    result.stdout.fnmatch_lines(
        [
            "hint: the errors in upgrade came after old pods began terminating (* of 3 terminations *"
            "Those pods had no preStop sleep and a grace period of 20s.",
            "*a preStop sleep of at least the endpoint propagation time*",
        ]
    )


def test_a_release_that_never_gets_ready_fails_within_its_bound_and_v1_keeps_serving(
    pytester: pytest.Pytester, real_node: Path
) -> None:
    v2 = app_manifests("2", "--never-ready", progress_deadline_s=15)
    result, test, took = run_release(pytester, real_node, app_manifests("1"), v2)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "upgrade of deployment shop" in out and "progress deadline" in out, out[-3000:]
    upgrade = test["phases"]["upgrade"]
    assert upgrade["end"] - upgrade["start"] < 60  # within its bound (15 s deadline, seen within the poll)
    assert upgrade["errors"] == 0 and upgrade["requests"] > 1000  # v1 kept serving every request
    assert "after" not in test["phases"]


def test_rollback_on_breach_rolls_a_real_deployment_back(pytester: pytest.Pytester, real_node: Path) -> None:
    """A release 600 ms slower breaks p99 400 ms; the run rolls Deployment shop back to v1's pods, as read
    from the API server before the run's namespace goes: v1's template, three updated and available pods,
    none of v2's left."""
    v2 = app_manifests("2", "--delay-ms", "600")
    result, test, _ = run_release(
        pytester, real_node, app_manifests("1"), v2, slo=SLO.replace("rps=300", "rps=150"),
        upgrade_kw=", rollback_on_breach=True", read_back=True,
    )  # fmt: skip
    assert result.ret == 1, result.stdout.str()[-3000:]
    assert any(v["slo"] == "p99_ms" and v["outcome"] == "broken" for v in test["verdicts"]), test["verdicts"]
    rollback = test["rollback"]
    assert rollback and "rolled back deployment shop" in json.dumps(rollback), rollback
    assert "rolled back deployment shop" in result.stdout.str()
    after = json.loads((pytester.path / "after.json").read_text())
    assert after["args"] == ["--host", "0.0.0.0", "--version", "1"], after
    assert after["replicas"] == [3, 3] and after["versions"] == ["1", "1", "1"], after


@pytest.fixture(autouse=True)
def _no_earlier_run(real_node: Path) -> Iterator[None]:
    """Each test starts with no namespace of an earlier run still present, and leaves nothing listening here."""
    assert run_namespaces(real_node) == []
    before = listening()
    yield
    assert listening() - before == set()
