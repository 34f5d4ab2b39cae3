"""Baselines: saved runs, comparisons against their spread, and what they say when they cannot tell.

The simulations call the real :func:`~pytest_rollout.judge.baseline.compare` on histograms built with the
fleet's own :class:`~pytest_rollout.load.histogram.Histogram`, seeded, so each rate here is reproducible.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import re
from dataclasses import replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest

from pytest_rollout.errors import RolloutUsageError
from pytest_rollout.judge.baseline import MAX_RUNS, Baselines, compare, saved_run, z_confidence
from pytest_rollout.judge.oc import binomial
from pytest_rollout.judge.risk import budget_for
from pytest_rollout.judge.verdict import Outcome, PhaseMeasurement
from pytest_rollout.load.histogram import BOUNDS, Histogram
from pytest_rollout.slo import parse_slo

SPEC = parse_slo((), {"rps": 100, "regression": {"p99_ms": 0.10, "error_rate": 0.001}})
NORMAL = NormalDist()
Z99 = NORMAL.inv_cdf(0.99)


def phase(hist: Histogram, errors: int = 0, name: str = "after") -> PhaseMeasurement:
    """A phase as Prometheus reports it: the counts and the cumulative histogram over the fleet's bounds."""
    n = hist.total
    return PhaseMeasurement(
        phase=name, start=0.0, end=10.0, asked_requests=n, requests=n, by_class={"ok": n - errors, "http_5xx": errors},
        histogram=tuple(zip((*BOUNDS, math.inf), map(float, hist.cumulative()), strict=True)),
    )  # fmt: skip


def run(
    rng: random.Random, n: int, p99_ms: float, errors: int = 0, name: str = "after", shape: float = 0.5
) -> PhaseMeasurement:
    """*n* requests with log-normal latencies (sigma *shape*) whose true p99 is *p99_ms*.

    Only the slow tail is drawn request by request: the count above a bucket bound ``cut`` near the 97th
    percentile is ``Binomial(n, P(X > cut))`` and each of those is drawn from the distribution beyond ``cut``;
    the rest are counted at the median. So every cumulative count at a bound at or above ``cut`` is exactly
    what *n* draws give, and a p99 read off the histogram (which reads only those, short of a one-in-a-million
    shortfall of the tail) is distributed exactly as for *n* requests drawn one by one, at a tenth of the cost.
    """
    median = p99_ms / 1000.0 / math.exp(shape * Z99)
    cut = BOUNDS[bisect.bisect_right(BOUNDS, median * math.exp(shape * 1.9)) - 1]  # 3% to 4% of requests beyond
    beyond = 1.0 - NORMAL.cdf(math.log(cut / median) / shape)
    hist = Histogram()
    tail = binomial(rng, n, beyond)
    for _ in range(tail):  # P(X > x) uniform over (0, beyond]
        hist.observe(median * math.exp(-shape * NORMAL.inv_cdf(beyond * (1.0 - rng.random()))))
    hist.counts[bisect.bisect_left(BOUNDS, median)] += n - tail
    hist.total += n - tail
    return phase(hist, errors, name)


def base(*phases: PhaseMeasurement, passed: bool = True) -> dict[str, Any]:
    """A test's baseline entry holding one saved run per measurement."""
    return {"runs": [saved_run([m], passed) for m in phases]}


def runs(seed: int, k: int, p99_ms: float, spread: float, n: int = 4_000) -> list[PhaseMeasurement]:
    """*k* runs of one release whose p99 varies from run to run by a log-normal factor of sigma *spread*."""
    rng = random.Random(seed)
    return [run(rng, n, p99_ms * math.exp(spread * rng.gauss(0, 1))) for _ in range(k)]


# --- comparisons ---------------------------------------------------------------------------------------------


def test_a_real_slowdown_is_a_regression_and_names_the_runs_the_spread_and_the_bound() -> None:
    saved = base(*runs(1, 5, 4.25, 0.05))
    (p99, errors) = compare(SPEC, [run(random.Random(2), 4_000, 34.25)], saved, "main", alpha=0.001)
    assert p99.outcome is Outcome.BROKEN and p99.slo == "regression:p99_ms" and p99.phase == "after"
    assert p99.reason.startswith("regression (at least 99.90% sure): p99 ")
    assert re.search(r"p99 3\d\.\d\d ms vs baseline 'main' \(5 runs, p99 4\.\d\d ms, spread x1\.\d\d\): \+", p99.reason)
    assert p99.bound is not None and p99.measured is not None and p99.measured > p99.bound > 4.25
    assert f"bound {p99.bound:.2f} ms (margin +10%" in p99.reason
    assert errors.passed and "(5 runs, 0.00000 pooled" in errors.reason


