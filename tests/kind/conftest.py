"""The kind tier: a real kind cluster (one control plane, two workers, from examples/kind/kind-config.yaml)
whose node image is built here (``scripts/kind image``: no image registry is reached).

The session makes the cluster as ``examples/kind/run.sh`` would (``kind create cluster --config
examples/kind/kind-config.yaml --image ...``), with its own kubeconfig file, unless a cluster of that name is
already up (then it is reused and left running); it builds the example app's and the worker's images, the
example Prometheus' image where no registry can give it, and loads them; at its end it deletes the cluster it
made, puts dockerd's runtime configuration back (``scripts/kind docker-undo``) and stops the dockerd it
started. Every command it runs has a time limit, past which its whole process group is stopped. Needs root
(dockerd, its runtime, sysctls), docker and Go.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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
    check = subprocess.run([str(KIND), "image", "--check"], capture_output=True, check=False, timeout=120)
    if check.returncode != 0 and shutil.which("go") is None:
        return "the kind tier needs Go to build kind and its node image (scripts/kind image), and Go is not installed"
    return None


def _call(argv: list[str], timeout: float, env: dict[str, str] | None) -> tuple[int, str, str]:
    """Run *argv* in a session of its own; past *timeout* its whole process group is stopped (SIGTERM, then
    SIGKILL), so a script's own clean-up traps run and nothing it started goes on (a build, apt-get, a run)."""
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                out, err = proc.communicate(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            out, err = "", ""
        return -1, out or "", f"timed out after {timeout:g}s\n{err or ''}"
    return proc.returncode, out, err


def _run(*argv: str | Path, timeout: float, env: dict[str, str] | None = None) -> str:
    code, out, err = _call([str(a) for a in argv], timeout, env)
    if code != 0:
        pytest.fail(f"{' '.join(map(str, argv))} failed ({code}):\n{out[-2000:]}\n{err[-4000:]}", pytrace=False)
    return out


@pytest.fixture(scope="package")  # deleted once the tier's last test ends, not at the end of the whole run
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindCluster]:
    """The running kind cluster ``pytest-rollout`` (made here when none is up), its kubeconfig and context."""
    why = _unavailable()
    if why is not None:
        pytest.skip(why)  # in CI (ROLLOUT_CI=1), a failure: tests/conftest.py
    docker_was_up = _call(["docker", "info"], 60, None)[0] == 0
    made = False
    kind = ""
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    try:
        _run(KIND, "docker", timeout=1200)  # apt-get where packages are missing, dockerd, its runtime
        image = _run(KIND, "image", timeout=3600).strip().splitlines()[-1]
        kind = _run(KIND, "bin", timeout=1800).strip().splitlines()[-1]
        kubectl_dir = _run(ROOT / "scripts" / "build-node", timeout=3600).strip().splitlines()[-1]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KIND_NODE_IMAGE": image}
        env["PATH"] = os.pathsep.join([str(Path(kind).parent), kubectl_dir, env.get("PATH", "")])
        if NAME in _run(kind, "get", "clusters", timeout=60, env=env).split():
            _run(kind, "export", "kubeconfig", "--name", NAME, timeout=60, env=env)
        else:
            made = True  # from here on, deleted at the end (a half-made cluster too)
            _run(kind, "create", "cluster", "--config", "examples/kind/kind-config.yaml", "--image", image,
                 "--wait", "180s", timeout=600, env=env)  # fmt: skip
        _run(KIND, "prometheus-image", timeout=600)  # a stand-in for prom/prometheus where none can be pulled
        # the Dockerfiles' FROM python:3.11-slim: a stand-in where none can be pulled (on a machine where the node
        # tier ran first, scripts/cluster up made it already)
        _run(ROOT / "scripts" / "cluster", "python-base", timeout=900)
        for dockerfile, tag in (("docker/app.Dockerfile", APP_IMAGE), ("docker/worker.Dockerfile", WORKER_IMAGE)):
            _run("docker", "build", "-q", "-f", dockerfile, "-t", tag, ".", timeout=900)
        _run(kind, "load", "docker-image", "--name", NAME, APP_IMAGE, WORKER_IMAGE, PROMETHEUS_IMAGE,
             timeout=600, env=env)  # fmt: skip
        _run("kubectl", "--context", CONTEXT, "apply", "-f", "examples/kind/prometheus.yaml", timeout=120, env=env)
        _run("kubectl", "--context", CONTEXT, "-n", "monitoring", "rollout", "status", "deployment/prometheus",
             "--timeout=180s", timeout=240, env=env)  # fmt: skip
        yield KindCluster(kubeconfig=kubeconfig, context=CONTEXT, image=image, env=env)
    finally:
        # every step is tried, whatever the one before did; what failed is said at the end
        steps: list[list[str]] = []
        if made and kind:
            steps.append([kind, "delete", "cluster", "--name", NAME, "--kubeconfig", str(kubeconfig)])
        if made:  # a cluster it found stays, and so does the runtime its nodes' `docker exec` needs
            steps.append([str(KIND), "docker-undo"])  # this machine's dockerd configuration as it was
        if not docker_was_up:
            steps.append([str(KIND), "docker-stop"])
        failed = []
        for argv in steps:
            code, out, err = _call(argv, 300, None)
            if code != 0:
                failed.append(f"{' '.join(argv)} ({code}): {err[-1000:]}")
        if failed:
            pytest.fail("the kind tier's clean-up failed:\n" + "\n".join(failed), pytrace=False)
