"""Fixtures shared by pytest-rollout's own tests.

The tests are laid out by tier: ``unit/`` (pure logic, seconds), ``component/``
(one real part: workers, HAProxy, the plugin in a pytester session),
``e2e/`` (whole rollouts with real processes, HAProxy and Prometheus),
``kubernetes/`` (a real control plane); ``support/`` holds what they share
(imported by bare name: it is put on ``sys.path`` here).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# In-process pytester runs unload the modules they first imported; if requests were first imported inside one,
# half of it (http.cookiejar) would be unloaded, and a later PromClient call fails ("You can only merge into
# CookieJar"). Loaded here, it is part of the snapshot pytester restores to, and stays whole.
import requests  # noqa: F401, E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from controlplane import ControlPlane, missing  # noqa: E402 - support/ is on the path only from here

from pytest_rollout.load.fleet import LocalFleet  # noqa: E402
from pytest_rollout.load.protocol import Aim  # noqa: E402
from pytest_rollout.procs import ProcessSet  # noqa: E402

pytest_plugins = ["pytester"]


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
        if os.environ.get("ROLLOUT_CI") == "1":  # .ci/run: the tier must run there
            pytest.fail(f"ROLLOUT_CI=1 but {why}", pytrace=False)
        pytest.skip(why)
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
