"""The latency histogram and its Prometheus-style quantiles."""

from __future__ import annotations

import math
import random

import pytest

from pytest_rollout.load.histogram import BOUNDS, Histogram, quantile_from_buckets


def test_layout() -> None:
    assert BOUNDS[0] == pytest.approx(0.0001)
    assert BOUNDS[-1] > 60.0
    ratios = [b / a for a, b in zip(BOUNDS, BOUNDS[1:], strict=False)]
    assert max(ratios) < 1.0906 and min(ratios) > 1.09
    assert len(BOUNDS) == 155


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99, 0.999])
def test_quantiles_within_a_few_percent(q: float) -> None:
    rng = random.Random(7)
    values = sorted(rng.lognormvariate(math.log(0.004), 0.8) for _ in range(200_000))
    hist = Histogram()
    for v in values:
        hist.observe(v)
    exact = values[int(q * len(values)) - 1]
    assert hist.quantile(q) == pytest.approx(exact, rel=0.03)


def test_merge_is_exact_and_not_an_average() -> None:
    fast, slow = Histogram(), Histogram()
    for _ in range(990):
        fast.observe(0.001)
    for _ in range(10):
        slow.observe(1.0)
    merged = Histogram()
    merged.merge(fast)
    merged.merge(slow)
    assert merged.total == 1000
    assert merged.quantile(0.995) > 0.5  # the slow tail survives merging
    assert Histogram.from_list(merged.to_list()).cumulative() == merged.cumulative()


def test_prometheus_edge_cases() -> None:
    assert math.isnan(quantile_from_buckets(0.5, []))
    assert math.isnan(quantile_from_buckets(0.5, [(1.0, 0.0), (math.inf, 0.0)]))
    # rank in the +Inf bucket: the highest finite bound
    assert quantile_from_buckets(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0
    # first bucket interpolates from zero
    assert quantile_from_buckets(0.5, [(2.0, 10.0), (math.inf, 10.0)]) == pytest.approx(1.0)


def test_from_list_checks_length() -> None:
    with pytest.raises(ValueError):
        Histogram.from_list([1, 2, 3])
