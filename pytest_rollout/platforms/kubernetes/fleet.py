"""The load workers as pods of a Deployment, driven through the API server's pod proxy with the run's token.

The fleet reaches the cluster only through :class:`FleetCluster`, a port it owns and states in its own terms
(its pods as :class:`FleetPod` records, a call to a worker's control port answered as a :class:`ProxyReply`,
its Deployment applied, followed, explained and deleted, the API server's addresses). The platform supplies the
adapter over the kubernetes client (:mod:`.fleetcluster`); the unit tests a fake. The fleet imports no client.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pytest_rollout.errors import FleetError, KubernetesError
from pytest_rollout.load import protocol
from pytest_rollout.load.fleet import ControlledFleet
from pytest_rollout.load.protocol import Aim
from pytest_rollout.load.replies import WorkerStatus
from pytest_rollout.platforms.kubernetes.api import label_selector
from pytest_rollout.platforms.kubernetes.objects import (
    LABEL_COMPONENT,
    LABEL_RUN,
    WORKER_PORT,
    fleet_deployment,
    fleet_network_policy,
    fleet_secret,
)
from pytest_rollout.platforms.kubernetes.portforward import parse_service

__all__ = ["ANSWER_WINDOW_S", "FleetCluster", "FleetPod", "FleetSettings", "KubeFleet", "ProxyReply"]


ANSWER_WINDOW_S = 10.0  # how long a ready worker pod may take to answer through the pod proxy


@dataclass(frozen=True)
class FleetPod:
    """One pod of the fleet, as the fleet reads it."""

    name: str
    node: str | None  # the node it was placed on; None until it is scheduled
    phase: str | None  # the pod's phase (Pending, Running, ...), as the API server reports it
    ready: bool  # its condition Ready is True
    terminating: bool  # its deletion was asked for
    restarts: int  # restarts of its containers, summed (a restart loses the worker's counts)


@dataclass(frozen=True)
class ProxyReply:
    """What came back through the API server's pod proxy: the worker's answer, or the API server's own refusal."""

    status: int
    body: bytes


@dataclass(frozen=True)
class FleetSettings:
    """The values a :class:`KubeFleet` is made with."""

    run_id: str
    worker_image: str
    worker_cpu: str  # each worker pod's CPU request and limit
    timeout_s: float  # how long the workers' Deployment may take to become available
    prometheus_service: str | None  # NAMESPACE/NAME:PORT; its namespace may scrape the workers' metrics


class FleetCluster(Protocol):
    """All a :class:`KubeFleet` uses of the cluster, in the run's namespace: the port the fleet owns.

    The platform implements it over the kubernetes client and the unit tests with a fake; the fleet depends on
    this, not on the platform (which imports the fleet, never the reverse), so what the fleet may touch is listed
    here and nowhere else.
    """

    def control_from(self) -> tuple[list[str] | None, str]:
        """The API server's addresses as CIDRs (None: unknown), and a note saying so."""

    def apply(self, docs: Sequence[dict[str, Any]]) -> None:
        """Server-side apply *docs* (the fleet's objects), as the run's."""

    def follow(self, deployment: str, deadline: float) -> tuple[bool, str]:
        """Follow *deployment*'s rollout until it completes, stalls or the monotonic *deadline* passes:
        ``(done, last message)``."""

    def explain(self, deployment: str) -> str:
        """What is known of *deployment*, for an error."""

    def pods(self, selector: str) -> list[FleetPod]:
        """The pods the label *selector* matches."""

    def call_pod(
        self,
        pod: str,
        port: int,
        method: str,
        path: str,
        body: object,
        timeout_s: float,
        headers: Mapping[str, str],
    ) -> ProxyReply:
        """*method* *path* (JSON *body*, None for none) to *port* of *pod* through the API server's pod proxy,
        with *headers*, whatever the status. Raises OSError or ValueError when no answer came."""

    def delete_workers(self, deployment: str) -> None:
        """Delete the workers' *deployment*; one already gone counts as deleted.

        Raises :class:`~pytest_rollout.errors.KubernetesError` saying what the API server answered.
        """


