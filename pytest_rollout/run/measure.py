"""What Prometheus says about a phase: the measurement the verdict is computed from.

:func:`measure_phase` reads a finished phase (requests by outcome class,
late sends, the merged latency histogram, scrapes, user checks);
:func:`measure_so_far` reads the phase under way, for the live breach check;
:func:`collect_series` reads the run over time, for the HTML report's charts.
Requests still in flight are counted as successes in every measurement, so
that fast failures ending before slow successes can never make a breach look
proven (the final verdict waits for all of them).

In a mix of several routes every phase also holds each route's own
measurement (``PhaseMeasurement.routes``), with the fleet's own count of the
route for the cross-check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from pytest_rollout.errors import PrometheusError, RolloutError
from pytest_rollout.judge.prometheus import PrometheusAPI
from pytest_rollout.judge.promql import PhaseQueries, inflight, live_queries, phase_queries, route_queries, window
from pytest_rollout.judge.routes import RouteBounds, route_bounds
from pytest_rollout.judge.rules import largest_gap
from pytest_rollout.judge.verdict import PhaseMeasurement
from pytest_rollout.load.schedule import expected_count
from pytest_rollout.run.load import LoadRun
from pytest_rollout.slo import SLOSpec

__all__ = ["REPORT_QUANTILES", "RouteCounts", "collect_series", "measure_phase", "measure_so_far", "route_totals"]

#: Quantiles always measured for the report, whatever the marker bounds.
REPORT_QUANTILES = (0.5, 0.9, 0.95, 0.99)


def _answers(
    client: PrometheusAPI, run_id: str, queries: PhaseQueries, at: float
) -> tuple[dict[str, float], float, tuple[tuple[float, float], ...], float]:
    """``(by_class, late, histogram, in_flight)`` at *at*, requests in flight (the run's) counted ok."""
    by_class = {labels.get("class", "?"): value for labels, value in client.query(queries.by_class, at)}
    late = client.scalar(queries.late, at) or 0.0
    in_flight = client.scalar(inflight(run_id), at) or 0.0
    by_class["ok"] = by_class.get("ok", 0.0) + in_flight
    histogram = tuple(
        sorted((float(labels.get("le", "inf")), value) for labels, value in client.query(queries.histogram, at))
    )
    return by_class, late, histogram, in_flight


def measure_so_far(
    client: PrometheusAPI, run_id: str, phase: str, start: float, routes: Sequence[str] = ()
) -> PhaseMeasurement | None:
    """The phase under way from *start* to now; None when Prometheus cannot say (a live check proves nothing then).

    *routes*: a mix's routes, each measured on its own too (``routes`` of the measurement), every request of the
    run still in flight counted in each route's (as a success, and in its ``in_flight``).
    """
    queries = phase_queries(run_id, phase, max(time.time() - start, 0.001), [])
    try:
        at = time.time()
        by_class, late, histogram, in_flight = _answers(client, run_id, queries, at)
        own = _routes_so_far(client, run_id, phase, at, in_flight) if len(routes) > 1 else {}
    except RolloutError:
        return None
    whole = PhaseMeasurement(
        phase=phase,
        start=start,
        end=at,
        asked_requests=0.0,
        requests=sum(by_class.values()),
        by_class=by_class,
        late=late,
        histogram=histogram,
        in_flight=in_flight,
    )
    return replace(whole, routes={name: replace(whole, route=name, **own[name]) for name in routes if name in own})


def _routes_so_far(
    client: PrometheusAPI, run_id: str, phase: str, at: float, in_flight: float
) -> dict[str, dict[str, Any]]:
    """Each route's counts so far, by its ``route`` label: three queries whatever the number of routes."""
    queries = route_queries(run_id, phase)
    by_class: dict[str, dict[str, float]] = {}
    for labels, value in client.query(queries["by_class"], at):
        by_class.setdefault(labels.get("route", ""), {})[labels.get("class", "?")] = value
    late = {labels.get("route", ""): value for labels, value in client.query(queries["late"], at)}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for labels, value in client.query(queries["histogram"], at):
        buckets.setdefault(labels.get("route", ""), []).append((float(labels.get("le", "inf")), value))
    out: dict[str, dict[str, Any]] = {}
    for name, classes in by_class.items():
        classes["ok"] = classes.get("ok", 0.0) + in_flight  # a route's own in flight are not told apart
        out[name] = dict(
            requests=sum(classes.values()),
            by_class=classes,
            late=late.get(name, 0.0),
            histogram=tuple(sorted(buckets.get(name, []))),
        )
    return out


def measure_phase(
    client: PrometheusAPI | None, spec: SLOSpec, load: LoadRun, name: str, start: float, end: float
) -> PhaseMeasurement:
    """Phase *name* (``[start, end)``) as Prometheus holds it once the load has ended; ``client`` None: not measured."""
    run_id = load.run_id
    quantiles = sorted(set(REPORT_QUANTILES) | {q for _, q, _ in spec.latency_bounds()})
    queries = phase_queries(run_id, name, end - start, quantiles)
    asked = expected_count(load.segments, start - load.start_at, end - load.start_at)
    own = load.totals.phase(name) if load.totals is not None else None
    base: dict[str, Any] = dict(
        phase=name,
        start=start,
        end=end,
        asked_requests=asked,
        workers_expected=load.fleet.size,
        fleet_requests=own[0] if own else None,
        fleet_errors=own[1] if own else None,
        queries=queries.all(),
        scrape_interval_s=load.scrape_interval,
    )
    try:
        if client is None:
            raise PrometheusError("no Prometheus to ask")
        at = load.eval_at or time.time()
        requests = client.scalar(queries.requests, at)
        by_class, late, histogram, _ = _answers(client, run_id, queries, at)
        resent = client.scalar(queries.resent, at) or 0.0
        scrapes = client.samples(queries.samples, end)
        quantile_ms = {}
        for q, expr in queries.quantiles.items():
            value = client.scalar(expr, at)
            quantile_ms[q] = math.nan if value is None else value * 1000.0
        checks: dict[str, float | None] = {}
        for check in spec.checks:
            # rate()/increase() need two samples in their range: like Grafana's $__rate_interval,
            # $window is the phase's length but never less than four scrape intervals
            span = max(end - start, 4 * load.scrape_interval)
            expr = check.render(run_id, name, window(span))
            base["queries"][f"check:{check.name}"] = expr
            try:
                checks[check.name] = client.scalar(expr, end)
            except PrometheusError:  # more than one series: no single value to judge
                checks[check.name] = None
    except RolloutError as exc:
        return PhaseMeasurement(requests=None, problem=str(exc), **base)
    ok_times = [[t for t, v in values if v == 1.0] for _, values in scrapes]
    ok_times = [times for times in ok_times if times]
    whole = PhaseMeasurement(
        requests=requests,
        by_class=by_class,
        late=late,
        resent=resent,
        quantiles_ms=quantile_ms,
        checks=checks,
        workers_seen=len(ok_times),
        histogram=histogram,
        max_gap_s=max((largest_gap(start, end, t) for t in ok_times), default=end - start),
        **base,
    )
    mix = route_bounds(spec)
    if not mix:
        return whole
    return replace(whole, routes={r.name: _measure_route(client, whole, load, r, at) for r in mix})


def _measure_route(
    client: PrometheusAPI, whole: PhaseMeasurement, load: LoadRun, bounds: RouteBounds, at: float
) -> PhaseMeasurement:
    """A route's own requests in phase *whole* (queries with ``route="..."``), its scrapes the whole's."""
    route, share = bounds.name, bounds.share
    quantiles = sorted(set(REPORT_QUANTILES) | {q for _, q, _ in bounds.spec.latency_bounds()})
    queries = phase_queries(load.run_id, whole.phase, whole.duration, quantiles, route=route)
    own = route_totals(load.totals, whole.phase, route)
    base = replace(
        whole,
        route=route,
        asked_requests=whole.asked_requests * share,
        fleet_requests=own[0] if own else None,
        fleet_errors=own[1] if own else None,
        queries=queries.all(),
        checks={},
    )
    try:
        requests = client.scalar(queries.requests, at)
        by_class, late, histogram, _ = _answers(client, load.run_id, queries, at)
        resent = client.scalar(queries.resent, at) or 0.0
        quantile_ms = {}
        for q, expr in queries.quantiles.items():
            value = client.scalar(expr, at)
            quantile_ms[q] = math.nan if value is None else value * 1000.0
    except RolloutError as exc:
        return replace(base, requests=None, problem=str(exc))
    return replace(
        base,
        requests=requests,
        by_class=by_class,
        late=late,
        resent=resent,
        quantiles_ms=quantile_ms,
        histogram=histogram,
    )


@runtime_checkable
class RouteCounts(Protocol):
    """The fleet's own totals told by route: ``FleetTotals.route`` (load/fleet.py), summing each worker's
    ``WorkerTotals.routes[phase][route]`` as :meth:`~pytest_rollout.load.fleet.FleetTotals.phase` sums phases."""

    def route(self, phase: str, route: str) -> tuple[int, int] | None: ...


def route_totals(totals: object, phase: str, route: str) -> tuple[int, int] | None:
    """``(requests, errors)`` of *route* due in *phase* over the fleet, by its own counts; None when unknown
    (the fleet's totals missing, a worker without them, or totals that do not tell routes apart)."""
    if not isinstance(totals, RouteCounts):
        return None
    return totals.route(phase, route)


def collect_series(client: PrometheusAPI | None, run_id: str, start: float, end: float, step: float) -> dict[str, Any]:
    """The run over time (rate, errors, latency quantiles): ``{name: {"query", "points"}}``; empty when unavailable."""
    series: dict[str, Any] = {}
    if client is None:
        return series
    span = max(3 * step, 2.0)
    try:
        for name, expr in live_queries(run_id, span, [0.5, 0.9, 0.99]).items():
            points = client.series(expr, start, end + step, step)
            series[name] = {"query": expr, "points": [[round(t, 3), round(v, 6)] for t, v in points]}
    except RolloutError:
        return series  # the charts are a courtesy; the verdict stands on the phase queries
    return series
