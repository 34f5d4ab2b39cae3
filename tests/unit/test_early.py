"""Done as soon as proven (``end_when_held``): the time-uniform held claim, and when a steady phase may end."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from pytest_rollout.judge.anytime import BELOW_RATIOS, proves_below
from pytest_rollout.judge.early import held_so_far
from pytest_rollout.judge.oc import binomial
from pytest_rollout.judge.verdict import PhaseMeasurement
from pytest_rollout.load.histogram import BOUNDS
from pytest_rollout.slo import parse_slo

SPEC = parse_slo((), {"rps": 1000, "error_rate": 0.001, "p99_ms": 50, "hold": "30s", "end_when_held": "10s"})


def histogram(fast: int, slow: int) -> tuple[tuple[float, float], ...]:
    """*fast* requests at about 5 ms, *slow* at about 80 ms (over the 50 ms bound)."""
    out = [(b, float((fast if b >= 0.005 else 0) + (slow if b >= 0.08 else 0))) for b in BOUNDS]
    return (*out, (math.inf, float(fast + slow)))


def phase(n: int, errors: int = 0, slow: int = 0, name: str = "baseline", seconds: float = 0.0) -> PhaseMeasurement:
    """*n* requests over *seconds* (default: at the marker's 1,000 rps)."""
    return PhaseMeasurement(
        phase=name, start=0.0, end=seconds or n / 1000, asked_requests=n, requests=n, by_class={"ok": n - errors,
        "http_5xx": errors}, histogram=histogram(n - slow, slow),
    )  # fmt: skip


def test_the_held_claim_against_its_definition() -> None:
    # no failure: the mixture's p=0 term alone is (1 - b) ** -n / 6; proven once it reaches 1 / alpha
    b, alpha = 0.001, 0.025

    def mixture(n: int) -> float:  # with no failure, each alternative p = b * r weighs ((1 - p) / (1 - b)) ** n
        return sum(((1 - b * r) / (1 - b)) ** n for r in BELOW_RATIOS) / len(BELOW_RATIOS)

    n0 = next(n for n in range(1, 100_000) if proves_below(0, n, b, alpha))
    assert mixture(n0) >= 1 / alpha > mixture(n0 - 1)
    assert n0 == 4_756  # the fixed 97.5% interval needs 3,689: ending early costs a little evidence
    assert not proves_below(5, 5_000, b, alpha) and not proves_below(0, 100, b, alpha)
    assert proves_below(2, 20_000, b, alpha)
    assert not proves_below(0, 10**6, 0.0, alpha)  # error_rate=0 is never proven held by sampling


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_a_rate_at_or_over_its_bound_is_proven_held_in_at_most_alpha_of_runs_however_often_looked_at(
    ratio: float,
) -> None:
    """2,000 simulated phases of 60 looks (1,000 requests each) at the bound, and at twice it."""
    rng = random.Random(21)
    b, alpha, wrong = 0.002, 0.025, 0
    for _ in range(2_000):
        k = n = 0
        for _look in range(60):
            k += binomial(rng, 1_000, b * ratio)
            n += 1_000
            if proves_below(k, n, b, alpha):
                wrong += 1
                break
    assert wrong / 2_000 <= alpha


def test_a_steady_phase_ends_when_every_entry_is_proven_held() -> None:
    good = phase(12_000)
    reason = held_so_far(SPEC, good, 12.0)
    assert reason is not None and reason.startswith("baseline ended after 12.0s of 30s: every entry proven held")
    assert "error_rate < 0.001 (0 of 12,000 failed or still in flight)" in reason
    assert "p99_ms < 50 (0 of 12,000 possibly slower)" in reason
    assert held_so_far(SPEC, good, 9.0) is None  # not before end_when_held
    assert held_so_far(SPEC, replace(good, phase="upgrade"), 12.0) is None  # the upgrade lasts as long as it does
    assert held_so_far(SPEC, replace(good, phase="after"), 12.0) is not None
    assert held_so_far(replace(SPEC, end_when_held=None), good, 12.0) is None  # off by default
    assert held_so_far(SPEC, phase(12_000, errors=12), 12.0) is None  # at the bound: never proven
    assert held_so_far(SPEC, phase(12_000, slow=120), 12.0) is None  # 1% slower than 50 ms: p99 at the bound
    assert held_so_far(SPEC, phase(3_000), 12.0) is None  # too few requests yet
    dropped = replace(good, by_class={"ok": 11_000, "dropped": 1_000})
    assert held_so_far(SPEC, dropped, 12.0) is None  # over 5% not sent on time: the load was not held
    # requests still in flight count as failures: 100 of them could be 100 errors, too many to prove 0.001
    assert held_so_far(SPEC, replace(good, in_flight=100.0), 12.0) is None
    assert held_so_far(SPEC, replace(good, in_flight=2.0), 12.0) is not None
    assert held_so_far(replace(SPEC, error_rate=0.0), good, 12.0) is None
    with_checks = parse_slo((), {"rps": 1000, "end_when_held": "10s", "checks": {"x": ("up", ">", 0)}})
    assert held_so_far(with_checks, good, 12.0) is None


def test_a_phase_at_its_latency_bound_ends_early_in_at_most_the_held_risk_of_runs() -> None:
    """The exact rule, looked at once a simulated second over a 60 s phase at 1,000 rps, with the share of
    requests slower than the bound exactly 1% (p99 at its bound)."""
    rng = random.Random(7)
    wrong = 0
    for _ in range(500):
        n = slow = 0
        for second in range(1, 61):
            n += 1_000
            slow += binomial(rng, 1_000, 0.01)
            if held_so_far(SPEC, phase(n, slow=slow, seconds=second), float(second)) is not None:
                wrong += 1
                break
    assert wrong / 500 <= 0.025


def test_bad_end_when_held() -> None:
    from pytest_rollout.errors import SLOSpecError

    for value, text in ((0, "must be longer than 0"), ("soon", "not a duration")):
        with pytest.raises(SLOSpecError, match=text):
            parse_slo((), {"rps": 10, "end_when_held": value})
