"""PromQL for a phase window. Pure string building, no I/O.

Every query is an instant query evaluated at the phase's end over a range
equal to the phase's length, so ``increase(...[<length>])`` is the change
over exactly that phase. The fleet's series carry the target labels ``run``
(one per test run) and ``worker``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PhaseQueries", "escape", "last_scrape", "phase_queries", "window"]

REQUESTS = "rollout_requests_total"
LATENCY_BUCKETS = "rollout_request_duration_seconds_bucket"


def escape(value: str) -> str:
    """Escape a label value for a PromQL string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def window(seconds: float) -> str:
    """A PromQL range of *seconds*, in whole milliseconds (at least 1ms)."""
    return f"{max(1, round(seconds * 1000))}ms"


_OK_CLASS = ',class="ok"'


def _sel(run_id: str, extra: str = "") -> str:
    return f'{{run="{escape(run_id)}"{extra}}}'


@dataclass(frozen=True)
class PhaseQueries:
    """The PromQL behind every number of one phase's verdict."""

    requests: str
    by_class: str
    samples: str
    quantiles: dict[float, str]

    def all(self) -> dict[str, str]:
        out = {"requests": self.requests, "by_class": self.by_class, "samples": self.samples}
        for q, expr in sorted(self.quantiles.items()):
            out[f"quantile_{q:g}"] = expr
        return out


def phase_queries(run_id: str, duration_s: float, quantiles: list[float]) -> PhaseQueries:
    """The queries for one phase of *duration_s* seconds (evaluate them at its end)."""
    w = window(duration_s)
    sel = _sel(run_id)
    return PhaseQueries(
        requests=f"sum(increase({REQUESTS}{sel}[{w}]))",
        by_class=f"sum by (class) (increase({REQUESTS}{sel}[{w}]))",
        samples=f'count_over_time({REQUESTS}{_sel(run_id, _OK_CLASS)}[{w}])',
        quantiles={
            q: f"histogram_quantile({q:g}, sum by (le) (increase({LATENCY_BUCKETS}{sel}[{w}])))"
            for q in quantiles
        },
    )


def last_scrape(run_id: str) -> str:
    """Time of the newest sample of the run's fleet series (per worker)."""
    return f'timestamp({REQUESTS}{_sel(run_id, _OK_CLASS)})'
