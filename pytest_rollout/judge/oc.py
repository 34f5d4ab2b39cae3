"""The gate's operating characteristic: how often it fails a release at a given multiple of its bounds. Pure.

:func:`simulate` runs the exact rule code a run uses, live looks included,
on simulated requests: for every judged phase, once a look (a second, as the
live check), the phase's counts so far go through
:func:`~pytest_rollout.judge.rules.live_breach`; at the end the whole phases
go through :func:`~pytest_rollout.judge.rules.evaluate`. A run "fails" when
either shows any entry broken, as a real run does.

The simulated release sits at *multiple* times every bound: each request
fails with chance ``multiple * error_rate``, and takes longer than each
latency bound with chance ``multiple * (1 - q)`` (a p99 bound of 250 ms at
multiple 2: 2% of requests over 250 ms, twice the 1% the bound allows). That
share, not a latency distribution, is what decides a quantile's verdict, so
the figures hold for any distribution of latencies. Requests are
independent, as the verdict's model says. The load is held exactly; the
evidence is complete (those are the fleet's and Prometheus' business, judged
apart).

In a mix of several routes each route's release sits at *multiple* times its
own bounds, sent at its share of the rate, and every route's claims are
judged as a run judges them.

``pytest-rollout oc`` prints the table for a marker's arguments; the test
suite runs it for the examples and fails when the false-fail rate at the
bound exceeds the stated risk.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from pytest_rollout.judge.risk import RiskBudget, budget_for, judged_phases
from pytest_rollout.judge.routes import route_bounds
from pytest_rollout.judge.rules import evaluate, live_breach
from pytest_rollout.judge.verdict import Outcome, PhaseMeasurement
from pytest_rollout.slo import SLOSpec

__all__ = ["MULTIPLES", "OCRow", "binomial", "due", "operating_characteristic", "simulate"]

#: The multiples of the bounds the table shows: three releases that meet them, two that do not.
MULTIPLES: tuple[float, ...] = (0.5, 0.8, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class OCRow:
    """How the gate treats a release at *multiple* times its bounds, over *trials* simulated runs."""

    multiple: float
    trials: int
    failed: int  # runs with any entry shown broken (live or at the end)
    stopped_live: int  # of those, runs the live check stopped
    caught_after_s: float | None  # median time from the first judged phase's start to the failure

    @property
    def failed_share(self) -> float:
        return self.failed / self.trials if self.trials else math.nan

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "multiple": self.multiple,
            "trials": self.trials,
            "failed": self.failed,
            "failed_share": self.failed_share,
            "stopped_live": self.stopped_live,
            "caught_after_s": self.caught_after_s,
        }


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A ``Binomial(n, p)`` draw: exact by geometric skips up to a mean of 2,000, normal beyond."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    if n * p > 2000.0:
        draw = round(rng.gauss(n * p, math.sqrt(n * p * (1.0 - p))))
        return min(n, max(0, draw))
    log_q = math.log1p(-p)
    count, position = 0, 0
    while True:
        position += int(math.log(1.0 - rng.random()) / log_q) + 1
        if position > n:
            return count
        count += 1


@dataclass
class _Phase:
    """One simulated phase's running counts."""

    name: str
    start: float
    requests: int = 0
    errors: int = 0
    regions: list[int] | None = None  # requests at or below each latency bound's edge, then above the last

    def measurement(self, at: float, edges: Sequence[float]) -> PhaseMeasurement:
        cumulative: list[tuple[float, float]] = []
        total = 0
        for edge, count in zip([*edges, math.inf], self.regions or [self.requests], strict=True):
            total += count
            cumulative.append((edge, float(total)))
        return PhaseMeasurement(
            phase=self.name,
            start=self.start,
            end=at,
            asked_requests=float(self.requests),
            requests=float(self.requests),
            by_class={"ok": float(self.requests - self.errors), "http_5xx": float(self.errors)},
            workers_expected=1,
            workers_seen=1,
            fleet_requests=self.requests,
            fleet_errors=self.errors,
            histogram=tuple(cumulative),
        )


def _lengths(spec: SLOSpec, upgrade_s: float) -> list[tuple[str, float, float]]:
    """``(phase, seconds, share of the rate)`` for every judged phase, in order (a ramp averages half the rate)."""
    seconds = {"ramp": spec.ramp_s, "baseline": spec.hold_s, "upgrade": upgrade_s, "after": spec.after_s}
    return [(name, seconds[name], 0.5 if name == "ramp" else 1.0) for name in judged_phases(spec)]


def _shares(spec: SLOSpec, multiple: float) -> tuple[list[float], list[float]]:
    """Latency bounds (seconds, ascending) and the share of requests slower than each at *multiple*."""
    bounds = sorted((bound / 1000.0, 1.0 - q) for _key, q, bound in spec.latency_bounds())
    edges, shares = [], []
    running = 1.0
    for edge, allowed in bounds:
        running = min(running, min(1.0, multiple * allowed))  # slower than a higher bound: never more requests
        edges.append(edge)
        shares.append(running)
    return edges, shares


