"""Starting the load: one place that turns a plan into every worker's share, timed, for every caller.

The fixture (:func:`pytest_rollout.run.load.start_load`), the CLI
(:func:`pytest_rollout.load.attack.attack`) and the benchmarks all describe
their load as a :class:`~pytest_rollout.load.protocol.Plan` whose times count
from 0 (``start_at`` 0, the deadline and each phase's start as offsets from
it) and call :func:`launch`, which fixes the start a lead ahead of now, hands
every worker of a started fleet its share at once and says how long that took.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from pytest_rollout.load.fleet import Fleet
from pytest_rollout.load.protocol import Plan
from pytest_rollout.load.schedule import Segment

__all__ = ["Launch", "clock_skew", "launch", "steady"]


def steady(rps: float, ramp_s: float = 0.0) -> tuple[Segment, ...]:
    """The usual schedule: a climb from 0 to *rps* over *ramp_s* seconds (none when 0), then *rps* held."""
    climb = (Segment(ramp_s, 0.0, rps),) if ramp_s > 0 else ()
    return (*climb, Segment(None, rps, rps))


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
