"""The load of one run: the fleet started, discovered by Prometheus, given its plan, and stopped.

:func:`start_load` makes the fleet through the platform's protocol, waits
until Prometheus scrapes every worker, and sends each its share of the plan
(the phase boundaries of ramp and baseline included). :class:`LoadRun` is
what a run holds while the load lasts: it checks the fleet, stops it, lets
requests in flight end, and keeps the workers' own totals.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pytest_rollout.errors import FleetError, PrometheusError, RolloutError
from pytest_rollout.judge.prometheus import PrometheusAPI, remove_targets, write_targets
from pytest_rollout.judge.promql import last_scrape
from pytest_rollout.load.fleet import Fleet, FleetTotals
from pytest_rollout.load.launch import PlanOptions, Rate, clock_skew, start_plan
from pytest_rollout.load.mix import Request, compile_routes
from pytest_rollout.load.protocol import Aim
from pytest_rollout.load.schedule import Segment
from pytest_rollout.platforms.base import Platform
from pytest_rollout.slo import SLOSpec

__all__ = ["LoadRun", "PrometheusSource", "prometheus_or_none", "start_load"]


class PrometheusSource(Protocol):
    """Where a run gets its Prometheus client (the plugin's session): the client, and what else it started."""

    def prometheus(self) -> tuple[PrometheusAPI, object]: ...


@dataclass
class LoadRun:
    """The fleet of one run while its load lasts."""

    fleet: Fleet
    segments: tuple[Segment, ...]
    start_at: float
    engines: list[str]
    scrape_interval: float
    sd_dir: Path
    run_id: str
    totals: FleetTotals | None = None
    stopped: bool = False
    eval_at: float = field(default=0.0)  # when the final counts were all scraped
    plan_s: float = 0.0  # how long handing every worker its plan took (all at once: the slowest worker)
    clock_skew_s: float = 0.0  # the largest |worker clock - this machine's clock| measured at the start
    seed: int = 0  # what the per-request data were drawn from (with the fleet's size, they fix every request)

    def fleet_facts(self) -> dict[str, Any]:
        """What the report says about the fleet itself: its size, its seed, its start, its clocks and its phase
        edges. The seed and the size together fix every request's route and data (``${seq}`` and values in
        turn go by the worker's index among *size*): a rerun with both the same sends the same requests."""
        return {
            "workers": self.fleet.size,
            "nodes": dict(self.fleet.placement),  # worker -> the node it ran on
            "seed": self.seed,
            "plan_s": round(self.plan_s, 4),
            "clock_skew_s": round(self.clock_skew_s, 4),
            # per phase: how long after the edge the last worker heard of it (0: every worker knew ahead)
            "phase_edge_late_s": {name: round(late, 4) for name, late in self.fleet.edges.items()},
        }

    def check(self, phase: str, requested_rps: float) -> None:
        """Raise FleetError naming the workers that died."""
        dead = self.fleet.dead()
        if dead:
            raise FleetError(
                f"load not reached: {len(dead)} of {self.fleet.size} load workers died during phase "
                f"{phase} ({', '.join(dead)}); the fleet cannot hold {requested_rps:,.0f} rps"
            )

    def finish(self, prometheus: PrometheusAPI | None, settle_s: float) -> None:
        """Stop the load, let requests in flight end, and wait until Prometheus (if any) has scraped the final
        counts."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self.fleet.stop_load()
            self.fleet.drain(settle_s=settle_s)
            self._await_scrape_after(prometheus, time.time())
            self.eval_at = time.time()
            if not self.fleet.dead():
                self.totals = self.fleet.totals()
        finally:
            self.fleet.shutdown()
            remove_targets(self.sd_dir, self.run_id)

    def cut_off(self) -> None:
        """Stop at once (Ctrl-C, SIGTERM, an error), keeping what the workers counted for the report."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self.fleet.stop_load()
            self.totals = self.fleet.totals(settle_s=1.0)
        except FleetError:
            pass
        self.fleet.shutdown()
        remove_targets(self.sd_dir, self.run_id)

    def _await_scrape_after(self, prometheus: PrometheusAPI | None, after: float) -> None:
        """Wait (bounded) until Prometheus holds a sample of every worker newer than *after*."""
        if prometheus is None:
            return
        deadline = time.monotonic() + 5.0 * self.scrape_interval + 5.0
        while time.monotonic() < deadline:
            try:
                rows = prometheus.query(last_scrape(self.run_id), time.time())
            except PrometheusError:
                return
            if len(rows) >= self.fleet.size and min(v for _, v in rows) > after:
                return
            time.sleep(0.1)


def start_load(
    platform: Platform,
    client: PrometheusAPI,
    spec: SLOSpec,
    *,
    run_id: str,
    size: int,
    sd_dir: Path,
    upgrade_timeout_s: float,
    nodeid: str = "",
) -> LoadRun:
    """Start *size* workers for *spec*, wait until *client*'s Prometheus scrapes them all, and send the plan.

    The per-request data are drawn from ``spec.seed``, else from a stable hash of the test's *nodeid*, so two
    runs of the same test send the same requests. An https target whose certificate the marker's trust refuses
    is a usage error before any worker starts (:func:`~pytest_rollout.run.prepare.check_trust`)."""
    from pytest_rollout.run.prepare import check_trust

    check_trust(platform.url, spec)
    compiled = compile_routes(spec.routes or (Request(spec.method, spec.path, headers=dict(spec.headers),
                                                          body=spec.body),), spec.secret_headers)  # fmt: skip
    routes, aim = compiled.routes, Aim.of(platform.url, compiled)
    seed = spec.seed if spec.seed is not None else zlib.crc32(nodeid.encode())
    fleet = platform.make_fleet(run_id, size, aim)
    try:
        fleet.start()
        targets = fleet.scrape_targets()  # local workers are named in files; pods are found by the cluster
        if targets:
            write_targets(sd_dir, "fleet", run_id, targets)
        lb = platform.scrape_targets(run_id)
        if lb:
            write_targets(sd_dir, "lb", run_id, lb)
        seen = client.wait_for_targets(run_id, size, timeout_s=fleet.discovery_s)
    except BaseException:
        fleet.shutdown()
        raise
    scrape_interval = client.scrape_interval(run_id)
    if seen < size:
        fleet.shutdown()
        raise PrometheusError(
            f"Prometheus at {client.url} scrapes {seen} of the {size} load workers of this run "
            f"after {fleet.discovery_s:g}s. {fleet.discovery_hint(sd_dir)}"
        )
    rps = spec.requested_rps
    phases = [("baseline", spec.ramp_s)]  # seconds from the start (the climb, if any, is phase ramp)
    if spec.end_when_held is None:  # else announced when the baseline ends (PhaseClock._hold_until)
        phases.append(("between", spec.ramp_s + spec.hold_s))
    total = spec.ramp_s + spec.hold_s + upgrade_timeout_s + spec.after_s + 30.0
    options = PlanOptions(
        routes=routes,
        seed=seed,
        timeout_s=spec.timeout_s,
        max_requests=math.ceil(rps / size * total * 1.1) + 1000,
        resend_reused=spec.client != "strict",
        tls_verify=spec.tls_verify,
        tls_ca_pem=spec.tls_ca_pem,
    )
    try:
        launched = start_plan(
            fleet, platform.url + routes[0].target, Rate(rps, total, spec.ramp_s, tuple(phases)), options
        )
        skew = clock_skew(fleet)
    except BaseException:
        fleet.shutdown()
        raise
    return LoadRun(
        plan_s=launched.plan_s,
        clock_skew_s=skew,
        fleet=fleet,
        segments=launched.segments,
        start_at=launched.start_at,
        engines=launched.engines,
        scrape_interval=scrape_interval,
        sd_dir=sd_dir,
        run_id=run_id,
        seed=seed,
    )


def prometheus_or_none(session: PrometheusSource) -> PrometheusAPI | None:
    """The session's Prometheus client, or None when there is none (the verdict then says why)."""
    try:
        client, _ = session.prometheus()
    except RolloutError:
        return None
    return client
