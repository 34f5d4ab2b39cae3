"""From per-phase measurements to verdict entries: the rules. Pure logic, no I/O.

Every entry has one of three outcomes (:class:`Outcome`):

- **held**: the data show that the SLO held: the interval's upper end (97.5%
  sure) lies within the bound;
- **broken**: the data show that it was broken: the interval's lower end lies
  beyond the bound, by a time-uniform test at the entry's share of the run's
  risk (:mod:`pytest_rollout.judge.risk`), valid however often it is looked at;
- **not proven**: anything else: the interval straddles the bound, the
  evidence is doubtful, or the fleet did not hold the load.

A test with any broken entry fails ("SLO broken", exit 1); otherwise one
with any not proven entry is not proven (exit 6, never a pass); otherwise
it passes (:class:`TestResult`).

**The intervals.** Lower end (a "broken" claim): the time-uniform bound of
:mod:`pytest_rollout.judge.anytime`, on the failures for an error rate and on
the requests slower than the bound for a latency quantile (counted from the
histogram's buckets wholly above the bound; requests still in flight count as
fast). Upper end (a "held" claim): the exact Clopper-Pearson bound of an
error rate, the order-statistic bound of a quantile read off the histogram
(bucket edges on the conservative side), both one-sided 97.5%
(:mod:`pytest_rollout.judge.stats`), made once, at the phase's end. The live
check and the final verdict use the same functions. ``error_rate=0`` means no
failed request at all: any error breaks it.

**Blame.** The release is judged only on what it answered: the 4xx, 5xx,
refused or reset connections, timeouts and latencies of the requests the
fleet sent, all on time (a worker never sends a request more than 50 ms
late: one it could not send in time is dropped, counted late, rather than
sent in a catch-up burst the plan never asked for). What the fleet failed to
do (a request dropped because the worker fell behind or its in-flight cap was
full, a worker dead or frozen) is never the release's error or latency. A phase
whose load was not held (fewer on-time requests than ``min_load`` of the
rate) is not proven, unless the release's own answers prove a breach by
themselves.

**The ramp** is warm-up: its load is checked and it is reported, but its
error rate and latency are judged only with ``slo(judge_ramp=True)``.

**Evidence.** Before any SLO of a phase is judged, the evidence is checked;
when it falls short every SLO of that phase is not proven:

- Prometheus scraped every worker of the run during the phase, and never
  went more than :data:`MAX_GAP_INTERVALS` scrape intervals without a
  successful scrape of any of them;
- the phase's request count in Prometheus agrees with the fleet's own count
  within :data:`CROSS_CHECK_TOLERANCE` (relative) or 3 requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pytest_rollout.judge.anytime import (
    anytime_lower,
    proves_above,
    quantile_lower_ms,
    requests_to_prove_above,
    slow_counts,
)
from pytest_rollout.judge.risk import RiskBudget, budget_for
from pytest_rollout.judge.routes import route_bounds
from pytest_rollout.judge.stats import (
    clopper_pearson,
    min_requests_for_quantile,
    quantile_interval_ms,
    requests_to_prove_rate,
)
from pytest_rollout.judge.verdict import (
    CROSS_CHECK_TOLERANCE,
    MAX_GAP_INTERVALS,
    STEADY_PHASES,
    Kind,
    Outcome,
    PhaseMeasurement,
    VerdictEntry,
    make_entry,
)
from pytest_rollout.numeric import number_or_none
from pytest_rollout.slo import SLOSpec, quantile_name

__all__ = ["error_budget", "evaluate", "largest_gap", "live_breach"]


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


def evaluate(spec: SLOSpec, phases: Sequence[PhaseMeasurement], budget: RiskBudget | None = None) -> list[VerdictEntry]:
    """Judge every SLO of *spec* over every measured phase, broken claims at *budget*'s share each.

    *budget* defaults to :func:`~pytest_rollout.judge.risk.budget_for` the spec (no baseline compared).
    """
    budget = budget or budget_for(spec)
    entries: list[VerdictEntry] = []
    if not phases:
        return [
            make_entry(Kind.LOAD, "load", "-", None, None, Outcome.NOT_PROVEN, "no load was run: call rollout.ramp()")
        ]
    for m in phases:
        judged = m.phase != "ramp" or spec.judge_ramp
        problem = _evidence_problem(m)
        if problem is not None:
            reason = f"not proven: {problem}"
            entries.append(
                make_entry(Kind.LOAD, "rps", m.phase, None, _load_bound(spec, m), Outcome.NOT_PROVEN, reason)
            )
            if judged:
                entries.extend(_unproven_claims(spec, m.phase, reason))
                for check in spec.checks:
                    entries.append(make_entry(Kind.CHECK, check.name, m.phase, None, check.bound, Outcome.NOT_PROVEN, reason, check.op))  # fmt: skip
            continue
        load = _judge_load(spec, m)
        entries.append(load)
        if not judged:
            continue
        shortfall = None if load.passed else _fleet_shortfall(spec, m)
        entries.extend(_judge_claims(spec, m, shortfall, budget))
        for check in spec.checks:
            entries.append(_judge_check(check, m))
    if spec.availability is not None:
        entries.append(_judge_availability(spec, phases, budget))
    return entries


def _unproven_claims(spec: SLOSpec, phase: str, reason: str) -> list[VerdictEntry]:
    """The error rate and latency claims of a phase, every one not proven for *reason* (each route's in a mix)."""
    mix = route_bounds(spec)
    if mix:
        return [replace(e, route=r.name) for r in mix for e in _unproven_claims(r.spec, phase, reason)]
    entries = [make_entry(Kind.ERROR_RATE, "error_rate", phase, None, spec.error_rate, Outcome.NOT_PROVEN, reason)]
    for key, _q, bound in spec.latency_bounds():
        entries.append(make_entry(Kind.LATENCY, key, phase, None, bound, Outcome.NOT_PROVEN, reason))
    return entries


def _judge_claims(
    spec: SLOSpec, m: PhaseMeasurement, shortfall: str | None, budget: RiskBudget, share: float = 1.0
) -> list[VerdictEntry]:
    """The error rate and latency claims of phase *m*: the whole's, or in a mix each route's on its own requests
    (*share*: a route's share of the whole's requests, for the whole rate that would prove it)."""
    mix = route_bounds(spec)
    if not mix:
        entries = [_judge_error_rate(spec, m, shortfall, budget, share)]
        entries.extend(_judge_latency(key, q, bound, m, shortfall, budget) for key, q, bound in spec.latency_bounds())
        return entries
    out: list[VerdictEntry] = []
    for r in mix:
        own = m.routes.get(r.name)
        problem = _route_problem(r.name, r.share, own)
        if problem is not None or own is None:
            claims = _unproven_claims(r.spec, m.phase, f"not proven: {problem}")
        else:  # the machine's share over the phase is the whole's
            own = replace(own, machine=own.machine or m.machine)
            claims = _judge_claims(r.spec, own, shortfall, budget, r.share)
        out.extend(replace(e, route=r.name) for e in claims)
    return out


def _route_problem(name: str, share: float, own: PhaseMeasurement | None) -> str | None:
    """Why route *name* (*share* of the requests) cannot be judged (the whole phase's evidence sound), or None."""
    if own is not None and own.fleet_requests == 0 and not own.requests:
        return (
            f"the fleet sent no request of route {name} in this phase (its share is {share:.3g} of the requests: "
            "a longer phase or a higher rate sends some)"
        )
    if own is None or (own.requests is None and own.problem is None):
        return f"Prometheus has no samples of route {name} in this phase"
    problem = _evidence_problem(own)
    return None if problem is None else f"route {name}: {problem}"


def _judge_check(check: Any, m: PhaseMeasurement) -> VerdictEntry:
    value = number_or_none(m.checks.get(check.name))
    if value is None:
        return make_entry(
            Kind.CHECK, check.name, m.phase, None, check.bound, Outcome.NOT_PROVEN,
            "not proven: the check's PromQL gave no single value (see the report's queries)", check.op,
        )  # fmt: skip
    if check.holds(value):
        return make_entry(Kind.CHECK, check.name, m.phase, value, check.bound, Outcome.HELD, "", check.op)
    return make_entry(
        Kind.CHECK, check.name, m.phase, value, check.bound, Outcome.BROKEN,
        f"{check.name} = {value:g}, not {check.op} {check.bound:g}", check.op,
    )  # fmt: skip


def _load_bound(spec: SLOSpec, m: PhaseMeasurement) -> float:
    if m.phase in STEADY_PHASES:
        return spec.min_load * spec.requested_rps
    return spec.min_load * m.asked_rps


def _fleet_shortfall(spec: SLOSpec, m: PhaseMeasurement) -> str:
    asked = spec.requested_rps if m.phase in STEADY_PHASES else m.asked_rps
    text = f"the fleet did not hold the load (asked {asked:,.0f} rps, sent {m.held_rps:,.0f} rps on time"
    if m.dropped:
        text += (
            f"; {m.dropped:,.0f} not sent: {m.late:,.0f} because the fleet fell behind, the rest at the in-flight cap"
        )
    return text + ")"


def _judge_load(spec: SLOSpec, m: PhaseMeasurement) -> VerdictEntry:
    """Load is the fleet's side: held, or not proven (never the release's breach)."""
    bound = _load_bound(spec, m)
    held = m.held_rps
    if held >= bound:
        return make_entry(Kind.LOAD, "rps", m.phase, held, bound, Outcome.HELD)
    asked = spec.requested_rps if m.phase in STEADY_PHASES else m.asked_rps
    reason = (
        f"load not reached (the fleet's failure, not the release's): asked {asked:,.0f} rps, held {held:,.0f} rps "
        f"on time (min_load {spec.min_load:g})"
    )
    if m.dropped:
        reason += (
            f"; {m.dropped:,.0f} requests not sent: {m.late:,.0f} because the fleet fell over 50 ms behind "
            f"(short of CPU or workers: see --rollout-workers, --rollout-worker-rps), {m.dropped - m.late:,.0f} "
            "at the in-flight cap (a stalled target)"
        )
    return make_entry(Kind.LOAD, "rps", m.phase, held, bound, Outcome.NOT_PROVEN, reason)


def _rate_outcome(k: float, n: float, bound: float, budget: RiskBudget) -> tuple[Outcome, tuple[float, float]]:
    """Broken by the time-uniform test at the claim's share of the risk; held by the upper bound (97.5%)."""
    ki, ni = round(k), round(n)
    low = anytime_lower(ki, ni, budget.per_claim)
    high = clopper_pearson(ki, ni)[1]
    if bound <= 0:
        return (Outcome.BROKEN if k >= 0.5 else Outcome.HELD), (low, high)
    if proves_above(ki, ni, bound, budget.per_claim):
        return Outcome.BROKEN, (max(low, bound), high)
    if high <= bound:
        return Outcome.HELD, (low, min(high, bound))
    return Outcome.NOT_PROVEN, (low, high)


def _what_would_prove_rate(
    rate: float, bound: float, held_rps: float, duration: float, budget: RiskBudget, share: float = 1.0
) -> str:
    """How many requests would decide a rate, in seconds and in rps; *share* < 1: a route's, whose rate is that
    share of the whole's (the marker's ``rps``), which is said too."""
    if rate > bound:
        needed = requests_to_prove_above(rate, bound, budget.per_claim)
    else:
        needed = requests_to_prove_rate(rate, bound)
    if needed is None:
        return "the rate sits on the bound: no amount of data decides it"
    seconds = needed / max(held_rps, 1e-9)
    per_s = needed / max(duration, 1e-9)
    return (
        f"{needed:,} requests on time would decide it at this error rate: about {seconds:,.0f}s at this rate, "
        f"or about {per_s:,.0f} rps over {duration:.1f}s"
        + (f" ({per_s / share:,.0f} rps in all)" if share < 1.0 else "")
    )


def _interval(low: str, high: str, budget: RiskBudget) -> str:
    """How an entry's interval is named in its reason: the two ends are the two claims' bounds."""
    return f"interval [{low}, {high}] (lower end at {budget.per_claim:.3g} risk over every look, upper end 97.5%)"


def _judge_error_rate(
    spec: SLOSpec, m: PhaseMeasurement, shortfall: str | None, budget: RiskBudget, share: float = 1.0
) -> VerdictEntry:
    bound = spec.error_rate
    n, k = m.on_time, m.errors
    if n < 1:
        reason = "not proven: no request was sent on time in this phase" + (f"; {shortfall}" if shortfall else "")
        return make_entry(Kind.ERROR_RATE, "error_rate", m.phase, None, bound, Outcome.NOT_PROVEN, reason)
    rate = k / n
    outcome, interval = _rate_outcome(k, n, bound, budget)
    classes = ", ".join(f"{c}={v:.0f}" for c, v in sorted(m.errors_by_class.items()) if v >= 0.5)
    if m.resent >= 0.5:
        classes += (", " if classes else "") + (
            f"and {m.resent:.0f} sent twice, as clients do, after their reused connection closed unanswered "
            "(counted by the second try)"
        )
    failed = f" ({classes})" if classes else ""
    ci = _interval(f"{interval[0]:.5f}", f"{interval[1]:.5f}", budget)
    if outcome is Outcome.BROKEN:
        reason = f"{k:.0f} of {n:.0f} requests sent on time failed ({classes}): {ci}, beyond {bound:g}"
        if shortfall:
            reason += f" (proven by the release's own answers, although {shortfall})"
        return make_entry(Kind.ERROR_RATE, "error_rate", m.phase, rate, bound, outcome, reason, interval=interval)
    if outcome is Outcome.HELD and shortfall is None:
        return make_entry(Kind.ERROR_RATE, "error_rate", m.phase, rate, bound, outcome, "", interval=interval)
    if shortfall:
        reason = f"not proven: {shortfall}; {k:.0f} of {n:.0f} requests sent on time failed{failed}, {ci}"
    else:
        reason = (
            f"not proven: {k:.0f} of {n:.0f} requests failed{failed}, {ci} straddles {bound:g}; "
            + _what_would_prove_rate(rate, bound, m.held_rps, m.duration, budget, share)
        )
    return make_entry(
        Kind.ERROR_RATE, "error_rate", m.phase, rate, bound, Outcome.NOT_PROVEN, reason, interval=interval
    )


def _judge_latency(
    key: str, q: float, bound: float, m: PhaseMeasurement, shortfall: str | None, budget: RiskBudget
) -> VerdictEntry:
    name = f"p{quantile_name(q)}"
    value = number_or_none(m.quantiles_ms.get(q))
    measured = m.histogram[-1][1] if m.histogram else 0.0
    if measured < 1:
        reason = "not proven: no latency was measured for requests sent on time" + (
            f"; {shortfall}" if shortfall else ""
        )
        return make_entry(Kind.LATENCY, key, m.phase, value, bound, Outcome.NOT_PROVEN, reason)
    surely, _maybe, n = slow_counts(m.histogram, m.on_time, bound)
    low = quantile_lower_ms(m.histogram, m.on_time, q, budget.per_claim)
    high = quantile_interval_ms(m.histogram, q)[1]
    broken = proves_above(surely, n, 1.0 - q, budget.per_claim)
    held = high <= bound
    interval = (max(low, bound) if broken else low, high)
    ci = _interval(f"{interval[0]:.1f}", "inf" if math.isinf(high) else f"{high:.1f}", budget) + " ms"
    slow = f"{surely:,} of {n:,} requests sent on time took over {bound:g} ms, {1 - q:.3g} allowed"
    if broken and m.machine is not None and m.machine.busy:
        reason = (
            f"not proven: {name} {value or interval[0]:.1f} ms over {bound:g} ms ({slow}), but the machine was too "
            f"busy to judge latency: {m.machine.sentence()}; rerun on a quieter machine (not the release's failure)"
        )
        return make_entry(Kind.LATENCY, key, m.phase, value, bound, Outcome.NOT_PROVEN, reason, interval=interval)
    if broken:
        reason = f"{name} latency {value or interval[0]:.1f} ms exceeds {bound:g} ms ({slow}; {ci})"
        if shortfall:
            reason += f" (proven by the release's own answers, although {shortfall})"
        return make_entry(Kind.LATENCY, key, m.phase, value, bound, Outcome.BROKEN, reason, interval=interval)
    if held and shortfall is None:
        return make_entry(Kind.LATENCY, key, m.phase, value, bound, Outcome.HELD, "", interval=interval)
    if shortfall:
        reason = f"not proven: {shortfall}; {name} {ci}"
    elif math.isinf(high) and measured < min_requests_for_quantile(q):
        needed = min_requests_for_quantile(q)
        reason = (
            f"not proven: {measured:,.0f} requests are too few to bound {name} (at least {needed:,} are needed, "
            f"about {needed / max(m.held_rps, 1e-9):,.0f}s at this rate)"
        )
    else:
        reason = f"not proven: {name} {ci} straddles {bound:g} ms ({slow}); more requests narrow it"
    return make_entry(Kind.LATENCY, key, m.phase, value, bound, Outcome.NOT_PROVEN, reason, interval=interval)


def _judge_availability(spec: SLOSpec, phases: Sequence[PhaseMeasurement], budget: RiskBudget) -> VerdictEntry:
    """The share of requests sent on time that succeeded over the whole run, against ``availability``."""
    assert spec.availability is not None
    target = spec.availability
    problems = [f"{m.phase}: {p}" for m in phases if (p := _evidence_problem(m)) is not None]
    if problems:
        return make_entry(
            Kind.AVAILABILITY, "availability", "run", None, target, Outcome.NOT_PROVEN, f"not proven: {problems[0]}"
        )
    n = sum(m.on_time for m in phases)
    k = sum(m.errors for m in phases)
    if n < 1:
        return make_entry(
            Kind.AVAILABILITY, "availability", "run", None, target, Outcome.NOT_PROVEN,
            "not proven: no request was sent on time",
        )  # fmt: skip
    outcome, (low, high) = _rate_outcome(k, n, 1.0 - target, budget)
    measured = 1.0 - k / n
    interval = (1.0 - high, 1.0 - low)
    ci = _interval(f"{interval[0]:.5f}", f"{interval[1]:.5f}", budget)
    if outcome is Outcome.HELD:
        return make_entry(Kind.AVAILABILITY, "availability", "run", measured, target, outcome, "", interval=interval)
    allowed = (1.0 - target) * n
    spent = f"{k:.0f} failed requests spent {k / allowed:.0%} of the run's error budget ({allowed:.0f})"
    if outcome is Outcome.BROKEN:
        return make_entry(Kind.AVAILABILITY, "availability", "run", measured, target, outcome, f"{spent}: {ci}", interval=interval)  # fmt: skip
    duration = sum(m.duration for m in phases)
    reason = f"not proven: {spent}; {ci} straddles {target:g}; " + _what_would_prove_rate(
        k / n, 1.0 - target, n / duration, duration, budget
    )
    return make_entry(Kind.AVAILABILITY, "availability", "run", measured, target, outcome, reason, interval=interval)


def error_budget(spec: SLOSpec, phases: Sequence[PhaseMeasurement]) -> dict[str, Any] | None:
    """The error budget of the run (``availability``): spent per phase, and each phase's burn rate.

    The budget is ``(1 - availability)`` of the run's requests sent on time. A
    phase's burn rate is its error rate over ``1 - availability``: 1 spends the
    budget exactly at the pace of the run, 10 ten times as fast.
    """
    if spec.availability is None:
        return None
    allowed = 1.0 - spec.availability
    total = sum(m.on_time for m in phases)
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
            "burn_rate": (m.errors / m.on_time) / allowed if m.on_time else None,
        }
    out["spent"] = spent_total / budget if budget else None
    return out


