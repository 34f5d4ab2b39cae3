"""The fleet's NetworkPolicy, enforced on a kind cluster: real pods, real packets.

A pod labelled like a load worker (``fleet_deployment``'s labels) serves the control port and the metrics port
(a stand-in server: the ports, not the worker, are under test), under the policy ``fleet_network_policy``
makes for it: the metrics port from Prometheus' namespace, the control port from the API server's addresses
(the ``kubernetes`` EndpointSlice, as ``KubePlatform.apiserver_addresses`` reads them). Probes then connect:

- without an enforcer (kindnet alone: its nftables ``queue`` rule cannot be made on a kernel without
  CONFIG_NFT_QUEUE, and it fails open) a pod of another namespace reaches the metrics port, so the checks
  below can fail;
- with kube-router's firewall (``scripts/kind-netpol install``) a pod in Prometheus' namespace reaches the
  metrics port and not the control port, a pod of another namespace reaches neither, and the API server's pod
  proxy reaches the control port.

The cluster comes from the session fixture ``kind_cluster`` (tests/kind/conftest.py), whose kubeconfig's
current context is ``kind-NAME``. The probes run ``python:3.11-slim`` (or $PYTEST_ROLLOUT_NETPOL_IMAGE), which
``scripts/kind-netpol load`` copies from docker's image store into the nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kindtier import KindCluster

from pytest_rollout.platforms.kubernetes.objects import (
    METRICS_PORT,
    WORKER_PORT,
    fleet_deployment,
    fleet_network_policy,
)

pytestmark = [pytest.mark.kind, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NETPOL = ROOT / "scripts" / "kind-netpol"
IMAGE = os.environ.get("PYTEST_ROLLOUT_NETPOL_IMAGE", "python:3.11-slim")
PORTS = (WORKER_PORT, METRICS_PORT)

# Answers 200 "ok" on every path of both ports.
SERVER = f"""
import http.server, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
servers = [http.server.ThreadingHTTPServer(("0.0.0.0", p), H) for p in {PORTS!r}]
for s in servers[1:]: threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()
"""

# Connects to each port of the target until the ports that answer are those expected, or for 30 s: the enforcer
# admits a new pod's address a moment after it starts. Prints {"port": "open" | "refused" | "timeout" | "error"}.
PROBE = """
import json, socket, sys, time
host, want, ports = sys.argv[1], set(sys.argv[2].split(",")) - {""}, sys.argv[3:]
deadline = time.monotonic() + 30
while True:
    out = {}
    for port in ports:
        try:
            socket.create_connection((host, int(port)), timeout=2).close(); out[port] = "open"
        except ConnectionRefusedError: out[port] = "refused"
        except socket.timeout: out[port] = "timeout"
        except OSError as exc: out[port] = f"error: {exc}"
    if {p for p, how in out.items() if how == "open"} == want or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(out))
"""


def _kind_name(kubeconfig: Path) -> str:
    context = yaml.safe_load(kubeconfig.read_text()).get("current-context", "")
    if not context.startswith("kind-"):
        pytest.fail(f"{kubeconfig}: current context {context!r} is not a kind cluster's (kind-NAME)", pytrace=False)
    return str(context.removeprefix("kind-"))


def _netpol(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NETPOL), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        self.name = _kind_name(kubeconfig)
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.net = client.NetworkingV1Api(self.api)
        self.discovery = client.DiscoveryV1Api(self.api)

    def enforcer_installed(self) -> bool:
        return _netpol("installed", "--name", self.name, timeout=60).returncode == 0

    def apiserver_cidrs(self) -> list[str]:
        slice_ = self.discovery.read_namespaced_endpoint_slice("kubernetes", "default")
        return sorted({f"{a}/32" for ep in slice_.endpoints or [] for a in ep.addresses or [] if ":" not in a})

    def namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}})

    def nodes(self) -> list[str]:
        return sorted(n.metadata.name for n in self.core.list_node().items)

    def pod(
        self,
        ns: str,
        name: str,
        labels: dict[str, str],
        args: list[str],
        restart: str = "Always",
        node: str = "",
        readiness: dict[str, Any] | None = None,
    ) -> None:
        spec: dict[str, Any] = {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "Never", "args": args}],
        }
        if readiness:
            spec["containers"][0]["readinessProbe"] = readiness
        if node:  # placed there, the control plane's taint or not
            spec |= {"nodeName": node, "tolerations": [{"operator": "Exists"}]}
        self.core.create_namespaced_pod(ns, {"metadata": {"name": name, "labels": labels}, "spec": spec})

    def wait_pod(self, ns: str, name: str, phases: set[str], timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            pod = self.core.read_namespaced_pod(name, ns)
            ready = pod.status.phase == "Running" and all(c.ready for c in pod.status.container_statuses or [])
            if pod.status.phase in phases - {"Running"} or ("Running" in phases and ready):
                return pod
            if time.monotonic() > deadline:
                pytest.fail(f"pod {ns}/{name} not {sorted(phases)} in {timeout:.0f}s: {pod.status}", pytrace=False)
            time.sleep(0.5)

    def probe(self, ns: str, ip: str, want: set[int]) -> dict[str, dict[int, str]]:
        """From a new pod in *ns* on each node: how each port of *ip* answers, once the ports *want* answer (or
        30 s on); by node. A pod on the target's node and pods on others: traffic within a node and across."""
        args = ["python", "-c", PROBE, ip, ",".join(map(str, want)), *map(str, PORTS)]
        pods = {node: f"probe-{uuid.uuid4().hex[:6]}" for node in self.nodes()}
        for node, name in pods.items():
            self.pod(ns, name, {"app": "netpol-probe"}, args, restart="Never", node=node)
        seen = {}
        for node, name in pods.items():
            pod = self.wait_pod(ns, name, {"Succeeded", "Failed"})
            log = self.core.read_namespaced_pod_log(name, ns)
            self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
            if pod.status.phase != "Succeeded":
                pytest.fail(f"probe {ns}/{name} on {node} failed: {log}", pytrace=False)
            seen[node] = {int(k): v for k, v in json.loads(log.strip().splitlines()[-1]).items()}
        return seen

    def proxy(self, ns: str, pod: str, port: int) -> str:
        """GET /healthz through the API server's pod proxy; the body, or the error."""
        from kubernetes.client.exceptions import ApiException

        try:
            return str(self.core.connect_get_namespaced_pod_proxy_with_path(f"{pod}:{port}", ns, "healthz"))
        except ApiException as exc:
            return f"error {exc.status}: {(exc.body or '')[:200]}"


