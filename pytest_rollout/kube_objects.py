"""Kubernetes objects as plain dicts, and the rules read off them (no I/O).

What the ``kubernetes`` platform creates (namespace, target Deployment and
Service, the worker Deployment), how it reads user manifests, the RBAC it
needs, and the rollout-status logic of ``kubectl rollout status``, kept apart
from the API calls in :mod:`pytest_rollout.kube` so they are tested without a
cluster.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import RolloutUsageError

__all__ = [
    "ANN_EXPIRES",
    "ANN_OWNER",
    "ANN_TEST",
    "LABEL_COMPONENT",
    "LABEL_MANAGED_BY",
    "LABEL_RUN",
    "MANAGED_BY",
    "RolloutStatus",
    "WORKER_PORT",
    "cluster_role",
    "fleet_deployment",
    "fleet_network_policy",
    "fleet_secret",
    "load_manifests",
    "namespace_object",
    "namespace_role",
    "pick_target",
    "rbac_documents",
    "rollout_status",
    "target_objects",
]

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "pytest-rollout"
LABEL_RUN = "pytest-rollout.dev/run"
LABEL_COMPONENT = "app.kubernetes.io/component"
ANN_OWNER = "pytest-rollout.dev/owner"  # host/pid/start-ticks of the pytest process that made it
ANN_EXPIRES = "pytest-rollout.dev/expires-at"  # Unix seconds after which nobody uses it any more
ANN_TEST = "pytest-rollout.dev/test"
REVISION = "deployment.kubernetes.io/revision"
WORKER_PORT = 8089  # the control API: reached only through the API server's pod proxy, with the run's token
METRICS_PORT = 8090  # /metrics and /healthz, no token: Prometheus and the kubelet's probe
SECRETS_DIR = "/var/run/pytest-rollout"  # where the fleet's Secret (token, secret headers) is mounted

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Kinds a per-run namespace cannot hold: they are cluster-wide.
_CLUSTER_KINDS = {
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "PriorityClass",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "APIService",
}


def check_name(value: str, what: str) -> str:
    """*value* as a DNS-1123 label (what names of namespaces, Services and most objects must be)."""
    if not isinstance(value, str) or not value or len(value) > 63 or not _DNS_LABEL.match(value):
        raise RolloutUsageError(
            f"{what}={value!r} is not a valid Kubernetes name: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return value


def _labels(name: str, run_id: str, component: str, version: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": f"{name}-{run_id}",
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_RUN: run_id,
    }
    if version:
        labels["app.kubernetes.io/version"] = label_value(version)
    return labels


def _selector(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels a Deployment selects its pods by (and a Service them): name and instance, never the version."""
    return {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}


def image_tag(image: str) -> str | None:
    """The tag of an image reference (``shop/app:v2`` -> ``v2``); None without one (a digest is not a tag)."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


def label_value(value: str) -> str:
    """*value* squeezed into a label value (63 chars of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[-63:].strip("-_.")
    return cleaned or "unknown"


def namespace_object(name: str, run_id: str, owner: str, expires_at: float, test: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN: run_id},
            "annotations": {ANN_OWNER: owner, ANN_EXPIRES: str(int(expires_at)), ANN_TEST: test[:1000]},
        },
    }


