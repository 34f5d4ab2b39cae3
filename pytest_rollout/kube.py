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
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import control
from .control import Aim
from .errors import FleetError, KubernetesError, ReplicaNotReady, RolloutUsageError, UpgradeFailed
from .fleet import ControlledFleet
from .kube_objects import (
    ANN_EXPIRES,
    ANN_OWNER,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_RUN,
    MANAGED_BY,
    REVISION,
    WORKER_PORT,
    conditions_text,
    fleet_deployment,
    fleet_network_policy,
    fleet_secret,
    image_tag,
    label_value,
    load_manifests,
    namespace_object,
    pick_target,
    rollout_status,
    target_objects,
)
from .platform import TargetSpec, UpgradeEvent, UpgradeResult
from .procs import alive_as_recorded, proc_start_time

__all__ = ["KubeFleet", "KubePlatform", "KubeSettings", "PortForward", "parse_service", "reap_stale"]

FIELD_MANAGER = "pytest-rollout"
POLL_S = 0.25
ANSWER_WINDOW_S = 10.0  # how long a ready worker pod may take to answer through the pod proxy
RUN_RECORD = "pytest-rollout-run-"  # ConfigMap naming a run inside a shared namespace


@dataclass(frozen=True)
class KubeSettings:
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None  # an existing namespace to use instead of one per run
    worker_image: str = "pytest-rollout-worker:latest"
    timeout_s: float = 300.0  # deploy / fleet availability
    upgrade_timeout_s: float = 300.0
    prometheus_service: str | None = None  # NAMESPACE/NAME:PORT
    worker_cpu: str = "1"


def label_selector(labels: dict[str, str]) -> str:
    """*labels* as a label selector string (``a=1,b=2``)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def pod_ready(pod: Any) -> bool:
    """Whether *pod* (a client V1Pod) has the condition Ready=True."""
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def owner_id() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}/{pid}/{proc_start_time(pid)}"


def _owner_gone(owner: str) -> bool:
    """Whether *owner* (``host/pid/start``) is a process of this host that no longer runs."""
    parts = owner.split("/")
    if len(parts) != 3 or parts[0] != socket.gethostname():
        return False
    try:
        pid = int(parts[1])
        start = None if parts[2] == "None" else int(parts[2])
    except ValueError:
        return False
    return not alive_as_recorded(pid, start)


def _stale(annotations: dict[str, str] | None, now: float) -> bool:
    annotations = annotations or {}
    try:
        if float(annotations.get(ANN_EXPIRES, "inf")) < now:
            return True
    except ValueError:
        pass
    return _owner_gone(annotations.get(ANN_OWNER, ""))


def api_error(exc: BaseException, doing: str) -> KubernetesError:
    """A :class:`KubernetesError` saying what was being done and what the API server answered."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        reason = exc.reason or ""
        try:
            body = json.loads(exc.body or "{}")
            reason = body.get("message") or reason
        except (ValueError, TypeError):
            pass
        hint = ""
        if exc.status == 403:
            hint = " (forbidden: see the RBAC the plugin needs with `pytest-rollout rbac`)"
        return KubernetesError(f"{doing}: the API server answered {exc.status}: {reason}{hint}", status=exc.status)
    return KubernetesError(f"{doing}: {type(exc).__name__}: {exc}")


