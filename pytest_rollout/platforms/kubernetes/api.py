"""The kubernetes platform's API plumbing: settings, the client, raw requests, errors, run ownership and stale runs."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from pytest_rollout.errors import KubernetesError, RolloutUsageError
from pytest_rollout.platforms.kubernetes.objects import (
    ANN_EXPIRES,
    ANN_OWNER,
    LABEL_MANAGED_BY,
    LABEL_RUN,
    MANAGED_BY,
)
from pytest_rollout.procs import alive_as_recorded, proc_start_time

__all__ = [
    "FIELD_MANAGER",
    "KubeSettings",
    "POLL_S",
    "RUN_RECORD",
    "api_error",
    "connect",
    "delete_run_objects",
    "label_selector",
    "owner_gone",
    "owner_id",
    "pod_ready",
    "raw_request",
    "reap_stale",
    "stale",
]


FIELD_MANAGER = "pytest-rollout"


POLL_S = 0.25


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


def owner_gone(owner: str) -> bool:
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


def stale(annotations: dict[str, str] | None, now: float) -> bool:
    annotations = annotations or {}
    try:
        if float(annotations.get(ANN_EXPIRES, "inf")) < now:
            return True
    except ValueError:
        pass
    return owner_gone(annotations.get(ANN_OWNER, ""))


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
                if ns.status.phase == "Terminating" or not stale(ns.metadata.annotations, now):
                    continue
                core.delete_namespace(ns.metadata.name)
                removed.append(f"namespace {ns.metadata.name}")
        else:
            for cm in core.list_namespaced_config_map(namespace, label_selector=selector).items:
                if not cm.metadata.name.startswith(RUN_RECORD) or not stale(cm.metadata.annotations, now):
                    continue
                run = (cm.metadata.labels or {}).get(LABEL_RUN, "")
                delete_run_objects(api, namespace, run)
                removed.append(f"run {run} in namespace {namespace}")
    except ApiException as exc:
        if exc.status == 403:  # not allowed to list: nothing we may clean either
            return removed
        raise api_error(exc, "looking for what earlier runs left") from None
    return removed


def delete_run_objects(api: Any, namespace: str, run_id: str) -> None:
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