def target_objects(
    *,
    name: str,
    image: str,
    replicas: int,
    port: int,
    ready_path: str,
    env: Mapping[str, str],
    run_id: str,
    grace_period_s: float,
    progress_deadline_s: int,
    pre_stop_s: float = 0.0,
) -> list[dict[str, Any]]:
    """The Deployment and ClusterIP Service written for ``rollout.deploy(image=...)``.

    Zero-downtime defaults: ``maxUnavailable: 0`` and ``maxSurge: 25%`` (a
    replica leaves only once its replacement is ready), a readiness probe on
    *ready_path*, and the app.kubernetes.io labels. With *pre_stop_s*, a
    ``lifecycle.preStop.sleep`` of that many seconds (rounded up; GA in 1.34).
    """
    labels = _labels(name, run_id, "target", version=image_tag(image))
    selector = _selector(labels)
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "ports": [{"name": "http", "containerPort": port}],
        "env": [{"name": "PORT", "value": str(port)}] + [{"name": k, "value": v} for k, v in sorted(env.items())],
        "readinessProbe": {
            "httpGet": {"path": ready_path, "port": port},
            "periodSeconds": 2,
            "failureThreshold": 2,
            "successThreshold": 1,
            "timeoutSeconds": 1,
        },
    }
    if pre_stop_s > 0:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": math.ceil(pre_stop_s)}}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "progressDeadlineSeconds": progress_deadline_s,
            "revisionHistoryLimit": 5,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": max(1, math.ceil(grace_period_s)),
                    "containers": [container],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def fleet_secret(*, name: str, token: str, headers_json: str) -> dict[str, Any]:
    """The fleet's Secret: the run's control token and the secret request headers (see pytest_rollout.control)."""
    from .control import HEADERS_FILE, TOKEN_FILE

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": {TOKEN_FILE: token, HEADERS_FILE: headers_json},
    }


def fleet_deployment(
    *, name: str, image: str, replicas: int, run_id: str, target: str, secret: str, cpu: str = "1"
) -> dict[str, Any]:
    """The load workers as a Deployment: one worker process per pod, controlled through the pod proxy.

    Each worker may load only *target* (an origin, fixed here) and obeys only calls that carry the token in
    Secret *secret*, mounted read-only with the secret headers. Pods run as non-root with a read-only root
    filesystem, no capabilities and no service-account token. They carry the ``prometheus.io/*`` scrape
    annotations (the metrics port) and the run label, which a Prometheus must copy to the ``run`` target label
    (and the pod name to ``worker``); see ``examples/kind/prometheus.yaml``.
    """
    labels = _labels(name, run_id, "load")
    selector = _selector(labels)
    args = ["--serve", "--host", "0.0.0.0", "--port", str(WORKER_PORT), "--metrics-port", str(METRICS_PORT)]
    args += ["--target", target, "--secrets", SECRETS_DIR]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "worker",
                            "image": image,
                            "command": ["python", "-m", "pytest_rollout.worker"],
                            "args": args,
                            "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
                            "ports": [
                                {"name": "control", "containerPort": WORKER_PORT},
                                {"name": "metrics", "containerPort": METRICS_PORT},
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": METRICS_PORT},
                                "periodSeconds": 2,
                            },
                            "resources": {"requests": {"cpu": cpu, "memory": "128Mi"}, "limits": {"cpu": cpu}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "secrets", "secret": {"secretName": secret, "defaultMode": 0o440}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                    ],
                },
            },
        },
    }


def fleet_network_policy(
    *, name: str, run_id: str, control_from: Sequence[str] | None, metrics_namespace: str | None
) -> dict[str, Any]:
    """Who may reach the workers: the control port from *control_from* (CIDRs: the API server's addresses, whose
    pod proxy carries every control call), the metrics port from *metrics_namespace* (Prometheus), or from
    anywhere when None. Traffic from a pod's own node (the kubelet's probe) is always admitted by NetworkPolicy.

    With *control_from* None (the API server's addresses are unknown), the control port is left to the token.
    """
    labels = _labels(name, run_id, "load")
    control: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": WORKER_PORT}]}
    if control_from is not None:
        control["from"] = [{"ipBlock": {"cidr": cidr}} for cidr in control_from]
    metrics: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": METRICS_PORT}]}
    if metrics_namespace is not None:
        metrics["from"] = [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": metrics_namespace}}, "podSelector": {}}
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {"podSelector": {"matchLabels": _selector(labels)}, "policyTypes": ["Ingress"], "ingress": [control, metrics]},
    }


