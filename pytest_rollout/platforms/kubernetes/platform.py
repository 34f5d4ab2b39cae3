"""The ``kubernetes`` platform: the target, the fleet and the run's namespace in a cluster.

Deploy applies the target's Deployment and Service (written from
``image=...`` or read from ``manifests=[...]``) with server-side apply and
waits until the Deployment is available. The upgrade patches the Deployment
(or applies the new manifests) and follows it like ``kubectl rollout
status``: observedGeneration, updated / available / old replicas, and
``ProgressDeadlineExceeded``. The upgrade phase spans the patch to the
moment the rollout is seen complete (polled every 0.25 s).

The fleet is a Deployment of worker pods. The controller reaches each worker
through the API server's pod proxy (``pods/NAME:8089/proxy/...``), so no
Service need be exposed outside the cluster; the workers send their requests
to the target Service's in-cluster address.

Everything a run creates lives in one namespace: by default its own,
``rollout-<run id>``, labelled and annotated with its owner and an expiry,
deleted at the end; with ``--rollout-namespace`` an existing one, where the
run's objects carry its run label and are deleted by it. Objects of earlier
runs that died without cleaning up are found by label and removed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from pytest_rollout.errors import KubernetesError, ReplicaNotReady, RolloutUsageError, UpgradeFailed
from pytest_rollout.load.protocol import Aim
from pytest_rollout.platforms.base import TargetSpec, UpgradeEvent, UpgradeResult
from pytest_rollout.platforms.kubernetes.api import (
    FIELD_MANAGER,
    POLL_S,
    RUN_RECORD,
    KubeSettings,
    api_error,
    connect,
    delete_run_objects,
    label_selector,
    owner_id,
    pod_ready,
    reap_stale,
)
from pytest_rollout.platforms.kubernetes.fleet import KubeFleet
from pytest_rollout.platforms.kubernetes.manifests import load_manifests, pick_target
from pytest_rollout.platforms.kubernetes.objects import (
    ANN_EXPIRES,
    ANN_OWNER,
    LABEL_MANAGED_BY,
    LABEL_RUN,
    MANAGED_BY,
    REVISION,
    image_tag,
    label_value,
    namespace_object,
    target_objects,
)
from pytest_rollout.platforms.kubernetes.status import conditions_text, rollout_status

__all__ = ["KubePlatform"]


class KubePlatform:
    """The target as a Deployment behind a Service, in the run's namespace."""

    name = "kubernetes"
    fleet_cpus: Sequence[int] = ()  # the cluster places the worker pods

    def __init__(self, settings: KubeSettings, run_id: str, test: str, lifetime_s: float) -> None:
        from kubernetes import client as k8s
        from kubernetes import dynamic

        self.settings = settings
        self.run_id = run_id
        self.api = connect(settings)
        self.core: Any = k8s.CoreV1Api(self.api)
        self.apps: Any = k8s.AppsV1Api(self.api)
        self._dynamic: Any = None
        self._dynamic_cls = dynamic.DynamicClient
        self.reaped = reap_stale(self.api, settings.namespace)
        self.owns_namespace = settings.namespace is None
        self.namespace = settings.namespace or f"rollout-{run_id}"
        self._expires = time.time() + lifetime_s
        self._test = test
        self.deployment: str | None = None
        self.service: str | None = None
        self.port = 0
        self._current: TargetSpec | None = None
        self._history: list[str] = []  # revisions before each upgrade
        self._pods: dict[str, dict[str, tuple[bool, bool]]] = {}  # deployment -> pod -> (ready, terminating)
        self._created_namespace = False
        self._fleets: list[KubeFleet] = []
        self.ready_timeout_s = settings.timeout_s
        self.desired_replicas: int | None = None  # replicas of the target Deployment, as last applied
        self._claim()

    # -- namespace ----------------------------------------------------------------

    def _claim(self) -> None:
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException

        if self.owns_namespace:
            body = namespace_object(self.namespace, self.run_id, owner_id(), self._expires, self._test)
            try:
                self.core.create_namespace(body)
            except ApiException as exc:
                raise api_error(exc, f"creating namespace {self.namespace}") from None
            self._created_namespace = True
            self._await_default_account()
            return
        try:
            self.core.read_namespace(self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise RolloutUsageError(
                    f"--rollout-namespace {self.namespace}: no such namespace; create it, "
                    "or leave the option out and each run makes its own"
                ) from None
            if exc.status != 403:  # a Role cannot read the namespace object itself: fine
                raise api_error(exc, f"reading namespace {self.namespace}") from None
        record = k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(
                name=RUN_RECORD + self.run_id,
                labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN: self.run_id},
                annotations={ANN_OWNER: owner_id(), ANN_EXPIRES: str(int(self._expires))},
            ),
            data={"test": self._test[:1000]},
        )
        try:
            self.core.create_namespaced_config_map(self.namespace, record)
        except ApiException as exc:
            raise api_error(exc, f"recording the run in namespace {self.namespace}") from None

    def _await_default_account(self, timeout_s: float = 30.0) -> None:
        """Pods cannot be created before the controller made the namespace's ``default`` ServiceAccount."""
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.core.read_namespaced_service_account("default", self.namespace)
                return
            except ApiException as exc:
                if exc.status != 404:
                    return  # not ours to read (RBAC); the pods will say if it is missing
            time.sleep(0.2)

    # -- objects ----------------------------------------------------------------------

    def _mark(self, doc: dict[str, Any]) -> dict[str, Any]:
        doc = json.loads(json.dumps(doc))
        meta = doc.setdefault("metadata", {})
        meta["namespace"] = self.namespace
        labels = meta.setdefault("labels", {}) or {}
        labels.update({LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN: self.run_id})
        meta["labels"] = labels
        return doc

    def apply(self, docs: Sequence[dict[str, Any]]) -> None:
        """Server-side apply *docs* into the run's namespace."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

        if self._dynamic is None:
            try:
                self._dynamic = self._dynamic_cls(self.api)
            except (ApiException, DynamicApiError) as exc:
                raise api_error(exc, "reading the API server's resource list") from None
        for doc in docs:
            doc = self._mark(doc)
            what = f"{doc['kind']} {doc['metadata']['name']}"
            try:
                resource = self._dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            except ResourceNotFoundError:
                raise RolloutUsageError(
                    f"{what}: the cluster serves no kind {doc['kind']} in {doc['apiVersion']}"
                ) from None
            try:
                self._dynamic.server_side_apply(
                    resource, body=doc, namespace=self.namespace, field_manager=FIELD_MANAGER, force_conflicts=True
                )
            except DynamicApiError as exc:
                status = getattr(exc, "status", None)
                summary = exc.summary() if hasattr(exc, "summary") else str(exc)
                hint = " (forbidden: see the RBAC the plugin needs with `pytest-rollout rbac`)" if status == 403 else ""
                raise KubernetesError(
                    f"applying {what} in namespace {self.namespace}: {summary}{hint}", status=status
                ) from None

    def _read_deployment(self, name: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            raise api_error(exc, f"reading deployment {name} in namespace {self.namespace}") from None
        return self.api.sanitize_for_serialization(obj)  # type: ignore[no-any-return]

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

    def explain(self, name: str) -> str:
        """What is known of Deployment *name*: its conditions, its pods that are not ready, recent warnings."""
        lines = [f"deployment {name} in namespace {self.namespace}:"]
        try:
            dep = self._read_deployment(name)
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
            dep = self._read_deployment(name)
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

    def _pod_events(self, dep: dict[str, Any], on_event: Callable[[UpgradeEvent], None]) -> int:
        """Report pods that appeared, turned ready, began terminating or are gone; return how many are
        terminating (0 when the pods cannot be listed: the Deployment's own status decides then)."""
        sel = label_selector(dep["spec"]["selector"].get("matchLabels") or {})
        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=sel).items
        except Exception:  # events are a courtesy: never fail the rollout over them
            return 0
        now = time.time()
        seen = set()
        known = self._pods.setdefault(dep["metadata"]["name"], {})
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
                        now, "out", name, f"terminating ({how}, grace period {grace_s:g}s)", pre_stop_s, grace_s
                    )
                )
            known[name] = (ready, terminating)
        for name in list(known):
            if name not in seen:
                on_event(UpgradeEvent(now, "exit", name, "deleted"))
                del known[name]
        return sum(1 for ready, terminating in known.values() if terminating)

    # -- the Platform protocol ------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.service is None:
            raise RuntimeError("not deployed")
        return f"http://{self.service}.{self.namespace}.svc:{self.port}"

    def _objects(self, target: TargetSpec, what: str) -> tuple[list[dict[str, Any]], str, str, int]:
        if target.form == "command":
            raise RolloutUsageError(
                f"rollout.{what}(command=...) runs a local process; on --rollout-platform kubernetes "
                "pass image='repo/app:tag' or manifests=['deploy.yaml', ...]"
            )
        if target.image is not None:
            name = self.deployment or "target"
            docs = target_objects(
                name=name,
                image=target.image,
                replicas=target.replicas,
                port=target.port,
                ready_path=target.ready_path,
                env=target.env,
                run_id=self.run_id,
                grace_period_s=target.grace_period_s,
                pre_stop_s=target.pre_stop_s,
                progress_deadline_s=max(10, int(target.ready_timeout_s)),
            )
            self.desired_replicas = target.replicas
            return docs, name, name, target.port
        docs = load_manifests(target.manifests, what)
        deployment, service, port = pick_target(docs, what)
        for doc in docs:
            if doc["kind"] == "Deployment":
                self.desired_replicas = int((doc.get("spec") or {}).get("replicas", 1))
        return docs, deployment, service, port

    def deploy(self, target: TargetSpec, on_event: Callable[[UpgradeEvent], None]) -> None:
        docs, deployment, service, port = self._objects(target, "deploy")
        self.apply(docs)
        self.deployment, self.service, self.port = deployment, service, port
        self._current = target
        done, message, _ = self.follow(deployment, time.monotonic() + target.ready_timeout_s, on_event)
        if not done:
            raise ReplicaNotReady(
                f"deployment {deployment} did not become available within {target.ready_timeout_s:g}s "
                f"({message})\n{self.explain(deployment)}"
            )

    def upgrade(
        self,
        target: TargetSpec,
        max_surge: int | str | None,
        max_unavailable: int | str | None,
        on_event: Callable[[UpgradeEvent], None],
    ) -> UpgradeResult:
        assert self.deployment is not None, "deploy first"
        timeout_s = self.settings.upgrade_timeout_s
        name = self.deployment
        if target.form == "command":
            self._objects(target, "upgrade")  # raises the usage error
        before = self._read_deployment(name)
        revision = (before["metadata"].get("annotations") or {}).get(REVISION, "")
        events: list[UpgradeEvent] = []

        def note(event: UpgradeEvent) -> None:
            events.append(event)
            on_event(event)

        start = time.time()
        if target.image is not None:
            self._patch_image(before, target, max_surge, max_unavailable)
        else:
            docs, deployment, service, port = self._objects(target, "upgrade")
            if deployment != name:
                raise RolloutUsageError(
                    f"rollout.upgrade(manifests=...) holds Deployment {deployment}, but the deployed target is "
                    f"{name}: an upgrade changes the same Deployment"
                )
            if max_surge is not None or max_unavailable is not None:
                for doc in docs:
                    if doc["kind"] == "Deployment":
                        doc.setdefault("spec", {})["strategy"] = _strategy(max_surge, max_unavailable)
            self.apply(docs)
            self.service, self.port = service, port
        self._history.append(revision)
        self._current = target
        done, message, seen = self.follow(name, time.monotonic() + timeout_s, note)
        replaced = len({e.replica for e in events if e.action in ("out", "exit")})
        if not done:
            why = "it stalled" if "progress deadline" in message else f"it did not finish within {timeout_s:g}s"
            raise UpgradeFailed(
                f"upgrade of deployment {name} to {target.describe()} failed: {why} ({message})\n{self.explain(name)}"
            )
        return UpgradeResult(start=start, end=seen, replaced=replaced, events=tuple(events))

    def _patch_image(
        self, before: dict[str, Any], target: TargetSpec, surge: int | str | None, unavailable: int | str | None
    ) -> None:
        from kubernetes.client.exceptions import ApiException

        assert target.image is not None
        name = before["metadata"]["name"]
        containers = before["spec"]["template"]["spec"]["containers"]
        if len(containers) != 1:
            raise RolloutUsageError(
                f"deployment {name} has {len(containers)} containers; rollout.upgrade(image=...) changes the only "
                "one: use rollout.upgrade(manifests=[...]) to say which"
            )
        patch: dict[str, Any] = {
            "spec": {"template": {"spec": {"containers": [{"name": containers[0]["name"], "image": target.image}]}}}
        }
        labels = before["spec"]["template"]["metadata"].get("labels") or {}
        tag = image_tag(target.image)
        if "app.kubernetes.io/version" in labels and tag:
            patch["spec"]["template"]["metadata"] = {"labels": {"app.kubernetes.io/version": label_value(tag)}}
        if surge is not None or unavailable is not None:
            patch["spec"]["strategy"] = _strategy(surge, unavailable)
        try:
            self.apps.patch_namespaced_deployment(name, self.namespace, patch)
        except ApiException as exc:
            raise api_error(exc, f"patching deployment {name}") from None

    def rollback(self, on_event: Callable[[UpgradeEvent], None]) -> str:
        """Roll the Deployment back to the template of the revision before the last upgrade (``kubectl rollout undo``)."""
        from kubernetes.client.exceptions import ApiException

        if self.deployment is None or not self._history:
            raise UpgradeFailed("nothing to roll back: no upgrade has started")
        name = self.deployment
        revision = self._history[-1]
        dep = self._read_deployment(name)
        selector = label_selector(dep["spec"]["selector"]["matchLabels"])
        try:
            sets = self.apps.list_namespaced_replica_set(self.namespace, label_selector=selector).items
        except ApiException as exc:
            raise api_error(exc, f"listing the ReplicaSets of deployment {name}") from None
        previous = [rs for rs in sets if (rs.metadata.annotations or {}).get(REVISION) == revision]
        if not previous:
            raise UpgradeFailed(f"cannot roll back deployment {name}: no ReplicaSet of revision {revision} is left")
        template = self.api.sanitize_for_serialization(previous[0].spec.template)
        template.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
        try:
            self.apps.patch_namespaced_deployment(
                name, self.namespace, [{"op": "replace", "path": "/spec/template", "value": template}]
            )
        except ApiException as exc:
            raise api_error(exc, f"rolling back deployment {name}") from None
        self._history.pop()
        done, message, _ = self.follow(name, time.monotonic() + self.settings.upgrade_timeout_s, on_event)
        images = ", ".join(c.get("image", "?") for c in template.get("spec", {}).get("containers", []))
        if not done:
            return (
                f"rollback of deployment {name} to revision {revision} ({images}) started but did not finish: {message}"
            )
        return f"rolled back deployment {name} to the template of revision {revision} ({images})"

    def scrape_targets(self, run_id: str) -> list[dict[str, Any]]:
        return []  # the cluster's Prometheus discovers the worker pods by their annotations

    def make_fleet(self, run_id: str, size: int, aim: Aim) -> KubeFleet:
        fleet = KubeFleet(self, size, aim)
        self._fleets.append(fleet)
        return fleet

    def apiserver_addresses(self) -> tuple[list[str] | None, str]:
        """The API server's addresses as /32 (or /128) CIDRs, from the ``kubernetes`` EndpointSlice in ``default``,
        and a note; ``(None, why)`` when they cannot be read. Its pod proxy connects to the workers from there."""
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException

        try:
            slice_ = k8s.DiscoveryV1Api(self.api).read_namespaced_endpoint_slice("kubernetes", "default")
        except ApiException as exc:
            return None, f"cannot read EndpointSlice default/kubernetes ({exc.status} {exc.reason})"
        except (OSError, ValueError) as exc:
            return None, f"cannot read EndpointSlice default/kubernetes ({exc})"
        cidrs = sorted(
            {f"{a}/{'128' if ':' in a else '32'}" for ep in slice_.endpoints or [] for a in ep.addresses or []}
        )
        if not cidrs:
            return None, "EndpointSlice default/kubernetes lists no address"
        return cidrs, f"the API server at {', '.join(cidrs)}"

    def keep(self) -> None:
        """--rollout-keep: mark the run's namespace (or run record) so later runs do not reap it."""
        from kubernetes.client.exceptions import ApiException

        patch = {"metadata": {"annotations": {ANN_EXPIRES: "kept", ANN_OWNER: "kept"}}}
        try:
            if self.owns_namespace:
                self.core.patch_namespace(self.namespace, patch)
            else:
                self.core.patch_namespaced_config_map(RUN_RECORD + self.run_id, self.namespace, patch)
        except ApiException:
            pass

    def describe(self) -> str:
        context = f" --context {self.settings.context}" if self.settings.context else ""
        return f"namespace {self.namespace}: kubectl{context} -n {self.namespace} get all -l {LABEL_RUN}={self.run_id}"

    def teardown(self, wait_s: float = 60.0) -> list[str]:
        from kubernetes.client.exceptions import ApiException

        problems: list[str] = []
        for fleet in self._fleets:
            problems.extend(fleet.remove())
        try:
            if self.owns_namespace:
                if self._created_namespace:
                    self.core.delete_namespace(self.namespace)
            else:
                delete_run_objects(self.api, self.namespace, self.run_id)
                self.core.delete_namespaced_config_map(RUN_RECORD + self.run_id, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                problems.append(str(api_error(exc, f"deleting what run {self.run_id} made in {self.namespace}")))
                return problems
        left = self.leftovers(wait_s)
        if left:
            problems.append(f"still there {wait_s:g}s after deletion (it will go on its own): {', '.join(left)}")
        self.api.close()
        return problems

    def leftovers(self, wait_s: float = 0.0) -> list[str]:
        """What of this run still exists, after waiting up to *wait_s* for it to go."""
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + wait_s
        while True:
            left: list[str] = []
            try:
                if self.owns_namespace:
                    try:
                        self.core.read_namespace(self.namespace)
                        left.append(f"namespace {self.namespace}")
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                else:
                    sel = f"{LABEL_RUN}={self.run_id}"
                    left += [
                        f"pod {p.metadata.name}"
                        for p in self.core.list_namespaced_pod(self.namespace, label_selector=sel).items
                    ]
                    left += [
                        f"deployment {d.metadata.name}"
                        for d in self.apps.list_namespaced_deployment(self.namespace, label_selector=sel).items
                    ]
            except ApiException as exc:
                return [f"(cannot tell: {api_error(exc, 'checking clean-up')})"]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.5)


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


def _strategy(surge: int | str | None, unavailable: int | str | None) -> dict[str, Any]:
    rolling: dict[str, Any] = {}
    if surge is not None:
        rolling["maxSurge"] = surge
    if unavailable is not None:
        rolling["maxUnavailable"] = unavailable
    return {"type": "RollingUpdate", "rollingUpdate": rolling}
