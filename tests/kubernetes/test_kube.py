"""The kubernetes platform against a real control plane (see tests/support/controlplane.py).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are real;
kwok simulates the nodes and marks pods ready. So Deployments really roll,
ReplicaSet by ReplicaSet, through the real Deployment controller, and RBAC is
really enforced; pods run nothing, so no traffic flows (the fleet's
behaviour under load is covered by the local tier).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import UNREADY, ControlPlane

from pytest_rollout.errors import FleetError, KubernetesError, ReplicaNotReady, UpgradeFailed
from pytest_rollout.load.protocol import TOKEN_HEADER, Aim
from pytest_rollout.platforms.base import TargetOptions, TargetSpec, UpgradeEvent
from pytest_rollout.platforms.kubernetes.api import KubeSettings, raw_request, reap_stale
from pytest_rollout.platforms.kubernetes.objects import (
    ANN_EXPIRES,
    ANN_OWNER,
    ANN_TEST,
    LABEL_MANAGED_BY,
    LABEL_RUN,
    MANAGED_BY,
)
from pytest_rollout.platforms.kubernetes.platform import KubePlatform
from pytest_rollout.platforms.kubernetes.rbac import rbac_documents

pytestmark = [pytest.mark.kubernetes, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kind"


def k8s() -> Any:
    from kubernetes import client

    return client


@pytest.fixture
def admin(control_plane: ControlPlane) -> Iterator[Any]:
    api = control_plane.client()
    yield api
    api.close()


@pytest.fixture
def settings(control_plane: ControlPlane) -> KubeSettings:
    return KubeSettings(kubeconfig=str(control_plane.kubeconfig), timeout_s=30.0, upgrade_timeout_s=60.0)


@pytest.fixture
def platforms() -> Iterator[list[KubePlatform]]:
    """Platforms a test makes; each is torn down, and must leave nothing behind."""
    made: list[KubePlatform] = []
    yield made
    for platform in made:
        problems = platform.teardown(wait_s=60.0)
        assert problems == [], problems


def make(platforms: list[KubePlatform], settings: KubeSettings, run_id: str, lifetime_s: float = 600.0) -> KubePlatform:
    platform = KubePlatform(settings, run_id, f"tests/kubernetes/test_kube.py::{run_id}", lifetime_s)
    platforms.append(platform)
    return platform


def image_target(image: str, replicas: int = 3, version: str = "v1", ready_timeout: float = 30.0) -> TargetSpec:
    options = TargetOptions(
        image=image, replicas=replicas, env={"MODE": "test"}, ready_timeout=ready_timeout, grace_period=5, port=8080
    )
    return TargetSpec.build(options, version=version, what="deploy")


def manifest_target(*paths: Path, version: str = "v1", ready_timeout: float = 30.0) -> TargetSpec:
    options = TargetOptions(manifests=[str(p) for p in paths], ready_timeout=ready_timeout, grace_period=5)
    return TargetSpec.build(options, version=version, what="deploy")


def replica_sets(api: Any, namespace: str) -> list[Any]:
    return list(k8s().AppsV1Api(api).list_namespaced_replica_set(namespace).items)


def ready_times(api: Any, namespace: str, image: str) -> list[float]:
    """When each pod running *image* turned Ready, by its condition (second precision)."""
    out = []
    for pod in k8s().CoreV1Api(api).list_namespaced_pod(namespace).items:
        if pod.spec.containers[0].image != image:
            continue
        for cond in pod.status.conditions or []:
            if cond.type == "Ready" and cond.status == "True":
                out.append(cond.last_transition_time.timestamp())
    return out


# -- objects the API server accepts --------------------------------------------------------------------


def test_the_example_manifests_and_generated_objects_are_accepted(
    platforms: list[KubePlatform], settings: KubeSettings, admin: Any
) -> None:
    platform = make(platforms, settings, "accepted")
    docs = []
    for name in ("app-v1.yaml",):
        docs += list(yaml.safe_load_all((EXAMPLES / name).read_text()))
    platform.apply(docs)  # server-side apply: the API server validates every field
    platform.apply(list(yaml.safe_load_all((EXAMPLES / "app-v2-slow.yaml").read_text())))
    dep = k8s().AppsV1Api(admin).read_namespaced_deployment("shop", platform.namespace)
    assert dep.spec.template.spec.containers[0].args[-2:] == ["--delay-ms", "300"]
    # the Prometheus example, cluster-wide objects included, applied as a cluster admin would
    from kubernetes.utils import create_from_yaml

    created = create_from_yaml(admin, str(EXAMPLES / "prometheus.yaml"))
    assert {objs[0].kind for objs in created} >= {"Namespace", "ConfigMap", "Deployment", "Service", "ClusterRole"}
    delete_namespace(admin, "monitoring")
    k8s().RbacAuthorizationV1Api(admin).delete_cluster_role("pytest-rollout-prometheus")
    k8s().RbacAuthorizationV1Api(admin).delete_cluster_role_binding("pytest-rollout-prometheus")


# -- deploy, upgrade, stall, rollback --------------------------------------------------------------------


def test_deploy_waits_until_available_and_upgrade_follows_the_deployment_controller(
    platforms: list[KubePlatform], settings: KubeSettings, admin: Any
) -> None:
    platform = make(platforms, settings, "upgrade")
    events: list[UpgradeEvent] = []
    platform.deploy(image_target("shop/app:v1", replicas=4), events.append)
    dep = k8s().AppsV1Api(admin).read_namespaced_deployment("target", platform.namespace)
    assert dep.status.available_replicas == 4
    assert platform.url == f"http://target.{platform.namespace}.svc:8080"
    assert len({e.replica for e in events if e.action == "ready"}) == 4

    upgrade_events: list[UpgradeEvent] = []
    result = platform.upgrade(
        image_target("shop/app:v2", replicas=4, version="v2"),
        max_surge=1,
        max_unavailable=0,
        on_event=upgrade_events.append,
    )
    # the real controller made a second ReplicaSet, scaled it to 4 and the first to 0
    sets = {rs.spec.template.spec.containers[0].image: rs for rs in replica_sets(admin, platform.namespace)}
    assert sets["shop/app:v2"].status.ready_replicas == 4
    assert (sets["shop/app:v1"].status.replicas or 0) == 0
    # the upgrade phase spans the patch to the rollout's completion, as the controller timestamps it
    created = sets["shop/app:v2"].metadata.creation_timestamp.timestamp()
    assert result.start - 1.0 <= created <= result.end  # API timestamps have one-second precision
    last_ready = max(ready_times(admin, platform.namespace, "shop/app:v2"))
    assert last_ready - 1.0 <= result.end <= last_ready + 5.0
    assert result.replaced == 4
    assert [e.action for e in upgrade_events].count("ready") == 4
    dep = k8s().AppsV1Api(admin).read_namespaced_deployment("target", platform.namespace)
    assert dep.spec.strategy.rolling_update.max_surge == 1
    assert dep.spec.template.metadata.labels["app.kubernetes.io/version"] == "v2"


def write_manifests(tmp_path: Path, name: str, image: str, unready: bool) -> Path:
    docs = list(yaml.safe_load_all((EXAMPLES / "app-v1.yaml").read_text()))
    dep = docs[0]
    dep["spec"]["progressDeadlineSeconds"] = 6
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = image
    if unready:
        dep["spec"]["template"]["metadata"]["annotations"] = {UNREADY: "true"}
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return path


def test_a_rollout_that_cannot_progress_fails_within_its_deadline_and_rolls_back(
    platforms: list[KubePlatform], settings: KubeSettings, admin: Any, tmp_path: Path
) -> None:
    platform = make(platforms, settings, "stall")
    v1 = write_manifests(tmp_path, "v1.yaml", "shop/app:v1", unready=False)
    v2 = write_manifests(tmp_path, "v2.yaml", "shop/app:v2", unready=True)
    platform.deploy(manifest_target(v1), lambda e: None)
    began = time.monotonic()
    with pytest.raises(UpgradeFailed) as info:
        platform.upgrade(manifest_target(v2, version="v2"), None, None, lambda e: None)
    took = time.monotonic() - began
    message = str(info.value)
    assert "it stalled" in message and "ProgressDeadlineExceeded" in message
    assert "ReadinessProbeFailed" in message  # the pods that are not ready, and why
    pods = k8s().CoreV1Api(admin).list_namespaced_pod(platform.namespace).items
    stuck = [
        p.metadata.name
        for p in pods
        if not any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]
    assert stuck and all(f"pod {name}: " in message for name in stuck), (stuck, message)  # each stuck pod named
    assert took < 6 + 15  # the deadline, plus the controller's resync
    # the old replicas kept serving: maxUnavailable 0
    dep = k8s().AppsV1Api(admin).read_namespaced_deployment("shop", platform.namespace)
    assert dep.status.available_replicas == 3

    note = platform.rollback(lambda e: None)
    assert "rolled back deployment shop" in note and "shop/app:v1" in note
    dep = k8s().AppsV1Api(admin).read_namespaced_deployment("shop", platform.namespace)
    assert dep.spec.template.spec.containers[0].image == "shop/app:v1"
    assert UNREADY not in (dep.spec.template.metadata.annotations or {})
    assert dep.status.updated_replicas == dep.status.available_replicas == 3


def test_a_deploy_that_never_becomes_available_names_the_deployment_and_why(
    platforms: list[KubePlatform], settings: KubeSettings, tmp_path: Path
) -> None:
    platform = make(platforms, settings, "never")
    bad = write_manifests(tmp_path, "bad.yaml", "shop/app:bad", unready=True)
    with pytest.raises(ReplicaNotReady) as info:
        platform.deploy(manifest_target(bad, ready_timeout=3.0), lambda e: None)
    message = str(info.value)
    assert "deployment shop did not become available within 3s" in message
    assert "ReadinessProbeFailed" in message and "Available=False" in message


# -- namespace, clean-up, stale runs -------------------------------------------------------------------


def test_the_run_namespace_is_labelled_and_everything_in_it_goes_at_teardown(
    settings: KubeSettings, admin: Any
) -> None:
    platform = KubePlatform(settings, "cleanup", "tests/kubernetes/test_kube.py::cleanup", 600.0)
    platform.deploy(image_target("shop/app:v1", replicas=2), lambda e: None)
    ns = k8s().CoreV1Api(admin).read_namespace(platform.namespace)
    assert ns.metadata.labels[LABEL_MANAGED_BY] == MANAGED_BY and ns.metadata.labels[LABEL_RUN] == "cleanup"
    assert str(os.getpid()) in ns.metadata.annotations[ANN_OWNER]
    assert platform.teardown(wait_s=60.0) == []
    names = [n.metadata.name for n in k8s().CoreV1Api(admin).list_namespace().items]
    assert platform.namespace not in names


def test_a_stale_namespace_of_a_dead_run_is_found_by_label_and_removed(settings: KubeSettings, admin: Any) -> None:
    core = k8s().CoreV1Api(admin)
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN: "dead"}
    host = os.uname().nodename
    dead_owner = f"{host}/999999/12345"  # no such process: the run that made it is gone
    far = str(int(time.time()) + 3600)
    core.create_namespace(
        {
            "metadata": {
                "name": "rollout-dead",
                "labels": labels,
                "annotations": {ANN_OWNER: dead_owner, ANN_EXPIRES: far},
            }
        }
    )
    core.create_namespace(
        {
            "metadata": {
                "name": "rollout-expired",
                "labels": labels,
                "annotations": {ANN_OWNER: "elsewhere/1/1", ANN_EXPIRES: "1"},
            }
        }
    )
    core.create_namespace(
        {
            "metadata": {
                "name": "rollout-elsewhere",
                "labels": labels,
                "annotations": {ANN_OWNER: "elsewhere/1/1", ANN_EXPIRES: far},
            }
        }
    )
    core.create_namespace({"metadata": {"name": "not-ours", "annotations": {ANN_OWNER: dead_owner, ANN_EXPIRES: "1"}}})
    try:
        removed = reap_stale(admin, None)
        assert "namespace rollout-dead" in removed and "namespace rollout-expired" in removed
        assert "namespace rollout-elsewhere" not in removed and "namespace not-ours" not in removed
    finally:
        for name in ("rollout-elsewhere", "not-ours"):
            core.delete_namespace(name)


def test_runs_in_a_given_namespace_clean_up_by_label_and_reap_dead_runs(
    control_plane: ControlPlane, admin: Any
) -> None:
    core = k8s().CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": "shared"}})
    try:
        settings = KubeSettings(kubeconfig=str(control_plane.kubeconfig), namespace="shared", timeout_s=30.0)
        crashed = KubePlatform(settings, "crashed", "t::crashed", 600.0)
        crashed.deploy(image_target("shop/app:v1", replicas=1), lambda e: None)
        # the crashed run's owner is gone: rewrite its record as another process's
        core.patch_namespaced_config_map(
            "pytest-rollout-run-crashed",
            "shared",
            {"metadata": {"annotations": {ANN_OWNER: f"{os.uname().nodename}/999999/1"}}},
        )
        bystander = (
            k8s()
            .AppsV1Api(admin)
            .create_namespaced_deployment(
                "shared",
                {
                    "metadata": {"name": "bystander"},
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": {"app": "bystander"}},
                        "template": {
                            "metadata": {"labels": {"app": "bystander"}},
                            "spec": {"containers": [{"name": "c", "image": "x:1"}]},
                        },
                    },
                },
            )
        )
        platform = KubePlatform(settings, "next", "t::next", 600.0)
        assert platform.reaped == ["run crashed in namespace shared"]
        platform.deploy(image_target("shop/app:v1", replicas=1), lambda e: None)
        assert platform.teardown(wait_s=60.0) == []
        left = [d.metadata.name for d in k8s().AppsV1Api(admin).list_namespaced_deployment("shared").items]
        assert left == [bystander.metadata.name]
        assert [
            c.metadata.name
            for c in core.list_namespaced_config_map("shared").items
            if "pytest-rollout" in c.metadata.name
        ] == []
    finally:
        core.delete_namespace("shared")


# -- the fleet -------------------------------------------------------------------------------------------


def test_the_fleet_is_a_deployment_of_annotated_worker_pods_and_unreachable_workers_fail_closed(
    platforms: list[KubePlatform], settings: KubeSettings, admin: Any
) -> None:
    platform = make(platforms, settings, "fleet")
    platform.deploy(image_target("shop/app:v1", replicas=1), lambda e: None)
    fleet = platform.make_fleet("fleet", 3, Aim.at(platform.url, {"Authorization": "Bearer s3cret-k8s"}))
    with pytest.raises(FleetError) as info:
        fleet.start()
    # kwok's pods run nothing here (no worker was started for them): the pod proxy cannot reach them,
    # and the fleet says so instead of pretending to have load
    assert "did not answer GET /status through the API server's pod proxy" in str(info.value)
    pods = (
        k8s()
        .CoreV1Api(admin)
        .list_namespaced_pod(platform.namespace, label_selector="app.kubernetes.io/component=load")
        .items
    )
    assert len(pods) == 3
    annotations = pods[0].metadata.annotations
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8090"
    assert pods[0].metadata.labels[LABEL_RUN] == "fleet"
    args = pods[0].spec.containers[0].args
    assert args[args.index("--target") + 1] == platform.url.rstrip("/")  # the run's Service, fixed at creation
    # the API server accepted the least-privilege pod spec as written
    assert pods[0].spec.automount_service_account_token is False
    assert pods[0].spec.containers[0].security_context.read_only_root_filesystem is True
    # the token and the secret header are in the Secret, and nowhere in the pods
    core = k8s().CoreV1Api(admin)
    secret = core.read_namespaced_secret("pytest-rollout-workers", platform.namespace)
    assert base64.b64decode(secret.data["token"]).decode() == fleet.token
    assert json.loads(base64.b64decode(secret.data["headers.json"])) == {"Authorization": "Bearer s3cret-k8s"}
    dumped = json.dumps(admin.sanitize_for_serialization(pods))
    assert fleet.token not in dumped and "s3cret-k8s" not in dumped
    # the NetworkPolicy admits the control port from the API server's own addresses only
    policy = k8s().NetworkingV1Api(admin).read_namespaced_network_policy("pytest-rollout-workers", platform.namespace)
    control_rule, metrics_rule = policy.spec.ingress
    assert control_rule.ports[0].port == 8089 and metrics_rule.ports[0].port == 8090
    addresses, why = platform.apiserver_addresses()
    assert addresses, why
    assert [peer.ip_block.cidr for peer in control_rule._from] == addresses


# -- RBAC --------------------------------------------------------------------------------------------------


def service_account_kubeconfig(
    control_plane: ControlPlane, admin: Any, tmp_path: Path, namespace: str, docs: list[dict[str, Any]]
) -> Path:
    from kubernetes.utils import create_from_dict

    core = k8s().CoreV1Api(admin)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "rollout"}})
    for doc in docs:
        create_from_dict(admin, doc)
    token = core.create_namespaced_service_account_token(
        "rollout", namespace, {"spec": {"audiences": [], "expirationSeconds": 3600}}
    ).status.token
    return control_plane.kubeconfig_for(tmp_path / f"{namespace}.kubeconfig", token)


def exercise(settings: KubeSettings) -> None:
    """What the platform does to a cluster: deploy, upgrade, roll back, fleet, reap, teardown."""
    platform = KubePlatform(settings, "rbac", "t::rbac", 600.0)
    try:
        platform.deploy(image_target("shop/app:v1", replicas=2), lambda e: None)
        platform.upgrade(image_target("shop/app:v2", replicas=2, version="v2"), 1, 0, lambda e: None)
        assert "shop/app:v1" in platform.rollback(lambda e: None)
        fleet = platform.make_fleet("rbac", 1, Aim.at(platform.url))
        with pytest.raises(FleetError) as info:
            fleet.start()  # creates the Secret and the NetworkPolicy
        assert " 403 " not in str(info.value)  # the pod proxy call was allowed; the pod just runs nothing
        addresses, why = platform.apiserver_addresses()
        assert addresses, why  # the documented RBAC may read the API server's addresses
    finally:
        problems = platform.teardown(wait_s=60.0)
    assert problems == []


def test_the_documented_role_suffices_in_a_given_namespace(
    control_plane: ControlPlane, admin: Any, tmp_path: Path
) -> None:
    core = k8s().CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": "team"}})
    try:
        kubeconfig = service_account_kubeconfig(
            control_plane, admin, tmp_path, "team", rbac_documents("team", "rollout", namespace="team")
        )
        settings = KubeSettings(kubeconfig=str(kubeconfig), namespace="team", timeout_s=30.0, upgrade_timeout_s=60.0)
        exercise(settings)
        # and the same identity may do nothing outside its namespace
        with pytest.raises(KubernetesError, match="403"):
            KubePlatform(KubeSettings(kubeconfig=str(kubeconfig), timeout_s=30.0), "outside", "t::outside", 600.0)
    finally:
        core.delete_namespace("team")
        delete_rbac(admin, cluster=False)


def test_the_documented_cluster_role_suffices_for_per_run_namespaces(
    control_plane: ControlPlane, admin: Any, tmp_path: Path
) -> None:
    core = k8s().CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": "ci"}})
    try:
        kubeconfig = service_account_kubeconfig(
            control_plane, admin, tmp_path, "ci", rbac_documents("ci", "rollout", namespace=None)
        )
        exercise(KubeSettings(kubeconfig=str(kubeconfig), timeout_s=30.0, upgrade_timeout_s=60.0))
    finally:
        core.delete_namespace("ci")
        delete_rbac(admin, cluster=True)


def delete_rbac(admin: Any, cluster: bool) -> None:
    """Remove what rbac_documents made outside the test's namespace (the Role in default; the ClusterRole)."""
    from kubernetes.client.exceptions import ApiException

    rbac = k8s().RbacAuthorizationV1Api(admin)
    calls = [
        lambda: rbac.delete_namespaced_role("pytest-rollout-apiserver-address", "default"),
        lambda: rbac.delete_namespaced_role_binding("pytest-rollout-apiserver-address", "default"),
    ]
    if cluster:
        calls += [
            lambda: rbac.delete_cluster_role("pytest-rollout"),
            lambda: rbac.delete_cluster_role_binding("pytest-rollout"),
        ]
    for call in calls:
        try:
            call()
        except ApiException as exc:
            if exc.status != 404:
                raise


