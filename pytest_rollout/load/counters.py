"""A worker's own counts: per phase in which each request was due, by outcome class, with latency histograms.

Kept in-process with no locks and no label look-ups; read at scrape time by the worker's collector and
at the end by the controller (GET /totals, a :class:`~pytest_rollout.load.replies.WorkerTotals`), as the
cross-check for Prometheus."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

from pytest_rollout.load.histogram import Histogram
from pytest_rollout.load.protocol import CLASSES, DROPPED
from pytest_rollout.load.replies import ClassCounts, PhaseTotals, WorkerTotals

__all__ = ["PhaseStats", "WorkerStats"]


class PhaseStats:
    """Counts for the requests *due* in one phase.

    Every request is sent on time or not at all: one the worker could not send
    within :data:`LATE_S` of when it was due (it fell behind: no CPU, a pause)
    is ``dropped`` and counted ``late`` too, and so is one that found the
    in-flight cap full. Sending the overdue ones in a burst would load the
    target with a spike the plan never asked for, and blame the release for
    the latency it causes. ``hist`` holds the latency of the requests sent.

    ``resent`` counts requests sent a second time, as real clients do, because
    the reused keep-alive connection they went out on closed before any byte
    of the answer came back (see :mod:`pytest_rollout.load.engine`). Each is
    counted once in ``by_class``, by the outcome of its second try.
    """

    __slots__ = ("by_class", "hist", "late", "resent")

    def __init__(self) -> None:
        self.by_class = [0] * len(CLASSES)
        self.hist = Histogram()
        self.late = 0
        self.resent = 0

    def totals(self) -> PhaseTotals:
        return PhaseTotals(
            by_class=ClassCounts.of(self.by_class),
            late=self.late,
            resent=self.resent,
            histogram=tuple(self.hist.to_list()),
            latency_sum_s=self.hist.sum,
        )


class WorkerStats:
    """Counters a worker keeps in-process: no locks, no label look-ups.

    Every request is attributed to the phase in which it was *due* (not the one
    in which it ended), so per-phase totals are exact whatever the scrape
    timing. Phase starts arrive with the plan or later through ``POST /phase``;
    requests due before the first phase count under ``"-"``. Within a phase,
    each route of the mix counts apart (``phase_stats[phase][route]``, routes
    by their index in the plan); a phase's totals are the sum over its routes.
    """

    __slots__ = (
        "phase_times",
        "phase_stats",
        "phase_names",
        "route_names",
        "scheduled",
        "late",
        "max_lag",
        "inflight",
        "max_inflight_seen",
        "total",
        "_lo",
        "_hi",
        "_cur",
    )

    def __init__(self, routes: Sequence[str] = ("-",)) -> None:
        self.route_names: list[str] = list(routes)
        self.phase_times: list[float] = [-math.inf]  # loop times, ascending
        self.phase_stats: list[list[PhaseStats]] = [self._phase()]
        self.phase_names: list[str] = ["-"]
        self.scheduled = 0
        self.late = 0
        self.max_lag = 0.0
        self.inflight = 0
        self.max_inflight_seen = 0
        self.total = 0
        self._cache(-math.inf)

    def _phase(self) -> list[PhaseStats]:
        return [PhaseStats() for _ in self.route_names]

    def set_routes(self, names: Sequence[str]) -> None:
        """Count per route of *names* (the plan's, in order): before any request is counted."""
        if self.total or self.scheduled:
            raise ValueError("the routes are set before the first request")
        self.route_names = list(names)
        self.phase_stats = [self._phase() for _ in self.phase_names]
        self._cache(self._lo)

    def _cache(self, due: float) -> list[PhaseStats]:
        """The phase *due* falls in, remembered with its bounds: nearly every request falls in the last one."""
        i = bisect_right(self.phase_times, due) - 1
        self._lo = self.phase_times[i]
        self._hi = self.phase_times[i + 1] if i + 1 < len(self.phase_times) else math.inf
        self._cur = self.phase_stats[i]
        return self._cur

    def add_phase(self, name: str, loop_start: float) -> None:
        """Requests due at or after *loop_start* (loop time) count for phase *name*."""
        if name in self.phase_names:
            raise ValueError(f"phase {name!r} already started")
        if loop_start < self.phase_times[-1]:
            raise ValueError(f"phase {name!r} starts before phase {self.phase_names[-1]!r}")
        self.phase_times.append(loop_start)
        self.phase_stats.append(self._phase())
        self.phase_names.append(name)
        self._cache(self._lo)

    def phase_of(self, due: float) -> list[PhaseStats]:
        """The counts of the phase *due* falls in, one per route."""
        if self._lo <= due < self._hi:
            return self._cur
        return self._cache(due)

    def record(self, klass: int, due: float, latency: float | None, route: int = 0) -> None:
        stats = self.phase_of(due)[route]
        stats.by_class[klass] += 1
        if latency is not None:
            stats.hist.observe(latency)
        self.total += 1

    def fell_behind(self, due: float, route: int = 0) -> None:
        """The request due at *due* could not be sent on time: it is not sent (late, and dropped)."""
        self.late += 1
        self.phase_of(due)[route].late += 1
        self.record(DROPPED, due, None, route)

    def resend(self, due: float, route: int = 0) -> None:
        """The request due at *due* is being sent a second time (its reused connection closed unanswered)."""
        self.phase_of(due)[route].resent += 1

    def by_route(self) -> dict[str, dict[str, PhaseTotals]]:
        """Each phase's counts so far per route: ``{phase: {route: totals}}``, phases in the order they started."""
        return {
            name: {route: st.totals() for route, st in zip(self.route_names, routes, strict=True)}
            for name, routes in zip(self.phase_names, self.phase_stats, strict=True)
        }

    def by_phase(self, routes: dict[str, dict[str, PhaseTotals]] | None = None) -> dict[str, PhaseTotals]:
        """Each phase's counts so far over all routes, in the order the phases started."""
        by_route = self.by_route() if routes is None else routes
        return {name: sum(per.values(), PhaseTotals()) for name, per in by_route.items()}

    def totals(self, state: str, engine: str | None) -> WorkerTotals:
        """What ``GET /totals`` answers, for a worker in *state* running *engine*."""
        routes = self.by_route()
        return WorkerTotals(
            phases=self.by_phase(routes),
            routes=routes,
            scheduled=self.scheduled,
            late=self.late,
            max_lag_s=self.max_lag,
            inflight=self.inflight,
            max_inflight_seen=self.max_inflight_seen,
            state=state,
            engine=engine,
        )
