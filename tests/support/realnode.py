"""What the real-node tier (tests/node) and the kind tier (tests/kind) share: the example app's manifests, and
an inner pytest session that deploys and upgrades them with the kubernetes platform, as a user would."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import listening

#: The example app's image, built from docker/app.Dockerfile and loaded onto the node by the tier.
APP_IMAGE = "pytest-rollout-example-app:1"
#: The worker image (docker/worker.Dockerfile), the plugin's default --rollout-worker-image.
WORKER_IMAGE = "pytest-rollout-worker:0.1.0"


# 300 rps: ramp 4 s, hold 8 s = 2,400 requests a phase; zero errors in 1,500 prove error_rate <= 0.002
SLO = 'rps=300, error_rate=0.002, p99_ms=400, ramp="4s", hold="8s"'

TEMPLATE = """
from pathlib import Path
import pytest
HERE = Path(__file__).parent

@pytest.mark.slo({slo})
def test_release(rollout):
    rollout.deploy(manifests=[HERE / "v1.yaml"])
    rollout.ramp()
    rollout.upgrade(manifests=[HERE / "v2.yaml"])
"""

# Added to an inner test module: its fixture's end runs before the rollout fixture's, while the run's
# namespace still exists, and writes Deployment shop as the test left it to after.json.
READ_BACK = """
import json

pytestmark = pytest.mark.usefixtures("deployment_after")


@pytest.fixture
def deployment_after(rollout):
    yield
    from kubernetes import client, config

    api = config.new_client_from_config(KUBECONFIG)
    try:
        spaces = client.CoreV1Api(api).list_namespace(label_selector="app.kubernetes.io/managed-by=pytest-rollout")
        for ns in (s.metadata.name for s in spaces.items):
            found = client.AppsV1Api(api).list_namespaced_deployment(ns, field_selector="metadata.name=shop").items
            if found:
                dep = found[0]
                pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector="app.kubernetes.io/name=shop")
                (HERE / "after.json").write_text(json.dumps({
                    "args": dep.spec.template.spec.containers[0].args,
                    "replicas": [dep.status.updated_replicas, dep.status.available_replicas],
                    "versions": sorted(
                        p.metadata.labels.get("app.kubernetes.io/version", "")
                        for p in pods.items if p.metadata.deletion_timestamp is None
                    ),
                    "nodes": sorted(p.spec.node_name or "" for p in pods.items if p.metadata.deletion_timestamp is None),
                }))
    finally:
        api.close()
"""


def app_manifests(
    version: str, *flags: str, pre_stop_s: int | None = 3, progress_deadline_s: int = 60, spread: bool = False
) -> str:
    """The example app as Deployment ``shop`` (3 replicas, one surged at a time) behind Service ``shop``; with
    *spread*, its pods on every schedulable node, one more on a node at most (DoNotSchedule: never all on one)."""
    container: dict[str, Any] = {
        "name": "shop",
        "image": APP_IMAGE,
        "imagePullPolicy": "Never",
        "args": ["--host", "0.0.0.0", "--version", version, *flags],
        "env": [{"name": "PORT", "value": "8080"}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
    }
    if pre_stop_s is not None:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": pre_stop_s}}}
    labels = {"app.kubernetes.io/name": "shop"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop", "labels": labels},
        "spec": {
            "replicas": 3,
            "progressDeadlineSeconds": progress_deadline_s,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {**labels, "app.kubernetes.io/version": version}},
                "spec": {"terminationGracePeriodSeconds": 20, "containers": [container]}
                | (
                    {
                        "topologySpreadConstraints": [
                            {
                                "maxSkew": 1,
                                "topologyKey": "kubernetes.io/hostname",
                                "whenUnsatisfiable": "DoNotSchedule",
                                # a control plane no pod may use is no domain of the spread
                                "nodeTaintsPolicy": "Honor",
                                "labelSelector": {"matchLabels": labels},
                            }
                        ]
                    }
                    if spread
                    else {}
                ),  # fmt: skip
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "shop", "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]},
    }
    return yaml.safe_dump_all([deployment, service])


def run_release(
    pytester: pytest.Pytester,
    kubeconfig: Path,
    v1: str,
    v2: str,
    read_back: bool = False,
    options: tuple[str, ...] = (),
) -> tuple[pytest.RunResult, dict[str, Any], float]:
    """With *read_back*, the inner module also writes Deployment shop as its test left it to after.json;
    *options*: more command-line options for the inner session (a kube context, the fleet's size)."""
    module = TEMPLATE.format(slo=SLO)
    if read_back:
        module += f"\nKUBECONFIG = {str(kubeconfig)!r}\n" + READ_BACK
    pytester.makepyfile(test_release=module)
    (pytester.path / "v1.yaml").write_text(v1)
    (pytester.path / "v2.yaml").write_text(v2)
    report = pytester.path / "report.json"
    before = listening()
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        "--rollout-platform=kubernetes",
        f"--rollout-kubeconfig={kubeconfig}",
        "--rollout-worker-image=pytest-rollout-worker:0.1.0",
        "--rollout-prometheus-service=monitoring/prometheus:9090",
        f"--rollout-report={report}",
        *options,
        timeout=600,
    )
    took = time.monotonic() - started
    if not report.exists():  # the inner session ended before its report: show what it said
        pytest.fail(f"the inner session wrote no report:\n{result.stdout.str()[-4000:]}", pytrace=False)
    (test,) = json.loads(report.read_text())["tests"]
    # nothing of the run is left: no port-forward listening, no namespace of the run
    assert listening() - before == set(), "the run left a port-forward listening"
    assert run_namespaces(kubeconfig) == [], "the run left its namespace"
    return result, test, took


def run_namespaces(kubeconfig: Path) -> list[str]:
    """Namespaces of pytest-rollout runs still present (not even terminating counts as gone)."""
    from kubernetes import client, config

    api = config.new_client_from_config(str(kubeconfig))
    try:
        spaces = client.CoreV1Api(api).list_namespace(label_selector="app.kubernetes.io/managed-by=pytest-rollout")
        return [ns.metadata.name for ns in spaces.items]
    finally:
        api.close()


def events(test: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [e for e in test["events"] if e["action"] == action]


def assert_clean_upgrade(test: dict[str, Any]) -> None:
    """A graceful release's run as a user's clients saw it: zero errors and Prometheus's totals equal the
    workers' own in every phase; three old pods terminated and gone, three new ones Ready, within the upgrade,
    which lasted until the last old pod exited."""
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
