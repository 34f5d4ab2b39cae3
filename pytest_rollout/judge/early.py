"""Done as soon as it is proven: whether a steady phase under way is already held on every entry.

``slo(end_when_held="10s")`` lets ``baseline`` and ``after`` end once they
have lasted that long and the data so far prove every entry of the phase
held, by the time-uniform test of :func:`~pytest_rollout.judge.anytime.proves_below`
at each held claim's own risk (:data:`~pytest_rollout.judge.risk.HELD_RISK`,
2.5%): however often it is asked, a phase whose entry is truly over its bound
ends early as held with chance at most that. Off by default: a hold is often
a soak, whose length is the point.

What must be proven, on the requests sent so far (those still in flight
counted against the release: as failures, and as slower than every bound):

- the load: at most ``1 - min_load`` of the phase's requests so far were not
  sent on time (dropped), which, unlike a rate over the time so far, does not
  depend on how far behind Prometheus's last scrape is;
- ``error_rate`` below its bound (``error_rate=0`` can never be proven early);
- each latency bound: the share of requests *possibly* slower than it (every
  request not in a histogram bucket wholly at or below it) below ``1 - q``.

In a mix of several routes, every route's own entries must be proven held, each
on its own requests. A limit: a route's own requests still in flight are not
told apart, so every request of the run still in flight counts against each
route (as failures, and as slower than every bound). That is cautious: a rare
route may wait longer to be proven held than its own answers need (under a
high rate with slow answers, until the phase's end), but never ends early on
answers it has not had.

A test with user ``checks`` never ends a phase early: a check is one value at
the phase's end, with no evidence to accumulate. The final verdict still
judges the phase as ever, on every request of it, including those answered
after the decision; its fixed intervals are narrower than the time-uniform
ones, so it normally holds the phase too.
"""

from __future__ import annotations

from pytest_rollout.judge.anytime import proves_below, slow_counts
from pytest_rollout.judge.risk import HELD_RISK
from pytest_rollout.judge.routes import route_bounds
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
    if n < 1 or m.dropped > (1.0 - spec.min_load) * (m.requests or 0.0):
        return None
    mix = route_bounds(spec)
    proven: list[str] = []
    for name, bounds, own in [(r.name, r.spec, m.routes.get(r.name)) for r in mix] if mix else [(None, spec, m)]:
        if own is None:
            return None  # a route not yet seen in this phase: nothing proven for it
        claims = _proven_held(bounds, own, alpha)
        if claims is None:
            return None
        proven.append(claims if name is None else f"route {name}: {claims}")
    return (
        f"{m.phase} ended after {elapsed_s:.1f}s of {spec.hold_s if m.phase == 'baseline' else spec.after_s:g}s: "
        f"every entry proven held ({'; '.join(proven)}; each entry {1 - alpha:.1%} sure over every look; "
        "end_when_held)"
    )


def _proven_held(spec: SLOSpec, m: PhaseMeasurement, alpha: float) -> str | None:
    """What proves every error rate and latency entry of *m* held under *spec*'s bounds, or None while not."""
    n = m.on_time
    if n < 1:
        return None
    failed = m.errors + m.in_flight  # an answer still to come may be a failure
    if not proves_below(failed, n, spec.error_rate, alpha):
        return None
    proven = [f"error_rate < {spec.error_rate:g} ({failed:.0f} of {n:,.0f} failed or still in flight)"]
    for key, q, bound in spec.latency_bounds():
        _, maybe, total = slow_counts(m.histogram, n, bound)
        if not proves_below(maybe, total, 1.0 - q, alpha):
            return None
        proven.append(f"{key} < {bound:g} ({maybe:,} of {total:,} possibly slower)")
    return "; ".join(proven)
