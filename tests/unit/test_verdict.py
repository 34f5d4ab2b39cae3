"""Verdict logic: held, broken or not proven, from intervals; the fleet's failures never the release's."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from pytest_rollout.judge.provable import provable
from pytest_rollout.judge.rules import error_budget, evaluate, largest_gap, live_breach
from pytest_rollout.judge.verdict import (
    Kind,
    Outcome,
    PhaseMeasurement,
    TestResult,
    Verdict,
    VerdictEntry,
    failure_message,
)
from pytest_rollout.load.histogram import BOUNDS
from pytest_rollout.slo import parse_slo

SPEC = parse_slo((), {"rps": 1000, "error_rate": 0.001, "p99_ms": 100})


def histogram(n: float, ms: float = 5.0, slow: float = 0.0, slow_ms: float = 180.0) -> tuple[tuple[float, float], ...]:
    """A cumulative histogram: *n* requests at about *ms*, *slow* more at about *slow_ms*."""
    out = []
    for bound in BOUNDS:
        count = (n if bound * 1000 >= ms else 0.0) + (slow if bound * 1000 >= slow_ms else 0.0)
        out.append((bound, count))
    return (*out, (math.inf, n + slow))


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
        histogram=histogram(10_000),
    )
    return replace(m, **changes)  # type: ignore[arg-type]


def entry(entries: list, slo: str, phase: str = "baseline"):  # type: ignore[no-untyped-def]
    (found,) = [e for e in entries if e.slo == slo and e.phase == phase]
    return found


def test_a_good_phase_holds_every_slo_with_its_interval() -> None:
    entries = evaluate(SPEC, [good()])
    assert [e.slo for e in entries] == ["rps", "error_rate", "p99_ms"]
    assert all(e.outcome is Outcome.HELD for e in entries)
    err = entry(entries, "error_rate")
    assert err.low == 0.0 and err.high == pytest.approx(0.000368, rel=0.01)  # 0 errors in 10,000
    assert entry(entries, "p99_ms").high is not None and entry(entries, "p99_ms").high <= 100
    assert Verdict(tuple(entries), ()).result is TestResult.PASSED


def test_a_proven_breach_is_broken_even_at_a_laptop_rate() -> None:
    # the run: 31 errors in 845 upgrade requests at 300 rps, bound 0.2%
    spec = parse_slo((), {"rps": 300, "error_rate": 0.002})
    m = good("upgrade", start=0.0, end=2.82, asked_requests=845, requests=845, fleet_requests=845,
             by_class={"ok": 814, "connection": 31}, histogram=histogram(845))  # fmt: skip
    e = entry(evaluate(spec, [m]), "error_rate", "upgrade")
    assert e.outcome is Outcome.BROKEN
    # the lower end is the time-uniform bound at the run's risk share (wider than the fixed 95% interval's
    # 0.02506), the upper end the exact 97.5% bound
    assert 0.002 < e.low < 0.02506 and e.high == pytest.approx(0.05167, rel=1e-3)
    assert "31 of 845 requests sent on time failed (connection=31)" in e.reason
    message = failure_message([e])
    assert "error_rate in phase upgrade: measured 0.03669 [0.01654, 0.05167], bound <= 0.00200" in message
    assert Verdict((e,), (m,)).result is TestResult.SLO_BROKEN


def test_too_little_evidence_is_not_proven_and_says_what_would_prove_it() -> None:
    # 0 errors in 1,343 upgrade requests cannot show error_rate <= 0.002 (1,843 would)
    spec = parse_slo((), {"rps": 300, "error_rate": 0.002})
    m = good("upgrade", start=0.0, end=4.48, asked_requests=1_343, requests=1_343, fleet_requests=1_343,
             by_class={"ok": 1_343}, histogram=histogram(1_343))  # fmt: skip
    e = entry(evaluate(spec, [m]), "error_rate", "upgrade")
    assert e.outcome is Outcome.NOT_PROVEN and not e.passed
    assert "1,843 requests on time would decide it" in e.reason
    verdict = Verdict((e,), (m,))
    assert verdict.result is TestResult.NOT_PROVEN
    assert "SLO not proven" in verdict.message("t") and "SLO broken" not in verdict.message("t")


def test_an_interval_that_straddles_the_bound_is_not_proven() -> None:
    e = entry(evaluate(SPEC, [good(by_class={"ok": 9_990, "http_5xx": 10})]), "error_rate")
    assert e.outcome is Outcome.NOT_PROVEN and e.low < 0.001 < e.high
    assert "straddles 0.001" in e.reason


def test_a_zero_bound_means_no_failed_request_at_all() -> None:
    spec = parse_slo((), {"rps": 1000, "error_rate": 0})
    assert entry(evaluate(spec, [good()]), "error_rate").outcome is Outcome.HELD
    e = entry(evaluate(spec, [good(by_class={"ok": 9_999, "timeout": 1})]), "error_rate")
    assert e.outcome is Outcome.BROKEN


def test_slow_p99_is_broken_from_its_interval() -> None:
    m = good("after", quantiles_ms={0.99: 180.0}, histogram=histogram(9_800, slow=200))
    e = entry(evaluate(SPEC, [m]), "p99_ms", "after")
    assert e.outcome is Outcome.BROKEN and e.low is not None and e.low > 100
    assert "p99 latency 180.0 ms exceeds 100 ms" in e.reason


def test_a_p99_is_judged_from_a_few_hundred_requests() -> None:
    few = good(end=100.4, requests=400, asked_requests=400, fleet_requests=400, by_class={"ok": 400},
               histogram=histogram(400))  # fmt: skip
    assert entry(evaluate(SPEC, [few]), "p99_ms").outcome is Outcome.HELD
    fewer = replace(few, requests=300, asked_requests=300, fleet_requests=300, by_class={"ok": 300},
                    histogram=histogram(300), end=100.3)  # fmt: skip
    e = entry(evaluate(SPEC, [fewer]), "p99_ms")
    assert e.outcome is Outcome.NOT_PROVEN and "at least 368 are needed" in e.reason


def test_late_and_dropped_requests_are_the_fleets_not_the_releases() -> None:
    # 800 not sent (300 because the worker fell behind, 500 at the in-flight cap): load not held, nothing broken
    m = good(late=300.0, by_class={"ok": 9_200, "dropped": 800}, histogram=histogram(9_200))
    entries = evaluate(SPEC, [m])
    rps = entry(entries, "rps")
    assert rps.outcome is Outcome.NOT_PROVEN and rps.measured == pytest.approx(920.0)
    assert "the fleet's failure, not the release's" in rps.reason
    assert "800 requests not sent: 300 because the fleet fell over 50 ms behind" in rps.reason
    assert "500 at the in-flight cap" in rps.reason
    err = entry(entries, "error_rate")
    assert err.outcome is Outcome.NOT_PROVEN and err.measured == 0.0  # the dropped are not the release's errors
    assert "the fleet did not hold the load" in err.reason
    assert Verdict(tuple(entries), (m,)).result is TestResult.NOT_PROVEN


def test_the_releases_own_answers_prove_a_breach_even_when_the_load_was_not_held() -> None:
    m = good(late=2_000.0, by_class={"ok": 7_900, "http_5xx": 100, "dropped": 2_000}, histogram=histogram(8_000))
    entries = evaluate(SPEC, [m])
    assert entry(entries, "rps").outcome is Outcome.NOT_PROVEN
    err = entry(entries, "error_rate")
    assert err.outcome is Outcome.BROKEN and "proven by the release's own answers" in err.reason


def test_the_ramp_is_warm_up_unless_asked() -> None:
    ramp = good("ramp", asked_requests=5_000, requests=5_000, by_class={"ok": 4_000, "http_5xx": 1_000},
                fleet_requests=5_000, histogram=histogram(5_000))  # fmt: skip
    entries = evaluate(SPEC, [ramp])
    assert [e.slo for e in entries] == ["rps"]  # its load is checked, its errors are not judged
    assert entries[0].outcome is Outcome.HELD and entries[0].bound == pytest.approx(0.95 * 500)
    judged = evaluate(parse_slo((), {"rps": 1000, "judge_ramp": True}), [ramp])
    assert entry(judged, "error_rate", "ramp").outcome is Outcome.BROKEN


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
def test_doubtful_data_is_not_proven_never_a_pass(changes: dict, why: str) -> None:
    entries = evaluate(SPEC, [good(**changes)])
    assert entries and all(e.outcome is Outcome.NOT_PROVEN for e in entries)
    assert all(e.reason.startswith("not proven: ") and why in e.reason for e in entries)


def test_small_disagreement_within_tolerance_holds() -> None:
    assert all(e.passed for e in evaluate(SPEC, [good(fleet_requests=10_050)]))


def test_no_phases_is_not_proven() -> None:
    (e,) = evaluate(SPEC, [])
    assert e.outcome is Outcome.NOT_PROVEN and "no load was run" in e.reason


def test_largest_gap_counts_from_the_phase_edges() -> None:
    assert largest_gap(0.0, 10.0, [1.0, 2.0, 3.0, 8.5, 9.5]) == pytest.approx(5.5)
    assert largest_gap(0.0, 10.0, []) == pytest.approx(10.0)
    assert largest_gap(0.0, 4.0, [0.9, 1.9, 2.9, 3.9, 7.0]) == pytest.approx(1.0)


def test_two_missed_scrapes_are_tolerated_three_are_not() -> None:
    assert all(e.passed for e in evaluate(SPEC, [good(max_gap_s=3.0)]))
    assert all(e.outcome is Outcome.NOT_PROVEN for e in evaluate(SPEC, [good(max_gap_s=3.01)]))


def test_user_checks_are_judged_per_phase() -> None:
    spec = parse_slo((), {"rps": 1000, "checks": {"lb_5xx": ("sum(x)", "<=", 0), "hits": ("sum(y)", ">", 100)}})
    entries = evaluate(spec, [good(checks={"lb_5xx": 0.0, "hits": 50.0})])
    assert entry(entries, "lb_5xx").outcome is Outcome.HELD and entry(entries, "lb_5xx").kind is Kind.CHECK
    e = entry(entries, "hits")
    assert e.outcome is Outcome.BROKEN and e.op == ">" and e.reason == "hits = 50, not > 100"
    assert "hits in phase baseline: measured 50, bound > 100" in failure_message(entries)
    missing = entry(evaluate(spec, [good(checks={"lb_5xx": None, "hits": 500.0})]), "lb_5xx")
    assert missing.outcome is Outcome.NOT_PROVEN
    doubtful = evaluate(spec, [good(workers_seen=1, checks={"lb_5xx": 0.0, "hits": 500.0})])
    assert entry(doubtful, "lb_5xx").outcome is Outcome.NOT_PROVEN


def test_a_hooks_short_entry_is_broken_when_it_fails() -> None:
    veto = VerdictEntry("security_scan", "run", None, None, False, "CVE found")
    assert veto.outcome is Outcome.BROKEN and veto.kind is Kind.EXTRA
    assert VerdictEntry("security_scan", "run", None, None, True).outcome is Outcome.HELD
    assert Verdict((veto,), ()).result is TestResult.SLO_BROKEN


def test_results() -> None:
    held = VerdictEntry("x", "baseline", 1.0, 2.0, outcome=Outcome.HELD)
    unproven = VerdictEntry("x", "after", None, 2.0, outcome=Outcome.NOT_PROVEN)
    assert Verdict((held,), ()).result is TestResult.PASSED
    assert Verdict((held, unproven), ()).result is TestResult.NOT_PROVEN
    assert Verdict((held,), (), failure="a worker died", failure_kind="run").result is TestResult.NOT_PROVEN
    assert Verdict((held,), (), failure="never ready", failure_kind="release").result is TestResult.SLO_BROKEN
    failed_upgrade = Verdict((held, unproven), (), failure="upgrade to v2 failed", failure_kind="release")
    assert "also not proven" in failed_upgrade.message("t") and "exit 6" not in failed_upgrade.message("t")
    assert Verdict((), ()).result is TestResult.NOT_PROVEN


def test_live_data_prove_a_breach_early_by_the_same_rule() -> None:
    so_far = good("upgrade", by_class={"ok": 500, "connection": 40}, requests=540, histogram=histogram(540))
    found = live_breach(SPEC, so_far)
    assert found is not None and found.slo == "error_rate" and found.outcome is Outcome.BROKEN
    assert live_breach(SPEC, good("upgrade", by_class={"ok": 500, "connection": 1}, requests=501)) is None
    assert live_breach(SPEC, replace(so_far, phase="ramp")) is None  # warm-up is not judged


def test_what_a_run_can_prove_is_said_before_it_starts() -> None:
    spec = parse_slo((), {"rps": 300, "error_rate": 0.001, "p999_ms": 100, "hold": "10s"})
    ((phase, text, ok),) = provable(spec, {"baseline": 10.0})
    assert phase == "baseline" and not ok
    assert text.startswith("3,000 requests, can prove error_rate <= 0.0012 at best")
    assert "error_rate=0.001 needs 3,688 requests: 12s at 300 rps, or 369 rps for 10s" in text
    assert "p999_ms needs at least 3,688 requests" in text
    ((_, _, fine),) = provable(parse_slo((), {"rps": 2000, "p99_ms": 100}), {"baseline": 10.0})
    assert fine
    ((phase, text, ok),) = provable(spec, {"upgrade": 0.0})
    assert phase == "upgrade" and ok
    assert (
        text
        == "300 requests a second of upgrade; proving error_rate <= 0.001 needs 3,688 requests, an upgrade of at least 12.3s at this rate"
    )


# -- availability and the error budget --------------------------------------------------------------------

AVAIL = parse_slo((), {"rps": 1000, "availability": 0.999})


def test_availability_over_the_run_and_the_budget_each_phase_spent() -> None:
    phases = [
        good("baseline"),
        good("upgrade", by_class={"ok": 9_992, "http_5xx": 8}),
        good("after", by_class={"ok": 9_999, "http_5xx": 1}),
    ]
    judged = entry(evaluate(AVAIL, phases), "availability", "run")
    assert judged.outcome is Outcome.HELD and judged.measured == pytest.approx(1 - 9 / 30_000)
    assert judged.comparison == ">=" and judged.kind is Kind.AVAILABILITY
    budget = error_budget(AVAIL, phases)
    assert budget is not None
    assert budget["budget_requests"] == pytest.approx(30.0)  # 0.1% of 30,000 requests
    assert budget["phases"]["upgrade"]["spent"] == pytest.approx(8 / 30)
    assert budget["phases"]["upgrade"]["burn_rate"] == pytest.approx(0.8)  # 0.08% errors against 0.1% allowed
    assert budget["spent"] == pytest.approx(9 / 30)


def test_availability_broken_names_the_budget_spent() -> None:
    phases = [good("baseline"), good("upgrade", by_class={"ok": 9_950, "http_5xx": 50})]
    judged = entry(evaluate(AVAIL, phases), "availability", "run")
    assert judged.outcome is Outcome.BROKEN
    assert "50 failed requests spent 250% of the run's error budget (20)" in judged.reason


def test_availability_without_evidence_is_not_proven() -> None:
    phases = [good("baseline"), good("upgrade", workers_seen=1)]
    judged = entry(evaluate(AVAIL, phases), "availability", "run")
    assert judged.outcome is Outcome.NOT_PROVEN and judged.reason.startswith("not proven: upgrade:")
    few = [good("baseline", requests=500, fleet_requests=500, by_class={"ok": 500})]
    thin = entry(evaluate(AVAIL, few), "availability", "run")
    assert thin.outcome is Outcome.NOT_PROVEN and "would decide it" in thin.reason


def test_json_carries_outcome_kind_and_interval() -> None:
    data = entry(evaluate(SPEC, [good()]), "error_rate").to_json()
    assert data["outcome"] == "held" and data["kind"] == "error_rate" and data["passed"] is True
    assert data["interval"][0] == 0.0 and data["interval"][1] == pytest.approx(0.000368, rel=0.01)


def test_a_latency_breach_on_a_machine_busy_with_other_work_is_not_proven_never_broken() -> None:
    """Other processes took half the CPUs while the phase ran: a p99 over its bound says more about the machine
    than the release. Not proven, with the shares named; live checks do not stop the run on it. The same breach
    on a quiet machine, and an error-rate breach on a busy one, are still broken."""
    from pytest_rollout.judge.verdict import MachineShare

    busy = MachineShare(others=0.48, run=0.30, steal=0.01, cpus=2, seconds=10.0)
    quiet = replace(busy, others=0.02)
    slow = good("after", quantiles_ms={0.99: 180.0}, histogram=histogram(9_800, slow=200))
    e = entry(evaluate(SPEC, [replace(slow, machine=busy)]), "p99_ms", "after")
    assert e.outcome is Outcome.NOT_PROVEN
    assert "the machine was too busy to judge latency: other processes took 48% of this machine's 2 CPUs" in e.reason
    assert live_breach(SPEC, replace(slow, machine=busy)) is None
    assert entry(evaluate(SPEC, [replace(slow, machine=quiet)]), "p99_ms", "after").outcome is Outcome.BROKEN
    live = live_breach(SPEC, replace(slow, machine=quiet))
    assert live is not None and live.slo == "p99_ms"
    failing = replace(slow, by_class={"ok": 9_900, "http_5xx": 100}, machine=busy)
    assert entry(evaluate(SPEC, [failing]), "error_rate", "after").outcome is Outcome.BROKEN
    fast = replace(good("after"), machine=busy)  # held stays held: it met its bound even so
    assert entry(evaluate(SPEC, [fast]), "p99_ms", "after").outcome is Outcome.HELD


def test_junit_property_names_percent_encode_a_routes_colon() -> None:
    """A name with ':' (or '%') is percent-encoded: every property name splits on ':' one way only."""
    from types import SimpleNamespace

    from pytest_rollout.judge.risk import budget_for
    from pytest_rollout.plugin.fixture import _attach_properties
    from tests.unit.test_routes import MIX, _phase

    phases = [_phase("baseline"), _phase("upgrade", checkout={"errors": 300}), _phase("after")]
    named = {"checkout": "api:error_rate", "home": "50%"}
    spec = replace(MIX, routes=tuple(replace(r, name=named.get(r.name, r.name)) for r in MIX.routes))
    renamed = [
        replace(p, routes={named.get(k, k): replace(v, route=named.get(k, k)) for k, v in p.routes.items()})
        for p in phases
    ]
    verdict = Verdict(tuple(evaluate(spec, renamed)), tuple(renamed))
    item = SimpleNamespace(user_properties=[], stash={})
    run = SimpleNamespace(verdict=verdict, spec=spec, budget=budget_for(spec), failure=None, failed_with=None)
    _attach_properties(item, run)  # type: ignore[arg-type]
    props = dict(item.user_properties)
    assert props["rollout:upgrade:route:api%3Aerror_rate:error_rate"].startswith("broken")
    assert props["rollout:upgrade:route:api%3Aerror_rate"].startswith("broken requests=6000")
    assert "rollout:upgrade:route:50%25:p99_ms" in props
    assert all(name.count(":") in (2, 3, 4) for name in props if name.startswith("rollout:"))
