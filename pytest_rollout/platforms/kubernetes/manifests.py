"""Your manifests: read, checked to be namespaced objects, and the target (one Deployment and its Service) picked out (no I/O)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_rollout.errors import RolloutUsageError

__all__ = ["load_manifests", "pick_target"]


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
