"""The run's namespace: claimed at the start, filled by server-side apply, emptied at the end.

By default a run makes its own namespace, ``rollout-<run id>``, labelled and annotated with its owner and an
expiry, and deletes it at the end. With ``--rollout-namespace`` it works in an existing one: a ConfigMap
records the run there, and the run's objects, which carry its run label, are deleted by that label. Either
way a later run can tell what a crashed one left (see :func:`~pytest_rollout.platforms.kubernetes.api.reap_stale`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from pytest_rollout.errors import KubernetesError, RolloutUsageError
from pytest_rollout.platforms.kubernetes.api import FIELD_MANAGER, RUN_RECORD, api_error, delete_run_objects, owner_id
from pytest_rollout.platforms.kubernetes.objects import (
    ANN_EXPIRES,
    ANN_OWNER,
    LABEL_MANAGED_BY,
    LABEL_RUN,
    MANAGED_BY,
    namespace_object,
)

__all__ = ["RunNamespace"]


class RunNamespace:
    """The namespace a run's objects live in, and the run's claim on it (its own namespace or a run record)."""

    def __init__(
        self, api: Any, core: Any, apps: Any, existing: str | None, run_id: str, test: str, expires: float
    ) -> None:
        from kubernetes import dynamic

        self.api = api  # the ApiClient
        self.core = core  # CoreV1Api
        self.apps = apps  # AppsV1Api
        self.run_id = run_id
        self.owned = existing is None
        self.name = existing or f"rollout-{run_id}"
        self._test = test
        self._expires = expires
        self._created = False
        self._dynamic: Any = None
        self._dynamic_cls = dynamic.DynamicClient

    def claim(self) -> None:
        """Create the run's namespace, or record the run in the existing one (which must exist)."""
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException

        if self.owned:
            body = namespace_object(self.name, self.run_id, owner_id(), self._expires, self._test)
            try:
                self.core.create_namespace(body)
            except ApiException as exc:
                raise api_error(exc, f"creating namespace {self.name}") from None
            self._created = True
            self._await_default_account()
            return
        try:
            self.core.read_namespace(self.name)
        except ApiException as exc:
            if exc.status == 404:
                raise RolloutUsageError(
                    f"--rollout-namespace {self.name}: no such namespace; create it, "
                    "or leave the option out and each run makes its own"
                ) from None
            if exc.status != 403:  # a Role cannot read the namespace object itself: fine
                raise api_error(exc, f"reading namespace {self.name}") from None
        record = k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(
                name=RUN_RECORD + self.run_id,
                labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN: self.run_id},
                annotations={ANN_OWNER: owner_id(), ANN_EXPIRES: str(int(self._expires))},
            ),
            data={"test": self._test[:1000]},
        )
        try:
            self.core.create_namespaced_config_map(self.name, record)
        except ApiException as exc:
            raise api_error(exc, f"recording the run in namespace {self.name}") from None

    def _await_default_account(self, timeout_s: float = 30.0) -> None:
        """Pods cannot be created before the controller made the namespace's ``default`` ServiceAccount."""
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.core.read_namespaced_service_account("default", self.name)
                return
            except ApiException as exc:
                if exc.status != 404:
                    return  # not ours to read (RBAC); the pods will say if it is missing
            time.sleep(0.2)

    def _mark(self, doc: dict[str, Any]) -> dict[str, Any]:
        doc = json.loads(json.dumps(doc))
        meta = doc.setdefault("metadata", {})
        meta["namespace"] = self.name
        labels = meta.setdefault("labels", {}) or {}
        labels.update({LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN: self.run_id})
        meta["labels"] = labels
        return doc

    def apply(self, docs: Sequence[dict[str, Any]]) -> None:
        """Server-side apply *docs* into the namespace, each labelled as the run's."""
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
                    resource, body=doc, namespace=self.name, field_manager=FIELD_MANAGER, force_conflicts=True
                )
            except DynamicApiError as exc:
                status = getattr(exc, "status", None)
                summary = exc.summary() if hasattr(exc, "summary") else str(exc)
                hint = " (forbidden: see the RBAC the plugin needs with `pytest-rollout rbac`)" if status == 403 else ""
                raise KubernetesError(
                    f"applying {what} in namespace {self.name}: {summary}{hint}", status=status
                ) from None

    def keep(self) -> None:
        """Mark the namespace (or the run record) so later runs do not reap it."""
        from kubernetes.client.exceptions import ApiException

        patch = {"metadata": {"annotations": {ANN_EXPIRES: "kept", ANN_OWNER: "kept"}}}
        try:
            if self.owned:
                self.core.patch_namespace(self.name, patch)
            else:
                self.core.patch_namespaced_config_map(RUN_RECORD + self.run_id, self.name, patch)
        except ApiException:
            pass

    def delete(self) -> str | None:
        """Delete the namespace (if this run created it), or the run's objects and record; what went wrong, if
        anything (a 404 is not a problem: it is gone already)."""
        from kubernetes.client.exceptions import ApiException

        try:
            if self.owned:
                if self._created:
                    self.core.delete_namespace(self.name)
            else:
                delete_run_objects(self.api, self.name, self.run_id)
                self.core.delete_namespaced_config_map(RUN_RECORD + self.run_id, self.name)
        except ApiException as exc:
            if exc.status != 404:
                return str(api_error(exc, f"deleting what run {self.run_id} made in {self.name}"))
        return None

    def leftovers(self, wait_s: float = 0.0) -> list[str]:
        """What of this run still exists, after waiting up to *wait_s* for it to go."""
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + wait_s
        while True:
            left: list[str] = []
            try:
                if self.owned:
                    try:
                        self.core.read_namespace(self.name)
                        left.append(f"namespace {self.name}")
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                else:
                    sel = f"{LABEL_RUN}={self.run_id}"
                    left += [
                        f"pod {p.metadata.name}"
                        for p in self.core.list_namespaced_pod(self.name, label_selector=sel).items
                    ]
                    left += [
                        f"deployment {d.metadata.name}"
                        for d in self.apps.list_namespaced_deployment(self.name, label_selector=sel).items
                    ]
            except ApiException as exc:
                return [f"(cannot tell: {api_error(exc, 'checking clean-up')})"]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.5)