def test_the_same_release_within_the_runs_spread_is_no_regression() -> None:
    saved = base(*runs(3, 5, 4.25, 0.30))
    (p99, _) = compare(SPEC, [run(random.Random(4), 4_000, 4.25 * 1.6)], saved, "main", alpha=0.01)  # +60%
    assert p99.passed, p99.reason
    assert p99.reason.startswith("beyond the margin but within the runs' spread: p99 ")
    (p99, _) = compare(SPEC, [run(random.Random(5), 4_000, 4.25)], saved, "main", alpha=0.01)
    assert p99.passed and p99.measured is not None and p99.bound is not None and p99.measured < p99.bound


def test_fewer_than_three_usable_runs_is_not_proven_and_says_what_would_prove_it() -> None:
    rng = random.Random(6)
    sentence = (
        "baseline 'main' holds {k} run(s) of this test with phase after; save at least 3 runs of the unchanged "
        "release on this machine (--rollout-save main, once per run) so the comparison knows how much runs vary"
    )
    slower = run(rng, 4_000, 40.0, errors=400)  # ten times slower, 10% errors: still not a regression
    for k in (0, 1, 2):
        entries = compare(SPEC, [slower], base(*(run(rng, 4_000, 4.0) for _ in range(k))), "main")
        assert [e.outcome for e in entries] == [Outcome.NOT_PROVEN] * 2
        assert all(e.reason == "not proven: " + sentence.format(k=k) for e in entries)
    # runs that did not pass, or that are too short for a p99, do not count, and the entry says so
    entry = {"runs": [*base(run(rng, 4_000, 4.0))["runs"], *base(run(rng, 4_000, 4.0), passed=False)["runs"]]}
    entry["runs"] += base(run(rng, 100, 4.0))["runs"]
    (p99, errors) = compare(SPEC, [slower], entry, "main")
    assert p99.reason.startswith("not proven: " + sentence.format(k=1)) and "(2 more left out: " in p99.reason
    assert errors.reason.startswith("not proven: " + sentence.format(k=2)) and "(1 more left out: " in errors.reason
    # a phase no saved run has
    (p99, _) = compare(SPEC, [replace(slower, phase="upgrade")], base(*runs(7, 5, 4.0, 0.1)), "main")
    assert p99.reason == "not proven: " + sentence.format(k=0).replace("phase after", "phase upgrade")


def test_a_run_too_short_for_the_quantile_or_a_test_missing_from_the_baseline_is_not_proven() -> None:
    saved = base(*runs(8, 5, 4.0, 0.1))
    (p99, errors) = compare(SPEC, [run(random.Random(9), 100, 4.0)], saved, "main")
    assert not p99.judged and p99.reason == "not proven: need 368 requests in this run to compare p99 (had 100)"
    assert errors.passed
    (entry,) = compare(SPEC, [run(random.Random(10), 4_000, 4.0)], None, "main")
    assert not entry.judged and "baseline 'main' has no run of this test" in entry.reason


def test_the_unjudged_ramp_is_not_compared_unless_the_marker_judges_it() -> None:
    saved = {"runs": [saved_run([run(random.Random(s), 4_000, 4.0, name=p) for p in ("ramp", "after")], True)
                      for s in range(4)]}  # fmt: skip
    new = [run(random.Random(11), 4_000, 40.0, name=p) for p in ("ramp", "after")]
    assert {e.phase for e in compare(SPEC, new, saved, "main")} == {"after"}
    judged = parse_slo((), {"rps": 100, "ramp": "5s", "judge_ramp": True})
    assert {e.phase for e in compare(judged, new, saved, "main")} == {"ramp", "after"}
    # the budget counts exactly the phases compared: 3 steady (+ the judged ramp) times 2 margins
    assert budget_for(SPEC, compared=True).claims - budget_for(SPEC).claims == 3 * 2
    assert budget_for(judged, compared=True).claims - budget_for(judged).claims == 4 * 2


