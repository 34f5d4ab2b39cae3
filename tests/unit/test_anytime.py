"""The gate's own error rates: the time-uniform test, the run's risk budget, and the simulated operating characteristic.

The simulations run the exact rule code a run uses (judge/oc.py calls rules.live_breach once a simulated second
and rules.evaluate at the end), seeded, so each figure here is reproducible and fails the suite when a change
makes the gate fail good releases more often than it says.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal, getcontext

import pytest

from pytest_rollout.judge.anytime import (
    ABOVE_RATIOS,
    anytime_lower,
    evidence_above,
    proves_above,
    quantile_lower_ms,
    requests_to_prove_above,
    slow_counts,
)
from pytest_rollout.judge.oc import binomial, simulate
from pytest_rollout.judge.provable import risk_line
from pytest_rollout.judge.risk import budget_for
from pytest_rollout.judge.rules import live_breach
from pytest_rollout.judge.verdict import Outcome, PhaseMeasurement
from pytest_rollout.slo import parse_slo


def _mixture_reference(k: int, n: int, b: float) -> float:
    """``log M_n(b)`` computed independently, in 60-digit decimal arithmetic, from its definition."""
    getcontext().prec = 60
    bd = Decimal(repr(b))
    total = Decimal(0)
    for r in ABOVE_RATIOS:
        p = bd * Decimal(repr(r))
        if p >= 1:
            continue
        total += (p / bd) ** k * ((1 - p) / (1 - bd)) ** (n - k)
    return float((total / len(ABOVE_RATIOS)).ln())


@pytest.mark.parametrize(
    ("k", "n", "b"),
    [(0, 1000, 0.001), (3, 1000, 0.001), (31, 845, 0.002), (40, 10_000, 0.001), (150, 10_000, 0.01), (5, 5, 0.5)],
)
def test_the_mixture_matches_its_definition(k: int, n: int, b: float) -> None:
    assert evidence_above(k, n, b) == pytest.approx(_mixture_reference(k, n, b), rel=1e-9, abs=1e-9)


def test_the_lower_bound_is_where_the_claim_stops_being_made() -> None:
    alpha = 0.01 / 6
    for k, n in [(31, 845), (40, 10_000), (3, 100)]:
        low = anytime_lower(k, n, alpha)
        assert 0 < low < k / n
        assert proves_above(k, n, low * (1 - 1e-6), alpha) and not proves_above(k, n, low * (1 + 1e-6), alpha)
    assert anytime_lower(0, 10_000, alpha) == 0.0  # no failure proves no rate above anything
    assert anytime_lower(1, 1, alpha) == 0.0  # nor does one failure in one request, at this risk


def test_the_test_keeps_its_level_over_every_look_where_a_fixed_interval_does_not() -> None:
    # one error-rate bound, a release exactly at it, 2,000 rps, looked at once a second for 20 s (the issue's
    # first row: the fixed 95% interval stopped 10.2% of such runs); here at a risk of 2.5%, in 4,000 runs
    rng = random.Random(7)
    alpha, bound, stopped = 0.025, 0.001, 0
    for _ in range(4000):
        k = n = 0
        for _second in range(20):
            n += 2000
            k += binomial(rng, 2000, bound)
            if proves_above(k, n, bound, alpha):
                stopped += 1
                break
    assert stopped / 4000 <= alpha


def test_requests_to_prove_a_rate_above_its_bound() -> None:
    alpha = 0.01 / 6
    n = requests_to_prove_above(0.002, 0.001, alpha)
    assert n is not None and proves_above(math.floor(0.002 * n), n, 0.001, alpha)
    assert not proves_above(math.floor(0.002 * (n - 200)), n - 200, 0.001, alpha)
    assert requests_to_prove_above(0.001, 0.001, alpha) is None


def test_slow_requests_are_counted_on_the_conservative_side_of_the_bound() -> None:
    # cumulative (le seconds, count): 900 at or below 40 ms, 60 in (40, 60] ms, 40 above 60 ms
    hist = ((0.04, 900.0), (0.06, 960.0), (math.inf, 1000.0))
    assert slow_counts(hist, 1000, 50.0) == (40, 100, 1000)  # 50 ms falls inside (40, 60]: 40 surely, 100 maybe
    assert slow_counts(hist, 1000, 60.0) == (40, 40, 1000)  # an edge: exact
    assert slow_counts(hist, 1010, 60.0) == (40, 50, 1010)  # 10 in flight: fast for broken, slow for held
    assert quantile_lower_ms(hist, 1000, 0.99, 0.01) == 60.0  # 4% over 60 ms: p99 above 60 ms, proven
    assert quantile_lower_ms(hist, 1000, 0.5, 0.01) == 0.0  # 10% over 40 ms says nothing against a median


def test_the_budget_shares_the_risk_among_the_claims_that_can_fail_a_release() -> None:
    spec = parse_slo((), {"rps": 2000, "error_rate": 0.001, "p99_ms": 50, "availability": 0.999})
    budget = budget_for(spec)
    assert budget.claims == 3 * 2 + 1 and budget.per_claim == pytest.approx(0.01 / 7)
    assert budget_for(spec, compared=True).claims == 3 * 4 + 1  # the default regression margins: p99, error_rate
    assert budget_for(parse_slo((), {"rps": 10, "error_rate": 0, "risk": 0.05})).claims == 1
    ramp = parse_slo((), {"rps": 10, "p99_ms": 50, "judge_ramp": True, "risk": 0.05})
    assert budget_for(ramp).claims == 4 * 2 and budget_for(ramp).risk == 0.05
    line = risk_line(spec, budget)
    assert line.startswith("a release meeting every bound is shown broken in at most 1% of runs (7 claims")
    assert "an error rate twice its bound after about" in line and "a p99_ms twice broken (0.02 of requests" in line


def _phase(errors: int, n: int) -> PhaseMeasurement:
    return PhaseMeasurement(
        "baseline", 0.0, 1.0, float(n), float(n), by_class={"ok": float(n - errors), "http_5xx": float(errors)}
    )


def test_a_live_breach_needs_the_time_uniform_proof() -> None:
    spec = parse_slo((), {"rps": 2000, "error_rate": 0.001})
    # 22 in 10,000: the fixed 95% interval [0.0014, 0.0033] lies beyond 0.001, but one look in many at a
    # release on its bound shows that often enough: the time-uniform test does not call it yet
    assert live_breach(spec, _phase(22, 10_000)) is None
    found = live_breach(spec, _phase(30, 10_000))
    assert found is not None and found.outcome is Outcome.BROKEN and found.low is not None and found.low > 0.001
    assert "risk over every look" in found.reason


# The README's examples' markers (examples/test_upgrade.py, examples/test_bad_release.py): the gate's table.
EXAMPLE = {"rps": 1000, "error_rate": 0.001, "p99_ms": 50, "hold": "20s", "after": "10s"}


def test_a_release_at_its_bounds_fails_no_more_runs_than_the_stated_risk() -> None:
    spec = parse_slo((), EXAMPLE)
    row = simulate(spec, 1.0, trials=2000, seed=1)
    assert row.failed_share <= spec.false_fail_risk, row
    for multiple in (0.5, 0.8):
        assert simulate(spec, multiple, trials=500, seed=1).failed == 0


def test_a_release_twice_over_its_bounds_is_caught_in_every_run_and_early() -> None:
    spec = parse_slo((), EXAMPLE)
    row = simulate(spec, 2.0, trials=300, seed=2)
    assert row.failed == row.trials and row.stopped_live == row.trials
    assert row.caught_after_s is not None and row.caught_after_s <= spec.hold_s
    errors_only = parse_slo((), {**EXAMPLE, "p99_ms": None})
    caught = simulate(errors_only, 2.0, trials=300, seed=3)
    # one error-rate bound at 1,000 rps, 2x over: the time-uniform test needs about 22,500 requests in one phase
    # (requests_to_prove_above), the baseline has 20,000: caught in 210 of these 300 runs
    assert caught.failed_share >= 0.6, caught


def test_the_oc_command_prints_the_table_for_a_marker(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_rollout.cli import main

    assert main(["oc", "rps=1000", "error_rate=0.001", "p99_ms=50", "hold=20s", "--trials", "40"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("risk: a release meeting every bound is shown broken in at most 1% of runs (6 claims")
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and line.split()[0][0].isdigit()]
    assert [r[0] for r in rows] == ["0.5", "0.8", "1", "1.5", "2"] and rows[-1][1] == "100.00%"
    with pytest.raises(SystemExit, match="error_rate=2 must be in"):
        main(["oc", "rps=1000", "error_rate=2"])
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        main(["oc", "rps"])