def test_without_the_role_the_error_names_the_refusal_and_the_rbac_to_grant(
    control_plane: ControlPlane, admin: Any, tmp_path: Path
) -> None:
    core = k8s().CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": "norole"}})
    try:
        kubeconfig = service_account_kubeconfig(control_plane, admin, tmp_path, "norole", [])
        platform = KubePlatform(KubeSettings(kubeconfig=str(kubeconfig), namespace="norole"), "x", "t::x", 600.0)
        raise AssertionError(f"a ServiceAccount without the Role was let in: {platform.namespace}")
    except KubernetesError as exc:
        assert exc.status == 403 and "pytest-rollout rbac" in str(exc)
    finally:
        core.delete_namespace("norole")


# -- Prometheus through a port-forward -------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_in_cluster(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``monitoring/prometheus:9090``: a Service whose (simulated) pod kwok port-forwards to a real Prometheus."""
    from controlplane import PROMETHEUS_POD

    from pytest_rollout.judge.prometheus import LocalPrometheus
    from pytest_rollout.procs import ProcessSet

    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (scripts/setup installs it)")
    work = tmp_path_factory.mktemp("prometheus-in-cluster")
    procs = ProcessSet(work)
    api = control_plane.client()
    core = k8s().CoreV1Api(api)
    namespace, pod = PROMETHEUS_POD
    try:
        LocalPrometheus(procs, work, port=control_plane.prometheus_port).start()
        core.create_namespace({"metadata": {"name": namespace}})
        labels = {"app.kubernetes.io/name": "prometheus"}
        container = {
            "name": "prometheus",
            "image": "prom/prometheus:v3.5.0",
            "ports": [{"name": "web", "containerPort": 9090}],
        }
        core.create_namespaced_pod(
            namespace, {"metadata": {"name": pod, "labels": labels}, "spec": {"containers": [container]}}
        )
        ports = [{"name": "web", "port": 9090, "targetPort": "web"}]
        core.create_namespaced_service(
            namespace, {"metadata": {"name": "prometheus"}, "spec": {"selector": labels, "ports": ports}}
        )
        deadline = time.monotonic() + 30
        while not any(
            c.type == "Ready" and c.status == "True"
            for c in (core.read_namespaced_pod(pod, namespace).status.conditions or [])
        ):
            assert time.monotonic() < deadline, "the simulated Prometheus pod never became ready"
            time.sleep(0.2)
        yield f"{namespace}/prometheus:9090"
    finally:
        delete_namespace(api, namespace)
        api.close()
        assert procs.stop_all() == []


