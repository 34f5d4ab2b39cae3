"""Starting the load: one place that builds a plan and hands every worker its share, timed, for every caller.

The fixture (:func:`pytest_rollout.run.load.start_load`), the CLI
(:func:`pytest_rollout.load.attack.attack`), the benchmarks and the suite's own
helpers all start their load with :func:`start_plan`: the started fleet, the
URL, the :class:`Rate` (how much, how long, which phases: the only thing they
really differ in) and the :class:`PlanOptions` (how each request is sent: a
parameter object whose defaults are the :class:`~pytest_rollout.load.protocol.Plan`'s).
:func:`build_plan` makes the plan, its times counted from 0; :func:`launch`
fixes the start a lead ahead of now, hands every worker of the fleet its share
at once and says how long that took.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from pytest_rollout.load.fleet import Fleet
from pytest_rollout.load.mix import Route
from pytest_rollout.load.protocol import Plan, inflight_cap
from pytest_rollout.load.schedule import Segment

__all__ = ["Launch", "PlanOptions", "Rate", "build_plan", "clock_skew", "launch", "start_plan", "steady"]


def steady(rps: float, ramp_s: float = 0.0) -> tuple[Segment, ...]:
    """The usual schedule: a climb from 0 to *rps* over *ramp_s* seconds (none when 0), then *rps* held."""
    climb = (Segment(ramp_s, 0.0, rps),) if ramp_s > 0 else ()
    return (*climb, Segment(None, rps, rps))


@dataclass(frozen=True)
class Rate:
    """How much load, for how long, in which phases; times in seconds from the start.

    *rps* is held until *seconds* (no request is due at or after it), after a climb from 0 over the first
    *ramp_s* seconds, if any; the climb is phase ``ramp``, and each of *phases* (``(name, start)``, in order)
    begins at its start.
    """

    rps: float
    seconds: float  # the plan's length, the climb included
    ramp_s: float = 0.0
    phases: tuple[tuple[str, float], ...] = ()

    @property
    def segments(self) -> tuple[Segment, ...]:
        return steady(self.rps, self.ramp_s)

    @property
    def all_phases(self) -> tuple[tuple[str, float], ...]:
        """Every phase of the plan: ``ramp`` first when there is a climb, then :attr:`phases`."""
        return ((("ramp", 0.0),) if self.ramp_s > 0 else ()) + self.phases


@dataclass(frozen=True)
class PlanOptions:
    """How each request of a plan is sent: every :class:`~pytest_rollout.load.protocol.Plan` field but its target,
    times and rate, with the plan's defaults but one: *max_inflight* left out is a quarter second of each
    worker's peak rate, not the plan's fixed 1,024 (a parameter object, as httpx's ``Limits`` and ``Timeout``)."""

    routes: tuple[Route, ...] = ()  # none: GET the URL's path and query
    seed: int = 0
    timeout_s: float = 5.0
    max_inflight: int | None = None  # None: a quarter second of each worker's peak rate (inflight_cap)
    max_requests: int = 10_000_000  # each worker's
    connections: int = 0
    engine: str = "auto"
    resend_reused: bool = True
    tls_verify: bool = True
    tls_ca_pem: str | None = None


def build_plan(url: str, rate: Rate, options: PlanOptions, workers: int) -> Plan:
    """The plan of *rate* at *url*, sent as *options* say, for a fleet of *workers*; its times counted from 0."""
    return Plan(
        url=url,
        segments=rate.segments,
        start_at=0.0,
        deadline=rate.seconds,
        routes=options.routes,
        seed=options.seed,
        timeout_s=options.timeout_s,
        max_requests=options.max_requests,
        max_inflight=inflight_cap(rate.rps / workers) if options.max_inflight is None else options.max_inflight,
        connections=options.connections,
        phases=rate.all_phases,
        engine=options.engine,
        resend_reused=options.resend_reused,
        tls_verify=options.tls_verify,
        tls_ca_pem=options.tls_ca_pem,
    )


def start_plan(
    fleet: Fleet, url: str, rate: Rate, options: PlanOptions | None = None, lead_s: float | None = None
) -> Launch:
    """Build the plan of *rate* at *url* (:func:`build_plan`) and :func:`launch` it on the started *fleet*."""
    return launch(fleet, build_plan(url, rate, options or PlanOptions(), fleet.size), lead_s)


@dataclass(frozen=True)
class Launch:
    """A plan handed out: when its first request was due, the engine each worker runs, and how long it took."""

    plan: Plan  # as sent, in Unix times (each worker got its share of plan.segments and its own arrival phase)
    engines: list[str]
    plan_s: float  # handing every worker its plan (all at once: as long as the slowest worker)

    @property
    def start_at(self) -> float:
        return self.plan.start_at

    @property
    def end_at(self) -> float:
        """The plan's deadline: no request is due at or after it."""
        return self.plan.deadline

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self.plan.segments


def launch(fleet: Fleet, plan: Plan, lead_s: float | None = None) -> Launch:
    """Start *plan* (its times counted from 0) *lead_s* from now on every worker of the started *fleet*.

    *lead_s* defaults to the fleet's own :attr:`~pytest_rollout.load.fleet.Fleet.start_lead_s`: time for every
    worker to get its plan before the first request is due.
    """
    if plan.start_at != 0.0:
        raise ValueError(f"launch() takes a plan whose times count from 0, not from {plan.start_at}")
    start = time.time() + (fleet.start_lead_s if lead_s is None else lead_s)
    timed = replace(
        plan,
        start_at=start,
        deadline=start + plan.deadline,
        phases=tuple((name, start + at) for name, at in plan.phases),
    )
    began = time.monotonic()
    engines = fleet.begin(timed)
    return Launch(plan=timed, engines=engines, plan_s=time.monotonic() - began)


def clock_skew(fleet: Fleet) -> float:
    """The largest distance, in seconds, of any worker's clock from this machine's (see ``Fleet.clocks``)."""
    return max((abs(offset) for offset in fleet.clocks()), default=0.0)
