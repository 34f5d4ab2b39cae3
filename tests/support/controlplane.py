"""A real Kubernetes control plane for the ``kubernetes`` test tier, without containers.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as
local processes on 127.0.0.1 (built by ``scripts/build-control-plane``), and
kwok plays the kubelets: it marks the pods on its fake nodes running and
ready (unless a pod carries :data:`UNREADY`), and deletes them when asked.
Deployments therefore really roll, ReplicaSet by ReplicaSet, through the
real Deployment controller; no container runs and no traffic flows.

Pod IPs come from the stand-in pod network of tests/support/podnet.py (a network
namespace of the test's own) when this machine can make one, so real worker
processes can serve as the fleet's pods; otherwise from 127.200.0.0/16,
which the API server refuses to proxy to, so a call to a simulated pod fails
at once. Either way nothing is ever sent off this machine.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from pytest_rollout.procs import ProcessSet, free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build-control-plane"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
ADMIN_TOKEN = "pytest-rollout-admin-token"
#: A pod annotation that keeps kwok from ever marking the pod ready (a release that never becomes ready).
UNREADY = "pytest-rollout.test/never-ready"
NODE_ANNOTATION = "kwok.x-k8s.io/node"

# kwok's stages, written for this tier: nodes become ready; pods become ready unless annotated UNREADY
# (or already terminating); pods being deleted are removed.
KWOK_STAGES = f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - type: Ready
        status: "True"
        reason: KubeletReady
        message: kwok simulates this node
        lastHeartbeatTime: {{{{ $now | Quote }}}}
        lastTransitionTime: {{{{ $now | Quote }}}}
      addresses:
      - type: InternalIP
        address: {{{{ NodeIP | Quote }}}}
      - type: Hostname
        address: {{{{ .metadata.name | Quote }}}}
      daemonEndpoints:
        kubeletEndpoint:
          Port: {{{{ NodePort }}}}
      allocatable: {{cpu: "64", memory: 256Gi, pods: "250"}}
      capacity: {{cpu: "64", memory: 256Gi, pods: "250"}}
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
    - key: '.metadata.annotations["{UNREADY}"]'
      operator: 'DoesNotExist'
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - type: Initialized
        status: "True"
        lastTransitionTime: {{{{ $now | Quote }}}}
      - type: Ready
        status: "True"
        lastTransitionTime: {{{{ $now | Quote }}}}
      - type: ContainersReady
        status: "True"
        lastTransitionTime: {{{{ $now | Quote }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        restartCount: 0
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      {{{{ with NodeIPWith .spec.nodeName }}}}
      hostIP: {{{{ . | Quote }}}}
      {{{{ end }}}}
      {{{{ with PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}}}
      podIP: {{{{ . | Quote }}}}
      {{{{ end }}}}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-unready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
    - key: '.metadata.annotations["{UNREADY}"]'
      operator: 'Exists'
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - type: Ready
        status: "False"
        reason: ReadinessProbeFailed
        message: the readiness probe never succeeds (simulated)
        lastTransitionTime: {{{{ $now | Quote }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        restartCount: 0
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  next:
    delete: true
"""


#: A simulated pod whose port 9090 kwok forwards (``kubectl port-forward``) to a real local Prometheus.
PROMETHEUS_POD = ("monitoring", "prometheus-0")


def port_forward(local_port: int) -> str:
    namespace, name = PROMETHEUS_POD
    return f"""\
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: PortForward
metadata:
  name: {name}
  namespace: {namespace}
spec:
  forwards:
  - ports: [9090]
    target:
      port: {local_port}
      address: 127.0.0.1
"""


