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
from pytest_rollout.judge.stats import clopper_pearson, min_requests_for_quantile, requests_to_prove_rate
from pytest_rollout.slo import SLOSpec

__all__ = ["provable", "risk_line"]


def risk_line(spec: SLOSpec, budget: RiskBudget) -> str:
    """The run's false-fail risk, and how soon a release twice over a bound is caught at the marker's rate."""
    rps = spec.requested_rps
    caught: list[str] = []
    if spec.error_rate > 0:
        n = requests_to_prove_above(2 * spec.error_rate, spec.error_rate, budget.per_claim)
        if n is not None:
            caught.append(f"an error rate twice its bound after about {n:,} requests ({n / rps:,.1f}s)")
    for key, q, bound in spec.latency_bounds():
        n = requests_to_prove_above(min(1.0, 2 * (1 - q)), 1 - q, budget.per_claim)
        if n is not None:
            caught.append(
                f"a {key} twice broken ({min(1.0, 2 * (1 - q)):.3g} of requests over {bound:g} ms, "
                f"{1 - q:.3g} allowed) after about {n:,} ({n / rps:,.1f}s)"
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
    the change that would make it provable.
    """
    rps = spec.requested_rps
    lines: list[tuple[str, str, bool]] = []
    for phase, seconds in phase_lengths.items():
        if phase == "upgrade":  # its length is the platform's: say how long it must last to prove anything
            needed = requests_to_prove_rate(0.0, spec.error_rate) if spec.error_rate > 0 else None
            if needed:
                text = (
                    f"{rps:,.0f} requests a second of upgrade; proving error_rate <= {spec.error_rate:g} needs "
                    f"{needed:,} requests, an upgrade of at least {needed / rps:,.1f}s at this rate"
                )
                lines.append((phase, text, True))
            continue
        if phase == "ramp" and not spec.judge_ramp:
            continue
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
        lines.append((phase, text, ok))
    return lines
