"""The kubernetes platform's pure parts: objects written, manifests read, rollout status, RBAC, stale runs."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_rollout.errors import RolloutUsageError
from pytest_rollout.platforms.kubernetes.api import owner_gone, owner_id, stale
from pytest_rollout.platforms.kubernetes.manifests import load_manifests, pick_target
from pytest_rollout.platforms.kubernetes.objects import (
    ANN_EXPIRES,
    ANN_OWNER,
    fleet_deployment,
    fleet_network_policy,
    fleet_secret,
    target_objects,
)
from pytest_rollout.platforms.kubernetes.portforward import parse_service
from pytest_rollout.platforms.kubernetes.rbac import rbac_documents
from pytest_rollout.platforms.kubernetes.status import rollout_status
from pytest_rollout.platforms.kubernetes.target import image_patch, strategy, target_docs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kind"


def generated(**kw: Any) -> list[dict[str, Any]]:
    args: dict[str, Any] = dict(
        name="target", image="shop/app:v1", replicas=3, port=8080, ready_path="/healthz", env={"B": "2", "A": "1"},
        run_id="abc", grace_period_s=10.0, progress_deadline_s=120,
    )  # fmt: skip
    args.update(kw)
    return target_objects(**args)


def test_the_generated_deployment_rolls_without_losing_capacity_and_probes_readiness() -> None:
    dep, svc = generated()
    spec = dep["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    assert spec["progressDeadlineSeconds"] == 120 and spec["replicas"] == 3
    container = spec["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert container["env"] == [
        {"name": "PORT", "value": "8080"},
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
    ]
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 10
    labels = spec["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == "v1" and labels["app.kubernetes.io/managed-by"] == "pytest-rollout"
    # the selector leaves out the version, so an upgrade keeps selecting the same pods
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "target",
        "app.kubernetes.io/instance": "target-abc",
    }
    assert svc["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["port"] == 8080
    assert "lifecycle" not in container  # no preStop unless asked


def test_an_https_target_is_probed_over_tls_and_a_plain_one_as_before() -> None:
    from pytest_rollout.platforms.base import TargetOptions, TargetSpec

    def probe(scheme: str | None) -> dict[str, Any]:
        given = TargetOptions(image="shop/app:v1", port=8443) if scheme is None else \
            TargetOptions(image="shop/app:v1", port=8443, scheme=scheme)  # fmt: skip
        spec = TargetSpec.build(given, version="v1", what="deploy")
        dep = target_docs(spec, "deploy", "target", "abc").docs[0]
        return dict(dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"])

    assert probe("https") == {"path": "/healthz", "port": 8443, "scheme": "HTTPS"}
    assert probe("http") == probe(None) == {"path": "/healthz", "port": 8443}  # the kubelet's default, HTTP


def test_pre_stop_becomes_a_prestop_sleep_within_the_grace_period() -> None:
    dep, _ = generated(pre_stop_s=2.5, grace_period_s=9.5)
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 3}}}
    assert pod["terminationGracePeriodSeconds"] == 10


def test_an_image_without_a_tag_or_with_a_digest_still_makes_valid_labels() -> None:
    dep, _ = generated(image="registry.local:5000/shop/app")
    assert "app.kubernetes.io/version" not in dep["spec"]["template"]["metadata"]["labels"]
    dep, _ = generated(image="registry.local:5000/shop/app:2.1")
    assert dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "2.1"
    dep, _ = generated(image="shop/app@sha256:" + "a" * 64)
    assert "app.kubernetes.io/version" not in dep["spec"]["template"]["metadata"]["labels"]
    dep, _ = generated(image="shop/app:" + "-x" * 70 + "-")
    version = dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"]
    assert len(version) <= 63 and version[0].isalnum() and version[-1].isalnum()


def worker_deployment(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(name="w", image="pytest-rollout-worker:0.1.0", replicas=4, run_id="r1")
    args.update(target="http://target.ns.svc:8080", secret="w")
    args.update(kw)
    return fleet_deployment(**args)


def test_worker_pods_carry_the_scrape_annotations_and_the_run_label() -> None:
    dep = worker_deployment()
    template = dep["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8090",  # the metrics port: the control port admits only the API server
        "prometheus.io/path": "/metrics",
    }
    assert template["metadata"]["labels"]["pytest-rollout.dev/run"] == "r1"
    container = template["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "pytest_rollout.load.worker"]
    assert "--serve" in container["args"] and dep["spec"]["replicas"] == 4
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8090}  # needs no token


def test_worker_pods_are_aimed_at_creation_and_run_with_least_privilege() -> None:
    spec = worker_deployment()["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = container["args"]
    assert args[args.index("--target") + 1] == "http://target.ns.svc:8080"  # fixed here, not by a plan
    assert args[args.index("--secrets") + 1] == "/var/run/pytest-rollout"
    assert {"name": "secrets", "secret": {"secretName": "w", "defaultMode": 0o440}} in spec["volumes"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets")
    assert mount == {"name": "secrets", "mountPath": "/var/run/pytest-rollout", "readOnly": True}
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    secret = fleet_secret(
        name="w",
        token="t0k3n",
        headers_json='{"Authorization": "Bearer x"}',
        data_json='{"r": {"t": [["v"], "cycle"]}}',
    )
    assert secret["kind"] == "Secret" and secret["stringData"] == {
        "token": "t0k3n",
        "headers.json": '{"Authorization": "Bearer x"}',
        "data.json": '{"r": {"t": [["v"], "cycle"]}}',
    }
    assert "t0k3n" not in str(worker_deployment()) and "Bearer" not in str(worker_deployment())


def test_the_network_policy_admits_the_control_port_from_the_api_server_and_metrics_from_prometheus() -> None:
    policy = fleet_network_policy(name="w", run_id="r1", control_from=["10.0.0.1/32"], metrics_namespace="monitoring")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == worker_deployment()["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress"]
    control, metrics = spec["ingress"]
    assert control == {"ports": [{"protocol": "TCP", "port": 8089}], "from": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}
    assert metrics["ports"] == [{"protocol": "TCP", "port": 8090}]
    assert metrics["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    # the API server's addresses unknown: the control port is left to the token, not closed to the pod proxy
    open_policy = fleet_network_policy(name="w", run_id="r1", control_from=None, metrics_namespace=None)
    assert all("from" not in rule for rule in open_policy["spec"]["ingress"])


def test_the_worker_dockerfile_runs_the_command_the_fleet_expects() -> None:
    dockerfile = (EXAMPLES.parent.parent / "docker" / "worker.Dockerfile").read_text()
    container = worker_deployment()["spec"]["template"]["spec"]["containers"][0]
    assert 'ENTRYPOINT ["python", "-m", "pytest_rollout.load.worker"]' in dockerfile
    fixed = container["args"][: container["args"].index("--target")]  # the run adds its target and secrets
    assert 'CMD ["' + '", "'.join(fixed) + '"]' in dockerfile
    assert "pip install --no-cache-dir ." in dockerfile
    assert "USER 65532:65532" in dockerfile  # the user the pod's securityContext runs as


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_manifests_are_read_document_by_document_and_the_target_picked() -> None:
    docs = load_manifests([EXAMPLES / "app-v1.yaml"], "deploy")
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    assert pick_target(docs, "deploy") == ("shop", "shop", 8080)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: [", "is not valid YAML"),
        ("kind: Deployment\nmetadata: {name: a}\n", "has no apiVersion/kind"),
        ("apiVersion: v1\nkind: Service\nmetadata: {}\n", "(Service) has no metadata.name"),
        ("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n", "is a Namespace, which is cluster-wide"),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: prod}\n",
            "sets metadata.namespace='prod'; remove it",
        ),
        ("apiVersion: v1\nkind: List\nitems: []\nmetadata: {name: a}\n", "is a List"),
        ("---\n", "holds no objects"),
    ],
)
def test_bad_manifests_name_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "m.yaml", text)
    with pytest.raises(RolloutUsageError, match="rollout.deploy\\(manifests=...\\).*" + _re(message)):
        load_manifests([path], "deploy")


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_missing_manifest_file_and_a_lone_string(tmp_path: Path) -> None:
    with pytest.raises(RolloutUsageError, match="cannot read .*nope.yaml"):
        load_manifests([tmp_path / "nope.yaml"], "upgrade")
    with pytest.raises(RolloutUsageError, match="must be a list of file paths"):
        load_manifests("deploy.yaml", "deploy")  # type: ignore[arg-type]


def test_the_target_must_be_one_deployment_with_a_service_selecting_it() -> None:
    dep = yaml.safe_load((EXAMPLES / "app-v1.yaml").read_text().split("---")[0])
    other = {**dep, "metadata": {"name": "other"}}
    svc_elsewhere = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]},
    }
    with pytest.raises(RolloutUsageError, match="exactly one Deployment.*found: none"):
        pick_target([svc_elsewhere], "deploy")
    with pytest.raises(RolloutUsageError, match="exactly one Deployment.*found: shop, other"):
        pick_target([dep, other], "deploy")
    with pytest.raises(RolloutUsageError, match="no Service selecting the pods of Deployment shop"):
        pick_target([dep, svc_elsewhere], "deploy")


def deployment(generation: int = 2, observed: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "shop", "generation": generation},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": observed, **status},
    }


@pytest.mark.parametrize(
    ("dep", "done", "stalled", "message"),
    [
        (deployment(generation=3, observed=2), False, False, "waiting for the controller to observe the new spec"),
        (deployment(updatedReplicas=1, replicas=4, availableReplicas=3), False, False, "1 of 3 new replicas updated"),
        (
            deployment(updatedReplicas=3, replicas=4, availableReplicas=3),
            False,
            False,
            "1 old replicas pending termination",
        ),
        (
            deployment(updatedReplicas=3, replicas=3, availableReplicas=2),
            False,
            False,
            "2 of 3 updated replicas available",
        ),
        (deployment(updatedReplicas=3, replicas=3, availableReplicas=3), True, False, "successfully rolled out"),
        (
            deployment(
                updatedReplicas=1,
                replicas=4,
                conditions=[
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": "RS slow",
                    }
                ],
            ),
            False,
            True,
            "exceeded its progress deadline: RS slow",
        ),
    ],
)
def test_rollout_status_reads_a_deployment_like_kubectl(
    dep: dict[str, Any], done: bool, stalled: bool, message: str
) -> None:
    status = rollout_status(dep)
    assert (status.done, status.stalled) == (done, stalled)
    assert message in status.message


def test_rbac_role_binds_the_service_account_and_covers_what_the_platform_calls() -> None:
    role, binding, address_role, address_binding = rbac_documents("ci", "rollout", namespace="team")
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == "team"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rollout", "namespace": "ci"}]
    granted = {
        (g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert {"create", "patch", "delete"} <= granted[("apps", "deployments")]
    assert {"get", "create"} <= granted[("", "pods/proxy")] and {"get", "create"} <= granted[("", "pods/portforward")]
    assert ("", "namespaces") not in granted  # a Role cannot grant namespaces: that is the ClusterRole's
    assert {"create", "delete"} <= granted[("", "secrets")]  # the fleet's token
    assert {"create", "delete"} <= granted[("networking.k8s.io", "networkpolicies")]
    # reading the API server's addresses (for the NetworkPolicy): one object, read only, in default
    assert address_role["metadata"]["namespace"] == "default" and address_role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "resourceNames": ["kubernetes"],
            "verbs": ["get"],
        }
    ]
    assert address_binding["subjects"] == binding["subjects"]
    *_, cluster_role, cluster_binding = rbac_documents("ci", "rollout", namespace=None)
    rules = {r: set(rule["verbs"]) for rule in cluster_role["rules"] for r in rule["resources"]}
    assert {"create", "delete"} <= rules["namespaces"]
    assert cluster_binding["kind"] == "ClusterRoleBinding"


def test_parse_service() -> None:
    assert parse_service("monitoring/prometheus:9090") == ("monitoring", "prometheus", "9090")
    assert parse_service("monitoring/prometheus:web") == ("monitoring", "prometheus", "web")
    for bad in ("prometheus:9090", "monitoring/prometheus", "/p:1", "m/:1"):
        with pytest.raises(ValueError, match="NAMESPACE/NAME:PORT"):
            parse_service(bad)


def test_a_run_is_stale_when_its_owner_on_this_host_is_gone_or_its_expiry_passed() -> None:
    me = owner_id()
    assert me.startswith(f"{socket.gethostname()}/{os.getpid()}/")
    assert not owner_gone(me)
    gone = f"{socket.gethostname()}/999999/1"
    assert owner_gone(gone)
    assert not owner_gone("other-host/1/1")  # another machine's process: only its expiry tells
    now = time.time()
    assert stale({ANN_OWNER: gone, ANN_EXPIRES: str(now + 100)}, now)
    assert stale({ANN_OWNER: "other-host/1/1", ANN_EXPIRES: str(now - 1)}, now)
    assert not stale({ANN_OWNER: "other-host/1/1", ANN_EXPIRES: str(now + 100)}, now)
    assert not stale({ANN_OWNER: "kept", ANN_EXPIRES: "kept"}, now)  # --rollout-keep


def before_upgrade(containers: int = 1, version_label: bool = True) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "shop"} | ({"app.kubernetes.io/version": "v1"} if version_label else {})
    return {
        "metadata": {"name": "shop"},
        "spec": {
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": f"c{i}", "image": "shop/app:v1"} for i in range(containers)]},
            }
        },
    }


def test_an_image_upgrade_patches_the_only_container_its_version_label_and_the_strategy_given() -> None:
    patch = image_patch(before_upgrade(), "shop/app:v2", None, None)
    assert patch == {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "c0", "image": "shop/app:v2"}]},
                "metadata": {"labels": {"app.kubernetes.io/version": "v2"}},
            }
        }
    }
    patch = image_patch(before_upgrade(version_label=False), "shop/app:v2", 1, "25%")
    assert "metadata" not in patch["spec"]["template"]  # no version label to follow
    assert patch["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"},
    }
    assert strategy(None, 0) == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}}
    with pytest.raises(RolloutUsageError, match="deployment shop has 2 containers; .*manifests"):
        image_patch(before_upgrade(containers=2), "shop/app:v2", None, None)


def test_workers_and_a_generated_target_spread_over_the_nodes_but_never_wait_for_one() -> None:
    """One more pod on a node at most, as a preference (ScheduleAnyway): a one-node cluster still runs them all."""
    for pod_spec, selector in (
        (worker_deployment()["spec"]["template"]["spec"], worker_deployment()["spec"]["selector"]["matchLabels"]),
        (generated()[0]["spec"]["template"]["spec"], generated()[0]["spec"]["selector"]["matchLabels"]),
    ):
        (constraint,) = pod_spec["topologySpreadConstraints"]
        assert constraint == {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "nodeTaintsPolicy": "Honor",
            "labelSelector": {"matchLabels": selector},
        }