def raw_request(
    api: Any, method: str, path: str, body: Any, timeout: float, extra_headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """``(status, body)`` of one request to the API server, whatever the status (no exception for 4xx/5xx)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json", **(extra_headers or {})}
    if hasattr(api, "param_serialize"):  # kubernetes >= 35: generated client of the newer style
        request = api.param_serialize(method, path, header_params=headers, body=body, auth_settings=["BearerToken"])
        response = api.call_api(*request, _request_timeout=timeout)
        return int(response.status), bytes(response.read() or b"")
    response = api.call_api(
        path,
        method,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
        _preload_content=False,
        _request_timeout=timeout,
        _return_http_data_only=True,
    )
    return int(response.status), bytes(response.data or b"")


def connect(settings: KubeSettings) -> Any:
    """An ``ApiClient`` for the kubeconfig and context of *settings*."""
    try:
        from kubernetes import config as kconfig
    except ImportError:
        raise RolloutUsageError(
            "--rollout-platform kubernetes needs the kubernetes client: pip install 'pytest-rollout[kubernetes]'"
        ) from None
    from kubernetes.config.config_exception import ConfigException

    try:
        return kconfig.new_client_from_config(config_file=settings.kubeconfig, context=settings.context)
    except (ConfigException, OSError) as exc:
        where = settings.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        context = f", context {settings.context!r}" if settings.context else ""
        raise RolloutUsageError(
            f"cannot load the kubeconfig {where}{context}: {exc}. Point --rollout-kubeconfig "
            "(or KUBECONFIG) at a kubeconfig, and --rollout-kube-context at one of its contexts"
        ) from None


def reap_stale(api: Any, namespace: str | None, now: float | None = None) -> list[str]:
    """Delete what earlier runs left (their owner died, or their expiry passed); return what was removed."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    now = time.time() if now is None else now
    core: Any = k8s.CoreV1Api(api)
    removed: list[str] = []
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    try:
        if namespace is None:
            for ns in core.list_namespace(label_selector=selector).items:
                if ns.status.phase == "Terminating" or not _stale(ns.metadata.annotations, now):
                    continue
                core.delete_namespace(ns.metadata.name)
                removed.append(f"namespace {ns.metadata.name}")
        else:
            for cm in core.list_namespaced_config_map(namespace, label_selector=selector).items:
                if not cm.metadata.name.startswith(RUN_RECORD) or not _stale(cm.metadata.annotations, now):
                    continue
                run = (cm.metadata.labels or {}).get(LABEL_RUN, "")
                _delete_run_objects(api, namespace, run)
                removed.append(f"run {run} in namespace {namespace}")
    except ApiException as exc:
        if exc.status == 403:  # not allowed to list: nothing we may clean either
            return removed
        raise api_error(exc, "looking for what earlier runs left") from None
    return removed


def _delete_run_objects(api: Any, namespace: str, run_id: str) -> None:
    from kubernetes import client as k8s

    selector = f"{LABEL_RUN}={run_id}"
    apps: Any = k8s.AppsV1Api(api)
    core: Any = k8s.CoreV1Api(api)
    body = k8s.V1DeleteOptions(propagation_policy="Background")
    for dep in apps.list_namespaced_deployment(namespace, label_selector=selector).items:
        apps.delete_namespaced_deployment(dep.metadata.name, namespace, body=body)
    for svc in core.list_namespaced_service(namespace, label_selector=selector).items:
        core.delete_namespaced_service(svc.metadata.name, namespace)
    for kind in ("config_map", "secret", "service_account"):
        lister = getattr(core, f"list_namespaced_{kind}")
        deleter = getattr(core, f"delete_namespaced_{kind}")
        for obj in lister(namespace, label_selector=selector).items:
            deleter(obj.metadata.name, namespace)
    net: Any = k8s.NetworkingV1Api(api)
    for policy in net.list_namespaced_network_policy(namespace, label_selector=selector).items:
        net.delete_namespaced_network_policy(policy.metadata.name, namespace)


class KubePlatform:
    """The target as a Deployment behind a Service, in the run's namespace."""

    name = "kubernetes"

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

    def _follow(
        self,
        name: str,
        deadline: float,
        on_event: Callable[[UpgradeEvent], None],
        stop_on_stall: bool = True,
    ) -> tuple[bool, str, float]:
        """Poll Deployment *name* until its rollout completes, stalls or *deadline* passes.

        Returns ``(done, last message, when done was seen)``; replica events go to *on_event*.
        """
        message = ""
        while True:
            dep = self._read_deployment(name)
            now = time.time()
            self._pod_events(dep, on_event)
            status = rollout_status(dep)
            message = status.message
            if status.done:
                return True, message, now
            if status.stalled and stop_on_stall:
                return False, message, now
            if time.monotonic() >= deadline:
                return False, message, now
            time.sleep(POLL_S)

    def _pod_events(self, dep: dict[str, Any], on_event: Callable[[UpgradeEvent], None]) -> None:
        sel = label_selector(dep["spec"]["selector"].get("matchLabels") or {})
        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=sel).items
        except Exception:  # events are a courtesy: never fail the rollout over them
            return
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
                on_event(UpgradeEvent(now, "out", name, "terminating"))
            known[name] = (ready, terminating)
        for name in list(known):
            if name not in seen:
                on_event(UpgradeEvent(now, "exit", name, "deleted"))
                del known[name]

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
        done, message, _ = self._follow(deployment, time.monotonic() + target.ready_timeout_s, on_event)
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
        done, message, seen = self._follow(name, time.monotonic() + timeout_s, note)
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
        done, message, _ = self._follow(name, time.monotonic() + self.settings.upgrade_timeout_s, on_event)
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
                _delete_run_objects(self.api, self.namespace, self.run_id)
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


