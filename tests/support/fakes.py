"""Fakes of the platform, the fleet, Prometheus and pytest's config, so a Rollout runs without any process.

Named fakes on purpose: they hold the protocols (``Platform``, ``Fleet``, the
Prometheus client's calls, the kubernetes fleet's ``FleetCluster``) and keep exact
books, but nothing listens and no request is sent. The fake fleet "sends" exactly what its plan schedules; the
fake Prometheus answers each phase's queries from those books (every request
ok, 2 ms each), so a run judged on them is held unless a test makes it fail.
The real parts are exercised by the component, end-to-end and kubernetes tiers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy
import pytest

from pytest_rollout.errors import KubernetesError, UpgradeFailed
from pytest_rollout.judge.prometheus import PrometheusAPI
from pytest_rollout.load.fleet import FleetTotals
from pytest_rollout.load.protocol import Aim, Plan
from pytest_rollout.load.replies import ClassCounts, PhaseTotals, WorkerTotals
from pytest_rollout.load.schedule import Segment, expected_count
from pytest_rollout.platforms.base import TargetSpec, UpgradeEvent, UpgradeResult
from pytest_rollout.platforms.kubernetes.fleet import FleetCluster, FleetPod, ProxyReply
from pytest_rollout.plugin import hookspecs
from pytest_rollout.plugin.session import Settings

__all__ = ["FakeFleet", "FakeFleetCluster", "FakePlatform", "FakePrometheus", "fake_config", "FakeSession"]

SCRAPE_S = 0.25


class FakeFleet:
    """The Fleet protocol with books instead of workers."""

    start_lead_s = 0.05
    edge_lead_s = 0.0
    discovery_s = 1.0

    def __init__(self, size: int, aim: Aim) -> None:
        self.size = size
        self.aim = aim
        self.plan: Plan | None = None
        self.segments: tuple[Segment, ...] = ()
        self.boundaries: list[tuple[str, float]] = []
        self.stopped_at: float | None = None
        self.calls: list[str] = []
        self.die_at: float | None = None  # a worker "dies" from then on
        self.shut = False
        self.edges: dict[str, float] = {}
        self.placement: dict[str, str] = {f"worker-{i}": "fake-node" for i in range(size)}

    def discovery_hint(self, sd_dir: Path) -> str:
        return "(fake)"

    def start(self) -> None:
        self.calls.append("start")

    def scrape_targets(self) -> list[dict[str, Any]]:
        return []

    def begin(self, plan: Plan) -> list[str]:
        self.calls.append("begin")
        self.plan = plan
        self.segments = plan.segments
        self.boundaries = list(plan.phases)
        return ["fake"] * self.size

    def announce(self, phase: str, at: float) -> None:
        self.calls.append(f"announce {phase}")
        self.boundaries.append((phase, at))
        self.edges[phase] = 0.0

    def clocks(self) -> list[float]:
        return [0.0] * self.size

    def dead(self) -> list[str]:
        if self.die_at is not None and time.time() >= self.die_at:
            return ["fake-worker-0 exit code -9"]
        return []

    def stop_load(self) -> None:
        self.calls.append("stop")
        if self.stopped_at is None:
            self.stopped_at = time.time()

    def drain(self, settle_s: float) -> None:
        self.calls.append("drain")

    def count(self, phase: str) -> int:
        """Requests due in *phase*: from its boundary to the next one, or to the stop."""
        assert self.plan is not None
        bounds = sorted(self.boundaries, key=lambda b: b[1])
        names = [n for n, _ in bounds]
        if phase not in names:
            return 0
        i = names.index(phase)
        start = bounds[i][1]
        end = bounds[i + 1][1] if i + 1 < len(bounds) else (self.stopped_at or time.time())
        end = min(end, self.stopped_at or end)
        t0 = self.plan.start_at
        return round(expected_count(self.segments, start - t0, max(start, end) - t0))

    def totals(self, settle_s: float = 10.0) -> FleetTotals:
        phases = {name: PhaseTotals(ClassCounts(ok=self.count(name))) for name, _ in self.boundaries}
        return FleetTotals([WorkerTotals(phases=phases)])

    def shutdown(self) -> None:
        self.calls.append("shutdown")
        self.shut = True


class FakePlatform:
    """The Platform protocol with no replicas: deploy and upgrade only tell their events."""

    name = "fake"
    ready_timeout_s = 5.0
    desired_replicas: int | None = None
    fleet_cpus: Sequence[int] = ()

    def __init__(self, upgrade_s: float = 0.2, fail_upgrade: str | None = None) -> None:
        self.upgrade_s = upgrade_s
        self.fail_upgrade = fail_upgrade
        self.fleets: list[FakeFleet] = []
        self.calls: list[str] = []

    @property
    def url(self) -> str:
        return "http://fake.invalid:8080"

    def deploy(self, target: TargetSpec, on_event: Callable[[UpgradeEvent], None]) -> None:
        self.calls.append(f"deploy {target.version}")
        on_event(UpgradeEvent(time.time(), "ready", f"{target.version}-0"))

    def upgrade(
        self,
        target: TargetSpec,
        max_surge: int | str | None,
        max_unavailable: int | str | None,
        on_event: Callable[[UpgradeEvent], None],
    ) -> UpgradeResult:
        self.calls.append(f"upgrade {target.version}")
        start = time.time()
        time.sleep(self.upgrade_s)
        if self.fail_upgrade is not None:
            raise UpgradeFailed(self.fail_upgrade)
        on_event(UpgradeEvent(time.time(), "ready", f"{target.version}-0"))
        return UpgradeResult(start=start, end=time.time(), replaced=1, events=())

    def scrape_targets(self, run_id: str) -> list[dict[str, Any]]:
        return []

    def make_fleet(self, run_id: str, size: int, aim: Aim) -> FakeFleet:
        fleet = FakeFleet(size, aim)
        self.fleets.append(fleet)
        return fleet

    def rollback(self, on_event: Callable[[UpgradeEvent], None]) -> str:
        self.calls.append("rollback")
        return "rolled back (fake)"

    def describe(self) -> str:
        return "fake"

    def keep(self) -> None:
        self.calls.append("keep")

    def teardown(self) -> list[str]:
        self.calls.append("teardown")
        return []


class FakePrometheus:
    """Answers the run's PromQL from the fake fleet's books (phase read off the ``phase="..."`` selector)."""

    url = "http://127.0.0.1:9"  # live lines ask a real client here: refused at once, and a live line is skipped

    def __init__(self, platform: FakePlatform, routes: Mapping[str, float] | None = None) -> None:
        self.platform = platform
        #: a traffic mix: each route's share of every phase's requests (its series carry route="<name>")
        self.routes = dict(routes or {})

    def _fleet(self) -> FakeFleet:
        return self.platform.fleets[-1]

    def _count(self, expr: str) -> int:
        match = re.search(r'phase="([^"]+)"', expr)
        count = self._fleet().count(match.group(1)) if match else 0
        route = re.search(r'route="((?:[^"\\]|\\.)*)"', expr)
        if route is None:
            return count
        name = re.sub(r"\\(.)", r"\1", route.group(1))
        return round(count * self.routes.get(name, 0.0))

    def _by_route(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """``sum by (route, ...)``: one series per route of the mix (the label values as workers write them)."""
        out: list[tuple[dict[str, str], float]] = []
        for name, share in self.routes.items():
            n = float(round(self._count(expr) * share))
            if expr.startswith("sum by (route, class)"):
                out.append(({"route": name, "class": "ok"}, n))
            elif expr.startswith("sum by (route, le)"):
                out.extend([({"route": name, "le": "0.0025"}, n), ({"route": name, "le": "+Inf"}, n)])
            else:
                out.append(({"route": name}, 0.0))
        return out

    def wait_for_targets(self, run_id: str, count: int, timeout_s: float) -> int:
        return count

    def scrape_interval(self, run_id: str, default: float = SCRAPE_S) -> float:
        return SCRAPE_S

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        if expr.startswith("timestamp("):
            return [({"worker": str(i)}, time.time() + 1.0) for i in range(self._fleet().size)]
        if expr.startswith("sum by (route"):
            return self._by_route(expr)
        if expr.startswith("histogram_quantile(") and "sum by (route, le)" in expr:
            return [({"route": name}, 0.002) for name in self.routes]
        if expr.startswith("sum by (class)"):
            return [({"class": "ok"}, float(self._count(expr)))]
        if expr.startswith("sum by (le)"):
            n = float(self._count(expr))
            return [({"le": "0.0025"}, n), ({"le": "+Inf"}, n)]
        return []

    def scalar(self, expr: str, at: float) -> float | None:
        if expr.startswith("histogram_quantile("):
            return 0.002
        if expr.startswith("sum(rollout_requests"):
            return float(self._count(expr))
        return 0.0

    def samples(self, expr: str, at: float) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        fleet = self._fleet()
        assert fleet.plan is not None
        t, times = fleet.plan.start_at - 1.0, []
        while t <= at:
            times.append((t, 1.0))
            t += SCRAPE_S
        return [({"worker": str(i)}, times) for i in range(fleet.size)]

    def series(self, expr: str, start: float, end: float, step_s: float) -> list[tuple[float, float]]:
        return []


def _is_prometheus_api(fake: FakePrometheus) -> PrometheusAPI:
    """The fake holds the run's Prometheus seam: mypy (scripts/check) fails here the day it drifts."""
    return fake


