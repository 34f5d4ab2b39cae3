"""Fixtures shared by pytest-rollout's own tests.

The tests are laid out by tier: ``unit/`` (pure logic, seconds), ``component/``
(one real part: workers, HAProxy, the plugin in a pytester session),
``e2e/`` (whole rollouts with real processes, HAProxy and Prometheus),
``kubernetes/`` (a real control plane); ``support/`` holds what they share
(imported by bare name: it is put on ``sys.path`` here).

A test skips where a tool it needs is missing, saying why; in CI (``ROLLOUT_CI=1``, set by ``.ci/run``)
such a skip fails the test instead, unless the README's "What may skip" lists its reason.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# In-process pytester runs unload the modules they first imported; if requests were first imported inside one,
# half of it (http.cookiejar) would be unloaded, and a later PromClient call fails ("You can only merge into
# CookieJar"). Loaded here, it is part of the snapshot pytester restores to, and stays whole.
import requests  # noqa: F401, E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from controlplane import ControlPlane, missing  # noqa: E402 - support/ is on the path only from here
from helpers import ci_skips  # noqa: E402

from pytest_rollout.load.fleet import LocalFleet  # noqa: E402
from pytest_rollout.load.protocol import Aim  # noqa: E402
from pytest_rollout.procs import ProcessSet  # noqa: E402

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
CI = os.environ.get("ROLLOUT_CI") == "1"


CI_SKIPS = ci_skips()  # .ci/skips.py, as .ci/run uses it
ALLOWED_SKIPS: list[str] = CI_SKIPS.allowed_skips((ROOT / "README.md").read_text()) if CI else []


def _fail_unlisted_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """In CI, a skip the README does not list becomes a failure that says why it would have skipped."""
    if not CI or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    if CI_SKIPS.is_allowed(reason, ALLOWED_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"ROLLOUT_CI=1 but {reason.removeprefix('Skipped: ')}"
        " (in CI a test skips only for a reason the README's 'What may skip' lists)"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report: pytest.TestReport = yield
    _fail_unlisted_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    report: pytest.CollectReport = yield
    _fail_unlisted_skip(report)
    return report


@pytest.fixture
def needs_haproxy() -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (scripts/setup installs it)")


@pytest.fixture
def needs_prometheus() -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (scripts/setup installs it)")


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessSet]:
    """Processes a test starts; all stopped (and none needing SIGKILL) at the end."""
    procs = ProcessSet(tmp_path)
    yield procs
    assert procs.stop_all() == []


@pytest.fixture
def make_fleet(procs: ProcessSet) -> Iterator[Callable[[int, str], LocalFleet]]:
    """Start fleets of real worker processes aimed at *target* (a URL); every one is shut down at the end."""
    fleets: list[LocalFleet] = []

    def make(size: int, target: str, secret_headers: dict[str, str] | None = None) -> LocalFleet:
        fleet = LocalFleet(procs, f"t{len(fleets)}", size, Aim.at(target, secret_headers))
        fleets.append(fleet)
        fleet.start()
        return fleet

    yield make
    for fleet in fleets:
        fleet.shutdown()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real Kubernetes control plane (with kwok nodes) for the session; skips where it cannot run."""
    why = missing()
    if why is not None:
        pytest.skip(why)  # in CI, a failure (see _fail_unlisted_skip)
    from podnet import LINK, POD_CIDR, PodNetwork

    work = tmp_path_factory.mktemp("control-plane")
    procs = ProcessSet(work)
    pods: PodNetwork | None = None
    if PodNetwork.unavailable() is None:
        pods = PodNetwork(ProcessSet(tmp_path_factory.mktemp("pod-network")))
        pods.create()
    plane = ControlPlane(work, procs, pod_cidr=POD_CIDR if pods else "127.200.0.0/16")
    plane.pod_network = pods
    problems: list[str] = []
    try:
        plane.start()
        plane.publish_apiserver_address(LINK[0])  # the host end of the pod network: the proxy's source address
        yield plane
    finally:
        problems += procs.stop_all()
        if pods is not None:
            problems += pods.destroy()
    assert problems == [], problems
