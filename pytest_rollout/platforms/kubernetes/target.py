"""The target's objects from a :class:`TargetSpec`, and the patch that upgrades its Deployment (no I/O).

``image=...`` writes a Deployment and a Service (:func:`~pytest_rollout.platforms.kubernetes.objects.target_objects`);
``manifests=[...]`` reads them from files and picks the Deployment and Service to roll
(:mod:`~pytest_rollout.platforms.kubernetes.manifests`). An upgrade to a new image patches the Deployment's
only container, its version label and, when given, its rolling-update strategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_rollout.errors import RolloutUsageError
from pytest_rollout.platforms.base import TargetSpec
from pytest_rollout.platforms.kubernetes.manifests import load_manifests, pick_target
from pytest_rollout.platforms.kubernetes.objects import image_tag, label_value, target_objects

__all__ = ["TargetObjects", "image_patch", "strategy", "target_docs"]


@dataclass(frozen=True)
class TargetObjects:
    """What to apply for a target, and which of it is the target."""

    docs: list[dict[str, Any]]
    deployment: str
    service: str
    port: int
    replicas: int | None  # the Deployment's replicas, when the objects say (None: leave what is known)


def target_docs(target: TargetSpec, what: str, name: str, run_id: str) -> TargetObjects:
    """The objects of *target* for ``rollout.<what>()``; an image target's Deployment and Service are *name*."""
    if target.form == "command":
        raise RolloutUsageError(
            f"rollout.{what}(command=...) runs a local process; on --rollout-platform kubernetes "
            "pass image='repo/app:tag' or manifests=['deploy.yaml', ...]"
        )
    if target.image is not None:
        docs = target_objects(
            name=name,
            image=target.image,
            replicas=target.replicas,
            port=target.port,
            ready_path=target.ready_path,
            env=target.env,
            run_id=run_id,
            grace_period_s=target.grace_period_s,
            pre_stop_s=target.pre_stop_s,
            scheme=target.scheme,
            progress_deadline_s=max(10, int(target.ready_timeout_s)),
        )
        return TargetObjects(docs, name, name, target.port, target.replicas)
    docs = load_manifests(target.manifests, what)
    deployment, service, port = pick_target(docs, what)
    replicas = None
    for doc in docs:
        if doc["kind"] == "Deployment":
            replicas = int((doc.get("spec") or {}).get("replicas", 1))
    return TargetObjects(docs, deployment, service, port, replicas)


def image_patch(
    before: dict[str, Any], image: str, surge: int | str | None, unavailable: int | str | None
) -> dict[str, Any]:
    """The strategic-merge patch that moves Deployment *before* (its JSON form) to *image*."""
    name = before["metadata"]["name"]
    containers = before["spec"]["template"]["spec"]["containers"]
    if len(containers) != 1:
        raise RolloutUsageError(
            f"deployment {name} has {len(containers)} containers; rollout.upgrade(image=...) changes the only "
            "one: use rollout.upgrade(manifests=[...]) to say which"
        )
    patch: dict[str, Any] = {
        "spec": {"template": {"spec": {"containers": [{"name": containers[0]["name"], "image": image}]}}}
    }
    labels = before["spec"]["template"]["metadata"].get("labels") or {}
    tag = image_tag(image)
    if "app.kubernetes.io/version" in labels and tag:
        patch["spec"]["template"]["metadata"] = {"labels": {"app.kubernetes.io/version": label_value(tag)}}
    if surge is not None or unavailable is not None:
        patch["spec"]["strategy"] = strategy(surge, unavailable)
    return patch


def strategy(surge: int | str | None, unavailable: int | str | None) -> dict[str, Any]:
    """A RollingUpdate strategy with the given maxSurge and maxUnavailable (those not given left out)."""
    rolling: dict[str, Any] = {}
    if surge is not None:
        rolling["maxSurge"] = surge
    if unavailable is not None:
        rolling["maxUnavailable"] = unavailable
    return {"type": "RollingUpdate", "rollingUpdate": rolling}
