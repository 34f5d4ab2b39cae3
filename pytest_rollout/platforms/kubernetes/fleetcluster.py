"""The fleet's port over the kubernetes client: :class:`KubeFleetCluster`, what the platform hands its fleets.

:class:`~pytest_rollout.platforms.kubernetes.fleet.FleetCluster` is stated by the fleet in its own terms; this
adapter is the only place where those terms meet the client's objects (``V1Pod``, ``ApiException``, the
``ApiClient`` that reaches the pod proxy). It imports the fleet, never the reverse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_rollout.platforms.kubernetes.api import api_error, pod_ready, raw_request
from pytest_rollout.platforms.kubernetes.fleet import FleetPod, ProxyReply
from pytest_rollout.platforms.kubernetes.namespace import RunNamespace
from pytest_rollout.platforms.kubernetes.watch import DeploymentWatch

__all__ = ["KubeFleetCluster", "apiserver_addresses"]


class KubeFleetCluster:
    """The fleet's :class:`~pytest_rollout.platforms.kubernetes.fleet.FleetCluster` over the run's namespace
    (:class:`RunNamespace`) and the watch on its Deployments (mypy checks it where the platform makes a fleet)."""

    def __init__(self, space: RunNamespace, watch: DeploymentWatch) -> None:
        self._space = space
        self._watch = watch
        self._api = space.api  # the ApiClient: requests through the API server's pod proxy
        self._core: Any = space.core  # CoreV1Api: pods
        self._apps: Any = space.apps  # AppsV1Api: the workers' Deployment

    @property
    def namespace(self) -> str:
        return self._space.name

    def control_from(self) -> tuple[list[str] | None, str]:
        return apiserver_addresses(self._api)

    def apply(self, docs: Sequence[dict[str, Any]]) -> None:
        self._space.apply(docs)

    def follow(self, deployment: str, deadline: float) -> tuple[bool, str]:
        done, message, _ = self._watch.follow(deployment, deadline, lambda event: None)
        return done, message

    def explain(self, deployment: str) -> str:
        return self._watch.explain(deployment)

    def pods(self, selector: str) -> list[FleetPod]:
        return [
            _fleet_pod(pod) for pod in self._core.list_namespaced_pod(self.namespace, label_selector=selector).items
        ]

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
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        resource = f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{port}/proxy{path}"
        try:
            status, raw = raw_request(self._api, method, resource, body, timeout_s, dict(headers))
        except ApiException as exc:  # the client raises for a status it does not like: an answer all the same
            status, raw = exc.status or 0, (exc.body or exc.reason or "").encode()
        except HTTPError as exc:  # urllib3's timeouts, resets and retries given up: no answer came (not OSErrors)
            raise OSError(f"{type(exc).__name__}: {exc}") from None
        return ProxyReply(status=status, body=raw)

    def delete_workers(self, deployment: str) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self._apps.delete_namespaced_deployment(deployment, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, f"deleting the load workers ({deployment})") from None
        except (HTTPError, OSError) as exc:  # no answer at all: the API server unreachable, a timeout
            raise api_error(exc, f"deleting the load workers ({deployment})") from None


def _fleet_pod(pod: Any) -> FleetPod:
    """A client ``V1Pod`` as the fleet reads it."""
    return FleetPod(
        name=pod.metadata.name,
        node=pod.spec.node_name or None,
        phase=pod.status.phase,
        ready=pod_ready(pod),
        terminating=pod.metadata.deletion_timestamp is not None,
        restarts=sum(cs.restart_count or 0 for cs in (pod.status.container_statuses or [])),
    )


def apiserver_addresses(api: Any) -> tuple[list[str] | None, str]:
    """The API server's addresses as /32 (or /128) CIDRs, from the ``kubernetes`` EndpointSlice in ``default``,
    and a note; ``(None, why)`` when they cannot be read. Its pod proxy connects to the workers from there."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    try:
        slice_ = k8s.DiscoveryV1Api(api).read_namespaced_endpoint_slice("kubernetes", "default")
    except ApiException as exc:
        return None, f"cannot read EndpointSlice default/kubernetes ({exc.status} {exc.reason})"
    except (OSError, ValueError) as exc:
        return None, f"cannot read EndpointSlice default/kubernetes ({exc})"
    cidrs = sorted({f"{a}/{'128' if ':' in a else '32'}" for ep in slice_.endpoints or [] for a in ep.addresses or []})
    if not cidrs:
        return None, "EndpointSlice default/kubernetes lists no address"
    return cidrs, f"the API server at {', '.join(cidrs)}"