def test_an_error_rate_regression_is_judged_against_the_pooled_runs_and_their_dispersion() -> None:
    rng = random.Random(12)
    steady = base(*(run(rng, 20_000, 4.0, errors=e) for e in (9, 11, 10, 12, 8)))  # about 0.05%, binomial
    (_, worse) = compare(SPEC, [run(rng, 20_000, 4.0, errors=200)], steady, "main", alpha=0.01)  # 1%
    assert worse.outcome is Outcome.BROKEN and worse.reason.startswith("regression (at least 99.00% sure): error ")
    assert "(5 runs, 0.00050 pooled, spread x1.00 the binomial)" in worse.reason
    assert worse.bound is not None and worse.measured == 0.01 > worse.bound
    (_, noise) = compare(SPEC, [run(rng, 20_000, 4.0, errors=20)], steady, "main", alpha=0.01)  # 0.1%: within +0.1 pt
    assert noise.passed and "sure it got worse by more than the margin" in noise.reason
    # the same pooled rate, but the runs disagree far beyond sampling noise: 0.5% more is within their spread
    bursty = base(*(run(rng, 20_000, 4.0, errors=e) for e in (0, 150, 2, 80, 3)))
    (_, burst) = compare(SPEC, [run(rng, 20_000, 4.0, errors=170)], bursty, "main", alpha=0.01)
    assert burst.passed and "spread x" in burst.reason and "spread x1.00" not in burst.reason, burst.reason
    (_, steady_burst) = compare(SPEC, [run(rng, 20_000, 4.0, errors=170)], steady, "main", alpha=0.01)
    assert steady_burst.outcome is Outcome.BROKEN


# --- simulations: the exact compare() a run calls ------------------------------------------------------------


@pytest.mark.parametrize(("k", "trials", "seed"), [(3, 2_000, 13), (6, 1_000, 14)])
def test_an_unchanged_release_is_called_a_regression_in_at_most_alpha_of_runs(k: int, trials: int, seed: int) -> None:
    """k saved runs and a new one from the same release: run effect 30%, plus each run's own sampling noise.

    With no margin the prediction bound is all that stands between run-to-run drift and a false regression, so
    the share must be alpha (not much below: the bound is not loose either); with the default 10% it is less.
    """
    alpha = 0.05
    rng = random.Random(seed)
    exact = parse_slo((), {"rps": 100, "regression": {"p99_ms": 0.0}})
    called = {0.0: 0, 0.10: 0}
    for _ in range(trials):
        phases = [run(rng, 2_000, 5.0 * math.exp(0.3 * rng.gauss(0, 1))) for _ in range(k + 1)]
        saved = base(*phases[:k])
        for spec, margin in ((exact, 0.0), (SPEC, 0.10)):
            (entry, *_) = compare(spec, phases[k:], saved, "main", alpha)
            called[margin] += entry.outcome is Outcome.BROKEN
    slack = 3 * math.sqrt(alpha * (1 - alpha) / trials)  # three standard errors
    assert alpha - 2 * slack <= called[0.0] / trials <= alpha + slack, called
    assert called[0.10] < called[0.0]


def test_a_release_30_ms_slower_than_a_5_ms_baseline_is_caught_in_nearly_every_run() -> None:
    """Five quiet saved runs (10% run to run), the default margins, at a claim's real share of a 1% risk."""
    alpha, trials = budget_for(SPEC, compared=True).per_claim, 300
    rng = random.Random(15)
    caught = 0
    for _ in range(trials):
        saved = base(*(run(rng, 4_000, 5.0 * math.exp(0.1 * rng.gauss(0, 1))) for _ in range(5)))
        (p99, _) = compare(SPEC, [run(rng, 4_000, 35.0 * math.exp(0.1 * rng.gauss(0, 1)))], saved, "main", alpha)
        caught += p99.outcome is Outcome.BROKEN
    assert caught >= 0.99 * trials, caught