def cache_dir() -> Path:
    """Where scripts/build-control-plane puts the binaries (it prints the directory)."""
    out = subprocess.run([str(BUILD_SCRIPT), "--where"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def missing() -> str | None:
    """Why the tier cannot run here (None when it can)."""
    if shutil.which("openssl") is None:
        return "openssl is not installed (it makes the control plane's keys)"
    bin_dir = cache_dir()
    absent = [b for b in BINARIES if not (bin_dir / b).is_file()]
    if absent:
        go = "" if shutil.which("go") else " (and Go is not installed)"
        return f"control-plane binaries missing in {bin_dir}: {', '.join(absent)}; run scripts/build-control-plane{go}"
    return None


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, on 127.0.0.1."""

    def __init__(self, work: Path, procs: ProcessSet, nodes: int = 2, pod_cidr: str = "127.200.0.0/16") -> None:
        self.work = work
        self.pod_cidr = pod_cidr
        self.procs = procs
        self.bin = cache_dir()
        self.nodes = nodes
        self.port = 0
        self.kubeconfig = work / "admin.kubeconfig"
        self.pod_network: Any = None  # tests/podnet.PodNetwork, when this machine could make one

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _run(self, name: str, *args: str) -> None:
        self.procs.start(name, [str(self.bin / name), *args])

    def start(self) -> None:
        w = self.work
        subprocess.run(["openssl", "genrsa", "-out", str(w / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(w / "sa.key"), "-pubout", "-out", str(w / "sa.pub")],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=kwok",
             "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(w / "kwok.key"), "-out", str(w / "kwok.crt")],
            check=True,
            capture_output=True,
        )  # fmt: skip
        (w / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n')
        etcd_port, peer_port, self.port, kwok_port = free_port(), free_port(), free_port(), free_port()
        etcd = f"http://127.0.0.1:{etcd_port}"
        self._run(
            "etcd",
            "--name=rollout",
            f"--data-dir={w / 'etcd'}",
            f"--listen-client-urls={etcd}",
            f"--advertise-client-urls={etcd}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=rollout=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        )
        self._wait(lambda: _get(f"{etcd}/health"), "etcd", 30)
        self._run(
            "kube-apiserver",
            f"--etcd-servers={etcd}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={w / 'certs'}",
            f"--token-auth-file={w / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={w / 'sa.pub'}",
            f"--service-account-signing-key-file={w / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--kubelet-preferred-address-types=InternalIP",
            "--enable-priority-and-fairness=false",
            "--endpoint-reconciler-type=none",
            # nodes start tainted not-ready until the node-lifecycle controller, which this tier leaves
            # out (kwok sends no heartbeats it would trust), clears the taint: do not add it
            "--disable-admission-plugins=TaintNodesByCondition",
            "--profiling=false",
        )
        self._write_kubeconfig(self.kubeconfig, ADMIN_TOKEN)
        self._wait(lambda: _get(f"{self.server}/readyz", ADMIN_TOKEN), "kube-apiserver", 90)
        common = [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--secure-port=0"]
        self._run(
            "kube-controller-manager",
            *common,
            "--controllers=*,-node-lifecycle-controller,-service-lb-controller,-node-ipam-controller",
            f"--service-account-private-key-file={w / 'sa.key'}",
            "--use-service-account-credentials=false",
            "--concurrent-deployment-syncs=10",
        )
        self._run("kube-scheduler", *common)
        self.prometheus_port = free_port()  # where a test runs the real Prometheus behind PROMETHEUS_POD
        (w / "kwok.yaml").write_text(KWOK_STAGES + port_forward(self.prometheus_port))
        self._run(
            "kwok",
            f"--kubeconfig={self.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
            f"--config={w / 'kwok.yaml'}",
            f"--cidr={self.pod_cidr}",
            "--node-ip=127.0.0.1",
            f"--node-port={kwok_port}",
            f"--server-address=127.0.0.1:{kwok_port}",
            f"--tls-cert-file={w / 'kwok.crt'}",
            f"--tls-private-key-file={w / 'kwok.key'}",
        )
        self.kwok_port = kwok_port
        self._add_nodes()

    def _write_kubeconfig(self, path: Path, token: str, namespace: str | None = None) -> None:
        import yaml

        context: dict[str, Any] = {"cluster": "rollout", "user": "user"}
        if namespace:
            context["namespace"] = namespace
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "rollout",
                            "cluster": {
                                "server": self.server,
                                "certificate-authority": str(self.work / "certs" / "apiserver.crt"),
                            },
                        }
                    ],
                    "users": [{"name": "user", "user": {"token": token}}],
                    "contexts": [{"name": "rollout", "context": context}],
                    "current-context": "rollout",
                }
            )
        )
        path.chmod(0o600)

    def kubeconfig_for(self, path: Path, token: str) -> Path:
        """A kubeconfig for this cluster that authenticates with *token*."""
        self._write_kubeconfig(path, token)
        return path

    def _wait(self, ready: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            dead = [p for p in self.procs.processes if not p.alive()]
            if dead:
                raise RuntimeError(f"{dead[0].describe()} exited while starting {what}:\n{dead[0].log_tail(30)}")
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not become ready in {timeout:g}s")

    def publish_apiserver_address(self, address: str) -> None:
        """Write EndpointSlice default/kubernetes as the API server's reconciler would.

        The reconciler is off here (``--endpoint-reconciler-type=none``: the API server advertises 127.0.0.1,
        which an endpoint may not hold); *address* is where its connections to pods come from.
        """
        from kubernetes import client as k8s

        api = self.client()
        body = {
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
        }
        try:
            k8s.DiscoveryV1Api(api).create_namespaced_endpoint_slice("default", body)
        finally:
            api.close()

    def client(self) -> Any:
        from kubernetes import config as kconfig

        return kconfig.new_client_from_config(config_file=str(self.kubeconfig))

    def _add_nodes(self) -> None:
        from kubernetes import client as k8s

        api = self.client()
        core = k8s.CoreV1Api(api)
        self._wait(lambda: _has_default_account(core), "the default ServiceAccount", 60)
        for i in range(self.nodes):
            core.create_node(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": f"kwok-node-{i}",
                        "annotations": {NODE_ANNOTATION: "fake"},
                        "labels": {"type": "kwok", "kubernetes.io/hostname": f"kwok-node-{i}"},
                    },
                }
            )

        def nodes_ready() -> bool:
            nodes = core.list_node().items
            return len(nodes) == self.nodes and all(
                any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or [])) for n in nodes
            )

        self._wait(nodes_ready, "the kwok nodes", 60)
        api.close()


def _has_default_account(core: Any) -> bool:
    try:
        core.read_namespaced_service_account("default", "default")
        return True
    except Exception:
        return False


def _get(url: str, token: str | None = None) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def environ_without_kubeconfig() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