class KubeFleet(ControlledFleet):
    """Worker pods of a Deployment, reached through the API server's pod proxy.

    The run's token and the secret headers travel in a Secret mounted into the pods; a NetworkPolicy admits
    the control port from the API server only (where its addresses can be read) and the metrics port from
    Prometheus' namespace.
    """

    def __init__(self, cluster: FleetCluster, settings: FleetSettings, size: int, aim: Aim) -> None:
        if size < 1:
            raise FleetError(f"a fleet needs at least one worker, got {size}")
        self.aim = aim
        self.token = protocol.new_token()
        self.policy_note = ""
        self.cluster = cluster
        self.settings = settings
        self.size = size
        self.edges: dict[str, float] = {}
        self.name = "pytest-rollout-workers"
        self.selector = label_selector({LABEL_RUN: settings.run_id, LABEL_COMPONENT: "load"})
        self.pods: list[str] = []
        self.placement: dict[str, str] = {}  # pod -> node
        self.start_lead_s = 2.0 + 0.05 * size  # the plan travels through the API server to each pod
        self._restarts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._removed = False
        self._unreported: list[str] = []  # problems of a remove() whose caller (shutdown) could not report them

    def start(self) -> None:
        cluster, p = self.cluster, self.settings
        control_from, self.policy_note = cluster.control_from()
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
        cluster.apply(docs)
        done, message = cluster.follow(self.name, time.monotonic() + p.timeout_s)
        if not done:
            raise FleetError(
                f"the load workers (deployment {self.name}, image {p.worker_image}) did not become "
                f"available within {p.timeout_s:g}s ({message}). Is the worker image in the cluster "
                f"(kind load docker-image {p.worker_image}; --rollout-worker-image)?\n{cluster.explain(self.name)}"
            )
        ready = [pod for pod in cluster.pods(self.selector) if not pod.terminating and pod.ready]
        self.pods = sorted(pod.name for pod in ready)[: self.size]
        nodes = {pod.name: pod.node or "?" for pod in ready}
        self.placement = {name: nodes[name] for name in self.pods}
        self._restarts = {pod.name: pod.restarts for pod in ready}
        if len(self.pods) < self.size:
            raise FleetError(f"{len(self.pods)} of {self.size} load worker pods are ready")
        for pod_name in self.pods:  # each must answer through the pod proxy before any plan is sent
            answer = self._first_answer(pod_name, ANSWER_WINDOW_S)
            if _worker_status(answer) is None:
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
        try:
            reply = self.cluster.call_pod(
                handle, WORKER_PORT, method, path, body, timeout, {protocol.TOKEN_HEADER: self.token}
            )
        except (OSError, ValueError) as exc:
            raise FleetError(f"load worker pod {handle} did not answer {method} {path}: {exc}") from None
        status, raw = reply.status, reply.body
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
        try:
            pods = {pod.name: pod for pod in self.cluster.pods(self.selector)}
        except Exception as exc:  # the API server is unreachable: the fleet cannot be watched
            return [f"(cannot see the worker pods: {exc})"]
        out = []
        for name in self.pods:
            pod = pods.get(name)
            if pod is None:
                out.append(f"pod {name} is gone")
            elif pod.terminating:
                out.append(f"pod {name} is terminating")
            elif pod.phase != "Running":
                out.append(f"pod {name} is {pod.phase}")
            elif pod.restarts > self._restarts.get(name, 0):
                out.append(f"pod {name} restarted")
        return out

    def shutdown(self) -> None:
        # what went wrong is kept for the platform's teardown, which calls remove() again and reports it
        self._unreported.extend(self.remove())

    def remove(self) -> list[str]:
        """Delete the workers' Deployment (once); the problems, including those of an earlier call not yet told."""
        with self._lock:
            if self._removed:
                problems, self._unreported = self._unreported, []
                return problems
            self._removed = True
        try:
            self.cluster.delete_workers(self.name)
        except KubernetesError as exc:
            return [str(exc)]
        return []


def _worker_status(answer: object) -> WorkerStatus | None:
    """*answer* read as a worker's ``GET /status`` (typed), or None when it is none: no JSON object, no state."""
    if not isinstance(answer, dict):
        return None
    try:
        status = WorkerStatus.from_json(answer)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a count JSON reads as infinity
        return None
    return status if status.state else None