class FakeFleetCluster:
    """The kubernetes fleet's port (``FleetCluster``) with no API server: pods the test lists, answers it sets.

    ``pods`` answers *worker_pods* to the label *selector* given here, nothing to another; a call to a pod
    answers from *answers* (``(method, path)`` -> JSON) as a worker would, or, for a pod with no answer set or
    one of *unreachable*, a 503 Status as the API server's pod proxy does when nothing listens. The Deployment
    becomes available (``follow``) when *available*; ``delete_workers`` removes every pod, or raises *refusal*.
    What the fleet applied, called and deleted is in :attr:`applied`, :attr:`calls` and :attr:`deleted`.
    """

    def __init__(
        self,
        selector: str,
        worker_pods: Sequence[FleetPod] = (),
        answers: Mapping[tuple[str, str], object] | None = None,
        available: bool = True,
        unreachable: Sequence[str] = (),
        refusal: KubernetesError | None = None,
    ) -> None:
        self.selector = selector
        self.worker_pods = list(worker_pods)
        self.answers = dict(answers or {})
        self.available = available
        self.unreachable = set(unreachable)
        self.refusal = refusal
        self.applied: list[list[dict[str, Any]]] = []
        self.calls: list[tuple[str, int, str, str, object, dict[str, str]]] = []  # pod, port, method, path, ...
        self.deleted: list[str] = []

    def control_from(self) -> tuple[list[str] | None, str]:
        return ["10.0.0.1/32"], "the API server at 10.0.0.1/32"

    def apply(self, docs: Sequence[dict[str, Any]]) -> None:
        self.applied.append(list(docs))

    def follow(self, deployment: str, deadline: float) -> tuple[bool, str]:
        if self.available:
            return True, f'deployment "{deployment}" successfully rolled out'
        return False, f"deployment {deployment}: 0 of {len(self.worker_pods)} new replicas updated"

    def explain(self, deployment: str) -> str:
        return f"(what is known of {deployment})"

    def pods(self, selector: str) -> list[FleetPod]:
        return list(self.worker_pods) if selector == self.selector else []

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
        self.calls.append((pod, port, method, path, body, dict(headers)))
        if pod in self.unreachable or (method, path) not in self.answers:
            status = {"kind": "Status", "code": 503, "message": f"error trying to reach service: dial {pod}:{port}"}
            return ProxyReply(503, json.dumps(status).encode())
        return ProxyReply(200, json.dumps(self.answers[method, path]).encode())

    def delete_workers(self, deployment: str) -> None:
        if self.refusal is not None:
            raise self.refusal
        self.deleted.append(deployment)
        self.worker_pods = []


