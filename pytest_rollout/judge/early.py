"""Done as soon as it is proven: whether a steady phase under way is already held on every entry.

``slo(end_when_held="10s")`` lets ``baseline`` and ``after`` end once they
have lasted that long and the data so far prove every entry of the phase
held, by the time-uniform test of :func:`~pytest_rollout.judge.anytime.proves_below`
at each held claim's own risk (:data:`~pytest_rollout.judge.risk.HELD_RISK`,
2.5%): however often it is asked, a phase whose entry is truly over its bound
ends early as held with chance at most that. Off by default: a hold is often
a soak, whose length is the point.

What must be proven, on the requests sent so far (those still in flight
counted against the release):

- the load: the rate held on time is at least ``min_load`` of the rate asked;
- ``error_rate`` below its bound (``error_rate=0`` can never be proven early);
- each latency bound: the share of requests *possibly* slower than it (every
  request not in a histogram bucket wholly at or below it) below ``1 - q``.

A test with user ``checks`` never ends a phase early: a check is one value at
the phase's end, with no evidence to accumulate. The final verdict still
judges the phase as ever (its fixed intervals are narrower than the
time-uniform ones, so a phase ended early is held there too).
"""

from __future__ import annotations

from pytest_rollout.judge.anytime import proves_below, slow_counts
from pytest_rollout.judge.risk import HELD_RISK
from pytest_rollout.judge.verdict import PhaseMeasurement
from pytest_rollout.slo import SLOSpec

__all__ = ["EARLY_PHASES", "held_so_far"]

#: The phases that may end early: the steady holds. The upgrade lasts as long as the rollout does.
EARLY_PHASES = ("baseline", "after")


def held_so_far(spec: SLOSpec, m: PhaseMeasurement, elapsed_s: float, alpha: float = HELD_RISK) -> str | None:
    """Why phase *m* (under way for *elapsed_s* seconds) may end now, or None while it may not."""
    if spec.end_when_held is None or m.phase not in EARLY_PHASES or spec.checks or elapsed_s < spec.end_when_held:
        return None
    n = m.on_time
    if n < 1 or m.held_rps < spec.min_load * spec.requested_rps:
        return None
    if not proves_below(m.errors, n, spec.error_rate, alpha):
        return None
    proven = [f"error_rate < {spec.error_rate:g} ({m.errors:.0f} of {n:,.0f} failed)"]
    for key, q, bound in spec.latency_bounds():
        _, maybe, total = slow_counts(m.histogram, n, bound)
        if not proves_below(maybe, total, 1.0 - q, alpha):
            return None
        proven.append(f"{key} < {bound:g} ({maybe:,} of {total:,} possibly slower)")
    return (
        f"{m.phase} ended after {elapsed_s:.1f}s of {spec.hold_s if m.phase == 'baseline' else spec.after_s:g}s: "
        f"every entry proven held ({'; '.join(proven)}; {1 - alpha:.1%} sure over every look; end_when_held)"
    )