@pytest.fixture(scope="module")
def cluster(kind_cluster: KindCluster) -> Cluster:
    c = Cluster(kind_cluster.kubeconfig)
    loaded = _netpol("load", "--name", c.name, IMAGE)
    if loaded.returncode != 0:
        pytest.fail(f"scripts/kind-netpol load --name {c.name} {IMAGE} failed:\n{loaded.stderr}", pytrace=False)
    return c


@pytest.fixture(scope="module")
def fleet(cluster: Cluster) -> Iterator[dict[str, str]]:
    """Three namespaces: the fleet's (a worker-like pod under the fleet's policy), Prometheus', another."""
    suffix = uuid.uuid4().hex[:6]
    names = {
        "fleet": f"netpol-fleet-{suffix}",
        "prometheus": f"netpol-prom-{suffix}",
        "other": f"netpol-other-{suffix}",
    }
    for ns in names.values():
        cluster.namespace(ns)
    try:
        worker = fleet_deployment(
            name="rollout", image=IMAGE, replicas=1, run_id=suffix, target="http://example.invalid", secret="none"
        )
        template = worker["spec"]["template"]
        labels, readiness = template["metadata"]["labels"], template["spec"]["containers"][0]["readinessProbe"]
        policy = fleet_network_policy(
            name="rollout", run_id=suffix, control_from=cluster.apiserver_cidrs(), metrics_namespace=names["prometheus"]
        )
        cluster.net.create_namespaced_network_policy(names["fleet"], policy)
        cluster.pod(names["fleet"], "worker", labels, ["python", "-c", SERVER], readiness=readiness)
        pod = cluster.wait_pod(names["fleet"], "worker", {"Running"})
        yield {**names, "ip": pod.status.pod_ip, "pod": "worker", "run_id": suffix}
    finally:
        for ns in names.values():
            cluster.core.delete_namespace(ns, grace_period_seconds=0)


def _until(check: Any, done: Any, timeout: float = 30) -> Any:
    """*check*'s result once ``done(result)``, or the last one after *timeout* (the enforcer rewrites its rules
    a moment after a policy changes)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(1)


def _reached(seen: dict[str, dict[int, str]]) -> dict[str, set[int]]:
    """By node, the ports that answered."""
    return {node: {port for port, how in ports.items() if how == "open"} for node, ports in seen.items()}


def test_without_an_enforcer_the_policy_refuses_nothing(cluster: Cluster, fleet: dict[str, str]) -> None:
    """The control experiment: kindnet alone lets another namespace's pod through, policy or not."""
    if cluster.enforcer_installed():
        pytest.skip(f"kube-router already runs on kind cluster {cluster.name}: nothing to compare against")
    seen = cluster.probe(fleet["other"], fleet["ip"], want={WORKER_PORT, METRICS_PORT})
    assert all(r == {WORKER_PORT, METRICS_PORT} for r in _reached(seen).values()), f"another namespace: {seen}"


def test_kube_router_enforces_the_fleet_policy(cluster: Cluster, fleet: dict[str, str]) -> None:
    if not cluster.enforcer_installed():
        done = _netpol("install", "--name", cluster.name)
        assert done.returncode == 0, f"scripts/kind-netpol install --name {cluster.name} failed:\n{done.stderr}"
    other = cluster.probe(fleet["other"], fleet["ip"], want=set())
    assert all(r == set() for r in _reached(other).values()), f"pods of another namespace, by node: {other}"
    prometheus = cluster.probe(fleet["prometheus"], fleet["ip"], want={METRICS_PORT})
    assert all(r == {METRICS_PORT} for r in _reached(prometheus).values()), f"Prometheus' pods: {prometheus}"
    assert cluster.proxy(fleet["fleet"], fleet["pod"], WORKER_PORT) == "ok"
    # the kubelet's readiness probe (the worker's own, on the metrics port) comes from the pod's node: admitted
    worker = cluster.core.read_namespaced_pod(fleet["pod"], fleet["fleet"])
    assert all(c.ready for c in worker.status.container_statuses), f"the worker's readiness: {worker.status}"

    # and the control port's rule is what lets the pod proxy in: with addresses other than the API server's it
    # is refused (TEST-NET-1, RFC 5737: nobody's)
    elsewhere = fleet_network_policy(
        name="rollout", run_id=fleet["run_id"], control_from=["192.0.2.1/32"], metrics_namespace=fleet["prometheus"]
    )
    cluster.net.replace_namespaced_network_policy("rollout", fleet["fleet"], elsewhere)
    refused = _until(lambda: cluster.proxy(fleet["fleet"], fleet["pod"], WORKER_PORT), lambda got: got != "ok")
    assert refused.startswith("error"), f"the pod proxy, with the control port admitted only from 192.0.2.1: {refused}"