@dataclass(frozen=True)
class _Model:
    """One route's simulated release (the whole, in a one-route run): its share of the rate and its chances."""

    name: str | None
    share: float
    p_error: float
    edges: list[float]
    regions_p: list[float]


def _models(spec: SLOSpec, multiple: float) -> list[_Model]:
    """Each route at *multiple* times its own bounds (in a mix of several), else the whole at the marker's."""
    parts: list[tuple[str | None, float, SLOSpec]] = [(r.name, r.share, r.spec) for r in route_bounds(spec)]
    models = []
    for name, share, bounds in parts or [(None, 1.0, spec)]:
        edges, shares = _shares(bounds, multiple)
        regions_p = (
            [1.0 - shares[0], *(a - b for a, b in zip(shares, shares[1:], strict=False)), shares[-1]] if shares else []
        )
        models.append(_Model(name, share, min(1.0, multiple * bounds.error_rate), edges, regions_p))
    return models


def _draw(phase: _Phase, model: _Model, n: int, rng: random.Random) -> None:
    """*n* more requests of *model*'s release into *phase*: its errors, and its latencies' regions."""
    phase.requests += n
    phase.errors += binomial(rng, n, model.p_error)
    if phase.regions is not None:
        left, mass = n, 1.0
        for j, p in enumerate(model.regions_p[:-1]):
            drawn = binomial(rng, left, min(1.0, p / mass) if mass > 0 else 0.0)
            phase.regions[j] += drawn
            left -= drawn
            mass -= p
        phase.regions[-1] += left


def _measured(models: Sequence[_Model], phases: Sequence[_Phase], at: float) -> PhaseMeasurement:
    """The phase as the rules see it: the whole, with each route's own measurement in a mix of several."""
    if len(models) == 1 and models[0].name is None:
        return phases[0].measurement(at, models[0].edges)
    routes = {
        m.name or "": replace(p.measurement(at, m.edges), route=m.name) for m, p in zip(models, phases, strict=True)
    }
    requests = sum(p.requests for p in phases)
    errors = sum(p.errors for p in phases)
    return replace(_Phase(phases[0].name, phases[0].start, requests, errors).measurement(at, []), routes=routes)


def due(rps: float, elapsed_s: float, drawn: int) -> int:
    """Requests of a route at *rps* that fall due by *elapsed_s* into its phase, *drawn* of them already drawn.

    The remainder is carried from look to look: a route of 0.4 requests a look gets one every two or three looks,
    not none, and one of 0.7 gets seven in ten looks, not ten.
    """
    return max(0, round(rps * elapsed_s) - drawn)


def _one_run(
    spec: SLOSpec, budget: RiskBudget, multiple: float, upgrade_s: float, look_s: float, rng: random.Random
) -> tuple[bool, bool, float]:
    """``(failed, stopped_live, when)`` for one simulated run (each route of a mix at its own bounds)."""
    models = _models(spec, multiple)
    phases: list[PhaseMeasurement] = []
    clock = 0.0
    for name, seconds, share in _lengths(spec, upgrade_s):
        parts = [_Phase(name, clock, regions=[0] * len(m.regions_p) if m.regions_p else None) for m in models]
        looks = max(1, math.ceil(seconds / look_s - 1e-9))
        for i in range(looks):
            elapsed = min(seconds, (i + 1) * look_s)
            for model, part in zip(models, parts, strict=True):
                _draw(part, model, due(spec.requested_rps * share * model.share, elapsed, part.requests), rng)
            at = clock + elapsed
            if spec.abort_on_breach and live_breach(spec, _measured(models, parts, at), budget) is not None:
                return True, True, at
        clock += seconds
        phases.append(_measured(models, parts, clock))
    failed = any(e.outcome is Outcome.BROKEN for e in evaluate(spec, phases, budget))
    return failed, False, clock


def simulate(
    spec: SLOSpec,
    multiple: float,
    *,
    trials: int = 2000,
    seed: int = 0,
    upgrade_s: float = 10.0,
    look_s: float = 1.0,
    compared: bool = False,
) -> OCRow:
    """*trials* seeded runs of a release at *multiple* times every bound, judged by the run's own rules."""
    budget = budget_for(spec, compared)
    rng = random.Random(f"{seed}:{multiple}")
    failed = stopped = 0
    times: list[float] = []
    for _ in range(trials):
        bad, live, when = _one_run(spec, budget, multiple, upgrade_s, look_s, rng)
        if bad:
            failed += 1
            stopped += live
            times.append(when)
    return OCRow(multiple, trials, failed, stopped, statistics.median(times) if times else None)


def operating_characteristic(
    spec: SLOSpec, multiples: Sequence[float] = MULTIPLES, **kwargs: float | int | bool
) -> list[OCRow]:
    """:func:`simulate` at each of *multiples*."""
    return [simulate(spec, m, **kwargs) for m in multiples]  # type: ignore[arg-type]
