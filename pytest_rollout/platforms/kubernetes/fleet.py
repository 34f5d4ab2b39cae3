"""The load workers as pods of a Deployment, driven through the API server's pod proxy with the run's token."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_rollout.errors import FleetError
from pytest_rollout.load import protocol
from pytest_rollout.load.fleet import ControlledFleet
from pytest_rollout.load.protocol import Aim
from pytest_rollout.platforms.kubernetes.api import api_error, label_selector, pod_ready, raw_request
from pytest_rollout.platforms.kubernetes.objects import (
    LABEL_COMPONENT,
    LABEL_RUN,
    WORKER_PORT,
    fleet_deployment,
    fleet_network_policy,
    fleet_secret,
)
from pytest_rollout.platforms.kubernetes.portforward import parse_service

__all__ = ["ANSWER_WINDOW_S", "FleetCluster", "KubeFleet"]


ANSWER_WINDOW_S = 10.0  # how long a ready worker pod may take to answer through the pod proxy


@dataclass(frozen=True)
class FleetCluster:
    """All a :class:`KubeFleet` uses of the cluster: the port the fleet owns and the platform fills in.

    The fleet depends on this, not on the platform (which imports the fleet, never the reverse), so what
    the fleet may touch is listed here and nowhere else.
    """

    api: Any  # the ApiClient: requests to each worker pod through the API server's pod proxy
    core: Any  # CoreV1Api: the worker pods, listed
    apps: Any  # AppsV1Api: the workers' Deployment, deleted
    namespace: str
    run_id: str
    worker_image: str
    worker_cpu: str  # each worker pod's CPU request and limit
    timeout_s: float  # how long the workers' Deployment may take to become available
    prometheus_service: str | None  # NAMESPACE/NAME:PORT; its namespace may scrape the workers' metrics
    apply: Callable[[Sequence[dict[str, Any]]], None]  # server-side apply into the namespace, as the run's
    follow: Callable[[str, float], tuple[bool, str]]  # Deployment NAME's rollout until a monotonic deadline
    explain: Callable[[str], str]  # what is known of Deployment NAME, for an error
    control_from: Callable[[], tuple[list[str] | None, str]]  # the API server's CIDRs (None: unknown), a note


class KubeFleet(ControlledFleet):
    """Worker pods of a Deployment, reached through the API server's pod proxy.

    The run's token and the secret headers travel in a Secret mounted into the pods; a NetworkPolicy admits
    the control port from the API server only (where its addresses can be read) and the metrics port from
    Prometheus' namespace.
    """

    def __init__(self, cluster: FleetCluster, size: int, aim: Aim) -> None:
        if size < 1:
            raise FleetError(f"a fleet needs at least one worker, got {size}")
        self.aim = aim
        self.token = protocol.new_token()
        self.policy_note = ""
        self.cluster = cluster
        self.size = size
        self.edges: dict[str, float] = {}
        self.name = "pytest-rollout-workers"
        self.selector = label_selector({LABEL_RUN: cluster.run_id, LABEL_COMPONENT: "load"})
        self.pods: list[str] = []
        self.placement: dict[str, str] = {}  # pod -> node
        self.start_lead_s = 2.0 + 0.05 * size  # the plan travels through the API server to each pod
        self._restarts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._removed = False
        self._unreported: list[str] = []  # problems of a remove() whose caller (shutdown) could not report them

    def start(self) -> None:
        p = self.cluster
        control_from, self.policy_note = p.control_from()
        prometheus = p.prometheus_service
        docs = [
            fleet_secret(
                name=self.name, token=self.token, headers_json=self.aim.headers_json(), data_json=self.aim.data_json()
            ),
            fleet_network_policy(
                name=self.name,
                run_id=p.run_id,
                control_from=control_from,
                metrics_namespace=parse_service(prometheus)[0] if prometheus else None,
            ),
            fleet_deployment(
                name=self.name,
                image=p.worker_image,
                replicas=self.size,
                run_id=p.run_id,
                target=self.aim.target,
                secret=self.name,
                cpu=p.worker_cpu,
            ),
        ]
        p.apply(docs)
        done, message = p.follow(self.name, time.monotonic() + p.timeout_s)
        if not done:
            raise FleetError(
                f"the load workers (deployment {self.name}, image {p.worker_image}) did not become "
                f"available within {p.timeout_s:g}s ({message}). Is the worker image in the cluster "
                f"(kind load docker-image {p.worker_image}; --rollout-worker-image)?\n{p.explain(self.name)}"
            )
        pods = p.core.list_namespaced_pod(p.namespace, label_selector=self.selector).items
        ready = [pod for pod in pods if pod.metadata.deletion_timestamp is None and pod_ready(pod)]
        self.pods = sorted(pod.metadata.name for pod in ready)[: self.size]
        nodes = {pod.metadata.name: pod.spec.node_name or "?" for pod in ready}
        self.placement = {name: nodes[name] for name in self.pods}
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
                return self._call(pod, "GET", protocol.STATUS, timeout=5.0)
            except FleetError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.5)

    discovery_s = 60.0  # a cluster's Prometheus finds new pods more slowly than files

    def scrape_targets(self) -> list[dict[str, Any]]:
        return []  # the cluster's Prometheus finds the pods by their annotations

    def discovery_hint(self, sd_dir: Path) -> str:
        return (
            "It must discover the worker pods by their prometheus.io/scrape annotations and copy the pod "
            f"label {LABEL_RUN} to the target label 'run' and the pod name to 'worker' "
            "(see examples/kind/prometheus.yaml)."
        )

    @property
    def edge_lead_s(self) -> float:
        """1 s, and 10 ms more for each pod: each edge travels through the API server to every pod."""
        return 1.0 + 0.01 * self.size

    def _handles(self) -> list[Any]:
        return list(self.pods)

    def _alive(self, handle: Any) -> bool:
        return True  # dead() asks the API server; a call to a dead pod fails by itself

    def _call(self, handle: Any, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        from kubernetes.client.exceptions import ApiException

        p = self.cluster
        resource = f"/api/v1/namespaces/{p.namespace}/pods/{handle}:{WORKER_PORT}/proxy{path}"
        try:
            status, raw = raw_request(p.api, method, resource, body, timeout, {protocol.TOKEN_HEADER: self.token})
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
        p = self.cluster
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
        p = self.cluster
        try:
            p.apps.delete_namespaced_deployment(self.name, p.namespace)
        except ApiException as exc:
            if exc.status != 404:
                return [str(api_error(exc, f"deleting the load workers ({self.name})"))]
        return []


def _restarts(pod: Any) -> int:
    return sum(cs.restart_count or 0 for cs in (pod.status.container_statuses or []))
