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

The work is in modules of its own: the namespace and applying into it
(:mod:`.namespace`), following and explaining a Deployment (:mod:`.watch`),
the target's objects and patches (:mod:`.target`), the fleet (:mod:`.fleet`,
which sees the cluster only through its port, :class:`FleetCluster`, here the
adapter :class:`KubeFleetCluster` of :mod:`.fleetcluster`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from pytest_rollout.errors import ReplicaNotReady, RolloutUsageError, UpgradeFailed
from pytest_rollout.load.protocol import Aim
from pytest_rollout.platforms.base import TargetSpec, UpgradeEvent, UpgradeResult
from pytest_rollout.platforms.kubernetes.api import KubeSettings, api_error, connect, label_selector, reap_stale
from pytest_rollout.platforms.kubernetes.fleet import FleetSettings, KubeFleet
from pytest_rollout.platforms.kubernetes.fleetcluster import KubeFleetCluster, apiserver_addresses
from pytest_rollout.platforms.kubernetes.namespace import RunNamespace
from pytest_rollout.platforms.kubernetes.objects import LABEL_RUN, REVISION
from pytest_rollout.platforms.kubernetes.target import TargetObjects, image_patch, strategy, target_docs
from pytest_rollout.platforms.kubernetes.watch import DeploymentWatch

__all__ = ["KubePlatform"]


