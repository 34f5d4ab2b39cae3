"""Deployments of the run's namespace as ``kubectl rollout status`` and ``kubectl describe`` see them.

A rollout is followed by polling the Deployment (every 0.25 s) and listing its pods: each pod that appears,
turns ready, begins terminating or is gone becomes an :class:`UpgradeEvent`, timed by the poll that saw it
(later than the change by up to a poll and its calls: a second or more on a busy machine). A termination is
timed by the API server's own record of it instead (the deletion timestamp less the grace period), where that
agrees with what the polls saw: polled, it could come after the errors it caused, and the failure hint that
reads the errors against the terminations would be lost. When a Deployment does not
become available, :meth:`DeploymentWatch.explain` says what is known: its conditions, its pods that are not
ready and why, the namespace's recent warning events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pytest_rollout.errors import KubernetesError
from pytest_rollout.platforms.base import UpgradeEvent
from pytest_rollout.platforms.kubernetes.api import POLL_S, api_error, label_selector, pod_ready
from pytest_rollout.platforms.kubernetes.status import conditions_text, rollout_status

__all__ = ["DeploymentWatch"]


class DeploymentWatch:
    """Read, follow and explain the Deployments of one namespace."""

    def __init__(self, api: Any, core: Any, apps: Any, namespace: str) -> None:
        self.api = api  # the ApiClient, to turn the client's objects into their JSON form
        self.core = core  # CoreV1Api: pods and events
        self.apps = apps  # AppsV1Api: Deployments
        self.namespace = namespace
        self._pods: dict[str, dict[str, tuple[bool, bool]]] = {}  # deployment -> pod -> (ready, terminating)
        self._listed: dict[str, float] = {}  # deployment -> when its pods' last listing was asked for

    def read(self, name: str) -> dict[str, Any]:
        """Deployment *name* in its JSON form, status included."""
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            raise api_error(exc, f"reading deployment {name} in namespace {self.namespace}") from None
        return self.api.sanitize_for_serialization(obj)  # type: ignore[no-any-return]

    def follow(
        self,
        name: str,
        deadline: float,
        on_event: Callable[[UpgradeEvent], None],
        stop_on_stall: bool = True,
    ) -> tuple[bool, str, float]:
        """Poll Deployment *name* until its rollout completes, stalls or *deadline* passes.

        Complete means what the Deployment's status says (as ``kubectl rollout status``) and, beyond it, that
        no pod of the Deployment is still terminating: an old pod serves the connections it holds through its
        preStop and its drain, after the Deployment counts it gone, and the upgrade lasts until it has exited.
        Returns ``(done, last message, when done was seen)``; replica events go to *on_event*.
        """
        message = ""
        while True:
            dep = self.read(name)
            now = time.time()
            terminating = self._pod_events(dep, on_event)
            status = rollout_status(dep)
            message = status.message
            if status.done and terminating:
                message = f"deployment {name}: {terminating} old pod{'s' if terminating > 1 else ''} still terminating"
                if time.monotonic() >= deadline:  # complete, though a pod outlives the deadline: not a failed release
                    return True, f"{message} at the deadline", now
            elif status.done:
                return True, message, now
            if status.stalled and stop_on_stall:
                return False, message, now
            if time.monotonic() >= deadline:
                return False, message, now
            time.sleep(POLL_S)

    def explain(self, name: str) -> str:
        """What is known of Deployment *name*: its conditions, its pods that are not ready, recent warnings."""
        lines = [f"deployment {name} in namespace {self.namespace}:"]
        try:
            dep = self.read(name)
            status = dep.get("status") or {}
            lines.append(
                f"  replicas {status.get('replicas', 0)}, updated {status.get('updatedReplicas', 0)}, "
                f"ready {status.get('readyReplicas', 0)}, available {status.get('availableReplicas', 0)}, "
                f"unavailable {status.get('unavailableReplicas', 0)} (want {dep['spec'].get('replicas')})"
            )
            lines.append(conditions_text(dep))
            lines.extend(self._pod_lines(dep["spec"]["selector"].get("matchLabels") or {}))
        except KubernetesError as exc:
            lines.append(f"  ({exc})")
        warnings = self._warnings()
        if warnings:
            lines.append("recent warning events:")
            lines.extend(warnings)
        return "\n".join(lines)

    def _pod_events(self, dep: dict[str, Any], on_event: Callable[[UpgradeEvent], None]) -> int:
        """Report pods that appeared, turned ready, began terminating or are gone; return how many are
        terminating (0 when the pods cannot be listed: the Deployment's own status decides then)."""
        sel = label_selector(dep["spec"]["selector"].get("matchLabels") or {})
        deployment = dep["metadata"]["name"]
        asked = time.time()
        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=sel).items
        except Exception:  # events are a courtesy: never fail the rollout over them
            return 0
        now = time.time()
        # what this listing shows new happened after the last listing was asked for (across follows: what
        # that listing showed is what is known): the API server's time of a termination is taken only within
        # that span; on the first listing, only from when it was asked for
        since = self._listed.get(deployment, asked)
        self._listed[deployment] = asked
        seen = set()
        known = self._pods.setdefault(deployment, {})
        for pod in pods:
            name = pod.metadata.name
            seen.add(name)
            ready = pod_ready(pod)
            terminating = pod.metadata.deletion_timestamp is not None
            image = ",".join(c.image for c in pod.spec.containers)
            before = known.get(name)
            if before is None:
                on_event(UpgradeEvent(now, "start", name, image))
                before = (False, False)
            if ready and not before[0]:
                on_event(UpgradeEvent(now, "ready", name, image))
            if terminating and not before[1]:
                pre_stop_s, grace_s = _termination(pod)
                if pre_stop_s is None:
                    how = "a preStop hook of unknown length"
                else:
                    how = f"preStop sleep {pre_stop_s:g}s" if pre_stop_s else "no preStop sleep"
                on_event(
                    UpgradeEvent(
                        happened(since, now, terminating_since(pod)),
                        "out",
                        name,
                        f"terminating ({how}, grace period {grace_s:g}s)",
                        pre_stop_s,
                        grace_s,
                    )
                )
            known[name] = (ready, terminating)
        for name in list(known):
            if name not in seen:
                on_event(UpgradeEvent(now, "exit", name, "deleted"))
                del known[name]
        return sum(1 for ready, terminating in known.values() if terminating)

    def _pod_lines(self, selector: dict[str, str]) -> list[str]:
        """One line per pod of *selector* that is not ready, with why."""
        sel = label_selector(selector)
        lines = []
        for pod in self.core.list_namespaced_pod(self.namespace, label_selector=sel).items:
            conds = {c.type: c for c in (pod.status.conditions or [])}
            ready = conds.get("Ready")
            if ready is not None and ready.status == "True":
                continue
            why = []
            for cs in pod.status.container_statuses or []:
                state = cs.state
                if state and state.waiting:
                    why.append(f"{cs.name} waiting: {state.waiting.reason} {state.waiting.message or ''}".strip())
                elif state and state.terminated:
                    why.append(f"{cs.name} terminated: {state.terminated.reason} (exit {state.terminated.exit_code})")
            for c in conds.values():
                if c.status != "True" and (c.reason or c.message):
                    why.append(f"{c.type}={c.status} {c.reason or ''} {c.message or ''}".strip())
            lines.append(f"  pod {pod.metadata.name}: phase {pod.status.phase}; " + ("; ".join(why) or "not ready"))
        return lines

    def _warnings(self, limit: int = 8) -> list[str]:
        from kubernetes.client.exceptions import ApiException

        try:
            events = self.core.list_namespaced_event(self.namespace, field_selector="type=Warning").items
        except ApiException:
            return []
        events.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
        return [
            f"  {e.involved_object.kind}/{e.involved_object.name}: {e.reason}: {e.message}" for e in events[-limit:]
        ]


