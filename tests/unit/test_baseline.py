"""Baselines: quantile intervals from histograms, and comparisons that say how sure they are."""

from __future__ import annotations

import bisect
import random
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_rollout.errors import RolloutUsageError
from pytest_rollout.judge.baseline import Baselines, compare, quantile_interval, z_confidence
from pytest_rollout.judge.verdict import PhaseMeasurement
from pytest_rollout.load.histogram import BOUNDS
from pytest_rollout.slo import parse_slo


def histogram(latencies_s: list[float]) -> tuple[tuple[float, float], ...]:
    """Cumulative bucket counts over the fleet's own bounds, as Prometheus holds them."""
    counts = [0] * (len(BOUNDS) + 1)
    for x in latencies_s:
        counts[bisect.bisect_left(BOUNDS, x)] += 1
    out, total = [], 0
    for bound, c in zip([*BOUNDS, float("inf")], counts, strict=True):
        total += c
        out.append((bound, float(total)))
    return tuple(out)


def phase(latencies_s: list[float], errors: int = 0, name: str = "after") -> PhaseMeasurement:
    n = len(latencies_s)
    return PhaseMeasurement(
        phase=name, start=0.0, end=10.0, asked_requests=n, requests=n,
        by_class={"ok": n - errors, "http_5xx": errors}, histogram=histogram(latencies_s),
    )  # fmt: skip


def sample(n: int, median_ms: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(0, 0.5) * median_ms / 1000 for _ in range(n)]


def test_the_quantile_interval_holds_the_true_quantile_and_narrows_with_more_data() -> None:
    small = quantile_interval(histogram(sample(2_000, 10, 1)), 0.99)
    large = quantile_interval(histogram(sample(200_000, 10, 2)), 0.99)
    true_p99 = 10 * 3.2007  # lognormal(0, 0.5): exp(2.3263 * 0.5)
    for low, mid, high in (small, large):
        assert low <= mid <= high
        assert low * 0.95 <= true_p99 <= high * 1.05  # within the interval, up to the buckets' width
    assert (large[2] - large[0]) < (small[2] - small[0]) / 3


SPEC = parse_slo((), {"rps": 100, "regression": {"p99_ms": 0.10, "error_rate": 0.001}})


def saved(tmp_path: Path, m: PhaseMeasurement) -> dict:
    store = Baselines(tmp_path)
    store.save("main", {"t::x": [m]}, {"t::x": True})
    return store.load("main")["tests"]["t::x"]


def test_a_real_slowdown_is_a_regression_and_says_how_sure(tmp_path: Path) -> None:
    base = saved(tmp_path, phase(sample(50_000, 10, 3)))
    slower = phase(sample(50_000, 13, 4))  # 30% slower
    (p99, errors) = compare(SPEC, [slower], base, "main")
    assert not p99.passed and p99.judged and p99.slo == "regression:p99_ms"
    assert p99.reason.startswith("regression (at least 95.00% sure): p99 ")
    assert "vs baseline 'main'" in p99.reason and "margin +10%" in p99.reason
    assert errors.passed


def test_the_same_service_twice_is_no_regression(tmp_path: Path) -> None:
    base = saved(tmp_path, phase(sample(50_000, 10, 5)))
    (p99, errors) = compare(SPEC, [phase(sample(50_000, 10, 6))], base, "main")
    assert p99.passed and p99.reason.startswith("within the margin")
    assert errors.passed


def test_a_small_noisy_run_is_not_called_a_regression_without_evidence(tmp_path: Path) -> None:
    base = saved(tmp_path, phase(sample(1_200, 10, 7)))
    (p99, _) = compare(SPEC, [phase(sample(1_200, 11.5, 8))], base, "main")  # +15%, but few requests
    assert p99.passed, p99.reason
    assert "not significant" in p99.reason or "within the margin" in p99.reason


def test_error_rate_regressions_need_95_percent_confidence(tmp_path: Path) -> None:
    base = saved(tmp_path, phase(sample(20_000, 10, 9), errors=10))  # 0.05%
    (_, worse) = compare(SPEC, [phase(sample(20_000, 10, 10), errors=200)], base, "main")  # 1%
    assert not worse.passed and worse.reason.startswith("regression: error rate 0.01000")
    (_, noise) = compare(SPEC, [phase(sample(20_000, 10, 11), errors=20)], base, "main")  # 0.1%: within +0.1 pt
    assert noise.passed and "sure it got worse by more than the margin" in noise.reason


def test_missing_baselines_fail_closed(tmp_path: Path) -> None:
    (entry,) = compare(SPEC, [phase(sample(100, 10, 12))], None, "main")
    assert not entry.passed and not entry.judged and "baseline 'main' has no run of this test" in entry.reason
    base = saved(tmp_path, phase(sample(100, 10, 13)))
    (p99, _) = compare(SPEC, [phase(sample(100, 10, 14))], base, "main")
    assert not p99.judged and "need 368 requests in both runs" in p99.reason
    with pytest.raises(RolloutUsageError, match="no baseline at .*other.json; store one with --rollout-save other"):
        Baselines(tmp_path).load("other")


def test_saving_merges_tests_into_the_named_baseline(tmp_path: Path) -> None:
    store = Baselines(tmp_path)
    store.save("main", {"t::a": [phase(sample(10, 10, 15))]}, {"t::a": True})
    store.save("main", {"t::b": [replace(phase(sample(10, 10, 16)), phase="baseline")]}, {"t::b": False})
    tests = store.load("main")["tests"]
    assert set(tests) == {"t::a", "t::b"} and tests["t::b"]["passed"] is False
    assert tests["t::a"]["phases"]["after"]["histogram"][-1] == ["+Inf", 10.0]


def test_z_confidence() -> None:
    assert z_confidence(0) == pytest.approx(0.5)
    assert z_confidence(1.645) == pytest.approx(0.95, abs=1e-3)
