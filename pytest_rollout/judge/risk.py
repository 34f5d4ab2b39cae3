"""The gate's own error rates: how a run's risk of failing a good release is spent. Pure logic.

A run makes many claims (every SLO in every judged phase, and in a mix of
several routes every route's SLOs in every judged phase) and fails on any
one "broken". So the claims that can fail a release share one budget, the
run's ``risk`` (``slo(risk=0.01)``, ini ``rollout_risk``): each gets an equal
share, and each share is spent by a time-uniform test
(:mod:`pytest_rollout.judge.anytime`) that keeps it over every live look and
the final verdict. By the union bound, a release that meets every bound is
shown broken in at most ``risk`` of runs, however often the data were looked
at.

"Held" claims are the other way round: a release passes only when *every*
entry is held, so a false pass needs the violated entry itself to be falsely
held, and each held claim keeps its own 97.5% (a fixed-sample bound, made
once, at the phase's end).

Not in the budget: a user's PromQL ``checks`` (a value compared with a bound,
no sampling claim), ``error_rate=0`` (any failure breaks it: a release that
meets it cannot be shown broken), entries a hook adds, and the upgrade
failing outright (a replica never ready).
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_rollout.judge.routes import route_bounds
from pytest_rollout.judge.stats import CONFIDENCE
from pytest_rollout.slo import DEFAULT_RISK, SLOSpec

__all__ = ["DEFAULT_RISK", "HELD_RISK", "RiskBudget", "budget_for", "judged_phases"]

#: Each held claim's own risk: one side of a two-sided 95% interval.
HELD_RISK = (1.0 - CONFIDENCE) / 2.0


@dataclass(frozen=True)
class RiskBudget:
    """The run's false-fail risk, the claims that share it, and how held claims are made."""

    risk: float = DEFAULT_RISK
    claims: int = 1  # entries that sampled evidence may show broken

    @property
    def per_claim(self) -> float:
        """Each broken claim's share of the risk, kept over every look."""
        return self.risk / max(1, self.claims)

    def sentence(self) -> str:
        """What the run promises about its own errors, said before the run and in every report."""
        return (
            f"a release meeting every bound is shown broken in at most {_pct(self.risk)} of runs "
            f"({self.claims} claim{'s' if self.claims != 1 else ''} share it, {_pct(self.per_claim)} each, "
            f"over every look); each held claim is {_pct(1.0 - HELD_RISK)} sure at the phase's end"
        )

    def to_json(self) -> dict[str, float | int]:
        return {
            "risk": self.risk,
            "claims": self.claims,
            "per_claim": self.per_claim,
            "held_risk": HELD_RISK,
        }


def _pct(x: float) -> str:
    text = f"{x * 100:.3g}"
    return f"{text}%"


def judged_phases(spec: SLOSpec) -> tuple[str, ...]:
    """The phases whose error rate and latency are judged."""
    return (("ramp",) if spec.judge_ramp and spec.ramp_s > 0 else ()) + ("baseline", "upgrade", "after")


def _sampled(spec: SLOSpec) -> int:
    """The claims per phase that sampled evidence may show broken, under *spec*'s bounds."""
    return (1 if spec.error_rate > 0 else 0) + len(spec.latency_ms)


def budget_for(spec: SLOSpec, compared: bool = False) -> RiskBudget:
    """The run's budget: ``spec.risk`` shared by every claim that sampled evidence may show broken.

    *compared*: the run is judged against a saved baseline too (``--rollout-compare``), whose regression
    entries share the budget.
    """
    mix = route_bounds(spec)  # a mix of several routes: each route's own bounds, each a claim per phase
    per_phase = sum(_sampled(r.spec) for r in mix) if mix else _sampled(spec)
    if compared:
        per_phase += len(spec.regression)
    claims = len(judged_phases(spec)) * per_phase + (1 if spec.availability is not None else 0)
    return RiskBudget(risk=spec.false_fail_risk, claims=max(1, claims))