class KubePlatform:
    """The target as a Deployment behind a Service, in the run's namespace."""

    name = "kubernetes"
    fleet_cpus: Sequence[int] = ()  # the cluster places the worker pods

    def __init__(self, settings: KubeSettings, run_id: str, test: str, lifetime_s: float) -> None:
        from kubernetes import client as k8s

        self.settings = settings
        self.run_id = run_id
        self.api = connect(settings)
        self.core: Any = k8s.CoreV1Api(self.api)
        self.apps: Any = k8s.AppsV1Api(self.api)
        self.reaped = reap_stale(self.api, settings.namespace)
        self.space = RunNamespace(
            self.api, self.core, self.apps, settings.namespace, run_id, test, time.time() + lifetime_s
        )
        self.owns_namespace = self.space.owned
        self.namespace = self.space.name
        self.watch = DeploymentWatch(self.api, self.core, self.apps, self.namespace)
        self.deployment: str | None = None
        self.service: str | None = None
        self.port = 0
        self.scheme = "http"  # the target's, as deployed: https when its pods serve TLS
        self._history: list[str] = []  # revisions before each upgrade
        self._fleets: list[KubeFleet] = []
        self.ready_timeout_s = settings.timeout_s
        self.desired_replicas: int | None = None  # replicas of the target Deployment, as last applied
        self.space.claim()

    # -- the cluster, for the fleet and for tools beside the run (benchmarks, tests) ---------------

    def apply(self, docs: Sequence[dict[str, Any]]) -> None:
        """Server-side apply *docs* into the run's namespace."""
        self.space.apply(docs)

    def follow(
        self, name: str, deadline: float, on_event: Callable[[UpgradeEvent], None], stop_on_stall: bool = True
    ) -> tuple[bool, str, float]:
        """Poll Deployment *name* until its rollout completes, stalls or *deadline* passes (see :class:`DeploymentWatch`)."""
        return self.watch.follow(name, deadline, on_event, stop_on_stall)

    def explain(self, name: str) -> str:
        """What is known of Deployment *name*: its conditions, its pods that are not ready, recent warnings."""
        return self.watch.explain(name)

    def leftovers(self, wait_s: float = 0.0) -> list[str]:
        """What of this run still exists, after waiting up to *wait_s* for it to go."""
        return self.space.leftovers(wait_s)

    # -- the Platform protocol ------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.service is None:
            raise RuntimeError("not deployed")
        return f"{self.scheme}://{self.service}.{self.namespace}.svc:{self.port}"

    def _objects(self, target: TargetSpec, what: str) -> TargetObjects:
        objects = target_docs(target, what, self.deployment or "target", self.run_id)
        if objects.replicas is not None:
            self.desired_replicas = objects.replicas
        return objects

    def deploy(self, target: TargetSpec, on_event: Callable[[UpgradeEvent], None]) -> None:
        objects = self._objects(target, "deploy")
        self.apply(objects.docs)
        self.deployment, self.service, self.port = objects.deployment, objects.service, objects.port
        self.scheme = target.scheme
        done, message, _ = self.follow(objects.deployment, time.monotonic() + target.ready_timeout_s, on_event)
        if not done:
            raise ReplicaNotReady(
                f"deployment {objects.deployment} did not become available within {target.ready_timeout_s:g}s "
                f"({message})\n{self.explain(objects.deployment)}"
            )

    def upgrade(
        self,
        target: TargetSpec,
        max_surge: int | str | None,
        max_unavailable: int | str | None,
        on_event: Callable[[UpgradeEvent], None],
    ) -> UpgradeResult:
        from kubernetes.client.exceptions import ApiException

        assert self.deployment is not None, "deploy first"
        timeout_s = self.settings.upgrade_timeout_s
        name = self.deployment
        if target.form == "command":
            self._objects(target, "upgrade")  # raises the usage error
        before = self.watch.read(name)
        revision = (before["metadata"].get("annotations") or {}).get(REVISION, "")
        events: list[UpgradeEvent] = []

        def note(event: UpgradeEvent) -> None:
            events.append(event)
            on_event(event)

        start = time.time()
        if target.image is not None:
            patch = image_patch(before, target.image, max_surge, max_unavailable)
            try:
                self.apps.patch_namespaced_deployment(name, self.namespace, patch)
            except ApiException as exc:
                raise api_error(exc, f"patching deployment {name}") from None
        else:
            objects = self._objects(target, "upgrade")
            if objects.deployment != name:
                raise RolloutUsageError(
                    f"rollout.upgrade(manifests=...) holds Deployment {objects.deployment}, but the deployed target "
                    f"is {name}: an upgrade changes the same Deployment"
                )
            if max_surge is not None or max_unavailable is not None:
                for doc in objects.docs:
                    if doc["kind"] == "Deployment":
                        doc.setdefault("spec", {})["strategy"] = strategy(max_surge, max_unavailable)
            self.apply(objects.docs)
            self.service, self.port = objects.service, objects.port
        self._history.append(revision)
        done, message, seen = self.follow(name, time.monotonic() + timeout_s, note)
        replaced = len({e.replica for e in events if e.action in ("out", "exit")})
        if not done:
            why = "it stalled" if "progress deadline" in message else f"it did not finish within {timeout_s:g}s"
            raise UpgradeFailed(
                f"upgrade of deployment {name} to {target.describe()} failed: {why} ({message})\n{self.explain(name)}"
            )
        return UpgradeResult(start=start, end=seen, replaced=replaced, events=tuple(events))

    def rollback(self, on_event: Callable[[UpgradeEvent], None]) -> str:
        """Roll the Deployment back to the template of the revision before the last upgrade (``kubectl rollout undo``)."""
        from kubernetes.client.exceptions import ApiException

        if self.deployment is None or not self._history:
            raise UpgradeFailed("nothing to roll back: no upgrade has started")
        name = self.deployment
        revision = self._history[-1]
        dep = self.watch.read(name)
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
        settings = FleetSettings(
            run_id=self.run_id,
            worker_image=self.settings.worker_image,
            worker_cpu=self.settings.worker_cpu,
            timeout_s=self.settings.timeout_s,
            prometheus_service=self.settings.prometheus_service,
        )
        fleet = KubeFleet(KubeFleetCluster(self.space, self.watch), settings, size, aim)
        self._fleets.append(fleet)
        return fleet

    def apiserver_addresses(self) -> tuple[list[str] | None, str]:
        """The API server's addresses as /32 (or /128) CIDRs, from the ``kubernetes`` EndpointSlice in ``default``,
        and a note; ``(None, why)`` when they cannot be read. Its pod proxy connects to the workers from there."""
        return apiserver_addresses(self.api)

    def keep(self) -> None:
        """--rollout-keep: mark the run's namespace (or run record) so later runs do not reap it."""
        self.space.keep()

    def describe(self) -> str:
        context = f" --context {self.settings.context}" if self.settings.context else ""
        return f"namespace {self.namespace}: kubectl{context} -n {self.namespace} get all -l {LABEL_RUN}={self.run_id}"

    def teardown(self, wait_s: float = 60.0) -> list[str]:
        problems: list[str] = []
        for fleet in self._fleets:
            problems.extend(fleet.remove())
        problem = self.space.delete()
        if problem is not None:
            problems.append(problem)
            return problems
        left = self.space.leftovers(wait_s)
        if left:
            problems.append(f"still there {wait_s:g}s after deletion (it will go on its own): {', '.join(left)}")
        self.api.close()
        return problems
