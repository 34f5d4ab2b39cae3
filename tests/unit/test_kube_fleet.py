"""The kubernetes fleet through its port, ``FleetCluster``: the fleet's logic over the suite's FakeFleetCluster
(no API server runs in this tier), and the adapter over the kubernetes client's own objects.

The real adapter against a real API server and its pod proxy is the kubernetes tier's (tests/kubernetes).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import FakeFleetCluster

from pytest_rollout.errors import FleetError, KubernetesError
from pytest_rollout.load.protocol import STATUS, TOKEN_HEADER, Aim
from pytest_rollout.load.replies import WorkerStatus
from pytest_rollout.platforms.kubernetes import fleet as fleet_module
from pytest_rollout.platforms.kubernetes.api import label_selector
from pytest_rollout.platforms.kubernetes.fleet import FleetPod, FleetSettings, KubeFleet
from pytest_rollout.platforms.kubernetes.objects import LABEL_COMPONENT, LABEL_RUN, WORKER_PORT

SETTINGS = FleetSettings(
    run_id="abc", worker_image="w:1", worker_cpu="1", timeout_s=5.0, prometheus_service="monitoring/prometheus:9090"
)
SELECTOR = label_selector({LABEL_RUN: "abc", LABEL_COMPONENT: "load"})
IDLE = WorkerStatus(state="idle", pid=7).to_json()


def pod(name: str, node: str | None = "node-a", **given: Any) -> FleetPod:
    fields: dict[str, Any] = dict(phase="Running", ready=True, terminating=False, restarts=0)
    fields.update(given)
    return FleetPod(name=name, node=node, **fields)


def make(cluster: FakeFleetCluster, size: int = 2) -> KubeFleet:
    return KubeFleet(cluster, SETTINGS, size, Aim.at("http://t.ns.svc:80"))


def test_the_fleet_module_imports_neither_the_platform_nor_the_kubernetes_client() -> None:
    tree = ast.parse(Path(fleet_module.__file__).read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "pytest_rollout.platforms.kubernetes.platform" not in imported
    assert "pytest_rollout.platforms.kubernetes.fleetcluster" not in imported
    assert not [m for m in imported if m.split(".")[0] == "kubernetes"], imported


def test_the_fleet_applies_its_objects_and_says_what_is_known_when_they_do_not_become_available() -> None:
    cluster = FakeFleetCluster(SELECTOR, available=False)
    fleet = make(cluster)
    with pytest.raises(FleetError, match=r"(?s)did not become available within 5s.*\(what is known of pytest-rollout-"):
        fleet.start()
    (docs,) = cluster.applied
    assert [d["kind"] for d in docs] == ["Secret", "NetworkPolicy", "Deployment"]
    assert docs[2]["spec"]["template"]["spec"]["containers"][0]["image"] == "w:1"
    assert fleet.policy_note == "the API server at 10.0.0.1/32"
    assert cluster.calls == []  # no pod was called before the Deployment was available


def test_the_fleet_takes_its_ready_pods_and_calls_each_through_the_pod_proxy_with_its_token() -> None:
    cluster = FakeFleetCluster(
        SELECTOR,
        [
            pod("w-c", node="node-b"),
            pod("w-a"),
            pod("w-0", terminating=True),  # a pod of an earlier ReplicaSet, going (and first by name)
            pod("w-b", ready=False),
        ],
        answers={("GET", STATUS): IDLE},
    )
    fleet = make(cluster)
    fleet.start()
    assert fleet.pods == ["w-a", "w-c"]
    assert fleet.placement == {"w-a": "node-a", "w-c": "node-b"}
    assert [(c[0], c[1], c[2], c[3]) for c in cluster.calls] == [
        ("w-a", WORKER_PORT, "GET", STATUS),
        ("w-c", WORKER_PORT, "GET", STATUS),
    ]
    assert all(c[5] == {TOKEN_HEADER: fleet.token} for c in cluster.calls)
    assert fleet._status("w-a") == WorkerStatus(state="idle", pid=7)  # the typed reply, read back


def test_too_few_ready_pods_fail_the_start() -> None:
    cluster = FakeFleetCluster(SELECTOR, [pod("w-a"), pod("w-b", ready=False)], answers={("GET", STATUS): IDLE})
    with pytest.raises(FleetError, match="1 of 2 load worker pods are ready"):
        make(cluster).start()


@pytest.mark.parametrize("answer", [{"hello": "world"}, [1, 2], {"state": ""}, {"state": "idle", "pid": "x"}])
def test_a_pod_whose_status_is_no_worker_status_fails_the_start(answer: object) -> None:
    cluster = FakeFleetCluster(SELECTOR, [pod("w-a")], answers={("GET", STATUS): answer})
    with pytest.raises(FleetError, match=r"load worker pod w-a answered GET /status with .*is it a pytest-rollout"):
        make(cluster, 1).start()


def test_an_unreachable_pod_fails_with_the_api_servers_own_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet_module, "ANSWER_WINDOW_S", 0.0)  # one try: the fake answers the same every time
    cluster = FakeFleetCluster(SELECTOR, [pod("w-a")], answers={("GET", STATUS): IDLE}, unreachable=["w-a"])
    with pytest.raises(FleetError) as info:
        make(cluster, 1).start()
    assert str(info.value) == (
        "load worker pod w-a did not answer GET /status through the API server's pod proxy: "
        f"503 error trying to reach service: dial w-a:{WORKER_PORT}"
    )


def test_dead_names_each_pod_gone_terminating_not_running_or_restarted() -> None:
    names = ["w-0", "w-1", "w-2", "w-3", "w-4"]
    cluster = FakeFleetCluster(SELECTOR, [pod(n, restarts=1) for n in names], answers={("GET", STATUS): IDLE})
    fleet = make(cluster, 5)
    fleet.start()
    assert fleet.dead() == []
    cluster.worker_pods = [
        pod("w-0", restarts=1),
        pod("w-1", restarts=1, terminating=True),
        pod("w-2", restarts=1, phase="Failed"),
        pod("w-3", restarts=2),
    ]
    assert fleet.dead() == ["pod w-1 is terminating", "pod w-2 is Failed", "pod w-3 restarted", "pod w-4 is gone"]


def test_remove_deletes_the_workers_deployment_once() -> None:
    cluster = FakeFleetCluster(SELECTOR, [pod("w-a")], answers={("GET", STATUS): IDLE})
    fleet = make(cluster, 1)
    fleet.start()
    fleet.shutdown()
    assert fleet.remove() == []  # what the platform's teardown calls
    assert cluster.deleted == ["pytest-rollout-workers"]
    assert fleet.dead() == ["pod w-a is gone"]


def test_a_failed_worker_deletion_is_reported_by_teardown_even_after_shutdown() -> None:
    """KubeFleet.shutdown() deletes the workers first; its failure must still reach the platform's teardown."""
    refusal = KubernetesError("deleting the load workers (pytest-rollout-workers): the API server answered 403", 403)
    fleet = make(FakeFleetCluster(SELECTOR, refusal=refusal))
    fleet.shutdown()
    problems = fleet.remove()  # what the platform's teardown calls
    assert problems == [str(refusal)]
    assert fleet.remove() == []  # told once