def load_manifests(paths: Sequence[str | os.PathLike[str]], what: str) -> list[dict[str, Any]]:
    """Every YAML document in *paths*, checked to be namespaced objects with a kind and a name."""
    import yaml

    if isinstance(paths, (str, bytes, os.PathLike)):
        raise RolloutUsageError(f"rollout.{what}(manifests=...) must be a list of file paths, got {paths!r}")
    docs: list[dict[str, Any]] = []
    for raw in paths:
        path = os.fspath(raw)
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = list(yaml.safe_load_all(fh))
        except OSError as exc:
            raise RolloutUsageError(f"rollout.{what}(manifests=...): cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise RolloutUsageError(f"rollout.{what}(manifests=...): {path} is not valid YAML: {exc}") from None
        for i, doc in enumerate(loaded):
            if doc is None:
                continue
            where = f"{path} (document {i + 1})"
            if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
                raise RolloutUsageError(f"rollout.{what}(manifests=...): {where} has no apiVersion/kind")
            if doc["kind"] == "List":
                raise RolloutUsageError(
                    f"rollout.{what}(manifests=...): {where} is a List; write its items as documents"
                )
            name = (doc.get("metadata") or {}).get("name")
            if not name:
                raise RolloutUsageError(f"rollout.{what}(manifests=...): {where} ({doc['kind']}) has no metadata.name")
            if doc["kind"] in _CLUSTER_KINDS:
                raise RolloutUsageError(
                    f"rollout.{what}(manifests=...): {where} is a {doc['kind']}, which is cluster-wide; "
                    "pytest-rollout deploys into one namespace per run: create cluster-wide objects beforehand"
                )
            ns = doc["metadata"].get("namespace")
            if ns:
                raise RolloutUsageError(
                    f"rollout.{what}(manifests=...): {where} ({doc['kind']} {name}) sets metadata.namespace={ns!r}; "
                    "remove it: pytest-rollout puts every object in the run's namespace"
                )
            docs.append(doc)
    if not docs:
        raise RolloutUsageError(f"rollout.{what}(manifests=...) holds no objects")
    return docs


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pick_target(docs: Iterable[Mapping[str, Any]], what: str) -> tuple[str, str, int]:
    """``(deployment, service, port)``: the one Deployment, and the Service that selects its pods."""
    docs = list(docs)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if len(deployments) != 1:
        names = ", ".join(d["metadata"]["name"] for d in deployments) or "none"
        raise RolloutUsageError(
            f"rollout.{what}(manifests=...) must hold exactly one Deployment (the target), found: {names}"
        )
    dep = deployments[0]
    pod_labels = ((dep.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    services = [
        d for d in docs if d["kind"] == "Service" and _matches((d.get("spec") or {}).get("selector") or {}, pod_labels)
    ]
    if not services:
        raise RolloutUsageError(
            f"rollout.{what}(manifests=...) has no Service selecting the pods of Deployment "
            f"{dep['metadata']['name']}: the fleet sends its requests to that Service"
        )
    svc = services[0]
    ports = (svc.get("spec") or {}).get("ports") or []
    if not ports or "port" not in ports[0]:
        raise RolloutUsageError(f"rollout.{what}(manifests=...): Service {svc['metadata']['name']} declares no port")
    return dep["metadata"]["name"], svc["metadata"]["name"], int(ports[0]["port"])


@dataclass(frozen=True)
class RolloutStatus:
    """Where a Deployment's rollout stands, read like ``kubectl rollout status``."""

    done: bool
    message: str
    stalled: bool = False


def rollout_status(dep: Mapping[str, Any]) -> RolloutStatus:
    """The rollout state of Deployment *dep* (its JSON form, status included)."""
    meta = dep.get("metadata") or {}
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    name = meta.get("name", "?")
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return RolloutStatus(False, f"deployment {name}: waiting for the controller to observe the new spec")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return RolloutStatus(
                False, f"deployment {name} exceeded its progress deadline: {cond.get('message', '')}", stalled=True
            )
    want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < want:
        return RolloutStatus(False, f"deployment {name}: {updated} of {want} new replicas updated")
    if total > updated:
        return RolloutStatus(False, f"deployment {name}: {total - updated} old replicas pending termination")
    if available < updated:
        return RolloutStatus(False, f"deployment {name}: {available} of {updated} updated replicas available")
    return RolloutStatus(True, f"deployment {name} successfully rolled out")


def conditions_text(obj: Mapping[str, Any]) -> str:
    """The conditions of *obj* as one line each (``type=status reason: message``)."""
    lines = []
    for cond in (obj.get("status") or {}).get("conditions") or []:
        lines.append(
            f"  {cond.get('type')}={cond.get('status')} {cond.get('reason') or ''}: {cond.get('message') or ''}".rstrip(
                ": "
            )
        )
    return "\n".join(lines) or "  (no conditions)"


# -- RBAC ---------------------------------------------------------------------------------------------

_NAMESPACED_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": [""],
        "resources": ["services", "configmaps", "secrets", "serviceaccounts"],
        "verbs": ["get", "list", "create", "update", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    # the fleet's NetworkPolicy (who may reach the workers' control and metrics ports)
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["get", "list", "create", "update", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["get", "list", "watch"]},
]


#: Why each permission is there: printed above the YAML by ``pytest-rollout rbac``.
RBAC_WHY: tuple[tuple[str, str], ...] = (
    ("deployments, services", "the target and the load workers (created, patched for the upgrade, deleted)"),
    ("replicasets, pods, events", "following a rollout and explaining a pod that is not ready"),
    ("pods/proxy", "the control calls to each worker (through the API server, with the run's token)"),
    ("pods/portforward", "reaching an in-cluster Prometheus (--rollout-prometheus-service)"),
    ("configmaps, serviceaccounts", "a run's record in a shared namespace; your manifests' own objects"),
    ("secrets", "the fleet's Secret: the run's control token and the secret request headers"),
    ("networkpolicies", "the fleet's NetworkPolicy: only the API server reaches the control port"),
    ("endpointslices default/kubernetes (get)", "the API server's addresses, for that NetworkPolicy"),
    ("namespaces (ClusterRole only)", "one namespace per run, deleted at its end"),
)
APISERVER_ROLE = "pytest-rollout-apiserver-address"


def apiserver_address_rbac(subject: dict[str, str]) -> list[dict[str, Any]]:
    """A Role and RoleBinding in ``default`` to read the API server's addresses (EndpointSlice ``kubernetes``)."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": APISERVER_ROLE, "namespace": "default"},
            "rules": [
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "resourceNames": ["kubernetes"],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": APISERVER_ROLE, "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": APISERVER_ROLE},
            "subjects": [subject],
        },
    ]


def namespace_role(namespace: str, name: str = "pytest-rollout") -> dict[str, Any]:
    """The Role that suffices inside an existing namespace (``--rollout-namespace``)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": [dict(rule) for rule in _NAMESPACED_RULES],
    }


def cluster_role(name: str = "pytest-rollout") -> dict[str, Any]:
    """The ClusterRole for the default mode, where each run makes (and deletes) its own namespace."""
    rules = [dict(rule) for rule in _NAMESPACED_RULES]
    rules.append(
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "create", "patch", "delete"]}
    )
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    }


def rbac_documents(subject_namespace: str, subject: str, namespace: str | None) -> list[dict[str, Any]]:
    """A Role (or ClusterRole) and its binding to ServiceAccount *subject* in *subject_namespace*.

    With *namespace*, the Role for that one namespace (runs use
    ``--rollout-namespace``); without, the ClusterRole for per-run namespaces.
    """
    account = {"kind": "ServiceAccount", "name": subject, "namespace": subject_namespace}
    if namespace is not None:
        role = namespace_role(namespace)
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "pytest-rollout", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pytest-rollout"},
            "subjects": [account],
        }
        return [role, binding, *apiserver_address_rbac(account)]
    return [
        *apiserver_address_rbac(account),
        cluster_role(),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "pytest-rollout"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pytest-rollout"},
            "subjects": [account],
        },
    ]
