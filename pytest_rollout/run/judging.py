"""What a run measured, once its load ended, and what that says: every phase from Prometheus, the series, the
entries judged, and a failure's hint."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pytest_rollout.judge.prometheus import PrometheusAPI
from pytest_rollout.judge.risk import RiskBudget
from pytest_rollout.judge.rules import evaluate
from pytest_rollout.judge.verdict import PhaseMeasurement, Verdict, VerdictEntry
from pytest_rollout.platforms.base import UpgradeEvent
from pytest_rollout.run.hints import termination_hint
from pytest_rollout.run.load import LoadRun
from pytest_rollout.run.machine import MachineWatch, with_share
from pytest_rollout.run.measure import collect_series, measure_phase
from pytest_rollout.run.phases import Phase
from pytest_rollout.slo import SLOSpec

__all__ = ["failure_hint", "judged_entries", "measure_run"]


def measure_run(
    client: PrometheusAPI | None,
    spec: SLOSpec,
    load: LoadRun | None,
    phases: Sequence[Phase],
    machine: MachineWatch | None,
) -> tuple[tuple[PhaseMeasurement, ...], dict[str, Any]]:
    """Each of *phases*, with the CPU other processes took in it, and the run over time (for charts).

    Nothing is measured when no load ran; *client* None: each phase says it was not measured.
    """
    if load is None:
        return (), {}
    measured = tuple(with_share(measure_phase(client, spec, load, p.name, p.start, p.end), machine) for p in phases)
    if not phases:
        return measured, {}
    return measured, collect_series(client, load.run_id, phases[0].start, phases[-1].end, load.scrape_interval)


def judged_entries(
    spec: SLOSpec,
    measured: Sequence[PhaseMeasurement],
    budget: RiskBudget,
    *,
    baseline: Mapping[str, Any] | None,
    name: str,
    nodeid: str,
    failure: str | None = None,
) -> list[VerdictEntry]:
    """Every SLO judged over every phase and, when baseline *name* is compared, test *nodeid*'s regressions.

    *failure*: what failed the run, if anything did. When it failed before any load (Prometheus unreachable, a
    platform or a replica failing at deploy), the entry saying that no load was run names it, not
    "call rollout.ramp()", which the test may well have called.
    """
    entries = evaluate(spec, measured, budget)
    if not measured and failure is not None and failure.strip():
        what = failure.strip().splitlines()[0]
        entries = [replace(e, reason=f"no load was run: {what}") if e.phase == "-" else e for e in entries]
    if baseline is not None:
        from pytest_rollout.judge.baseline import compare

        entries.extend(compare(spec, measured, baseline["tests"].get(nodeid), name, budget.per_claim))
    return entries


def failure_hint(
    verdict: Verdict, events: Sequence[UpgradeEvent], phases: Sequence[Phase], series: dict[str, Any]
) -> str | None:
    """What the run's facts say about how a broken upgrade broke (see :mod:`pytest_rollout.run.hints`)."""
    upgrade = next(((p.start, p.end) for p in phases if p.name == "upgrade"), None)
    points = (series.get("error_rate") or {}).get("points") or []
    by_class = next((m.errors_by_class for m in verdict.phases if m.phase == "upgrade"), None)
    return termination_hint(verdict.entries, events, points, upgrade, by_class) or None
