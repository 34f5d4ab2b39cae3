"""Exact confidence intervals behind every verdict. Pure math, no I/O, no dependencies.

- :func:`clopper_pearson`: the exact binomial interval for an error rate
  (Clopper and Pearson, 1934): the bounds are quantiles of beta
  distributions, ``Beta(a/2; k, n-k+1)`` and ``Beta(1-a/2; k+1, n-k)``.
- :func:`order_statistic_ranks`: the distribution-free interval for a
  quantile: ranks ``l`` and ``u`` with ``P(X(l) <= x_q <= X(u)) >= 95%``,
  from the binomial distribution of how many samples fall below ``x_q``.
- :func:`quantile_interval_ms`: those ranks read off a bucketed histogram on
  the conservative side: the lower bound is the *lower* edge of the bucket
  holding rank ``l``, the upper bound the *upper* edge of the bucket holding
  rank ``u``. The true quantile lies inside with at least 95% confidence
  whatever the values inside each bucket were.

Both intervals are two-sided at 95%, so each one-sided claim the verdict
makes ("the SLO held", "the SLO was broken") is at least 97.5% sure.
The regularised incomplete beta function is evaluated by its continued
fraction (modified Lentz), accurate to about 1e-12 here; the unit tests
compare it with reference values computed with SciPy. Student's t
distribution (:func:`t_cdf`, :func:`t_quantile`, for a baseline's prediction
bound) is read off the same function: ``P(|T| > t) = I_{v/(v+t^2)}(v/2, 1/2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

__all__ = [
    "CONFIDENCE",
    "betainc",
    "binom_cdf",
    "clopper_pearson",
    "fewest_requests",
    "min_requests_for_quantile",
    "order_statistic_ranks",
    "quantile_interval_ms",
    "requests_to_prove_rate",
    "t_cdf",
    "t_quantile",
]

#: Two-sided confidence of every interval.
CONFIDENCE = 0.95
_TINY = 1e-300


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (Numerical Recipes' betacf, modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    limit = 200 + int(20 * math.sqrt(max(a, b)))
    for m in range(1, limit):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _beta_ppf(p: float, a: float, b: float) -> float:
    """The *p* quantile of ``Beta(a, b)``, by bisection (monotone, 100 halvings reach double precision)."""
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if betainc(a, b, mid) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15 * max(hi, 1e-300):
            break
    return (lo + hi) / 2.0


def binom_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return betainc(n - k, k + 1, 1.0 - p)


@lru_cache(maxsize=4096)
def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion: *k* events in *n* trials."""
    if n <= 0:
        return 0.0, 1.0
    k = max(0, min(k, n))
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else _beta_ppf(alpha / 2, k, n - k + 1)
    high = 1.0 if k == n else _beta_ppf(1 - alpha / 2, k + 1, n - k)
    return low, high


@lru_cache(maxsize=1024)
def order_statistic_ranks(n: int, q: float, confidence: float = CONFIDENCE) -> tuple[int | None, int | None]:
    """1-based ranks ``(l, u)`` of a two-sided interval for quantile *q* of *n* samples.

    ``P(X(l) <= x_q) >= 1 - a/2`` and ``P(X(u) >= x_q) >= 1 - a/2``; ``None``
    where *n* samples are too few for that side (``l`` below 1, ``u`` above *n*).
    """
    if n <= 0:
        return None, None
    tail = (1.0 - confidence) / 2.0
    # lower: the largest l with P(B <= l - 1) <= tail, B ~ Binomial(n, q)
    lo_r, hi_r = 0, n  # invariant: cdf(lo_r - 1) <= tail (lo_r = 0 means none)
    while lo_r < hi_r:
        mid = (lo_r + hi_r + 1) // 2
        if binom_cdf(mid - 1, n, q) <= tail:
            lo_r = mid
        else:
            hi_r = mid - 1
    low = lo_r if lo_r >= 1 else None
    # upper: the smallest u with P(B <= u - 1) >= 1 - tail
    lo_u, hi_u = 1, n + 1
    while lo_u < hi_u:
        mid = (lo_u + hi_u) // 2
        if binom_cdf(mid - 1, n, q) >= 1.0 - tail:
            hi_u = mid
        else:
            lo_u = mid + 1
    high = lo_u if lo_u <= n else None
    return low, high


