"""What Prometheus says about a phase: the measurement the verdict is computed from.

:func:`measure_phase` reads a finished phase (requests by outcome class,
late sends, the merged latency histogram, scrapes, user checks);
:func:`measure_so_far` reads the phase under way, for the live breach check;
:func:`collect_series` reads the run over time, for the HTML report's charts.
Requests still in flight are counted as successes in every measurement, so
that fast failures ending before slow successes can never make a breach look
proven (the final verdict waits for all of them).

In a mix of several routes every phase also holds each route's own
measurement (``PhaseMeasurement.routes``), read by a few by-route queries for
all routes at once, with the fleet's own count of the route for the
cross-check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
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
        own = _by_route(client, route_queries(run_id, phase), at, in_flight) if len(routes) > 1 else {}
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


def _by_route(client: PrometheusAPI, queries: dict[str, str], at: float, in_flight: float) -> dict[str, dict[str, Any]]:
    """Every route's own counts, split by the ``route`` label of :func:`route_queries`' few queries.

    ``{route: fields of its PhaseMeasurement}``: ``requests`` (every request counted, in flight included),
    ``by_class`` (the run's *in_flight* counted ``ok`` in each route's: a route's own in flight are not told apart),
    ``late``, ``histogram``, and where *queries* ask for them ``resent`` and ``quantiles_ms``.
    """
    by_class: dict[str, dict[str, float]] = {}
    for labels, value in client.query(queries["by_class"], at):
        by_class.setdefault(labels.get("route", ""), {})[labels.get("class", "?")] = value
    per_route: dict[str, dict[str, Any]] = {}
    for key in ("late", "resent"):
        if key in queries:
            per_route[key] = {labels.get("route", ""): value for labels, value in client.query(queries[key], at)}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for labels, value in client.query(queries["histogram"], at):
        buckets.setdefault(labels.get("route", ""), []).append((float(labels.get("le", "inf")), value))
    quantiles: dict[str, dict[float, float]] = {}
    for key, expr in queries.items():
        if key.startswith("quantile_"):
            for labels, value in client.query(expr, at):
                quantiles.setdefault(labels.get("route", ""), {})[float(key[len("quantile_") :])] = value * 1000.0
    out: dict[str, dict[str, Any]] = {}
    for name, classes in by_class.items():
        classes["ok"] = classes.get("ok", 0.0) + in_flight
        fields: dict[str, Any] = dict(
            requests=sum(classes.values()), by_class=classes, histogram=tuple(sorted(buckets.get(name, [])))
        )
        fields.update({key: values.get(name, 0.0) for key, values in per_route.items()})
        if any(k.startswith("quantile_") for k in queries):
            fields["quantiles_ms"] = quantiles.get(name, {})
        out[name] = fields
    return out


def measure_phase(
    client: PrometheusAPI | None, spec: SLOSpec, load: LoadRun, name: str, start: float, end: float
) -> PhaseMeasurement:
    """Phase *name* (``[start, end)``) as Prometheus holds it once the load has ended; ``client`` None: not measured.

    In a mix of several routes, every route's own measurement is read with a few by-route queries for all of them
    (:func:`~pytest_rollout.judge.promql.route_queries`), whatever the number of routes.
    """
    run_id = load.run_id
    mix = route_bounds(spec)
    bounded = [spec, *(r.spec for r in mix)]  # a route's own latency bound is measured for it
    quantiles = sorted(set(REPORT_QUANTILES) | {q for s in bounded for _, q, _ in s.latency_bounds()})
    queries = phase_queries(run_id, name, end - start, quantiles)
    by_route = route_queries(run_id, name, quantiles) if mix else {}
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
        queries=queries.all() | {f"by_route:{key}": expr for key, expr in by_route.items()},
        scrape_interval_s=load.scrape_interval,
    )
    try:
        if client is None:
            raise PrometheusError("no Prometheus to ask")
        at = load.eval_at or time.time()
        requests = client.scalar(queries.requests, at)
        by_class, late, histogram, in_flight = _answers(client, run_id, queries, at)
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
        routes = _by_route(client, by_route, at, in_flight) if mix else {}
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
    if not mix:
        return whole
    for fields in routes.values():  # the final count, as the whole's: a request still in flight is none yet
        fields["requests"] -= in_flight
    fleet = route_totals(load.totals, name)
    return replace(whole, routes={r.name: _route(whole, r, routes.get(r.name), fleet) for r in mix})


def _route(
    whole: PhaseMeasurement,
    bounds: RouteBounds,
    own: dict[str, Any] | None,
    fleet: Mapping[str, tuple[int, int]] | None,
) -> PhaseMeasurement:
    """A route's own measurement of phase *whole*: *own* (its by-route answers; None: Prometheus has none of it),
    the fleet's count of it, its share of the asked requests; its scrapes are the whole's, its checks none."""
    counted = None if fleet is None else fleet.get(bounds.name, (0, 0))
    base = replace(
        whole,
        route=bounds.name,
        asked_requests=whole.asked_requests * bounds.share,
        fleet_requests=None if counted is None else counted[0],
        fleet_errors=None if counted is None else counted[1],
        queries={},  # the whole's by_route:* queries measured it, with every other route
        checks={},
        quantiles_ms={},
    )
    if own is None:
        return replace(base, requests=None, by_class={}, late=0.0, resent=0.0, histogram=())
    quantiles = own.pop("quantiles_ms", {})
    return replace(base, quantiles_ms={q: quantiles.get(q, math.nan) for q in whole.quantiles_ms}, **own)


class _Counted(Protocol):
    @property
    def requests(self) -> int: ...

    @property
    def errors(self) -> int: ...


@runtime_checkable
class RouteCounts(Protocol):
    """The fleet's own totals told by route: :meth:`~pytest_rollout.load.fleet.FleetTotals.routes`, phase *name*
    over all workers as ``{route: PhaseTotals}``, None when a worker lacks the phase."""

    def routes(self, name: str) -> Mapping[str, _Counted] | None: ...


class _WorkerRoutes(Protocol):
    @property
    def routes(self) -> Mapping[str, Mapping[str, _Counted]]: ...


@runtime_checkable
class _Workers(Protocol):
    """:class:`~pytest_rollout.load.fleet.FleetTotals`' workers, each with its own counts per phase and route."""

    @property
    def workers(self) -> Sequence[_WorkerRoutes]: ...


def _counted_apart(totals: _Workers, phase: str) -> dict[str, tuple[int, int]] | None:
    """Each route's counts over the workers, added directly (no histogram merged); None if a worker lacks *phase*."""
    out: dict[str, tuple[int, int]] = {}
    for worker in totals.workers:
        own = worker.routes.get(phase)
        if own is None:
            return None
        for route, counts in own.items():
            requests, errors = out.get(route, (0, 0))
            out[route] = (requests + counts.requests, errors + counts.errors)
    return out


def route_totals(totals: object, phase: str) -> dict[str, tuple[int, int]] | None:
    """``{route: (requests, errors)}`` due in *phase* over the fleet, by its own counts; None when unknown (the
    fleet's totals missing, a worker without the phase, or totals that do not tell routes apart).

    Only the counts are taken, as :meth:`~pytest_rollout.load.fleet.FleetTotals.phase` takes them: where merging
    the workers' latency histograms fails (workers of another release, histograms of other lengths), each
    worker's own per-route counts are added directly, so the cross-check survives.
    """
    if not isinstance(totals, RouteCounts):
        return None
    try:
        per = totals.routes(phase)
    except ValueError:
        return _counted_apart(totals, phase) if isinstance(totals, _Workers) else None
    if per is None:
        return None
    return {route: (counts.requests, counts.errors) for route, counts in per.items()}


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
