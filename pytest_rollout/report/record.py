"""One test's record: what the JSON report, the HTML report and a saved baseline hold for it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pytest_rollout.judge.rules import error_budget
from pytest_rollout.judge.verdict import Outcome, PhaseMeasurement, TestResult, VerdictEntry
from pytest_rollout.numeric import number_or_none
from pytest_rollout.slo import quantile_name

if TYPE_CHECKING:
    from pytest_rollout.judge.risk import RiskBudget
    from pytest_rollout.judge.verdict import Verdict
    from pytest_rollout.platforms.base import UpgradeEvent
    from pytest_rollout.slo import SLOSpec

__all__ = ["RunFacts", "route_line", "route_outcome", "run_record"]


class _Span(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...


class _Totals(Protocol):
    def phase(self, name: str) -> tuple[int, int] | None: ...


class _Fleet(Protocol):
    @property
    def size(self) -> int: ...


class _Load(Protocol):
    @property
    def fleet(self) -> _Fleet: ...
    @property
    def engines(self) -> Sequence[str]: ...
    @property
    def totals(self) -> _Totals | None: ...
    def fleet_facts(self) -> dict[str, Any]: ...


class RunFacts(Protocol):
    """What a record is made of: the facts one run (a :class:`~pytest_rollout.run.rollout.Rollout`) holds."""

    @property
    def nodeid(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def spec(self) -> SLOSpec: ...
    @property
    def verdict(self) -> Verdict | None: ...
    @property
    def failure(self) -> str | None: ...
    @property
    def phases(self) -> Sequence[_Span]: ...
    @property
    def load(self) -> _Load | None: ...
    @property
    def scrape_interval(self) -> float: ...
    @property
    def events(self) -> Sequence[UpgradeEvent]: ...
    @property
    def rollback_note(self) -> str | None: ...
    @property
    def abort_note(self) -> str | None: ...
    @property
    def ended_early(self) -> Sequence[str]: ...
    @property
    def provable(self) -> Sequence[str]: ...
    @property
    def budget(self) -> RiskBudget: ...
    @property
    def series(self) -> dict[str, Any]: ...


def run_record(run: RunFacts, outcome: str, *, platform: str, result: str) -> dict[str, Any]:
    """The test's entry in the JSON report (see :mod:`pytest_rollout.report.json_report` for the stable keys).

    *platform*: the name of the platform the run asked for (``--rollout-platform``). *result*: the test's result,
    decided in one place (:func:`pytest_rollout.plugin.outcome.result_of`); ``passed`` is said from it, so the two
    never disagree.
    """
    verdict = run.verdict
    phases: dict[str, Any] = {}
    for m in verdict.phases if verdict else ():
        phases[m.phase] = _phase_record(m)
        if m.routes and verdict is not None:  # a mix of several routes: each route's own counts and outcome
            phases[m.phase]["routes"] = {
                name: _route_record(own, route_outcome(verdict.entries, m.phase, name))
                for name, own in m.routes.items()
            }
    if verdict is None:
        # never judged (interrupted): the phases seen, with the fleet's own counts where known
        for p in run.phases:
            counted = run.load.totals.phase(p.name) if run.load and run.load.totals else None
            phases[p.name] = {
                "start": p.start,
                "end": p.end,
                "requests": counted[0] if counted else None,
                "errors": counted[1] if counted else None,
                "source": "fleet (not judged: the run was interrupted)",
            }
    return {
        "nodeid": run.nodeid,
        "outcome": outcome,
        "requested_rps": run.spec.requested_rps,
        "declared_rps": run.spec.rps,
        "run_id": run.run_id,
        "platform": platform,
        "scrape_interval_s": run.scrape_interval,
        "workers": run.load.fleet.size if run.load else 0,
        "engine": ",".join(sorted(set(run.load.engines))) if run.load else None,
        "fleet": run.load.fleet_facts() if run.load else None,
        "passed": result == TestResult.PASSED,
        "failure": verdict.failure if verdict else run.failure,
        "result": result,
        "error_budget": error_budget(run.spec, verdict.phases) if verdict else None,
        "phases": phases,
        "verdicts": [e.to_json() for e in verdict.entries] if verdict else [],
        "events": [e.to_json() for e in run.events],
        "rollback": run.rollback_note,
        "stopped_early": run.abort_note,
        "ended_early": list(run.ended_early),
        "provable": list(run.provable),
        "risk": run.budget.to_json() | {"sentence": run.budget.sentence()},
        "series": run.series,
    }


def _num(x: float | None) -> float | None:
    value = number_or_none(x)
    return None if value is None else round(value, 6)


def _phase_record(m: PhaseMeasurement) -> dict[str, Any]:
    """One phase's measured facts (the whole phase's, or one route's)."""
    num = _num
    return {
        "start": m.start,
        "end": m.end,
        "achieved_rps": num(m.held_rps) if m.requests is not None else None,
        "asked_rps": num(m.asked_rps),
        "error_rate": num(m.error_rate) if m.requests else None,
        **{f"p{quantile_name(q)}_ms": num(m.quantiles_ms.get(q)) for q in sorted(m.quantiles_ms)},
        "requests": None if m.requests is None else round(m.requests),
        "on_time": None if m.requests is None else round(m.on_time),
        "late": round(m.late),
        "resent": round(m.resent),
        "machine": m.machine.to_json() if m.machine is not None else None,
        "dropped": round(m.dropped),
        "errors": None if m.requests is None else round(m.errors),
        "errors_by_class": {k: round(v) for k, v in m.errors_by_class.items()},
        "fleet_requests": m.fleet_requests,
        "queries": dict(m.queries),
        "histogram": [["+Inf" if math.isinf(le) else le, round(c)] for le, c in m.histogram],
    }


def _route_record(m: PhaseMeasurement, outcome: str | None) -> dict[str, Any]:
    """One route's own counts in a phase, and its worst outcome there (None: none of its SLOs was judged)."""
    out = _phase_record(m)
    for key in ("start", "end", "machine", "histogram"):
        del out[key]
    return out | {"outcome": outcome}


def route_outcome(entries: Sequence[VerdictEntry], phase: str, route: str) -> str | None:
    """Route *route*'s worst outcome in *phase*: broken, else not proven, else held; None when nothing judged it."""
    outcomes = {e.outcome for e in entries if e.phase == phase and e.route == route}
    for worst in (Outcome.BROKEN, Outcome.NOT_PROVEN, Outcome.HELD):
        if worst in outcomes:
            return str(worst)
    return None


def route_line(m: PhaseMeasurement, entries: Sequence[VerdictEntry]) -> str:
    """A route's phase in one line (JUnit's properties): its worst outcome, requests, errors, error rate, p50, p99."""
    outcome = route_outcome(entries, m.phase, m.route or "") or "not judged"
    if m.requests is None:
        return f"{outcome} requests=n/a"
    rate = "n/a" if m.on_time < 1 else f"{m.error_rate:.6g}"
    quantiles = " ".join(
        f"p{quantile_name(q)}_ms={'n/a' if (v := number_or_none(m.quantiles_ms.get(q))) is None else f'{v:.2f}'}"
        for q in (0.5, 0.99)
    )
    return f"{outcome} requests={m.requests:.0f} errors={m.errors:.0f} error_rate={rate} {quantiles}"