# -- the adapter, over the kubernetes client's objects -----------------------------------------------------


def adapter(api: Any = None, core: Any = None, apps: Any = None) -> Any:
    from pytest_rollout.platforms.kubernetes.fleetcluster import KubeFleetCluster

    space: Any = SimpleNamespace(api=api, core=core, apps=apps, name="rollout-abc")
    return KubeFleetCluster(space, watch=None)


def test_the_adapter_reads_a_client_pod_as_a_fleet_pod() -> None:
    from kubernetes.client import (
        V1ContainerStatus,
        V1ObjectMeta,
        V1Pod,
        V1PodCondition,
        V1PodList,
        V1PodSpec,
        V1PodStatus,
    )

    def client_pod(name: str, node: str | None, ready: str, restarts: list[int], deleting: bool = False) -> V1Pod:
        statuses = [
            V1ContainerStatus(name=f"c{i}", image="w:1", image_id="", ready=True, restart_count=n)
            for i, n in enumerate(restarts)
        ]
        return V1Pod(
            metadata=V1ObjectMeta(name=name, deletion_timestamp="2026-12-06T11:00:00Z" if deleting else None),
            spec=V1PodSpec(node_name=node, containers=[]),
            status=V1PodStatus(
                phase="Running" if node else "Pending",
                conditions=[V1PodCondition(type="Ready", status=ready)],
                container_statuses=statuses or None,
            ),
        )

    asked: list[tuple[str, str]] = []

    class Core:  # CoreV1Api's one call the adapter makes
        def list_namespaced_pod(self, namespace: str, label_selector: str) -> V1PodList:
            asked.append((namespace, label_selector))
            return V1PodList(
                items=[client_pod("w-a", "node-a", "True", [1, 2]), client_pod("w-b", None, "False", [], deleting=True)]
            )

    assert adapter(core=Core()).pods(SELECTOR) == [
        FleetPod(name="w-a", node="node-a", phase="Running", ready=True, terminating=False, restarts=3),
        FleetPod(name="w-b", node=None, phase="Pending", ready=False, terminating=True, restarts=0),
    ]
    assert asked == [("rollout-abc", SELECTOR)]


