"""The kind tier: a real kind cluster (one control plane, two workers, from examples/kind/kind-config.yaml)
whose node image is built here (``scripts/kind image``: no image registry is reached).

The session makes the cluster as ``examples/kind/run.sh`` would (``kind create cluster --config
examples/kind/kind-config.yaml --image ...``), with its own kubeconfig file, unless a cluster of that name is
already up (then it is reused and left running); it builds the example app's and the worker's images, the
example Prometheus' image where no registry can give it, and loads them; at its end it deletes the cluster it
made and stops the dockerd it started. Needs root (dockerd, its runtime, sysctls), docker and Go.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kindtier import CONTEXT, NAME, PROMETHEUS_IMAGE, KindCluster
from realnode import APP_IMAGE, WORKER_IMAGE

ROOT = Path(__file__).resolve().parents[2]
KIND = ROOT / "scripts" / "kind"


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the kind tier needs root (dockerd's runtime, sysctls, containers)"
    if shutil.which("docker") is None:
        return "the kind tier needs docker (Debian's docker.io)"
    built = subprocess.run([str(KIND), "image", "--check"], capture_output=True, check=False).returncode == 0
    if not built and shutil.which("go") is None:
        return "the kind tier needs Go to build kind and its node image (scripts/kind image), and Go is not installed"
    return None


def _run(*argv: str | Path, timeout: float, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, argv))} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}",
            pytrace=False,
        )
    return done.stdout


@pytest.fixture(scope="session")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindCluster]:
    """The running kind cluster ``pytest-rollout`` (made here when none is up), its kubeconfig and context."""
    why = _unavailable()
    if why is not None:
        pytest.skip(why)  # in CI (ROLLOUT_CI=1), a failure: tests/conftest.py
    docker_was_up = subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    made = False
    kind = ""
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    try:
        _run(KIND, "docker", timeout=120)
        image = _run(KIND, "image", timeout=3600).strip().splitlines()[-1]
        kind = _run(KIND, "bin", timeout=1800).strip().splitlines()[-1]
        kubectl_dir = _run(ROOT / "scripts" / "build-node", timeout=3600).strip().splitlines()[-1]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KIND_NODE_IMAGE": image}
        env["PATH"] = os.pathsep.join([str(Path(kind).parent), kubectl_dir, env.get("PATH", "")])
        if NAME in _run(kind, "get", "clusters", timeout=60, env=env).split():
            _run(kind, "export", "kubeconfig", "--name", NAME, timeout=60, env=env)
        else:
            made = True
            _run(kind, "create", "cluster", "--config", "examples/kind/kind-config.yaml", "--image", image,
                 "--wait", "180s", timeout=600, env=env)  # fmt: skip
        _run(KIND, "prometheus-image", timeout=600)  # a stand-in for prom/prometheus where none can be pulled
        for dockerfile, tag in (("docker/app.Dockerfile", APP_IMAGE), ("docker/worker.Dockerfile", WORKER_IMAGE)):
            _run("docker", "build", "-q", "-f", dockerfile, "-t", tag, ".", timeout=900)
        _run(kind, "load", "docker-image", "--name", NAME, APP_IMAGE, WORKER_IMAGE, PROMETHEUS_IMAGE,
             timeout=600, env=env)  # fmt: skip
        _run("kubectl", "--context", CONTEXT, "apply", "-f", "examples/kind/prometheus.yaml", timeout=120, env=env)
        _run("kubectl", "--context", CONTEXT, "-n", "monitoring", "rollout", "status", "deployment/prometheus",
             "--timeout=180s", timeout=240, env=env)  # fmt: skip
        yield KindCluster(kubeconfig=kubeconfig, context=CONTEXT, image=image, env=env)
    finally:
        if made:
            _run(kind, "delete", "cluster", "--name", NAME, "--kubeconfig", kubeconfig, timeout=300)
        if not docker_was_up:
            _run(KIND, "docker-stop", timeout=120)
