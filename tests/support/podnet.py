"""A stand-in pod network, so the worker pods kwok simulates can run for real.

kwok gives pods addresses in :data:`POD_CIDR` but runs nothing. This module
makes that range a network namespace of the test's own: the host routes
:data:`POD_CIDR` through a veth pair into the namespace, where every address
of the range is local (``ip route add local``). Then:

- :class:`WorkerKubelet` watches the cluster for the fleet's pods and, for
  each pod kwok marks running, starts a real ``python -m pytest_rollout.load.worker``
  inside the namespace with the pod's own arguments, bound to the pod's IP and
  given its Secret volume (written to a private folder): the API server's pod
  proxy then reaches a real worker, exactly as it would reach a container. It also
  writes a file_sd target file for each run's workers, standing in for a
  cluster Prometheus that discovers annotated pods.
- :meth:`PodNetwork.serve_service` runs the example app inside the namespace
  at a Service's address and makes the Service's DNS name resolve to it there
  (``/etc/netns/<namespace>/hosts``, which ``ip netns exec`` mounts over
  ``/etc/hosts``), standing in for kube-proxy and cluster DNS.

All traffic stays on this machine: between the host and the namespace. An
address of the range with no worker answers with a reset at once.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pytest_rollout.procs import ManagedProcess, ProcessSet

POD_CIDR = "10.213.0.0/16"
LINK = ("10.214.0.1", "10.214.0.2")  # host side, namespace side (a /30 outside the pod range)
SERVICE_IP = "10.213.250.1"  # where serve_service listens (kwok hands out addresses from the bottom)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class PodNetwork:
    """A network namespace holding :data:`POD_CIDR`, routed from the host."""

    def __init__(self, procs: ProcessSet) -> None:
        self.procs = procs
        self.name = f"rollout-pods-{os.getpid()}"
        self.host_link = f"rp{os.getpid() % 100000}h"
        self.etc = Path("/etc/netns") / self.name
        self.created = False
        self._hosts: dict[str, str] = {}

    @staticmethod
    def unavailable() -> str | None:
        """Why the pod network cannot be made here (None when it can)."""
        if shutil.which("ip") is None:
            return "iproute2 (ip) is not installed"
        if os.geteuid() != 0:
            return "making a network namespace needs root"
        probe = f"rollout-probe-{os.getpid()}"
        try:
            _ip("netns", "add", probe)
        except subprocess.CalledProcessError as exc:
            return f"cannot make a network namespace: {exc.stderr.strip()}"
        _ip("netns", "del", probe)
        return None

    def create(self) -> None:
        peer = f"rp{os.getpid() % 100000}p"
        _ip("netns", "add", self.name)
        self.created = True
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", self.name)
        _ip("addr", "add", f"{LINK[0]}/30", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        _ip("route", "add", POD_CIDR, "via", LINK[1], "dev", self.host_link)
        inside = ["netns", "exec", self.name, "ip"]
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "addr", "add", f"{LINK[1]}/30", "dev", peer)
        _ip(*inside, "link", "set", peer, "up")
        _ip(*inside, "route", "add", "default", "via", LINK[0])
        _ip(*inside, "route", "add", "local", POD_CIDR, "dev", "lo")
        self.etc.mkdir(parents=True, exist_ok=True)
        # names resolve from hosts only; any other lookup fails at once, inside the namespace
        (self.etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self._write_hosts()

    def _write_hosts(self) -> None:
        lines = ["127.0.0.1 localhost"] + [f"{ip} {name}" for name, ip in sorted(self._hosts.items())]
        tmp = self.etc / "hosts.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.etc / "hosts")

    def run(self, name: str, argv: list[str]) -> ManagedProcess:
        """Start *argv* inside the namespace (``ip netns exec`` replaces itself with it: the PID is its)."""
        return self.procs.start(name, ["ip", "netns", "exec", self.name, *argv])

    def serve_service(self, dns_name: str, port: int, *app_flags: str) -> ManagedProcess:
        """The example app at :data:`SERVICE_IP`:*port*, with *dns_name* resolving to it inside the namespace."""
        self._hosts[dns_name] = SERVICE_IP
        self._write_hosts()
        app = Path(__file__).resolve().parents[2] / "examples" / "app.py"
        proc = self.procs.start(
            f"service-{port}",
            [
                "ip",
                "netns",
                "exec",
                self.name,
                sys.executable,
                str(app),
                "--host",
                SERVICE_IP,
                "--startup-s",
                "0",
                *app_flags,
            ],
            env={"PORT": str(port)},
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["ip", "netns", "exec", self.name, sys.executable, "-c",
                 f"import socket; socket.create_connection(({SERVICE_IP!r}, {port}), timeout=1)"],
                capture_output=True,
            )  # fmt: skip
            if probe.returncode == 0:
                return proc
            time.sleep(0.1)
        raise RuntimeError(f"the stand-in service did not listen:\n{proc.log_tail()}")

    def destroy(self) -> list[str]:
        problems = self.procs.stop_all()
        if self.created:
            subprocess.run(["ip", "link", "del", self.host_link], capture_output=True)
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self.created = False
        shutil.rmtree(self.etc, ignore_errors=True)
        return problems


class WorkerKubelet:
    """Runs a real worker for each load-worker pod kwok marks running (see the module docstring)."""

    def __init__(self, api: Any, net: PodNetwork, sd_dir: Path) -> None:
        self.api = api
        self.net = net
        self.sd_dir = sd_dir
        self.secrets = Path(tempfile.mkdtemp(prefix="rollout-pod-secrets-"))  # mode 0700
        self.started: dict[str, ManagedProcess] = {}
        self.images: dict[str, str] = {}  # worker pod -> the image its spec names
        self._written: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker-kubelet", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> WorkerKubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for proc in self.started.values():
            proc.stop(grace=3.0)
        shutil.rmtree(self.secrets, ignore_errors=True)

    def _argv(self, core: Any, pod: Any, ip: str) -> list[str]:
        """The pod's own command and args, bound to its IP, with its Secret volume written to a private folder."""
        container = pod.spec.containers[0]
        argv = [sys.executable if part == "python" else part for part in [*container.command, *(container.args or [])]]
        argv[argv.index("--host") + 1] = ip
        mounts = {m.name: m.mount_path for m in container.volume_mounts or []}
        for volume in pod.spec.volumes or []:
            if volume.secret is None or mounts.get(volume.name) not in argv:
                continue
            secret = core.read_namespaced_secret(volume.secret.secret_name, pod.metadata.namespace)
            folder = self.secrets / pod.metadata.name
            folder.mkdir(mode=0o700, exist_ok=True)
            for key, value in (secret.data or {}).items():
                (folder / key).write_bytes(base64.b64decode(value))
            argv[argv.index(mounts[volume.name])] = str(folder)
        return argv

    def _loop(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        while not self._stop.is_set():
            try:
                pods = core.list_pod_for_all_namespaces(label_selector="app.kubernetes.io/component=load").items
            except Exception as exc:  # the control plane is going away at the end of the session
                self.errors.append(str(exc))
                pods = []
            runs: dict[str, list[dict[str, Any]]] = {}
            for pod in pods:
                ip = pod.status.pod_ip
                if pod.status.phase != "Running" or not ip or pod.metadata.deletion_timestamp is not None:
                    continue
                name = pod.metadata.name
                if name not in self.started:
                    self.images[name] = pod.spec.containers[0].image
                    self.started[name] = self.net.run(f"pod-{name}", self._argv(core, pod, ip))
                run = pod.metadata.labels.get("pytest-rollout.dev/run", "")
                port = (pod.metadata.annotations or {}).get("prometheus.io/port", "8089")
                runs.setdefault(run, []).append({"targets": [f"{ip}:{port}"], "labels": {"run": run, "worker": name}})
            for run, groups in runs.items():
                text = json.dumps(sorted(groups, key=lambda g: g["labels"]["worker"]))
                if self._written.get(run) != text:
                    path = self.sd_dir / f"fleet-{run}.json"
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(text)
                    os.replace(tmp, path)
                    self._written[run] = text
            self._stop.wait(0.2)
