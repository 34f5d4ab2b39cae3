"""The RBAC the kubernetes platform needs, as plain dicts: printed by `pytest-rollout rbac`, proven sufficient by the kubernetes tier."""

from __future__ import annotations

from typing import Any

__all__ = ["APISERVER_ROLE", "RBAC_WHY", "apiserver_address_rbac", "cluster_role", "namespace_role", "rbac_documents"]


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