def _is_fleet_cluster(fake: FakeFleetCluster) -> FleetCluster:
    """The fake holds the kubernetes fleet's port: mypy (scripts/check) fails here the day it drifts."""
    return fake


class FakeSession:
    """What a Rollout needs from the plugin's session."""

    def __init__(self, root: Path, platform: FakePlatform, **settings: Any) -> None:
        self.settings = Settings(platform="fake", **settings)
        self.root = root
        self.sd_dir = root / "sd"
        self.sd_dir.mkdir(parents=True, exist_ok=True)
        self.baseline = None
        self.client = FakePrometheus(platform)

    def prometheus(self) -> tuple[FakePrometheus, None]:
        return self.client, None


class _Hooks:
    def __init__(self, platform: FakePlatform, log: list[str]) -> None:
        self.platform = platform
        self.log = log

    @pytest.hookimpl
    def pytest_rollout_make_platform(self, config: Any, name: str, run_dir: Any, procs: Any, rollout: Any) -> Any:
        return self.platform if name == "fake" else None

    @pytest.hookimpl
    def pytest_rollout_upgrade(
        self, rollout: Any, platform: Any, target: Any, max_surge: Any, max_unavailable: Any
    ) -> Any:
        return platform.upgrade(target, max_surge, max_unavailable, rollout.note_event)

    @pytest.hookimpl
    def pytest_rollout_phase_start(self, rollout: Any, phase: str, at: float) -> None:
        self.log.append(f"start {phase}")

    @pytest.hookimpl
    def pytest_rollout_phase_end(self, rollout: Any, phase: str, start: float, end: float) -> None:
        self.log.append(f"end {phase}")


def fake_config(root: Path, platform: FakePlatform, log: list[str]) -> Any:
    """A stand-in for pytest.Config: the plugin's hookspecs with the fake platform's hooks, no terminal."""
    pm = pluggy.PluginManager("pytest")
    pm.add_hookspecs(hookspecs)
    pm.register(_Hooks(platform, log))
    return SimpleNamespace(
        hook=pm.hook,
        pluginmanager=SimpleNamespace(get_plugin=lambda name: None),
        get_verbosity=lambda: 0,
        rootpath=root,
    )