def test_the_adapter_calls_the_pod_proxy_and_turns_the_clients_exception_into_a_reply() -> None:
    from kubernetes.client.exceptions import ApiException

    requests: list[tuple[str, str, Any, dict[str, str]]] = []

    class Api:  # the ApiClient's call, as raw_request makes it (client < 35), refused as the API server would
        def call_api(self, path: str, method: str, header_params: dict[str, str], body: Any, **kw: Any) -> Any:
            requests.append((method, path, body, header_params))
            exc = ApiException(status=503, reason="Service Unavailable")
            exc.body = json.dumps({"kind": "Status", "message": "no endpoints"})
            raise exc

    reply = adapter(api=Api()).call_pod("w-a", WORKER_PORT, "POST", "/stop", {}, 5.0, {TOKEN_HEADER: "t"})
    assert reply.status == 503 and json.loads(reply.body)["message"] == "no endpoints"
    ((method, path, body, headers),) = requests
    assert (method, path, body) == ("POST", f"/api/v1/namespaces/rollout-abc/pods/w-a:{WORKER_PORT}/proxy/stop", {})
    assert headers[TOKEN_HEADER] == "t"


def test_the_adapter_counts_a_deployment_already_gone_as_deleted_and_reports_a_refusal() -> None:
    from kubernetes.client.exceptions import ApiException

    class Apps:  # AppsV1Api's one call the adapter makes
        def __init__(self, status: int) -> None:
            self.status = status

        def delete_namespaced_deployment(self, name: str, namespace: str) -> None:
            raise ApiException(status=self.status, reason="Forbidden" if self.status == 403 else "Not Found")

    adapter(apps=Apps(404)).delete_workers("pytest-rollout-workers")
    with pytest.raises(KubernetesError) as info:
        adapter(apps=Apps(403)).delete_workers("pytest-rollout-workers")
    assert info.value.status == 403
    assert str(info.value).startswith("deleting the load workers (pytest-rollout-workers): the API server answered 403")


def test_the_adapter_turns_urllib3s_no_answer_into_oserror_and_a_failed_deletion_into_kubernetes_error() -> None:
    """urllib3's own errors (a proxy timeout, a reset, retries given up) are not OSErrors: the adapter says "no
    answer came" as the port promises (OSError), which the fleet reports as a FleetError and retries on."""
    from urllib3.exceptions import MaxRetryError, ReadTimeoutError

    class Api:
        def call_api(self, *args: Any, **kw: Any) -> Any:
            raise ReadTimeoutError(None, "/proxy/status", "Read timed out. (read timeout=5.0)")  # type: ignore[arg-type]

    with pytest.raises(OSError, match="ReadTimeoutError"):
        adapter(api=Api()).call_pod("w-a", WORKER_PORT, "GET", STATUS, None, 5.0, {})

    class Apps:
        def delete_namespaced_deployment(self, name: str, namespace: str) -> None:
            raise MaxRetryError(None, "/apis/apps/v1", "connection refused")  # type: ignore[arg-type]

    with pytest.raises(KubernetesError, match=r"deleting the load workers \(w\): MaxRetryError"):
        adapter(apps=Apps()).delete_workers("w")


def test_a_status_whose_count_reads_as_infinity_is_no_worker_status() -> None:
    cluster = FakeFleetCluster(
        SELECTOR, [pod("w-a")], answers={("GET", STATUS): json.loads('{"state": "idle", "pid": 1e400}')}
    )
    with pytest.raises(FleetError, match="is it a pytest-rollout worker"):
        make(cluster, 1).start()
