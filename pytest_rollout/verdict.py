"""From per-phase measurements to a verdict. Pure logic, no I/O.

The gate fails closed. For each phase, before any SLO is judged, the
evidence is checked; when it falls short every SLO of that phase is
``insufficient data``, which fails the test. The minimum evidence:

- Prometheus scraped every worker of the run during the phase, and never
  went more than :data:`MAX_GAP_INTERVALS` scrape intervals without a
  successful scrape of any of them (counting from the phase's start and to
  its end): two scrapes in a row may fail, three may not;
- the phase's request count in Prometheus agrees with the fleet's own count
  within :data:`CROSS_CHECK_TOLERANCE` (relative) or 3 requests, whichever is
  larger. Both count the requests *due* in the phase, so they agree exactly
  unless Prometheus lost data;
- ``error_rate <= B`` needs at least ``ceil(3 / B)`` requests in the phase
  (with no errors in n requests, 3/n is the 95% upper confidence bound: the
  "rule of three"); a bound of 0 needs at least 100 requests and no errors;
- a latency quantile q needs at least ``ceil(10 / (1 - q))`` requests
  (ten requests in the tail beyond it): 20 for p50, 100 for p90, 1,000 for p99,
  10,000 for p99.9.

Load: a request is *held* when it was sent within 50 ms of when it was due
(not late, not dropped). In ``baseline``, ``upgrade`` and ``after`` the held
rate (held requests over the phase's length) must be at least ``min_load``
times the rate asked; in ``ramp``, at least ``min_load`` times the rate the
ramp schedule asked for on average.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .slo import SLOSpec, quantile_name

__all__ = [
    "CROSS_CHECK_TOLERANCE",
    "MAX_GAP_INTERVALS",
    "PhaseMeasurement",
    "VerdictEntry",
    "error_budget",
    "evaluate",
    "failure_message",
    "largest_gap",
    "min_requests_for_error_rate",
    "min_requests_for_quantile",
]

#: Largest relative disagreement allowed between Prometheus and the fleet's own count.
CROSS_CHECK_TOLERANCE = 0.01
#: Longest gap between successful scrapes of a worker, in scrape intervals.
MAX_GAP_INTERVALS = 3.0
STEADY_PHASES = ("baseline", "upgrade", "after")


def min_requests_for_error_rate(bound: float) -> int:
    return 100 if bound <= 0 else math.ceil(3.0 / bound)


def min_requests_for_quantile(q: float) -> int:
    return math.ceil(10.0 / (1.0 - q) - 1e-9)


@dataclass(frozen=True)
class PhaseMeasurement:
    """What was measured over one phase. ``None`` means Prometheus had nothing."""

    phase: str
    start: float
    end: float
    asked_requests: float  # what the schedule asked for in this window (all workers)
    requests: float | None  # Prometheus: requests due in the phase, all outcome classes
    by_class: Mapping[str, float] = field(default_factory=dict)
    late: float = 0.0  # Prometheus: requests sent more than 50 ms after they were due
    quantiles_ms: Mapping[float, float] = field(default_factory=dict)
    workers_expected: int = 0
    workers_seen: int = 0
    max_gap_s: float = 0.0  # longest time without a successful scrape of some worker
    fleet_requests: int | None = None  # the fleet's own count over the same window
    fleet_errors: int | None = None
    scrape_interval_s: float = 1.0
    queries: Mapping[str, str] = field(default_factory=dict)
    problem: str | None = None  # set when measuring failed (Prometheus unreachable, say)
    checks: Mapping[str, float | None] = field(default_factory=dict)  # user checks' values (None: no data)
    histogram: tuple[tuple[float, float], ...] = ()  # (upper bound in seconds, cumulative count), +Inf last

    @property
    def duration(self) -> float:
        return max(self.end - self.start, 1e-9)

    @property
    def errors(self) -> float:
        return sum(v for k, v in self.by_class.items() if k != "ok")

    @property
    def held(self) -> float:
        """Requests sent on time: all but the ``dropped`` (never sent) and the late."""
        return max(0.0, (self.requests or 0.0) - self.by_class.get("dropped", 0.0) - self.late)

    @property
    def held_rps(self) -> float:
        return self.held / self.duration

    @property
    def asked_rps(self) -> float:
        return self.asked_requests / self.duration

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else math.nan


@dataclass(frozen=True)
class VerdictEntry:
    """One SLO judged over one phase."""

    slo: str
    phase: str
    measured: float | None
    bound: float | None
    passed: bool
    reason: str = ""
    op: str = ""  # how measured is compared to bound; "" means the SLO's usual (>= for rps, else <=)

    @property
    def judged(self) -> bool:
        """False when the entry could not be judged: insufficient data, load not reached, no load."""
        if self.passed:
            return True
        return not (self.reason.startswith(("insufficient data", "load not reached")) or self.slo == "load")

    def to_json(self) -> dict[str, Any]:
        def num(x: float | None) -> float | None:
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

        return {
            "slo": self.slo,
            "phase": self.phase,
            "measured": num(self.measured),
            "bound": num(self.bound),
            "passed": self.passed,
            "reason": self.reason,
            "op": self.op or (">=" if self.slo == "rps" else "<="),
        }


def largest_gap(start: float, end: float, times: list[float]) -> float:
    """Longest stretch of [start, end] with no sample in *times*."""
    points = [start] + sorted(t for t in times if start <= t <= end) + [end]
    return max(b - a for a, b in zip(points, points[1:], strict=False))


def _evidence_problem(m: PhaseMeasurement) -> str | None:
    if m.problem is not None:
        return m.problem
    if m.requests is None or m.workers_seen == 0:
        return "Prometheus has no samples of the fleet for this phase"
    if m.workers_seen < m.workers_expected:
        return f"Prometheus scraped {m.workers_seen} of {m.workers_expected} workers during the phase"
    allowed_gap = MAX_GAP_INTERVALS * m.scrape_interval_s
    if m.max_gap_s > allowed_gap:
        return (
            f"Prometheus went {m.max_gap_s:.1f}s without scraping some worker (scrape interval "
            f"{m.scrape_interval_s:g}s, at most {allowed_gap:g}s allowed): scrapes were missed"
        )
    if m.fleet_requests is None:
        return "the fleet's own totals are missing, so Prometheus' counts cannot be cross-checked"
    allowed = max(3.0, CROSS_CHECK_TOLERANCE * m.fleet_requests)
    if abs(m.requests - m.fleet_requests) > allowed:
        return (
            f"Prometheus counted {m.requests:.0f} requests but the fleet counted {m.fleet_requests} "
            f"(allowed difference {allowed:.0f})"
        )
    return None


def evaluate(spec: SLOSpec, phases: Sequence[PhaseMeasurement]) -> list[VerdictEntry]:
    """Judge every SLO of *spec* over every measured phase."""
    entries: list[VerdictEntry] = []
    if not phases:
        return [VerdictEntry("load", "-", None, None, False, "no load was run: call rollout.ramp() in the test")]
    for m in phases:
        problem = _evidence_problem(m)
        if problem is not None:
            reason = f"insufficient data: {problem}"
            entries.append(VerdictEntry("rps", m.phase, None, _load_bound(spec, m), False, reason))
            entries.append(VerdictEntry("error_rate", m.phase, None, spec.error_rate, False, reason))
            for key, _q, bound in spec.latency_bounds():
                entries.append(VerdictEntry(key, m.phase, None, bound, False, reason))
            for check in spec.checks:
                entries.append(VerdictEntry(check.name, m.phase, None, check.bound, False, reason, check.op))
            continue
        entries.append(_judge_load(spec, m))
        entries.append(_judge_error_rate(spec, m))
        for key, q, bound in spec.latency_bounds():
            entries.append(_judge_latency(key, q, bound, m))
        for check in spec.checks:
            value = m.checks.get(check.name)
            if value is None or math.isnan(value):
                entries.append(VerdictEntry(
                    check.name, m.phase, None, check.bound, False,
                    "insufficient data: the check's PromQL gave no single value (see the report's queries)",
                    check.op,
                ))  # fmt: skip
            elif check.holds(value):
                entries.append(VerdictEntry(check.name, m.phase, value, check.bound, True, "", check.op))
            else:
                entries.append(VerdictEntry(
                    check.name, m.phase, value, check.bound, False,
                    f"{check.name} = {value:g}, not {check.op} {check.bound:g}", check.op,
                ))  # fmt: skip
    if spec.availability is not None:
        entries.append(_judge_availability(spec, phases))
    return entries


def _judge_availability(spec: SLOSpec, phases: Sequence[PhaseMeasurement]) -> VerdictEntry:
    """The share of requests that succeeded over the whole run, against ``availability``."""
    assert spec.availability is not None
    target = spec.availability
    problems = [f"{m.phase}: {p}" for m in phases if (p := _evidence_problem(m)) is not None]
    if problems:
        return VerdictEntry("availability", "run", None, target, False, f"insufficient data: {problems[0]}", ">=")
    requests = sum(m.requests or 0.0 for m in phases)
    errors = sum(m.errors for m in phases)
    needed = min_requests_for_error_rate(1.0 - target)
    measured = 1.0 - errors / requests if requests else math.nan
    if requests < needed:
        return VerdictEntry(
            "availability", "run", None if math.isnan(measured) else measured, target, False,
            f"insufficient data: {requests:.0f} requests are too few to judge availability >= {target:g} "
            f"(need at least {needed})",
            ">=",
        )  # fmt: skip
    if measured >= target:
        return VerdictEntry("availability", "run", measured, target, True, "", ">=")
    budget = (1.0 - target) * requests
    return VerdictEntry(
        "availability", "run", measured, target, False,
        f"{errors:.0f} failed requests spent {errors / budget:.0%} of the run's error budget ({budget:.0f})",
        ">=",
    )  # fmt: skip


def error_budget(spec: SLOSpec, phases: Sequence[PhaseMeasurement]) -> dict[str, Any] | None:
    """The error budget of the run (``availability``): spent per phase, and each phase's burn rate.

    The budget is ``(1 - availability)`` of the run's requests. A phase's burn
    rate is its error rate over ``1 - availability``: 1 spends the budget
    exactly at the pace of the run, 10 ten times as fast.
    """
    if spec.availability is None:
        return None
    allowed = 1.0 - spec.availability
    total = sum(m.requests or 0.0 for m in phases)
    budget = allowed * total
    out: dict[str, Any] = {"availability": spec.availability, "budget_requests": budget, "phases": {}}
    spent_total = 0.0
    for m in phases:
        if m.requests is None:
            out["phases"][m.phase] = {"errors": None, "spent": None, "burn_rate": None}
            continue
        spent_total += m.errors
        out["phases"][m.phase] = {
            "errors": m.errors,
            "spent": m.errors / budget if budget else None,
            "burn_rate": (m.errors / m.requests) / allowed if m.requests else None,
        }
    out["spent"] = spent_total / budget if budget else None
    return out


def _load_bound(spec: SLOSpec, m: PhaseMeasurement) -> float:
    if m.phase in STEADY_PHASES:
        return spec.min_load * spec.requested_rps
    return spec.min_load * m.asked_rps


def _judge_load(spec: SLOSpec, m: PhaseMeasurement) -> VerdictEntry:
    bound = _load_bound(spec, m)
    held = m.held_rps
    asked = spec.requested_rps if m.phase in STEADY_PHASES else m.asked_rps
    if held >= bound:
        return VerdictEntry("rps", m.phase, held, bound, True)
    reason = f"load not reached: asked {asked:,.0f} rps, held {held:,.0f} rps (min_load {spec.min_load:g})"
    dropped = m.by_class.get("dropped", 0.0)
    if m.late or dropped:
        reason += (
            f"; the fleet fell behind: {m.late:,.0f} requests sent over 50 ms late, {dropped:,.0f} dropped "
            "at the in-flight cap (a slow target, or too few workers: see --rollout-workers)"
        )
    return VerdictEntry("rps", m.phase, held, bound, False, reason)


def _judge_error_rate(spec: SLOSpec, m: PhaseMeasurement) -> VerdictEntry:
    bound = spec.error_rate
    requests = m.requests or 0.0
    needed = min_requests_for_error_rate(bound)
    rate = m.error_rate
    if requests < needed:
        return VerdictEntry(
            "error_rate",
            m.phase,
            None if math.isnan(rate) else rate,
            bound,
            False,
            f"insufficient data: {requests:.0f} requests are too few to judge error_rate <= {bound:g} "
            f"(need at least {needed}); lengthen the phase or raise rps",
        )
    if rate <= bound:
        return VerdictEntry("error_rate", m.phase, rate, bound, True)
    classes = ", ".join(f"{k}={v:.0f}" for k, v in sorted(m.by_class.items()) if k != "ok" and v >= 0.5)
    return VerdictEntry(
        "error_rate",
        m.phase,
        rate,
        bound,
        False,
        f"{m.errors:.0f} of {requests:.0f} requests failed ({classes})",
    )


def _judge_latency(key: str, q: float, bound: float, m: PhaseMeasurement) -> VerdictEntry:
    needed = min_requests_for_quantile(q)
    value = m.quantiles_ms.get(q)
    requests = m.requests or 0.0
    if requests < needed:
        return VerdictEntry(
            key,
            m.phase,
            value,
            bound,
            False,
            f"insufficient data: {requests:.0f} requests are too few to judge p{quantile_name(q)} (need at least {needed})",
        )
    if value is None or math.isnan(value):
        return VerdictEntry(
            key, m.phase, None, bound, False, "insufficient data: Prometheus returned no latency quantile"
        )
    if value <= bound:
        return VerdictEntry(key, m.phase, value, bound, True)
    return VerdictEntry(
        key, m.phase, value, bound, False, f"p{quantile_name(q)} latency {value:.1f} ms exceeds {bound:g} ms"
    )


def failure_message(entries: Sequence[VerdictEntry]) -> str:
    """One line per broken SLO: the SLO, the phase, the measured value and the bound."""
    lines = []
    for e in entries:
        if e.passed:
            continue
        measured = (
            "n/a"
            if e.measured is None or (isinstance(e.measured, float) and math.isnan(e.measured))
            else _fmt(e.slo, e.measured)
        )
        bound = "n/a" if e.bound is None else _fmt(e.slo, e.bound)
        op = e.op or (">=" if e.slo == "rps" else "<=")
        lines.append(f"  {e.slo} in phase {e.phase}: measured {measured}, bound {op} {bound}: {e.reason}")
    return "\n".join(lines)


def _fmt(slo: str, value: float) -> str:
    if slo in ("error_rate", "availability"):
        return f"{value:.5f}"
    if slo == "rps":
        return f"{value:,.0f}"
    return f"{value:.2f} ms" if slo.endswith("_ms") else f"{value:g}"