def delete_namespace(api: Any, name: str, wait_s: float = 60.0) -> None:
    """Delete namespace *name* and wait until it is gone (so a later test may make it again)."""
    from kubernetes.client.exceptions import ApiException

    core = k8s().CoreV1Api(api)
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.25)
    raise AssertionError(f"namespace {name} still there {wait_s:g}s after deletion")


def test_a_port_forward_reaches_the_prometheus_behind_a_service(prometheus_in_cluster: str, admin: Any) -> None:
    from pytest_rollout.judge.prometheus import PromClient
    from pytest_rollout.platforms.kubernetes.portforward import PortForward

    forward = PortForward(admin, prometheus_in_cluster)
    forward.start()
    try:
        assert (forward.pod, forward.pod_port) == ("prometheus-0", 9090)  # the named targetPort, resolved
        client = PromClient(forward.url)
        client.check()  # the real server's build info, through the API server and kwok's kubelet endpoint
        for _ in range(3):  # one stream per connection
            assert client.scalar("vector(42)", time.time()) == 42.0
    finally:
        forward.close()


def test_a_port_forward_to_a_missing_service_or_port_says_which(prometheus_in_cluster: str, admin: Any) -> None:
    from pytest_rollout.platforms.kubernetes.portforward import PortForward

    with pytest.raises(
        KubernetesError, match=r"monitoring/nothing:9090: reading the Service: the API server answered 404"
    ):
        PortForward(admin, "monitoring/nothing:9090").start()
    with pytest.raises(KubernetesError, match=r"the Service has no port 9191 \(it has web:9090\)"):
        PortForward(admin, "monitoring/prometheus:9191").start()