def _strategy(surge: int | str | None, unavailable: int | str | None) -> dict[str, Any]:
    rolling: dict[str, Any] = {}
    if surge is not None:
        rolling["maxSurge"] = surge
    if unavailable is not None:
        rolling["maxUnavailable"] = unavailable
    return {"type": "RollingUpdate", "rollingUpdate": rolling}


class KubeFleet(ControlledFleet):
    """Worker pods of a Deployment, reached through the API server's pod proxy.

    The run's token and the secret headers travel in a Secret mounted into the pods; a NetworkPolicy admits
    the control port from the API server only (where its addresses can be read) and the metrics port from
    Prometheus' namespace.
    """

    def __init__(self, platform: KubePlatform, size: int, aim: Aim) -> None:
        if size < 1:
            raise FleetError(f"a fleet needs at least one worker, got {size}")
        self.aim = aim
        self.token = control.new_token()
        self.policy_note = ""
        self.platform = platform
        self.size = size
        self.name = "pytest-rollout-workers"
        self.selector = label_selector({LABEL_RUN: platform.run_id, LABEL_COMPONENT: "load"})
        self.pods: list[str] = []
        self.start_lead_s = 2.0 + 0.05 * size  # the plan travels through the API server to each pod
        self._restarts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._removed = False
        self._unreported: list[str] = []  # problems of a remove() whose caller (shutdown) could not report them

    def start(self) -> None:
        p = self.platform
        control_from, self.policy_note = p.apiserver_addresses()
        prometheus = p.settings.prometheus_service
        docs = [
            fleet_secret(name=self.name, token=self.token, headers_json=self.aim.headers_json()),
            fleet_network_policy(
                name=self.name,
                run_id=p.run_id,
                control_from=control_from,
                metrics_namespace=parse_service(prometheus)[0] if prometheus else None,
            ),
            fleet_deployment(
                name=self.name,
                image=p.settings.worker_image,
                replicas=self.size,
                run_id=p.run_id,
                target=self.aim.target,
                secret=self.name,
                cpu=p.settings.worker_cpu,
            ),
        ]
        p.apply(docs)
        done, message, _ = p._follow(self.name, time.monotonic() + p.settings.timeout_s, lambda e: None)
        if not done:
            raise FleetError(
                f"the load workers (deployment {self.name}, image {p.settings.worker_image}) did not become "
                f"available within {p.settings.timeout_s:g}s ({message}). Is the worker image in the cluster "
                f"(kind load docker-image {p.settings.worker_image}; --rollout-worker-image)?\n{p.explain(self.name)}"
            )
        pods = p.core.list_namespaced_pod(p.namespace, label_selector=self.selector).items
        ready = [pod for pod in pods if pod.metadata.deletion_timestamp is None and pod_ready(pod)]
        self.pods = sorted(pod.metadata.name for pod in ready)[: self.size]
        self._restarts = {pod.metadata.name: _restarts(pod) for pod in ready}
        if len(self.pods) < self.size:
            raise FleetError(f"{len(self.pods)} of {self.size} load worker pods are ready")
        for pod_name in self.pods:  # each must answer through the pod proxy before any plan is sent
            answer = self._first_answer(pod_name, ANSWER_WINDOW_S)
            if not isinstance(answer, dict) or "state" not in answer:
                raise FleetError(
                    f"load worker pod {pod_name} answered GET /status with {answer!r}: is it a pytest-rollout worker?"
                )

    def _first_answer(self, pod: str, window_s: float) -> Any:
        """``GET /status`` of *pod*, retried for *window_s* seconds (a proxy path may lag the pod's readiness)."""
        deadline = time.monotonic() + window_s
        while True:
            try:
                return self._call(pod, "GET", "/status", timeout=5.0)
            except FleetError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.5)

    def scrape_targets(self) -> list[dict[str, Any]]:
        return []

    def _handles(self) -> list[Any]:
        return list(self.pods)

    def _alive(self, handle: Any) -> bool:
        return True  # dead() asks the API server; a call to a dead pod fails by itself

    def _call(self, handle: Any, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        from kubernetes.client.exceptions import ApiException

        p = self.platform
        resource = f"/api/v1/namespaces/{p.namespace}/pods/{handle}:{WORKER_PORT}/proxy{path}"
        try:
            status, raw = raw_request(p.api, method, resource, body, timeout, {control.TOKEN_HEADER: self.token})
        except ApiException as exc:
            status, raw = exc.status or 0, (exc.body or exc.reason or "").encode()
        except (OSError, ValueError) as exc:
            raise FleetError(f"load worker pod {handle} did not answer {method} {path}: {exc}") from None
        if status != 200:
            text = raw.decode(errors="replace").strip()[:300]
            try:
                text = json.loads(raw)["message"]  # a Status from the API server itself
            except (ValueError, KeyError, TypeError):
                pass
            raise FleetError(
                f"load worker pod {handle} did not answer {method} {path} through the API server's pod proxy: "
                f"{status} {text}"
            )
        try:
            return json.loads(raw or b"null")
        except ValueError:
            raise FleetError(f"load worker pod {handle} answered {method} {path} with no JSON: {raw[:200]!r}") from None

    def dead(self) -> list[str]:
        """Pods of the fleet that are gone, not running, or restarted (a restart loses the worker's counts)."""
        p = self.platform
        try:
            pods = {
                pod.metadata.name: pod
                for pod in p.core.list_namespaced_pod(p.namespace, label_selector=self.selector).items
            }
        except Exception as exc:  # the API server is unreachable: the fleet cannot be watched
            return [f"(cannot see the worker pods: {exc})"]
        out = []
        for name in self.pods:
            pod = pods.get(name)
            if pod is None:
                out.append(f"pod {name} is gone")
            elif pod.metadata.deletion_timestamp is not None:
                out.append(f"pod {name} is terminating")
            elif pod.status.phase != "Running":
                out.append(f"pod {name} is {pod.status.phase}")
            elif _restarts(pod) > self._restarts.get(name, 0):
                out.append(f"pod {name} restarted")
        return out

    def shutdown(self) -> None:
        # what went wrong is kept for the platform's teardown, which calls remove() again and reports it
        self._unreported.extend(self.remove())

    def remove(self) -> list[str]:
        """Delete the workers' Deployment (once); the problems, including those of an earlier call not yet told."""
        from kubernetes.client.exceptions import ApiException

        with self._lock:
            if self._removed:
                problems, self._unreported = self._unreported, []
                return problems
            self._removed = True
        p = self.platform
        try:
            p.apps.delete_namespaced_deployment(self.name, p.namespace)
        except ApiException as exc:
            if exc.status != 404:
                return [str(api_error(exc, f"deleting the load workers ({self.name})"))]
        return []


def _restarts(pod: Any) -> int:
    return sum(cs.restart_count or 0 for cs in (pod.status.container_statuses or []))


def parse_service(value: str) -> tuple[str, str, str]:
    """``NAMESPACE/NAME:PORT`` as ``(namespace, name, port)``; the port may be a number or a port name."""
    ns, sep, rest = value.partition("/")
    name, sep2, port = rest.partition(":")
    if not (sep and sep2 and ns and name and port):
        raise ValueError("expected NAMESPACE/NAME:PORT, e.g. monitoring/prometheus:9090")
    return ns, name, port


class PortForward:
    """A local listener on 127.0.0.1 relaying each connection to a pod behind a Service (``kubectl port-forward``).

    The Service's selector and port are resolved to a ready pod and its
    container port once, at :meth:`start`; each accepted connection opens its
    own forwarding stream through the API server.
    """

    def __init__(self, api: Any, service: str) -> None:
        from kubernetes import client as k8s

        self.api = api
        self.service = service
        self.namespace, self.name, self.port_spec = parse_service(service)
        self.core: Any = k8s.CoreV1Api(api)
        self.pod = ""
        self.pod_port = 0
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._conns: set[Any] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def resolve(self) -> tuple[str, int]:
        """The ready pod and container port behind the Service."""
        from kubernetes.client.exceptions import ApiException

        try:
            svc = self.core.read_namespaced_service(self.name, self.namespace)
        except ApiException as exc:
            raise api_error(exc, f"--rollout-prometheus-service {self.service}: reading the Service") from None
        ports = svc.spec.ports or []
        chosen = [p for p in ports if str(p.port) == self.port_spec or p.name == self.port_spec]
        if not chosen:
            have = ", ".join(f"{p.name or '-'}:{p.port}" for p in ports) or "none"
            raise KubernetesError(
                f"--rollout-prometheus-service {self.service}: the Service has no port {self.port_spec} (it has {have})"
            )
        target = chosen[0].target_port if chosen[0].target_port is not None else chosen[0].port
        selector = svc.spec.selector or {}
        if not selector:
            raise KubernetesError(f"--rollout-prometheus-service {self.service}: the Service selects no pods")
        sel = label_selector(selector)
        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=sel).items
        except ApiException as exc:
            raise api_error(exc, f"--rollout-prometheus-service {self.service}: listing its pods") from None
        ready = [p for p in pods if p.metadata.deletion_timestamp is None and pod_ready(p)]
        if not ready:
            raise KubernetesError(f"--rollout-prometheus-service {self.service}: no ready pod behind the Service")
        pod = sorted(ready, key=lambda p: p.metadata.name)[0]
        if isinstance(target, int) or str(target).isdigit():
            return pod.metadata.name, int(target)
        for container in pod.spec.containers:
            for cp in container.ports or []:
                if cp.name == target:
                    return pod.metadata.name, int(cp.container_port)
        raise KubernetesError(
            f"--rollout-prometheus-service {self.service}: pod {pod.metadata.name} has no port named {target}"
        )

    def start(self) -> None:
        self.pod, self.pod_port = self.resolve()
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.settimeout(0.2)
        self._server = server
        thread = threading.Thread(target=self._accept, name="rollout-port-forward", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        assert self._server is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._relay, args=(conn,), name="rollout-port-forward-conn", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _relay(self, conn: socket.socket) -> None:
        import select

        from kubernetes.stream import portforward

        remote: Any = None
        try:
            forward = portforward(
                self.core.connect_get_namespaced_pod_portforward, self.pod, self.namespace, ports=str(self.pod_port)
            )
            remote = forward.socket(self.pod_port)
            remote.setblocking(True)
            with self._lock:
                self._conns.add(conn)
            while not self._closing.is_set():
                readable, _, _ = select.select([conn, remote], [], [], 0.2)
                for src in readable:
                    dst = remote if src is conn else conn
                    data = src.recv(65536)
                    if not data:
                        return
                    dst.sendall(data)
        except Exception:  # a broken stream ends this connection; the client sees it closed
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()
            if remote is not None:
                try:
                    remote.close()
                except Exception:
                    pass

    def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._threads.clear()
