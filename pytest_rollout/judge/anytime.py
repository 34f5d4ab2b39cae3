"""Time-uniform tests of a rate: valid however often, and however long, the data are looked at. Pure math.

A "broken" claim is made while the data still come in (the live check, once a
second) and again at the end. A fixed confidence interval recomputed at every
look and acted on at the first one that excludes the bound is wrong far more
often than its level says (a release exactly at its bound, 20 looks: about 10%
instead of 2.5%). The tests here keep their level over any number of looks.

**The test.** *k* failures in *n* requests; the claim "the rate exceeds *b*"
is made when the mixture likelihood ratio

    M_n(b) = sum_j w_j * (p_j / b) ** k * ((1 - p_j) / (1 - b)) ** (n - k),   p_j = b * r_j

reaches ``1 / alpha``. With every ``r_j > 1`` and weights summing to 1 (terms
with ``p_j >= 1`` dropped), each term is a non-negative supermartingale
whenever the chance that the next request fails, given everything before it,
is at most *b* (its expected factor per request is linear in that chance and
equals 1 at *b*). So is their mixture, and Ville's inequality bounds the
chance that it *ever* reaches ``1 / alpha`` by *alpha*: over every look, every
phase length, and any stopping rule. This is the discrete-mixture form of the
time-uniform boundaries of Howard, Ramdas, McAuliffe and Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences" (Annals of
Statistics, 2021), for Bernoulli observations.

**Bounds.** ``M_n(b)`` falls as *b* grows (each term does), so the *b* for which
the claim is made form an interval ``[0, L)``: :func:`anytime_lower` is that
``L``, the lower end of a confidence sequence at level ``1 - alpha``.

**Held, early.** The mirror claim "the rate is below *b*" uses alternatives
below the bound (``BELOW_RATIOS``, down to 0): each term's expected factor is
at most 1 whenever the chance of failing is at least *b*, so the claim is
wrongly made, ever, with chance at most *alpha*. It lets a steady phase end as
soon as it is proven held (``slo(end_when_held=...)``).

**Quantiles.** A latency quantile *q* exceeds *B* exactly when more than
``1 - q`` of requests take longer than *B*: the same test, on the count of
requests slower than *B* with the bound ``1 - q`` (the idea behind the
quantile confidence sequences of Howard and Ramdas, "Sequential estimation of
quantiles", Bernoulli 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from pytest_rollout.judge.stats import fewest_requests

__all__ = [
    "ABOVE_RATIOS",
    "BELOW_RATIOS",
    "proves_below",
    "anytime_lower",
    "evidence_above",
    "proves_above",
    "quantile_lower_ms",
    "requests_to_prove_above",
    "slow_counts",
]

#: The alternatives a "broken" claim weighs, as multiples of the bound (equal weights): from a rate 10% over the
#: bound, which a long phase can show, to gross failure, which a few requests show.
ABOVE_RATIOS: tuple[float, ...] = (1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1000.0)


#: The alternatives a time-uniform "held" claim weighs: from 10% under the bound to no failure at all.
BELOW_RATIOS: tuple[float, ...] = (0.9, 0.75, 0.5, 0.25, 0.1, 0.0)


def _log_mixture(k: int, n: int, b: float, ratios: tuple[float, ...]) -> float:
    """``log M_n(b)`` for the given alternatives (equal weights; terms with a rate outside [0, 1) dropped)."""
    terms = []
    log_fail, log_pass = math.log(b), math.log1p(-b)
    for r in ratios:
        p = b * r
        if p >= 1.0 or (p <= 0.0 and k > 0):
            continue
        fails = k * (math.log(p) - log_fail) if k else 0.0
        terms.append(fails + (n - k) * (math.log1p(-p) - log_pass))
    if not terms:
        return -math.inf
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms)) - math.log(len(ratios))


def evidence_above(k: int, n: int, b: float) -> float:
    """``log M_n(b)`` against "the rate is at most *b*": large when *k* of *n* show it above *b*."""
    if not 0.0 < b < 1.0 or n <= 0:
        return 0.0 if n <= 0 else (math.inf if b <= 0.0 and k > 0 else -math.inf)
    return _log_mixture(k, n, b, ABOVE_RATIOS)


def proves_above(k: float, n: float, b: float, alpha: float) -> bool:
    """True when *k* failures in *n* requests prove the rate above *b*, at risk *alpha* over every look."""
    return evidence_above(round(k), round(n), b) >= -math.log(alpha)


def proves_below(k: float, n: float, b: float, alpha: float) -> bool:
    """True when *k* failures in *n* requests prove the rate below *b*, at risk *alpha* over every look."""
    if not 0.0 < b < 1.0 or n <= 0:
        return b >= 1.0 and n > 0
    return _log_mixture(round(k), round(n), b, BELOW_RATIOS) >= -math.log(alpha)


@lru_cache(maxsize=4096)
def anytime_lower(k: int, n: int, alpha: float) -> float:
    """The lower end of the confidence sequence: every rate below it is proven exceeded (0 when none is)."""
    if n <= 0 or k <= 0:
        return 0.0
    threshold = -math.log(alpha)
    lo, hi = 0.0, k / n  # M falls with b: claimed at lo (or lo = 0), not at hi (the rate itself is never excluded)
    if evidence_above(k, n, hi) >= threshold:
        return hi
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if mid > 0.0 and evidence_above(k, n, mid) >= threshold:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-9 * hi:
            break
    return lo


def requests_to_prove_above(rate: float, bound: float, alpha: float) -> int | None:
    """Requests after which a steady *rate* above *bound* is proven (its failures exactly ``rate * n``).

    A typical figure, not a promise: the failures of a real run scatter around
    ``rate * n``. ``None`` when *rate* is not above *bound*.
    """
    if rate <= bound:
        return None
    if bound <= 0.0:
        return max(1, math.ceil(1.0 / rate))

    def proves(n: int) -> bool:
        return proves_above(math.floor(rate * n), n, bound, alpha)

    return fewest_requests(proves, limit=10**13)


def slow_counts(histogram: Sequence[tuple[float, float]], on_time: float, bound_ms: float) -> tuple[int, int, int]:
    """``(surely_slower, maybe_slower, n)``: requests slower than *bound_ms*, from a cumulative histogram.

    *surely_slower* counts the buckets wholly above the bound (what a broken claim may use), *maybe_slower*
    every request not in a bucket wholly at or below it. *n* is every request sent on time (*on_time*, at
    least the histogram's count): requests still in flight at a live look count as fast in the first, as
    slow in the second.
    """
    pairs = sorted(histogram)
    measured = pairs[-1][1] if pairs else 0.0
    n = max(measured, on_time)
    bound_s = bound_ms / 1000.0
    below_or_at = max((c for le, c in pairs if le <= bound_s), default=0.0)  # the largest edge at or below
    at_or_above = min((c for le, c in pairs if le >= bound_s), default=measured)  # the smallest edge at or above
    return round(measured - at_or_above), round(n - below_or_at), round(n)


def quantile_lower_ms(histogram: Sequence[tuple[float, float]], on_time: float, q: float, alpha: float) -> float:
    """Quantile *q*'s time-uniform lower bound: the highest bucket edge it is proven to exceed (0 when none).

    The quantile exceeds an edge when more than ``1 - q`` of requests are slower than it; the count above
    an edge falls as the edge rises, so the proven edges are the lowest ones (found by bisection).
    """
    pairs = sorted(histogram)
    if not pairs:
        return 0.0
    measured = pairs[-1][1]
    n = round(max(measured, on_time))
    edges = [(le, c) for le, c in pairs if not math.isinf(le)]
    lo, hi = -1, len(edges)
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if proves_above(round(measured - edges[mid][1]), n, 1.0 - q, alpha):
            lo = mid
        else:
            hi = mid
    return edges[lo][0] * 1000.0 if lo >= 0 else 0.0