# -- the whole plugin, on --rollout-platform kubernetes ----------------------------------------------------


def test_an_slo_test_on_kubernetes_fails_closed_when_its_workers_cannot_be_reached(
    pytester: pytest.Pytester, control_plane: ControlPlane, prometheus_in_cluster: str, admin: Any
) -> None:
    pytester.makepyfile(
        test_shop="""
        import pytest

        @pytest.mark.slo(rps=200, hold="2s", ramp="0s")
        def test_upgrade(rollout):
            rollout.deploy(image="shop/app:v1", replicas=2)
            assert rollout.url.startswith("http://target.rollout-")
            rollout.ramp()
            rollout.upgrade(image="shop/app:v2")
            rollout.verify()
        """
    )
    result = pytester.runpytest_subprocess(
        "--rollout-platform=kubernetes",
        f"--rollout-kubeconfig={control_plane.kubeconfig}",
        f"--rollout-prometheus-service={prometheus_in_cluster}",
        "--rollout-kube-timeout=30s",
        "--rollout-report=report.json",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*did not answer GET /status through the API server's pod proxy*"])
    report = json.loads((pytester.path / "report.json").read_text())
    (entry,) = report["tests"]
    assert entry["platform"] == "kubernetes" and entry["passed"] is False
    ready = [e for e in entry["events"] if e["action"] == "ready"]
    assert len(ready) == 2  # the target's pods, seen becoming ready during deploy
    # the run's namespace went with it
    deadline = time.monotonic() + 60
    while True:
        left = [
            n.metadata.name
            for n in k8s().CoreV1Api(admin).list_namespace(label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}").items
        ]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert left == []


def test_ctrl_c_during_a_kubernetes_run_still_deletes_its_namespace(
    pytester: pytest.Pytester, control_plane: ControlPlane, admin: Any
) -> None:
    import signal
    import subprocess
    import sys

    pytester.makepyfile(
        test_shop="""
        import time, pytest

        @pytest.mark.slo(rps=100, hold="2s", ramp="0s")
        def test_upgrade(rollout):
            rollout.deploy(image="shop/app:v1", replicas=2)
            print("DEPLOYED", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-s",
            "-p",
            "no:cacheprovider",
            "--rollout-platform=kubernetes",
            f"--rollout-kubeconfig={control_plane.kubeconfig}",
            "--prometheus-url=http://127.0.0.1:9",
        ],  # fmt: skip
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "DEPLOYED" in line:
            break
    core = k8s().CoreV1Api(admin)
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    (namespace,) = [
        n.metadata.name
        for n in core.list_namespace(label_selector=selector).items
        if n.status.phase == "Active" and "test_shop.py" in (n.metadata.annotations or {}).get(ANN_TEST, "")
    ]
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    deadline = time.monotonic() + 60
    while namespace in [n.metadata.name for n in core.list_namespace(label_selector=selector).items]:
        assert time.monotonic() < deadline, f"namespace {namespace} outlived the interrupted run"
        time.sleep(0.5)


# -- a whole SLO test on kubernetes, with real workers in the stand-in pod network -------------------------


@pytest.fixture
def pod_network(control_plane: ControlPlane) -> Any:
    from podnet import PodNetwork

    if control_plane.pod_network is None:
        why = PodNetwork.unavailable() or "the pod network was not made"
        pytest.skip(f"real worker pods need the stand-in pod network: {why}")
    return control_plane.pod_network


def test_a_whole_slo_test_runs_on_kubernetes_with_real_workers_behind_the_pod_proxy(
    pytester: pytest.Pytester, control_plane: ControlPlane, pod_network: Any, admin: Any, tmp_path: Path
) -> None:
    """Deploy and upgrade through the real Deployment controller; the fleet's pods are real workers.

    The plugin drives them only through the API server's pod proxy (start, phases, totals); they send
    real requests to the Service's DNS name, which resolves (inside the pod network) to the example
    app; Prometheus scrapes them by pod IP, labelled as a cluster Prometheus would label them.
    """
    from podnet import WorkerKubelet

    from pytest_rollout.judge.prometheus import LocalPrometheus
    from pytest_rollout.procs import ProcessSet

    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (scripts/setup installs it)")
    procs = ProcessSet(tmp_path)
    prometheus = LocalPrometheus(procs, tmp_path, sd_dir=tmp_path / "sd")
    core = k8s().CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": "e2e"}})
    try:
        prometheus.start()
        pod_network.serve_service("target.e2e.svc", 8080, "--delay-ms", "2")
        for version in ("v1", "v2"):
            docs = list(yaml.safe_load_all((EXAMPLES / "app-v1.yaml").read_text()))
            docs[0]["spec"]["minReadySeconds"] = 2  # kwok readies pods at once: make the rollout take seconds
            docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] = f"shop/app:{version}"
            docs[1]["metadata"]["name"] = "target"  # the Service: target.e2e.svc inside the pod network
            (pytester.path / f"{version}.yaml").write_text(yaml.safe_dump_all(docs))
        pytester.makepyfile(
            test_shop="""
            import pytest

            @pytest.mark.slo(rps=800, error_rate=0.01, ramp="2s", hold="4s")
            def test_upgrade(rollout):
                rollout.deploy(manifests=["v1.yaml"])
                rollout.ramp()
                rollout.upgrade(manifests=["v2.yaml"])
            """
        )
        with WorkerKubelet(admin, pod_network, tmp_path / "sd") as kubelet:
            result = pytester.runpytest_subprocess(
                "--rollout-platform=kubernetes",
                f"--rollout-kubeconfig={control_plane.kubeconfig}",
                "--rollout-kube-context=rollout",
                "--rollout-namespace=e2e",
                f"--prometheus-url={prometheus.url}",
                "--rollout-worker-rps=250",
                "--rollout-worker-image=pytest-rollout-worker:e2e",
                "--rollout-rps-scale=0.5",  # 800 rps as declared, 400 asked
                "--rollout-kube-timeout=30s",
                "--rollout-upgrade-timeout=120s",
                "--rollout-report=report.json",
                "-p",
                "no:cacheprovider",
                timeout=300,
            )
        result.assert_outcomes(passed=1)
        assert len(kubelet.started) == 2  # 400 rps at 250 per worker: two worker pods, each a real process
        assert set(kubelet.images.values()) == {"pytest-rollout-worker:e2e"}
        (record,) = json.loads((pytester.path / "report.json").read_text())["tests"]
        assert record["platform"] == "kubernetes" and record["workers"] == 2 and record["engine"] == "fast"
        assert record["declared_rps"] == 800 and record["requested_rps"] == 400
        for name in ("baseline", "upgrade", "after"):
            phase = record["phases"][name]
            # every request was due, sent and answered; Prometheus and the workers' own totals (read
            # through the pod proxy) agree exactly
            assert phase["errors"] == 0 and phase["requests"] == phase["fleet_requests"] > 0
        assert record["phases"]["baseline"]["requests"] == 1600
        # the upgrade phase spans the real controller's rollout (maxSurge 1, maxUnavailable 0, minReadySeconds
        # 2): three new pods ready, three old ones gone, one at a time
        assert record["phases"]["upgrade"]["end"] - record["phases"]["upgrade"]["start"] >= 4.0
        ready = {
            e["replica"]
            for e in record["events"]
            if e["action"] == "ready" and e["at"] >= record["phases"]["upgrade"]["start"]
        }
        gone = {e["replica"] for e in record["events"] if e["action"] == "exit"}
        assert len(ready) == 3 and len(gone) == 3, record["events"]
    finally:
        delete_namespace(admin, "e2e")
        assert procs.stop_all() == []


def test_worker_pods_obey_only_the_runs_token_through_the_pod_proxy(
    platforms: list[KubePlatform], settings: KubeSettings, pod_network: Any, admin: Any, tmp_path: Path
) -> None:
    """Real workers behind the API server's pod proxy: the token passes the proxy; without it nothing moves."""
    from podnet import WorkerKubelet

    platform = make(platforms, settings, "guard")
    platform.deploy(image_target("shop/app:v1", replicas=1), lambda e: None)
    fleet = platform.make_fleet("guard", 1, Aim.at(platform.url))
    (tmp_path / "sd").mkdir()
    with WorkerKubelet(admin, pod_network, tmp_path / "sd"):
        fleet.start()  # every worker answered GET /status with the token, through the proxy
        (pod,) = fleet.pods
        resource = f"/api/v1/namespaces/{platform.namespace}/pods/{pod}:8089/proxy"
        now = time.time()
        plan = {"url": platform.url + "/", "segments": [[None, 50, 50]], "start_at": now, "deadline": now + 5}
        for headers, expected in (({}, 401), ({TOKEN_HEADER: "not-the-token"}, 403)):
            for method, path, body in (("POST", "/start", plan), ("POST", "/quit", {}), ("GET", "/status", None)):
                status, raw = raw_request(platform.api, method, resource + path, body, 10.0, headers)
                assert status == expected, (path, raw)
        status = fleet._call(pod, "GET", "/status")
        assert status["state"] == "idle" and status["scheduled"] == 0  # nothing was started or stopped
        # a plan for anything but the run's Service is refused by the worker itself, even with the token
        elsewhere = dict(plan, url="http://198.51.100.7:80/")
        status, raw = raw_request(
            platform.api, "POST", resource + "/start", elsewhere, 10.0, {TOKEN_HEADER: fleet.token}
        )
        assert status == 400 and b"may load only" in raw