def test_an_unchanged_error_rate_that_varies_between_runs_is_a_regression_in_at_most_alpha_of_runs() -> None:
    """The per-run error rate varies by a log-normal factor of sigma 0.7 around 0.2%: far beyond binomial."""
    alpha, trials, n = 0.05, 1_500, 20_000
    rng = random.Random(16)
    exact = parse_slo((), {"rps": 100, "regression": {"error_rate": 0.0}})
    empty = Histogram()
    called = 0
    for _ in range(trials):
        counts = [binomial(rng, n, 0.002 * math.exp(0.7 * rng.gauss(0, 1))) for _ in range(6)]
        phases = [replace(phase(empty, e), requests=n, by_class={"ok": n - e, "http_5xx": e}) for e in counts]
        (entry,) = compare(exact, phases[5:], base(*phases[:5]), "main", alpha)
        called += entry.outcome is Outcome.BROKEN
    assert called / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials), called


# --- storage -------------------------------------------------------------------------------------------------


def test_saving_appends_runs_keeps_the_newest_and_merges_tests(tmp_path: Path) -> None:
    store = Baselines(tmp_path)
    rng = random.Random(17)
    for i in range(MAX_RUNS + 3):
        store.save("main", {"t::a": [run(rng, 10 + i, 4.0)]}, {"t::a": i % 2 == 0})
    store.save("main", {"t::b": [run(rng, 10, 4.0, name="baseline")]}, {"t::b": False})
    tests = store.load("main")["tests"]
    assert set(tests) == {"t::a", "t::b"}
    a = tests["t::a"]["runs"]
    assert len(a) == MAX_RUNS and [r["phases"]["after"]["requests"] for r in a] == [10 + i for i in range(3, 23)]
    assert a[-1]["passed"] is True and a[-2]["passed"] is False and a[0]["saved_at"] <= a[-1]["saved_at"]
    assert tests["t::b"]["runs"][0]["phases"]["baseline"]["histogram"][-1] == ["+Inf", 10.0]
    assert not list(tmp_path.glob("*.tmp-*"))  # written atomically: no temporary file left behind


def test_a_baseline_of_the_first_format_loads_as_one_run_and_takes_more(tmp_path: Path) -> None:
    m = run(random.Random(18), 4_000, 4.0)
    old = {"saved_at": 1.0, "passed": True, "phases": saved_run([m], True)["phases"]}
    (tmp_path / "main.json").write_text(json.dumps({"tests": {"t::a": old}}))
    store = Baselines(tmp_path)
    assert store.load("main")["tests"]["t::a"] == {"runs": [old]}
    (p99, _) = compare(SPEC, [m], old, "main")  # the entry itself, as a run that loaded it would pass it
    assert "holds 1 run(s) of this test with phase after" in p99.reason
    store.save("main", {"t::a": [m]}, {"t::a": True})
    assert len(store.load("main")["tests"]["t::a"]["runs"]) == 2


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "cannot read .*main.json: Expecting property name"),
        ('{"tests": []}', "main.json is not a pytest-rollout baseline \\(no 'tests'\\)"),
        ('{"tests": {"t::a": {"runs": [{"phases": {"after": {"requests": 5}}}]}}}',
         "\\(test 't::a': phase 'after' lacks its request and error counts\\)"),
        ('{"tests": {"t::a": {"runs": [{"phases": {"after": {"requests": 5, "errors": 0, "histogram": [[1]]}}}]}}}',
         "\\(test 't::a': phase 'after' has no histogram of \\[upper bound, count\\] pairs\\)"),
    ],
)  # fmt: skip
def test_a_broken_baseline_file_is_named_with_what_to_do(tmp_path: Path, content: str, why: str) -> None:
    (tmp_path / "main.json").write_text(content)
    store = Baselines(tmp_path)
    with pytest.raises(RolloutUsageError, match=f"--rollout-compare='main': .*{why}.*; restore it, or delete it"):
        store.load("main")
    with pytest.raises(RolloutUsageError, match=f"--rollout-save='main': .*{why}"):  # and it is not overwritten
        store.save("main", {"t::a": [run(random.Random(19), 10, 4.0)]}, {"t::a": True})
    assert (tmp_path / "main.json").read_text() == content
    with pytest.raises(RolloutUsageError, match="no baseline at .*other.json; store at least 3 runs with --rollout"):
        store.load("other")


def test_z_confidence() -> None:
    assert z_confidence(0) == pytest.approx(0.5)
    assert z_confidence(1.645) == pytest.approx(0.95, abs=1e-3)