def happened(since: float, seen: float, server: float | None) -> float:
    """When a change a listing showed at *seen* happened: the API server's time of it (*server*, None when it
    has none) where it lies between *since*, when the last listing that did not show it was asked for, less
    the server's one-second precision, and *seen*; else *seen*. A server clock that disagrees with this one
    (a remote cluster's) is never taken: its times would fall outside that span. The server's time is cut
    down to the second, so it may be up to a second early: never later than the change."""
    if server is not None and since - UpgradeEvent.EARLY_S <= server <= seen:
        return server
    return seen


def terminating_since(pod: Any) -> float | None:
    """When *pod* (a client V1Pod) began terminating, by the API server: its deletion timestamp is then plus
    the grace period it was given, both whole seconds. None when it is not terminating."""
    meta = pod.metadata
    if meta.deletion_timestamp is None or meta.deletion_grace_period_seconds is None:
        return None
    return float(meta.deletion_timestamp.timestamp()) - float(meta.deletion_grace_period_seconds)


def _termination(pod: Any) -> tuple[float | None, float]:
    """How the kubelet terminates *pod*: its longest preStop sleep (0 when it has no preStop; None when one is
    an exec or HTTP hook, whose length is unknown) and its grace period."""
    given = pod.spec.termination_grace_period_seconds
    grace = float(given if given is not None else 30)  # the API's default
    pre_stop = 0.0
    for container in pod.spec.containers or []:
        hook = container.lifecycle.pre_stop if container.lifecycle is not None else None
        if hook is None:
            continue
        sleep = getattr(hook, "sleep", None)
        if sleep is None:
            return None, grace
        pre_stop = max(pre_stop, float(sleep.seconds or 0))
    return pre_stop, grace
