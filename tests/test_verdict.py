"""Verdict logic: every SLO judged per phase, failing closed on thin or doubtful data."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pytest_rollout.slo import parse_slo
from pytest_rollout.verdict import (
    PhaseMeasurement,
    error_budget,
    evaluate,
    failure_message,
    largest_gap,
    min_requests_for_error_rate,
    min_requests_for_quantile,
)

SPEC = parse_slo((), {"rps": 1000, "error_rate": 0.001, "p99_ms": 100})


def good(phase: str = "baseline", **changes: object) -> PhaseMeasurement:
    m = PhaseMeasurement(
        phase=phase,
        start=100.0,
        end=110.0,
        asked_requests=10_000,
        requests=10_000,
        by_class={"ok": 10_000, "http_5xx": 0},
        quantiles_ms={0.5: 3.0, 0.99: 20.0},
        workers_expected=2,
        workers_seen=2,
        max_gap_s=1.2,
        fleet_requests=10_000,
        fleet_errors=0,
    )
    return replace(m, **changes)  # type: ignore[arg-type]


def entry(entries: list, slo: str, phase: str = "baseline"):  # type: ignore[no-untyped-def]
    (found,) = [e for e in entries if e.slo == slo and e.phase == phase]
    return found


def test_a_good_phase_passes_every_slo() -> None:
    entries = evaluate(SPEC, [good()])
    assert [e.slo for e in entries] == ["rps", "error_rate", "p99_ms"]
    assert all(e.passed for e in entries)
    assert entry(entries, "rps").measured == pytest.approx(1000.0)


def test_errors_over_the_bound_fail_naming_phase_value_and_bound() -> None:
    m = good("upgrade", by_class={"ok": 9_980, "http_5xx": 15, "connection": 5})
    entries = evaluate(SPEC, [m])
    e = entry(entries, "error_rate", "upgrade")
    assert not e.passed and e.measured == pytest.approx(0.002) and e.bound == 0.001
    assert "20 of 10000 requests failed (connection=5, http_5xx=15)" in e.reason
    message = failure_message(entries)
    assert "error_rate in phase upgrade: measured 0.00200, bound <= 0.00100" in message


def test_slow_p99_fails() -> None:
    e = entry(evaluate(SPEC, [good("after", quantiles_ms={0.99: 180.0})]), "p99_ms", "after")
    assert not e.passed and "p99 latency 180.0 ms exceeds 100 ms" in e.reason


def test_load_not_reached() -> None:
    m = good(requests=8_000, by_class={"ok": 8_000}, fleet_requests=8_000)
    e = entry(evaluate(SPEC, [m]), "rps")
    assert not e.passed
    assert e.reason.startswith("load not reached: asked 1,000 rps, held 800 rps")


def test_late_and_dropped_requests_are_not_held() -> None:
    m = good(late=300.0, by_class={"ok": 9_500, "dropped": 500})
    e = entry(evaluate(SPEC, [m]), "rps")
    assert e.measured == pytest.approx(920.0)
    assert not e.passed
    assert "the fleet fell behind: 300 requests sent over 50 ms late, 500 dropped" in e.reason


def test_ramp_is_judged_against_its_schedule() -> None:
    m = good("ramp", asked_requests=5_000, requests=5_000, by_class={"ok": 5_000}, fleet_requests=5_000)
    e = entry(evaluate(SPEC, [m]), "rps", "ramp")
    assert e.passed and e.bound == pytest.approx(0.95 * 500)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"requests": None, "workers_seen": 0}, "no samples"),
        ({"workers_seen": 1}, "scraped 1 of 2 workers"),
        ({"max_gap_s": 3.5}, "went 3.5s without scraping some worker"),
        ({"fleet_requests": 9_000}, "fleet counted 9000"),
        ({"fleet_requests": None}, "cannot be cross-checked"),
        ({"problem": "Prometheus at http://x is unreachable"}, "unreachable"),
    ],
)
def test_doubtful_data_is_insufficient_never_a_pass(changes: dict, why: str) -> None:
    entries = evaluate(SPEC, [good(**changes)])
    assert entries and all(not e.passed for e in entries)
    assert all(e.reason.startswith("insufficient data: ") and why in e.reason for e in entries)


def test_small_disagreement_within_tolerance_passes() -> None:
    assert all(e.passed for e in evaluate(SPEC, [good(fleet_requests=10_050)]))


def test_too_few_requests_to_judge() -> None:
    m = good(requests=2_000, by_class={"ok": 2_000}, fleet_requests=2_000, asked_requests=2_000, end=102.0)
    entries = evaluate(SPEC, [m])
    e = entry(entries, "error_rate")
    assert not e.passed and "too few to judge error_rate <= 0.001 (need at least 3000)" in e.reason
    assert entry(entries, "p99_ms").passed  # 2,000 requests do support a p99


def test_no_phases_fails() -> None:
    (e,) = evaluate(SPEC, [])
    assert not e.passed and "no load was run" in e.reason


def test_missing_quantile_is_insufficient() -> None:
    e = entry(evaluate(SPEC, [good(quantiles_ms={0.99: float("nan")})]), "p99_ms")
    assert not e.passed and "insufficient data" in e.reason


@pytest.mark.parametrize(("bound", "needed"), [(0.001, 3000), (0.01, 300), (0.05, 60), (0.0, 100)])
def test_rule_of_three(bound: float, needed: int) -> None:
    assert min_requests_for_error_rate(bound) == needed


@pytest.mark.parametrize(("q", "needed"), [(0.5, 20), (0.9, 100), (0.99, 1000), (0.999, 10000)])
def test_quantile_evidence(q: float, needed: int) -> None:
    assert min_requests_for_quantile(q) == needed


def test_zero_error_bound_fails_on_any_error() -> None:
    spec = parse_slo((), {"rps": 1000, "error_rate": 0})
    assert entry(evaluate(spec, [good()]), "error_rate").passed
    e = entry(evaluate(spec, [good(by_class={"ok": 9_999, "timeout": 1})]), "error_rate")
    assert not e.passed


def test_largest_gap_counts_from_the_phase_edges() -> None:
    assert largest_gap(0.0, 10.0, [1.0, 2.0, 3.0, 8.5, 9.5]) == pytest.approx(5.5)
    assert largest_gap(0.0, 10.0, []) == pytest.approx(10.0)
    assert largest_gap(0.0, 4.0, [0.9, 1.9, 2.9, 3.9, 7.0]) == pytest.approx(1.0)


def test_two_missed_scrapes_are_tolerated_three_are_not() -> None:
    assert all(e.passed for e in evaluate(SPEC, [good(max_gap_s=3.0)]))
    assert not any(e.passed for e in evaluate(SPEC, [good(max_gap_s=3.01)]))


def test_user_checks_are_judged_per_phase() -> None:
    spec = parse_slo((), {"rps": 1000, "checks": {"lb_5xx": ("sum(x)", "<=", 0), "hits": ("sum(y)", ">", 100)}})
    entries = evaluate(spec, [good(checks={"lb_5xx": 0.0, "hits": 50.0})])
    assert entry(entries, "lb_5xx").passed
    e = entry(entries, "hits")
    assert not e.passed and e.op == ">" and e.reason == "hits = 50, not > 100"
    assert "hits in phase baseline: measured 50, bound > 100" in failure_message(entries)
    missing = entry(evaluate(spec, [good(checks={"lb_5xx": None, "hits": 500.0})]), "lb_5xx")
    assert not missing.passed and missing.reason.startswith("insufficient data")
    # doubtful phase data fails the checks too
    assert not entry(evaluate(spec, [good(workers_seen=1, checks={"lb_5xx": 0.0, "hits": 500.0})]), "lb_5xx").passed


# -- availability and the error budget --------------------------------------------------------------------

AVAIL = parse_slo((), {"rps": 1000, "availability": 0.999})


def test_availability_over_the_run_and_the_budget_each_phase_spent() -> None:
    phases = [
        good("baseline"),
        good("upgrade", by_class={"ok": 9_992, "http_5xx": 8}),
        good("after", by_class={"ok": 9_999, "http_5xx": 1}),
    ]
    judged = entry(evaluate(AVAIL, phases), "availability", "run")
    assert judged.passed and judged.measured == pytest.approx(1 - 9 / 30_000) and judged.op == ">="
    budget = error_budget(AVAIL, phases)
    assert budget is not None
    assert budget["budget_requests"] == pytest.approx(30.0)  # 0.1% of 30,000 requests
    assert budget["phases"]["upgrade"]["spent"] == pytest.approx(8 / 30)
    assert budget["phases"]["upgrade"]["burn_rate"] == pytest.approx(0.8)  # 0.08% errors against 0.1% allowed
    assert budget["spent"] == pytest.approx(9 / 30)


def test_availability_broken_names_the_budget_spent() -> None:
    phases = [good("baseline"), good("upgrade", by_class={"ok": 9_950, "http_5xx": 50})]
    judged = entry(evaluate(AVAIL, phases), "availability", "run")
    assert not judged.passed and judged.judged
    assert "50 failed requests spent 250% of the run's error budget (20)" in judged.reason


def test_availability_without_evidence_is_insufficient_data() -> None:
    phases = [good("baseline"), good("upgrade", workers_seen=1)]
    judged = entry(evaluate(AVAIL, phases), "availability", "run")
    assert not judged.passed and not judged.judged and judged.reason.startswith("insufficient data: upgrade:")
    few = [good("baseline", requests=500, fleet_requests=500, by_class={"ok": 500})]
    assert "too few to judge availability" in entry(evaluate(AVAIL, few), "availability", "run").reason


def test_entries_tell_a_judged_breach_from_what_could_not_be_judged() -> None:
    entries = evaluate(SPEC, [good(quantiles_ms={0.99: 150.0}), good("upgrade", workers_seen=0)])
    assert entry(entries, "p99_ms").judged and not entry(entries, "p99_ms").passed
    assert not entry(entries, "p99_ms", "upgrade").judged
    assert not entry(evaluate(SPEC, [good(requests=5_000)]), "rps").judged  # load not reached
