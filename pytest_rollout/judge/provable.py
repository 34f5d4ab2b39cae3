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
from pytest_rollout.judge.routes import route_bounds
from pytest_rollout.judge.stats import clopper_pearson, min_requests_for_quantile, requests_to_prove_rate
from pytest_rollout.slo import SLOSpec

__all__ = ["provable", "risk_line"]


def risk_line(spec: SLOSpec, budget: RiskBudget) -> str:
    """The run's false-fail risk, and how soon a release twice over a bound is caught at the marker's rate.

    In a mix of several routes each route's bound is judged on the route's own requests, at its share of the rate:
    the line names the slowest of every route's bounds (its own or the marker's), in requests and in seconds.
    """
    text = budget.sentence()
    mix = route_bounds(spec)
    if mix:
        cases = [
            (n / max(r.rps(spec), 1e-9), r.name, key, n, r.rps(spec))
            for r in mix
            for key, n, _said in _doubled(r.spec, budget)
        ]
        if cases:
            seconds, name, key, n, rps = max(cases)
            text += (
                f"; at this rate it catches any route's bound twice broken on the route's own requests, the slowest "
                f"being {name}'s {key}: after about {n:,} of its requests ({seconds:,.1f}s at {rps:,.4g} rps)"
            )
        return text
    rps = spec.requested_rps
    caught = [
        f"{said} after about {n:,}{' requests' if key == 'error_rate' else ''} ({n / rps:,.1f}s)"
        for key, n, said in _doubled(spec, budget)
    ]
    if caught:
        text += "; at this rate it catches " + ", ".join(caught)
    return text


def _doubled(spec: SLOSpec, budget: RiskBudget) -> list[tuple[str, int, str]]:
    """``(bound, requests, what)``: how many requests prove each of *spec*'s bounds broken when twice broken."""
    out = []
    if spec.error_rate > 0:
        n = requests_to_prove_above(2 * spec.error_rate, spec.error_rate, budget.per_claim)
        if n is not None:
            out.append(("error_rate", n, "an error rate twice its bound"))
    for key, q, bound in spec.latency_bounds():
        doubled = min(1.0, 2 * (1 - q))
        n = requests_to_prove_above(doubled, 1 - q, budget.per_claim)
        if n is not None:
            out.append(
                (key, n, f"a {key} twice broken ({doubled:.3g} of requests over {bound:g} ms, {1 - q:.3g} allowed)")
            )
    return out


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
        lead = f"{rps:,.0f} requests a second of upgrade; " if scale is None else ""  # a route's label says it
        return (
            f"{lead}proving error_rate <= {spec.error_rate:g} needs {needed:,} requests, an upgrade of at least "
            f"{needed / rps:,.1f}s at this rate"
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
                f"{key} needs at least {needed:,} requests to be bounded ({needed / rps:,.1f}s at {rps:,.0f} rps"
                + (
                    ""
                    if scale is None
                    else f", or {needed / max(seconds, 1e-9) * scale:,.0f} rps in all for {seconds:g}s"
                )
                + ")"
            )
    text = ", ".join(parts)
    if fixes:
        text += "; can never be proven held as written: " + "; ".join(fixes)
    return text, ok
