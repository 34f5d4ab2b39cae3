"""Bounds per route, in a traffic mix of more than one route. Pure logic, no I/O.

A bound a route gives (``Request(error_rate=...)``, ``Request(p99_ms=...)``) judges that route's own requests;
every bound the marker gives applies as well to each route that does not give its own. With more than one route,
every route is judged per phase under its bounds, and each of those claims takes its share of the run's risk
(:mod:`pytest_rollout.judge.risk`). The whole phase (every route together) is measured and shown; its error rate
and latency bounds are not judged on it (each route's are), but the whole still decides its load (the held rps),
``availability`` (over every request of the run) and ``--rollout-compare``'s regressions (the whole phase against
the baseline's): those entries judge the whole in a mix too, and take their share of the risk split as ever. A
one-route mix is judged on the whole, exactly as a single request always was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pytest_rollout.slo import SLOSpec

__all__ = ["RouteBounds", "is_mix", "route_bounds"]


@dataclass(frozen=True)
class RouteBounds:
    """One route's bounds, as a spec of its own (``spec``: the marker's, with the route's bounds in place)."""

    name: str
    share: float  # the route's share of the requests: its weight over the mix's weights
    spec: SLOSpec  # a one-route spec: judged as a single request is

    def rps(self, whole: SLOSpec) -> float:
        """The route's own requests a second at the whole's requested rate."""
        return whole.requested_rps * self.share


def is_mix(spec: SLOSpec) -> bool:
    """Whether *spec* sends more than one route, so that each is judged on its own."""
    return len(spec.routes) > 1


def route_bounds(spec: SLOSpec) -> list[RouteBounds]:
    """Each route's bounds, in the mix's order; empty for a one-route mix (judged on the whole)."""
    if not is_mix(spec):
        return []
    total = sum(r.weight for r in spec.routes)
    out = []
    for request in spec.routes:
        error_rate = spec.error_rate if request.error_rate is None else float(request.error_rate)
        latency = {**spec.latency_ms, **request.latency_ms()}
        own = replace(spec, error_rate=error_rate, latency_ms=latency, routes=(request,))
        out.append(RouteBounds(request.route, request.weight / total if total > 0 else 0.0, own))
    return out
