"""Kubernetes objects as plain dicts, and the rules read off them (no I/O).

What the ``kubernetes`` platform creates (namespace, target Deployment and
Service, the worker Deployment), how it reads user manifests, the RBAC it
needs, and the rollout-status logic of ``kubectl rollout status``, kept apart
from the API calls (the platform and its namespace, watch and fleet modules) so
they are tested without a cluster.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_rollout.errors import RolloutUsageError

__all__ = [
    "ANN_EXPIRES",
    "ANN_OWNER",
    "ANN_TEST",
    "LABEL_COMPONENT",
    "LABEL_MANAGED_BY",
    "LABEL_RUN",
    "MANAGED_BY",
    "WORKER_PORT",
    "fleet_deployment",
    "fleet_network_policy",
    "fleet_secret",
    "namespace_object",
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


def spread(selector: Mapping[str, str]) -> list[dict[str, Any]]:
    """Pods of *selector* spread over the nodes, one more on a node at most, as a preference: a cluster with
    one node, or too little room on the others, still schedules them all (``ScheduleAnyway``). So a fleet's
    workers load from several nodes and a target's replicas sit on several, as users' traffic and pods do."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            # a node whose taints the pods do not tolerate (a control plane) is no domain: counted as one with
            # no pod, it would skew the spread of every other node
            "nodeTaintsPolicy": "Honor",
            "labelSelector": {"matchLabels": dict(selector)},
        }
    ]


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
    scheme: str = "http",
) -> list[dict[str, Any]]:
    """The Deployment and ClusterIP Service written for ``rollout.deploy(image=...)``.

    Zero-downtime defaults: ``maxUnavailable: 0`` and ``maxSurge: 25%`` (a
    replica leaves only once its replacement is ready), a readiness probe on
    *ready_path*, the app.kubernetes.io labels, and replicas spread over the nodes (:func:`spread`). With *pre_stop_s*, a
    ``lifecycle.preStop.sleep`` of that many seconds (rounded up; GA in 1.34). With *scheme* ``https`` the
    probe speaks TLS (``scheme: HTTPS``: the kubelet does not check the certificate).
    """
    labels = _labels(name, run_id, "target", version=image_tag(image))
    selector = _selector(labels)
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "ports": [{"name": "http", "containerPort": port}],
        "env": [{"name": "PORT", "value": str(port)}] + [{"name": k, "value": v} for k, v in sorted(env.items())],
        "readinessProbe": {
            "httpGet": {"path": ready_path, "port": port} | ({"scheme": "HTTPS"} if scheme == "https" else {}),
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
                    "topologySpreadConstraints": spread(selector),
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


def fleet_secret(*, name: str, token: str, headers_json: str, data_json: str = "{}") -> dict[str, Any]:
    """The fleet's Secret: the run's control token, the secret request headers and the secret data (see
    pytest_rollout.load.protocol)."""
    from pytest_rollout.load.protocol import DATA_FILE, HEADERS_FILE, TOKEN_FILE

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": {TOKEN_FILE: token, HEADERS_FILE: headers_json, DATA_FILE: data_json},
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
                    "topologySpreadConstraints": spread(selector),
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
                            "command": ["python", "-m", "pytest_rollout.load.worker"],
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
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": metrics_namespace}},
                "podSelector": {},
            }
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": _selector(labels)},
            "policyTypes": ["Ingress"],
            "ingress": [control, metrics],
        },
    }


# -- RBAC ---------------------------------------------------------------------------------------------
