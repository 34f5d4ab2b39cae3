"""The kubernetes platform on a real node: real containers, readiness probes, SIGTERM, kube-proxy.

Each test runs an inner pytest session (a subprocess, as a user would) with ``--rollout-platform
kubernetes`` against the single-node cluster of ``scripts/cluster``: the example app (docker/app.Dockerfile)
as a Deployment behind a ClusterIP Service, the fleet as worker pods from docker/worker.Dockerfile, judged
from the cluster's Prometheus. The gate is shown both ways: graceful releases pass, a release that never gets
ready fails and version 1 keeps serving.

What a single node shares with the kind tier (tests/kind) runs there alone, on three nodes: the graceful
release over keep-alive connections with exact totals, the kube-proxy race without a preStop broken, and a
breach rolled back on a real Deployment.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import listening
from realnode import app_manifests, assert_clean_upgrade, run_namespaces, run_release

pytestmark = [pytest.mark.node, pytest.mark.slow]


@pytest.mark.parametrize(
    ("flags", "pre_stop_s"),
    [(("--no-keep-alive",), 3), (("--on-sigterm", "shutdown", "--linger-s", "3"), None)],
    ids=["a-connection-per-request", "serve-on-then-shut-down-without-pre-stop"],
)
def test_a_graceful_release_passes(
    pytester: pytest.Pytester, real_node: Path, flags: tuple[str, ...], pre_stop_s: int | None
) -> None:
    """Graceful on SIGTERM (stop accepting, drain with Connection: close) behind a preStop sleep: zero errors,
    with a new connection for every request (as gunicorn's sync workers; over keep-alive connections it runs
    on the kind tier's two workers).
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
    assert_clean_upgrade(test)


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


@pytest.fixture(autouse=True)
def _no_earlier_run(real_node: Path) -> Iterator[None]:
    """Each test starts with no namespace of an earlier run still present, and leaves nothing listening here."""
    assert run_namespaces(real_node) == []
    before = listening()
    yield
    assert listening() - before == set()
