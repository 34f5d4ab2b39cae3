"""PromQL behind every verdict number. Pure string building, no I/O.

The fleet's series carry the target labels ``run`` (one per test run) and
``worker``, and the workers label every request with the ``phase`` in which
it was *due*. So a phase's totals are the final values of its own series,
read once every request of the phase has ended and been scraped: exact, not
extrapolated from a time window that scrapes never align with. The one
windowed query reads the raw ``up`` samples of each worker during the phase,
to catch a Prometheus that missed scrapes.

Every series also carries the ``route`` of the request (its name in the
traffic mix): the sums over it are the whole phase; :func:`route_queries` splits
a phase by it (``sum by (route, ...)``), a few queries for every route at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "PhaseQueries",
    "escape",
    "inflight",
    "last_scrape",
    "live_queries",
    "phase_queries",
    "route_queries",
    "window",
]

REQUESTS = "rollout_requests_total"
LATE = "rollout_late_total"
RESENT = "rollout_resent_total"
LATENCY_BUCKETS = "rollout_request_duration_seconds_bucket"
SCHEDULED = "rollout_scheduled_total"


def escape(value: str) -> str:
    """Escape a label value for a PromQL string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def window(seconds: float) -> str:
    """A PromQL range of *seconds*, in whole milliseconds (at least 1ms)."""
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass(frozen=True)
class PhaseQueries:
    """The PromQL behind every number of one phase's verdict.

    ``samples`` is evaluated at the phase's end; the others at the end of the
    run (any time after the last request of the phase was scraped).
    """

    requests: str
    by_class: str
    late: str
    samples: str
    quantiles: dict[float, str]
    histogram: str = ""
    resent: str = ""

    def all(self) -> dict[str, str]:
        out = {"requests": self.requests, "by_class": self.by_class, "late": self.late, "samples": self.samples}
        if self.resent:
            out["resent"] = self.resent
        if self.histogram:
            out["histogram"] = self.histogram
        for q, expr in sorted(self.quantiles.items()):
            out[f"quantile_{q:g}"] = expr
        return out


def phase_queries(
    run_id: str, phase: str, duration_s: float, quantiles: list[float], route: str | None = None
) -> PhaseQueries:
    """Queries for *phase* of run *run_id*, which lasted *duration_s* seconds; *route*: that route's requests only."""
    only = "" if route is None else f',route="{escape(route)}"'
    sel = f'{{run="{escape(run_id)}",phase="{escape(phase)}"{only}}}'
    return PhaseQueries(
        requests=f"sum({REQUESTS}{sel})",
        by_class=f"sum by (class) ({REQUESTS}{sel})",
        late=f"sum({LATE}{sel})",
        samples=f'up{{run="{escape(run_id)}",worker!=""}}[{window(duration_s)}]',
        quantiles={q: f"histogram_quantile({q:g}, sum by (le) ({LATENCY_BUCKETS}{sel}))" for q in quantiles},
        histogram=f"sum by (le) ({LATENCY_BUCKETS}{sel})",
        resent=f"sum({RESENT}{sel})",
    )


def route_queries(run_id: str, phase: str, quantiles: Sequence[float] | None = None) -> dict[str, str]:
    """Every route's requests by class, late sends and latency histogram in *phase*, one query each, split by the
    ``route`` label: the same few queries whatever the number of routes.

    The live check reads a mix's routes with these three; the final measurement (*quantiles* given) adds every
    route's resent requests and each latency quantile (``quantile_<q>``), still one query each.
    """
    sel = f'{{run="{escape(run_id)}",phase="{escape(phase)}"}}'
    out = {
        "by_class": f"sum by (route, class) ({REQUESTS}{sel})",
        "late": f"sum by (route) ({LATE}{sel})",
        "histogram": f"sum by (route, le) ({LATENCY_BUCKETS}{sel})",
    }
    if quantiles is not None:
        out["resent"] = f"sum by (route) ({RESENT}{sel})"
        for q in sorted(quantiles):
            out[f"quantile_{q:g}"] = f"histogram_quantile({q:g}, sum by (route, le) ({LATENCY_BUCKETS}{sel}))"
    return out


def live_queries(run_id: str, window_s: float, quantiles: list[float]) -> dict[str, str]:
    """The run's recent behaviour over the last *window_s* seconds, for progress lines and charts.

    ``rps`` counts requests by when they were due; ``error_rate`` is the share
    not answered ``ok``; ``pNN_ms`` the latency quantiles, in milliseconds.
    """
    run = f'run="{escape(run_id)}"'
    w = window(window_s)
    total = f"sum(rate({REQUESTS}{{{run}}}[{w}]))"
    out = {
        "rps": total,
        "error_rate": f'sum(rate({REQUESTS}{{{run},class!="ok"}}[{w}])) / {total}',
    }
    for q in quantiles:
        name = f"p{f'{q * 100:g}'.replace('.', '')}_ms"
        out[name] = f"histogram_quantile({q:g}, sum by (le) (rate({LATENCY_BUCKETS}{{{run}}}[{w}]))) * 1000"
    return out


def inflight(run_id: str) -> str:
    """Requests the run's workers have in flight now."""
    return f'sum(rollout_inflight{{run="{escape(run_id)}"}})'


def last_scrape(run_id: str) -> str:
    """Time of each worker's newest successful scrape."""
    return f'timestamp({SCHEDULED}{{run="{escape(run_id)}"}})'
