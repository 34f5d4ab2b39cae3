"""The kubernetes platform on a three-node kind cluster built here: the walkthrough as a user runs it
(examples/kind/run.sh, unchanged), and what one node could not show: a fleet loading from both workers, a
target whose pods sit on both, and a Service's traffic crossing nodes, judged as on one node.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import listening
from kindtier import ROOT, KindCluster
from realnode import app_manifests, assert_clean_upgrade, run_namespaces, run_release

pytestmark = [pytest.mark.kind, pytest.mark.slow]

#: Two workers: the fleet spreads one on each kind worker node (topology spread by hostname).
OPTIONS = ("--rollout-workers=2",)


def _options(cluster: KindCluster) -> tuple[str, ...]:
    return (f"--rollout-kube-context={cluster.context}", *OPTIONS)


def _workers(cluster: KindCluster) -> list[str]:
    out = subprocess.run(
        ["kubectl", "--context", cluster.context, "get", "nodes", "-o", "json"],
        env=cluster.env, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    nodes = json.loads(out)["items"]
    return sorted(
        n["metadata"]["name"] for n in nodes if "node-role.kubernetes.io/control-plane" not in n["metadata"]["labels"]
    )


@pytest.fixture(autouse=True)
def _no_earlier_run(kind_cluster: KindCluster) -> None:
    """Each test starts with no namespace of an earlier run still present."""
    assert run_namespaces(kind_cluster.kubeconfig) == []


def test_the_walkthrough_runs_as_written(kind_cluster: KindCluster) -> None:
    """examples/kind/run.sh, unchanged, with the node image passed as kind users pass one (KIND_NODE_IMAGE
    becomes --image): it finds the cluster, builds and loads the images with `kind load docker-image`, installs
    Prometheus, and runs examples/kind's SLO tests on context kind-pytest-rollout: the good upgrade passes, the
    slow release is caught and rolled back."""
    report, junit = ROOT / "rollout-report.json", ROOT / "rollout-junit.xml"
    for left in (report, junit):
        left.unlink(missing_ok=True)
    before = listening()
    done = subprocess.run(
        ["bash", "examples/kind/run.sh"], cwd=ROOT, env=kind_cluster.env,
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    try:
        assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:])
        assert "2 passed" in done.stdout, done.stdout[-4000:]
        tests = {t["nodeid"].split("::")[-1]: t for t in json.loads(report.read_text())["tests"]}
        good, slow = tests["test_upgrade_v1_to_v2"], tests["test_slow_release_is_caught_and_rolled_back"]
        assert good["result"] == "passed" and good["platform"] == "kubernetes"
        assert any(v["outcome"] == "broken" for v in slow["verdicts"]), slow["verdicts"]
        # rolled back, and the rollback finished: the note is written only once the Deployment's v1 pods
        # are updated and available again (else it says "started but did not finish")
        rollback = json.dumps(slow["rollback"])
        assert "rolled back deployment shop to the template of revision" in rollback, rollback
        assert "pytest-rollout-example-app:1" in rollback, rollback
        assert 'name="test_upgrade_v1_to_v2"' in junit.read_text()
    finally:
        for left in (report, junit):
            left.unlink(missing_ok=True)
    assert listening() - before == set() and run_namespaces(kind_cluster.kubeconfig) == []


def test_a_target_on_both_workers_loaded_from_both_keeps_exact_totals(
    pytester: pytest.Pytester, kind_cluster: KindCluster
) -> None:
    """A graceful release whose three pods sit on both kind workers, loaded by a fleet with a worker on each:
    zero errors, and Prometheus's totals equal the fleet's own in every phase, with the traffic crossing nodes
    through the Service; the upgrade lasts until the last old pod has exited. (Over keep-alive connections:
    the node tier runs the other graceful releases, on one node.)"""
    workers = _workers(kind_cluster)
    assert len(workers) == 2, workers
    v1, v2 = app_manifests("1", spread=True), app_manifests("2", spread=True)
    result, test, _ = run_release(
        pytester, kind_cluster.kubeconfig, v1, v2, read_back=True, options=_options(kind_cluster)
    )
    assert test["outcome"] == "passed", result.stdout.str()[-3000:]
    assert sorted(set(test["fleet"]["nodes"].values())) == workers, test["fleet"]  # a worker on each node
    after = json.loads((pytester.path / "after.json").read_text())
    assert after["versions"] == ["2", "2", "2"] and sorted(set(after["nodes"])) == workers, after
    assert_clean_upgrade(test)
    result.stdout.fnmatch_lines([f"*2 workers on 2 nodes ({', '.join(workers)})*"])


def test_without_pre_stop_the_kube_proxy_race_is_broken_across_nodes(
    pytester: pytest.Pytester, kind_cluster: KindCluster
) -> None:
    """The release that exits at once on SIGTERM with no preStop (a connection per request), its pods on both
    workers: kube-proxy on every node still sends new connections to pods already gone until its rules catch
    up, so the upgrade is broken on error_rate there, as on one node; the baseline held.

    Across nodes a connection to a pod already deleted is dropped, not refused: it times out. And where the
    rules take longer to catch up than the upgrade lasts past its last termination (about 5 s was seen here,
    three kind nodes and the load on 2 cores), the errors go on into ``after``, which is then broken too:
    the release's users saw them there."""
    flags = ("--no-keep-alive", "--on-sigterm", "drop")
    v1 = app_manifests("1", *flags, pre_stop_s=None, spread=True)
    v2 = app_manifests("2", *flags, pre_stop_s=None, spread=True)
    result, test, _ = run_release(pytester, kind_cluster.kubeconfig, v1, v2, options=_options(kind_cluster))
    assert result.ret == 1, result.stdout.str()[-3000:]
    broken = {(v["slo"], v["phase"]) for v in test["verdicts"] if v["outcome"] == "broken"}
    assert ("error_rate", "upgrade") in broken and {phase for _, phase in broken} <= {"upgrade", "after"}, broken
    assert test["phases"]["baseline"]["errors"] == 0
    # more failed connections than requests could have been in flight (300 rps, a few ms each): new
    # connections sent to pods already gone (refused, or timed out once the pod is deleted), not only the
    # requests the exits cut off
    failed = test["phases"]["upgrade"]["errors_by_class"]
    assert failed["connection"] + failed["timeout"] >= 10, failed
    # the failure message reads the cause off the run: errors after termination began, the pods' own facts
    result.stdout.fnmatch_lines(
        [
            "hint: the errors in upgrade came after old pods began terminating (* of 3 terminations *"
            "Those pods had no preStop sleep and a grace period of 20s.",
            "*a preStop sleep of at least the endpoint propagation time*",
        ]
    )