def min_requests_for_quantile(q: float, confidence: float = CONFIDENCE) -> int:
    """Fewest samples for which quantile *q* has an upper confidence bound (the largest sample, at least)."""
    tail = (1.0 - confidence) / 2.0
    return math.ceil(math.log(tail) / math.log(q) - 1e-9)


def quantile_interval_ms(
    histogram: Sequence[tuple[float, float]], q: float, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """``(low, high)`` in milliseconds for quantile *q* of a cumulative ``(upper_bound_s, count)`` histogram.

    Conservative: the lower bucket edge for the lower rank, the upper edge for
    the upper rank. ``low`` is 0 and ``high`` infinite where the samples are
    too few for that side (or the rank falls in the ``+Inf`` bucket).
    """
    pairs = sorted(histogram)
    n = int(round(pairs[-1][1])) if pairs else 0
    if n <= 0:
        return 0.0, math.inf
    low_rank, high_rank = order_statistic_ranks(n, q, confidence)

    def bucket_edges(rank: int) -> tuple[float, float]:
        prev = 0.0
        for bound, count in pairs:
            if count >= rank:
                return prev, bound
            prev = bound
        return prev, math.inf

    low = bucket_edges(low_rank)[0] if low_rank is not None else 0.0
    high = bucket_edges(high_rank)[1] if high_rank is not None else math.inf
    return low * 1000.0, high * 1000.0


def requests_to_prove_rate(rate: float, bound: float, confidence: float = CONFIDENCE) -> int | None:
    """Requests needed for the interval of an observed *rate* to fall wholly on one side of *bound*.

    Below the bound: the fewest requests whose upper bound is within it (for a
    rate of 0, ``ln(a/2) / ln(1 - bound)``, about 3.7 / bound); above it: the
    fewest whose lower bound is beyond it. ``None`` when no number of requests
    can (the rate equals the bound).
    """
    if bound <= 0.0:
        return 1
    if rate == bound:
        return None
    below = rate < bound

    tail = (1.0 - confidence) / 2.0

    def proves(n: int) -> bool:
        # the interval's end is beyond the bound exactly when the bound's binomial tail is within the tail
        k = round(rate * n)
        if below:
            return k < n and binom_cdf(k, n, bound) <= tail
        return k > 0 and 1.0 - binom_cdf(k - 1, n, bound) < tail

    return fewest_requests(proves)


def fewest_requests(proves: Callable[[int], bool], limit: int = 10**12) -> int | None:
    """The fewest requests *n* for which ``proves(n)`` (by doubling, then bisection); None past *limit*."""
    n = 1
    while not proves(n):
        n *= 2
        if n > limit:
            return None
    lo, hi = n // 2, n
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if proves(mid):
            hi = mid
        else:
            lo = mid
    return hi


def t_cdf(t: float, dof: float) -> float:
    """``P(T <= t)`` for Student's t distribution with *dof* degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(dof / 2.0, 0.5, dof / (dof + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=256)
def t_quantile(p: float, dof: float) -> float:
    """The *p* quantile of Student's t with *dof* degrees of freedom (by bracketing, then bisection on the tail)."""
    if not 0.0 < p < 1.0 or dof <= 0:
        raise ValueError(f"t_quantile({p}, {dof}): needs 0 < p < 1 and dof > 0")
    if p < 0.5:
        return -t_quantile(1.0 - p, dof)
    if p == 0.5:
        return 0.0
    tail = 1.0 - p

    def upper(t: float) -> float:  # P(T > t) for t >= 0, without the rounding of 1 - cdf
        return 0.5 * betainc(dof / 2.0, 0.5, dof / (dof + t * t))

    lo, hi = 0.0, 1.0
    while upper(hi) > tail:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if upper(mid) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return (lo + hi) / 2.0
