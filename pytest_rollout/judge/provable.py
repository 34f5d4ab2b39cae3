"""Said before any load: what each phase can prove, and what the run's risk buys. Pure logic, no I/O.

:func:`provable` sizes each phase's held claims as the verdict makes them
(:mod:`pytest_rollout.judge.rules`); :func:`risk_line` states the run's
false-fail risk (:mod:`pytest_rollout.judge.risk`) and how soon a release
twice over a bound is caught, by the same time-uniform test the live check
uses.
"""

from __future__ import annotations

from collections.abc import Mapping

from pytest_rollout.judge.anytime import requests_to_prove_above
from pytest_rollout.judge.risk import RiskBudget
from pytest_rollout.judge.routes import is_mix, route_bounds
from pytest_rollout.judge.stats import clopper_pearson, min_requests_for_quantile, requests_to_prove_rate
from pytest_rollout.slo import SLOSpec

__all__ = ["provable", "risk_line"]


def risk_line(spec: SLOSpec, budget: RiskBudget) -> str:
    """The run's false-fail risk, and how soon a release twice over a bound is caught at the marker's rate."""
    rps = spec.requested_rps
    caught: list[str] = []
    mix = is_mix(spec)  # a route's bound is judged on its own requests: said in requests, not seconds
    if spec.error_rate > 0:
        n = requests_to_prove_above(2 * spec.error_rate, spec.error_rate, budget.per_claim)
        if n is not None:
            caught.append(
                f"a route's error rate twice the marker's bound after about {n:,} of its own requests"
                if mix
                else f"an error rate twice its bound after about {n:,} requests ({n / rps:,.1f}s)"
            )
    for key, q, bound in spec.latency_bounds():
        n = requests_to_prove_above(min(1.0, 2 * (1 - q)), 1 - q, budget.per_claim)
        if n is not None:
            caught.append(
                f"a {key} twice broken ({min(1.0, 2 * (1 - q)):.3g} of requests over {bound:g} ms, "
                f"{1 - q:.3g} allowed) after about {n:,}"
                + (" of the route's own requests" if mix else f" ({n / rps:,.1f}s)")
            )
    text = budget.sentence()
    if caught:
        text += "; at this rate it catches " + ", ".join(caught)
    return text


def provable(spec: SLOSpec, phase_lengths: Mapping[str, float]) -> list[tuple[str, str, bool]]:
    """What each phase can possibly prove held, from the marker's rate and the phases' lengths.

    The ``upgrade`` phase's length is not known in advance (give it any value):
    its line says how long an upgrade must last to prove the error rate.

    Returns ``(phase, text, ok)`` lines: *ok* is False where an SLO can never be
    proven held as written (even with no error and every request fast), with
    the change that would make it provable. In a mix of several routes each
    route has a line per phase, counting the route's own requests under its own
    bounds (``checkout (5% of 2,000 rps = 100 requests a second): ...``).
    """
    mix = route_bounds(spec)
    whole = spec.requested_rps
    routes = [(_route_label(r.name, r.share, whole), r.spec, r.rps(spec)) for r in mix] or [("", spec, whole)]
    scale = {label: whole / rps for label, _spec, rps in routes if label}
    lines: list[tuple[str, str, bool]] = []
    for phase, seconds in phase_lengths.items():
        if phase == "ramp" and not spec.judge_ramp:
            continue
        for label, bounds, rps in routes:
            line = _phase_line(bounds, phase, seconds, rps, scale.get(label))
            if line is not None:
                lines.append((phase, label + line[0], line[1]))
    return lines


def _route_label(name: str, share: float, whole: float) -> str:
    return f"{name} ({share * 100:.3g}% of {whole:,.0f} rps = {share * whole:,.4g} requests a second): "


def _phase_line(
    spec: SLOSpec, phase: str, seconds: float, rps: float, scale: float | None = None
) -> tuple[str, bool] | None:
    """What *phase* can prove under *spec*'s bounds at *rps* requests a second; None: nothing to say.

    *scale*: a route's whole rate over its own (None: not a route of a mix), to say the whole rate a fix needs.
    """
    if phase == "upgrade":  # its length is the platform's: say how long it must last to prove anything
        needed = requests_to_prove_rate(0.0, spec.error_rate) if spec.error_rate > 0 else None
        if not needed:
            return None
        return (
            f"{rps:,.0f} requests a second of upgrade; proving error_rate <= {spec.error_rate:g} needs "
            f"{needed:,} requests, an upgrade of at least {needed / rps:,.1f}s at this rate"
        ), True
    n = int(rps * seconds / (2.0 if phase == "ramp" else 1.0))
    best = clopper_pearson(0, n)[1] if n > 0 else 1.0
    parts = [f"{n:,} requests"]
    ok = True
    fixes: list[str] = []
    if spec.error_rate > 0:
        parts.append(f"can prove error_rate <= {best:.2g} at best")
        if best > spec.error_rate:
            ok = False
            needed = requests_to_prove_rate(0.0, spec.error_rate) or 0
            fixes.append(
                f"error_rate={spec.error_rate:g} needs {needed:,} requests: "
                f"{needed / rps:,.0f}s at {rps:,.0f} rps, or {needed / max(seconds, 1e-9):,.0f} rps for {seconds:g}s"
                + ("" if scale is None else f" ({needed / max(seconds, 1e-9) * scale:,.0f} rps in all)")
            )
    for key, q, _bound in spec.latency_bounds():
        needed = min_requests_for_quantile(q)
        if n < needed:
            ok = False
            fixes.append(
                f"{key} needs at least {needed:,} requests to be bounded ({needed / rps:,.1f}s at {rps:,.0f} rps)"
            )
    text = ", ".join(parts)
    if fixes:
        text += "; can never be proven held as written: " + "; ".join(fixes)
    return text, ok
