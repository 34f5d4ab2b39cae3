"""The real-node tier: a single-node cluster from source (``scripts/cluster``), real containers.

The session starts the cluster with ``scripts/cluster up`` unless one is already up (then it is reused and
left running), builds the example app's image from docker/app.Dockerfile and loads it onto the node, and
stops the cluster at the end if it started it. Needs root (containers, iptables, network interfaces).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from realnode import APP_IMAGE, WORKER_IMAGE

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "scripts" / "cluster"


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the real-node tier needs root (containers, iptables, network interfaces)"
    if shutil.which("apt-get") is None and shutil.which("dockerd") is None:
        return "the real-node tier needs Debian's docker.io, containerd and runc (or apt-get to install them)"
    built = subprocess.run([str(ROOT / "scripts" / "build-node"), "--check"], check=False).returncode == 0
    if not built and shutil.which("go") is None:
        return "the real-node tier needs Go to build its node (scripts/build-node), and Go is not installed"
    return None


def _run(*args: str, timeout: float) -> str:
    done = subprocess.run([str(CLUSTER), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"scripts/cluster {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}", pytrace=False
        )
    return done.stdout


@pytest.fixture(scope="session")
def real_node() -> Iterator[Path]:
    """A kubeconfig for the running single-node cluster (started here when none is up)."""
    why = _unavailable()
    if why is not None:
        pytest.skip(why)  # in CI (ROLLOUT_CI=1), a failure: tests/conftest.py
    started = subprocess.run([str(CLUSTER), "status"], cwd=ROOT, capture_output=True, check=False).returncode != 0
    try:  # a cluster this session starts is stopped at its end, whatever happened, even to `up` itself
        out = _run("up", timeout=3600) if started else _run("kubeconfig", timeout=60)
        last = out.strip().splitlines()[-1]
        assert last.startswith("export KUBECONFIG="), out
        kubeconfig = Path(last.split("=", 1)[1])
        # the worker image from this tree too, even on a cluster that was already up (`up` builds it)
        for dockerfile, image in (("docker/app.Dockerfile", APP_IMAGE), ("docker/worker.Dockerfile", WORKER_IMAGE)):
            subprocess.run(
                ["docker", "build", "-q", "-f", dockerfile, "-t", image, "."],
                cwd=ROOT, check=True, capture_output=True, timeout=900,
            )  # fmt: skip
        _run("load", APP_IMAGE, WORKER_IMAGE, timeout=300)
        yield kubeconfig
    finally:
        if started:
            _run("down", timeout=300)
