"""The exact intervals behind the verdict, against reference values.

The reference values were computed once with SciPy 1.17.1 (``scipy.stats.beta.ppf``
for Clopper-Pearson, ``scipy.stats.binom.cdf`` searched rank by rank for the
order-statistic ranks) and are written down here, so the suite needs no SciPy.
"""

from __future__ import annotations

import math

import pytest

from pytest_rollout.judge.stats import (
    binom_cdf,
    clopper_pearson,
    min_requests_for_quantile,
    order_statistic_ranks,
    quantile_interval_ms,
    requests_to_prove_rate,
    t_cdf,
    t_quantile,
)
from pytest_rollout.load.histogram import BOUNDS

# (errors, requests, lower, upper): beta.ppf(0.025, k, n-k+1), beta.ppf(0.975, k+1, n-k)
CLOPPER_PEARSON = [
    (0, 100, 0.0, 0.03621669264517641),
    (0, 1000, 0.0, 0.003682083896865671),
    (31, 845, 0.025060194065564707, 0.05167130680707308),
    (1, 3688, 6.86489183356394e-06, 0.0015098132630320222),
    (5, 10000, 0.00016236793419884248, 0.0011664442090665891),
    (50, 50, 0.9288782635358024, 1.0),
    (0, 1, 0.0, 0.975),
    (3, 1343, 0.00046090139396939833, 0.006514122086375497),
    (1000, 1000000, 0.0009390012079500965, 0.001063918107315228),
    (12345, 60000000, 0.00020213671202487177, 0.0002094116533254011),
]

# (n, q, l, u): the largest l with binom.cdf(l-1, n, q) <= 0.025, the smallest u with binom.cdf(u-1, n, q) >= 0.975
ORDER_STATISTICS = [
    (100, 0.5, 40, 61),
    (367, 0.99, 359, None),
    (366, 0.99, 358, None),
    (1000, 0.99, 983, 997),
    (5000, 0.99, 4936, 4964),
    (20000, 0.999, 19971, 19989),
    (10, 0.5, 2, 9),
]


@pytest.mark.parametrize(("k", "n", "low", "high"), CLOPPER_PEARSON)
def test_clopper_pearson_matches_the_reference(k: int, n: int, low: float, high: float) -> None:
    got_low, got_high = clopper_pearson(k, n)
    assert got_low == pytest.approx(low, rel=1e-9, abs=1e-15)
    assert got_high == pytest.approx(high, rel=1e-9)


@pytest.mark.parametrize(("n", "q", "low", "high"), ORDER_STATISTICS)
def test_order_statistic_ranks_match_the_reference(n: int, q: float, low: int, high: int | None) -> None:
    assert order_statistic_ranks(n, q) == (low, high)


def test_binomial_cdf_edges() -> None:
    assert binom_cdf(-1, 10, 0.5) == 0.0
    assert binom_cdf(10, 10, 0.5) == 1.0
    assert binom_cdf(5, 10, 0.5) == pytest.approx(0.623046875)  # 638/1024, by hand


def test_a_p99_needs_368_requests_not_a_thousand() -> None:
    assert min_requests_for_quantile(0.99) == 368
    assert min_requests_for_quantile(0.999) == 3688
    assert order_statistic_ranks(368, 0.99)[1] == 368


def test_quantile_interval_takes_bucket_edges_on_the_conservative_side() -> None:
    # 1,000 requests: 990 at ~5 ms, 10 at ~150 ms; the p99 ranks (983, 997) fall in both buckets
    i5 = next(i for i, b in enumerate(BOUNDS) if b >= 0.005)
    i150 = next(i for i, b in enumerate(BOUNDS) if b >= 0.150)
    hist = [(b, 990.0 if i >= i5 else 0.0) for i, b in enumerate(BOUNDS)]
    hist = [(b, c + (10.0 if i >= i150 else 0.0)) for i, (b, c) in enumerate(hist)] + [(math.inf, 1000.0)]
    low, high = quantile_interval_ms(hist, 0.99)
    assert low == pytest.approx(BOUNDS[i5 - 1] * 1000)  # the lower edge of the 5 ms bucket
    assert high == pytest.approx(BOUNDS[i150] * 1000)  # the upper edge of the 150 ms bucket
    assert quantile_interval_ms([(0.1, 5.0), (math.inf, 5.0)], 0.99) == (0.0, math.inf)


def test_requests_to_prove_a_rate() -> None:
    assert requests_to_prove_rate(0.0, 0.001) == 3688  # the two-sided "rule of 3.7"
    assert requests_to_prove_rate(0.0, 0.002) == 1843
    needed = requests_to_prove_rate(0.0367, 0.002)
    assert needed is not None and needed < 100  # a 3.7% error rate breaks a 0.2% bound in a few dozen requests
    assert requests_to_prove_rate(0.001, 0.001) is None


# (p, degrees of freedom, t): scipy.stats.t.ppf(p, dof), as printed in every table of Student's t
T_QUANTILES = [
    (0.975, 2, 4.302653),
    (0.99, 4, 3.746947),
    (0.95, 30, 1.697261),
    (0.975, 1, 12.706205),
    (0.995, 10, 3.169273),
    (0.999, 19, 3.579400),
    (0.999, 2, 22.327125),
    (0.9, 5, 1.475884),
]


@pytest.mark.parametrize(("p", "dof", "t"), T_QUANTILES)
def test_t_quantiles_match_the_reference_values(p: float, dof: int, t: float) -> None:
    assert t_quantile(p, dof) == pytest.approx(t, abs=1e-6)
    assert t_quantile(1 - p, dof) == pytest.approx(-t, abs=1e-6)
    assert t_cdf(t, dof) == pytest.approx(p, abs=1e-7)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.999, 0.99999, 1 - 1e-9])
def test_t_quantiles_match_the_closed_forms_far_into_the_tail(p: float) -> None:
    # one and two degrees of freedom have closed forms: tan(pi (p - 1/2)) and (2p - 1) / sqrt(2 p (1 - p))
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-7)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    assert t_quantile(0.5, 7) == 0.0
    with pytest.raises(ValueError, match="needs 0 < p < 1"):
        t_quantile(1.0, 3)