def live_breach(spec: SLOSpec, m: PhaseMeasurement, budget: RiskBudget | None = None) -> VerdictEntry | None:
    """The first SLO that the data of a phase still under way already prove broken, if any.

    The same time-uniform test as the final verdict's broken claims, over the
    requests sent so far (those still in flight counted as fast successes),
    so looking once a second costs no more than the budget's share. Used to
    stop a run early.
    """
    if m.phase == "ramp" and not spec.judge_ramp:
        return None
    budget = budget or budget_for(spec)
    mix = route_bounds(spec)
    if mix:  # each route on its own requests, at its own bounds
        for r in mix:
            own = m.routes.get(r.name)
            entry = None if own is None else live_breach(r.spec, replace(own, machine=own.machine or m.machine), budget)
            if entry is not None:
                return replace(entry, route=r.name)
        return None
    if m.on_time >= 1 and spec.error_rate > 0 and proves_above(m.errors, m.on_time, spec.error_rate, budget.per_claim):
        return _judge_error_rate(spec, m, None, budget)
    if spec.error_rate <= 0 and m.errors >= 0.5:
        return _judge_error_rate(spec, m, None, budget)
    if m.histogram and m.histogram[-1][1] >= 1:
        for key, q, bound in spec.latency_bounds():
            surely, _, n = slow_counts(m.histogram, m.on_time, bound)
            if proves_above(surely, n, 1.0 - q, budget.per_claim):
                entry = _judge_latency(key, q, bound, m, None, budget)
                if entry.outcome is Outcome.BROKEN:  # not when the machine was too busy to judge latency
                    return entry
    return None
