"""Per-route SLOs in a traffic mix of several routes: bounds inherited unless a route gives its own, every route
judged per phase on its own requests, the risk split over every route's claims, and the seeded simulation of the
exact rule code showing that a release meeting every bound on every route is shown broken in at most the risk."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest

from pytest_rollout.judge.early import held_so_far
from pytest_rollout.judge.oc import simulate
from pytest_rollout.judge.promql import phase_queries, route_queries
from pytest_rollout.judge.provable import provable
from pytest_rollout.judge.risk import budget_for
from pytest_rollout.judge.routes import route_bounds
from pytest_rollout.judge.rules import evaluate, live_breach
from pytest_rollout.judge.verdict import Outcome, PhaseMeasurement, Verdict, failure_message
from pytest_rollout.load.mix import Request
from pytest_rollout.slo import parse_slo

BASE = parse_slo((), {"rps": 2000, "p99_ms": 250, "error_rate": 0.001, "hold": "30s", "after": "30s"})
MIX = replace(
    BASE,
    routes=(
        Request("GET", "/", name="home", weight=70),
        Request("GET", "/search", name="search", weight=25, error_rate=0.0005),
        Request("POST", "/cart", name="checkout", weight=5, p99_ms=800),
    ),
)
SHARES = {"home": 0.70, "search": 0.25, "checkout": 0.05}


def _m(phase: str, n: int, errors: int = 0, slow: int = 0, **kw: object) -> PhaseMeasurement:
    """*n* requests of one phase lasting 30 s, *errors* of them 5xx, *slow* of them over 250 ms (at most 800)."""
    fields: dict[str, object] = dict(
        phase=phase,
        start=0.0,
        end=30.0,
        asked_requests=float(n),
        requests=float(n),
        by_class={"ok": float(n - errors), "http_5xx": float(errors)},
        workers_expected=1,
        workers_seen=1,
        fleet_requests=n,
        fleet_errors=errors,
        histogram=((0.01, float(n - slow)), (0.25, float(n - slow)), (0.8, float(n)), (math.inf, float(n))),
        quantiles_ms={0.5: 5.0, 0.99: 9.0},
    )
    fields.update(kw)
    return PhaseMeasurement(**fields)  # type: ignore[arg-type]


def _phase(phase: str, total: int = 120_000, **per_route: dict[str, object]) -> PhaseMeasurement:
    """The whole phase, every route at its share of *total*; *per_route* overrides a route's own counts."""
    routes = {}
    for name, share in SHARES.items():
        n = round(total * share)
        routes[name] = replace(_m(phase, n, **per_route.get(name, {})), route=name)  # type: ignore[arg-type]
    errors = sum(r.errors for r in routes.values())
    return replace(_m(phase, total, errors=round(errors)), routes=routes)


def test_a_route_gives_its_own_bounds_and_inherits_the_markers_others() -> None:
    bounds = {r.name: r for r in route_bounds(MIX)}
    assert list(bounds) == ["home", "search", "checkout"]
    assert bounds["home"].spec.error_rate == 0.001 and dict(bounds["home"].spec.latency_ms) == {"p99_ms": 250}
    assert bounds["search"].spec.error_rate == 0.0005 and dict(bounds["search"].spec.latency_ms) == {"p99_ms": 250}
    assert bounds["checkout"].spec.error_rate == 0.001 and dict(bounds["checkout"].spec.latency_ms) == {"p99_ms": 800}
    assert math.isclose(bounds["checkout"].rps(MIX), 100.0)
    assert route_bounds(replace(BASE, routes=(Request(name="only"),))) == []  # one route: judged on the whole


def test_every_route_claim_takes_its_share_of_the_risk() -> None:
    # three routes x (error_rate + p99) x three judged phases
    assert budget_for(MIX).claims == 18
    assert budget_for(replace(BASE, routes=(Request(name="only"),))).claims == budget_for(BASE).claims == 6
    with_p50 = replace(MIX, routes=(*MIX.routes[:2], replace(MIX.routes[2], p50_ms=100.0)))
    assert budget_for(with_p50).claims == 21  # checkout's own p50 is one more claim a phase


def test_one_route_broken_in_one_phase_while_the_others_held() -> None:
    phases = [
        _phase("baseline"),
        _phase("upgrade", checkout={"errors": 300}),  # 5% of checkout's 6,000 requests
        _phase("after"),
    ]
    entries = evaluate(MIX, phases, budget_for(MIX))
    broken = [e for e in entries if e.outcome is Outcome.BROKEN]
    assert [(e.route, e.phase, e.slo) for e in broken] == [("checkout", "upgrade", "error_rate")]
    held = [e for e in entries if e.outcome is Outcome.HELD and e.route is not None]
    assert len(held) == 17  # every other route claim
    loads = [e for e in entries if e.slo == "rps"]
    assert [e.route for e in loads] == [None, None, None]  # the load is judged on the whole
    message = Verdict(tuple(entries), tuple(phases)).message("test_mix")
    assert "error_rate of route checkout in phase upgrade: measured 0.05000 [" in message
    assert broken[0].to_json()["route"] == "checkout"
    assert "route" not in loads[0].to_json()


def test_a_route_slower_than_its_own_bound_is_broken_there_only() -> None:
    # 10% of home's requests over 250 ms: home's p99 broken; checkout's as slow, but its bound is 800 ms
    slow = {"slow": 8_400}
    phases = [_phase("baseline"), _phase("upgrade", home=slow), _phase("after")]
    broken = [(e.route, e.phase, e.slo) for e in evaluate(MIX, phases) if e.outcome is Outcome.BROKEN]
    assert broken == [("home", "upgrade", "p99_ms")]
    phases = [_phase("baseline"), _phase("upgrade", checkout={"slow": 600}), _phase("after")]
    entries = evaluate(MIX, phases)
    checkout = next(e for e in entries if e.route == "checkout" and e.phase == "upgrade" and e.slo == "p99_ms")
    assert checkout.outcome is Outcome.HELD  # its 600 slow requests took 250 to 800 ms
    assert not any(e.outcome is Outcome.BROKEN for e in entries)


def test_a_rare_route_that_cannot_be_proven_is_not_proven_and_says_what_would_prove_it() -> None:
    # 2,000 rps for 30 s: checkout's 3,000 requests cannot prove 0.001 (the can-prove line said so)
    phases = [_phase("baseline", total=60_000), _phase("upgrade"), _phase("after")]
    entries = evaluate(MIX, phases)
    rare = next(e for e in entries if (e.route, e.phase, e.slo) == ("checkout", "baseline", "error_rate"))
    assert rare.outcome is Outcome.NOT_PROVEN
    assert "requests on time would decide it" in rare.reason
    # the route's own rate would need the whole rate at its 5% share: the marker's rps is what a user changes
    own_rps = re.search(r"about ([\d,]+) rps over 30.0s \(([\d,]+) rps in all\)", rare.reason)
    assert own_rps is not None, rare.reason
    assert abs(int(own_rps[2].replace(",", "")) - 20 * int(own_rps[1].replace(",", ""))) <= 20
    assert "error_rate of route checkout in phase baseline" in failure_message([rare])
    home = next(e for e in entries if (e.route, e.phase, e.slo) == ("home", "baseline", "error_rate"))
    assert home.outcome is Outcome.HELD


def test_a_route_whose_counts_do_not_cross_check_is_not_proven() -> None:
    upgrade = _phase("upgrade", search={"fleet_requests": 29_000})  # Prometheus counted 30,000
    missing = _phase("after")
    missing = replace(missing, routes={k: v for k, v in missing.routes.items() if k != "home"})
    entries = evaluate(MIX, [_phase("baseline"), upgrade, missing])
    search = [e for e in entries if e.route == "search" and e.phase == "upgrade"]
    assert {e.outcome for e in search} == {Outcome.NOT_PROVEN}
    assert "route search: Prometheus counted 30000 requests but the fleet counted 29000" in search[0].reason
    home = [e for e in entries if e.route == "home" and e.phase == "after"]
    assert len(home) == 2 and all("Prometheus has no samples of route home" in e.reason for e in home)
    # the fleet sent none of the route in the phase: not Prometheus' fault, and the route's share says why
    none_sent = replace(
        missing,
        routes={**missing.routes, "checkout": replace(missing.routes["checkout"], requests=None, fleet_requests=0)},
    )
    entries = evaluate(MIX, [_phase("baseline"), upgrade, none_sent])
    checkout = [e for e in entries if e.route == "checkout" and e.phase == "after"]
    assert checkout and all(
        "the fleet sent no request of route checkout in this phase (its share is 0.05 of the requests" in e.reason
        and "Prometheus" not in e.reason
        for e in checkout
    )
    # the whole's evidence falls short: every route's claims of the phase are not proven
    short = replace(_phase("baseline"), workers_seen=0)
    entries = evaluate(MIX, [short, _phase("upgrade"), _phase("after")])
    assert len([e for e in entries if e.phase == "baseline" and e.route is not None]) == 6
    assert all(e.outcome is Outcome.NOT_PROVEN for e in entries if e.phase == "baseline")


def test_a_one_route_mix_is_judged_exactly_as_a_single_request() -> None:
    one = replace(BASE, routes=(Request(name="only"),))
    phases = [_m("baseline", 60_000), _m("upgrade", 60_000, errors=200), _m("after", 60_000)]
    assert evaluate(one, phases) == evaluate(BASE, phases)
    assert all(e.route is None for e in evaluate(one, phases))
    assert provable(one, {"baseline": 30.0}) == provable(BASE, {"baseline": 30.0})


def test_the_live_check_stops_on_a_route_breach() -> None:
    live = _phase("upgrade", checkout={"errors": 300})
    found = live_breach(MIX, live, budget_for(MIX))
    assert found is not None and found.route == "checkout" and found.slo == "error_rate"
    assert live_breach(MIX, _phase("upgrade"), budget_for(MIX)) is None
    # the whole's error rate (300 of 120,000 = 0.0025) over the marker's bound decides nothing in a mix
    assert live_breach(MIX, replace(_phase("upgrade"), routes={}), budget_for(MIX)) is None


def test_end_when_held_waits_for_every_route() -> None:
    spec = replace(MIX, end_when_held=10.0)
    reason = held_so_far(spec, _phase("baseline"), 12.0)
    assert (
        reason is not None
        and "route home: error_rate < 0.001" in reason
        and "route checkout: error_rate < 0.001 (0 of 6,000" in reason
        and "each entry 97.5% sure over every look" in reason
    )
    rare = _phase("baseline", total=60_000)  # checkout's 3,000 requests prove nothing yet
    assert held_so_far(spec, rare, 12.0) is None
    partial = _phase("baseline")
    assert held_so_far(spec, replace(partial, routes={"home": partial.routes["home"]}), 12.0) is None


def test_can_prove_lines_count_each_routes_own_requests() -> None:
    lines = provable(MIX, {"baseline": 30.0, "upgrade": 0.0})
    texts = [text for phase, text, ok in lines if phase == "baseline"]
    assert texts[0].startswith("home (70% of 2,000 rps = 1,400 requests a second): 42,000 requests")
    checkout = next((text, ok) for phase, text, ok in lines if phase == "baseline" and text.startswith("checkout"))
    assert checkout[0].startswith("checkout (5% of 2,000 rps = 100 requests a second): 3,000 requests, can prove")
    assert "error_rate=0.001 needs 3,688 requests" in checkout[0] and "rps in all" in checkout[0]
    assert checkout[1] is False
    upgrade = [text for phase, text, _ok in lines if phase == "upgrade"]
    assert len(upgrade) == 3 and upgrade[1].startswith("search (25% of 2,000 rps = 500 requests a second): proving")
    assert not any("requests a second of upgrade" in text for text in upgrade)  # the label says the rate once
    # a route's latency bound that its requests cannot bound says the whole rate that would
    slow = replace(MIX, routes=(*MIX.routes[:2], replace(MIX.routes[2], p999_ms=2000.0)))
    checkout = next(t for p, t, _ok in provable(slow, {"baseline": 30.0}) if t.startswith("checkout"))
    assert re.search(
        r"p999_ms needs at least [\d,]+ requests to be bounded \([\d.]+s at 100 rps, or [\d,]+ rps in all for 30s\)",
        checkout,
    ), checkout


def test_the_risk_line_of_a_mix_names_its_slowest_route_bound_in_requests_and_seconds() -> None:
    from pytest_rollout.judge.provable import risk_line

    line = risk_line(MIX, budget_for(MIX))
    # checkout: 5% of 2,000 rps, its error_rate the marker's 0.001 (search's own 0.0005 has five times the rate)
    assert line.endswith(
        "the slowest being checkout's error_rate: after about 25,500 of its requests (255.0s at 100 rps)"
    )
    own_p50 = replace(MIX, routes=(*MIX.routes[:2], replace(MIX.routes[2], p50_ms=100.0, error_rate=0.5)))
    assert "the slowest being search's error_rate" in risk_line(own_p50, budget_for(own_p50))


def test_route_queries_add_the_route_matcher_escaped() -> None:
    q = phase_queries("r1", "upgrade", 10.0, [0.99], route='a "b"\\c')
    assert q.requests == 'sum(rollout_requests_total{run="r1",phase="upgrade",route="a \\"b\\"\\\\c"})'
    assert 'route="a \\"b\\"\\\\c"' in q.histogram and 'route="a \\"b\\"\\\\c"' in q.quantiles[0.99]
    assert (
        phase_queries("r1", "upgrade", 10.0, [0.99]).requests == 'sum(rollout_requests_total{run="r1",phase="upgrade"})'
    )
    assert route_queries("r1", "upgrade")["by_class"].startswith("sum by (route, class) (rollout_requests_total{")


def test_a_mix_meeting_every_bound_on_every_route_is_shown_broken_in_at_most_the_risk() -> None:
    """The seeded simulation of the exact rule code (judge/oc.py: live looks each simulated second and the final
    verdict), every route at its own bounds, at its share of the rate."""
    spec = replace(MIX, rps=1000.0, hold_s=20.0, after_s=10.0)
    row = simulate(spec, 1.0, trials=600, seed=11)
    assert row.failed_share <= spec.false_fail_risk, row
    assert simulate(spec, 0.5, trials=200, seed=12).failed == 0
    caught = simulate(spec, 3.0, trials=100, seed=13)
    assert caught.failed == caught.trials and caught.stopped_live == caught.trials


def _record(spec: object = MIX, verdict: Verdict | None = None, budget: object = None) -> dict[str, object]:
    from types import SimpleNamespace

    from pytest_rollout.report.record import run_record

    if verdict is None:
        phases = [_phase("baseline"), _phase("upgrade", checkout={"errors": 300}), _phase("after")]
        budget = budget_for(MIX)
        verdict = Verdict(tuple(evaluate(MIX, phases, budget)), tuple(phases))
    run = SimpleNamespace(
        nodeid="t.py::test_mix", run_id="r1", spec=spec, verdict=verdict, failure=None, phases=(), load=None,
        scrape_interval=1.0, events=(), rollback_note=None, abort_note=None, ended_early=(), provable=(),
        budget=budget, series={},
    )  # fmt: skip
    return run_record(run, "failed", platform="local", result=str(verdict.result))  # type: ignore[arg-type]


def test_the_reports_break_every_phase_down_by_route() -> None:
    import json

    from pytest_rollout.report.html_report import render_html
    from pytest_rollout.report.json_report import format_summary

    record = _record()
    phases = record["phases"]
    assert isinstance(phases, dict)
    checkout = phases["upgrade"]["routes"]["checkout"]
    assert (checkout["requests"], checkout["errors"], checkout["outcome"]) == (6000, 300, "broken")
    assert checkout["error_rate"] == 0.05 and checkout["p99_ms"] == 9.0
    assert phases["upgrade"]["routes"]["home"]["outcome"] == "held"
    json.dumps(record, allow_nan=False)
    lines = format_summary(record)
    upgrade = lines.index(next(line for line in lines if line.startswith("  upgrade")))
    assert [line.split()[0] for line in lines[upgrade + 1 : upgrade + 4]] == ["home", "search", "checkout"]
    assert "0.05000 <=0.001 BROKEN" in lines[upgrade + 3] and "<=800 ok" in lines[upgrade + 3]
    assert "<=0.001" not in lines[upgrade]  # the whole is shown; the routes decide
    assert any(line.startswith("  error_rate of route checkout in upgrade: 300 of 6000") for line in lines)
    html = render_html([record])
    assert "&nbsp;&nbsp;route checkout" in html and "error_rate of route checkout" in html
    assert "<th>seconds</th><th>outcome</th>" in html and "whole (the routes decide)" in html


def test_a_one_route_run_shows_no_route_anywhere() -> None:
    """Measured, judged and reported as a single request always was: no route in any phase, row or property."""
    from types import SimpleNamespace

    from pytest_rollout.load.schedule import Segment
    from pytest_rollout.plugin.fixture import _attach_properties
    from pytest_rollout.report.html_report import render_html
    from pytest_rollout.report.json_report import format_summary
    from pytest_rollout.run.measure import measure_phase
    from tests.support.fakes import FakePrometheus

    one = replace(BASE, routes=(Request(name="only"),))
    fleet = SimpleNamespace(size=1, plan=SimpleNamespace(start_at=0.0), count=lambda phase: 60_000)
    client = FakePrometheus(SimpleNamespace(fleets=[fleet]), routes={"only": 1.0})  # type: ignore[arg-type]
    totals = SimpleNamespace(
        phase=lambda name: (60_000, 0), routes=lambda name: {"only": SimpleNamespace(requests=60_000, errors=0)}
    )
    load = SimpleNamespace(
        run_id="r1", segments=(Segment(None, 2000.0, 2000.0),), start_at=0.0, totals=totals, fleet=fleet,
        scrape_interval=1.0, eval_at=30.0,
    )  # fmt: skip
    phases = [
        replace(measure_phase(client, one, load, name, 0.0, 30.0), by_class={"ok": 59_990.0, "http_5xx": 10.0})  # type: ignore[arg-type]
        for name in ("baseline", "upgrade", "after")
    ]
    assert all(m.routes == {} and not any(k.startswith("by_route:") for k in m.queries) for m in phases)
    budget = budget_for(one)
    verdict = Verdict(tuple(evaluate(one, phases, budget)), tuple(phases))
    assert all(e.route is None and "route" not in e.to_json() for e in verdict.entries)
    record = _record(one, verdict, budget)
    assert all("routes" not in p for p in record["phases"].values())  # type: ignore[union-attr]
    lines = format_summary(record)
    assert not any(line.startswith("    ") or "routes below decide" in line or " of route " in line for line in lines)
    html = render_html([record])
    # HTML escapes quotes: a route matcher would read route=&quot;only&quot;
    assert "&nbsp;&nbsp;route" not in html and "<th>seconds</th><th>outcome</th>" not in html
    assert " of route " not in html and "whole (the routes decide)" not in html
    assert "route=&quot;" not in html and "by (route" not in html and "sum(rollout_requests_total{" in html
    item = SimpleNamespace(user_properties=[], stash={})
    _attach_properties(item, SimpleNamespace(verdict=verdict, spec=one, budget=budget, failure=None, failed_with=None))  # type: ignore[arg-type]
    names = [name for name, _ in item.user_properties]
    assert "rollout:upgrade:error_rate" in names and not any(":route:" in name for name in names)


def test_the_table_labels_the_whole_fills_each_routes_rps_and_keeps_clipped_names_distinct() -> None:
    from pytest_rollout.report.json_report import _labels, format_summary

    record = _record()
    lines = format_summary(record)
    upgrade = next(i for i, line in enumerate(lines) if line.startswith("  upgrade"))
    assert lines[upgrade].endswith("(all routes: the routes below decide)")
    home = lines[upgrade + 1]
    assert home.split()[:2] == ["home", "2,800"] and home[:33].endswith(" 2,800")  # under the held rps column
    long = ["checkout-with-a-very-long-name-" + tail for tail in ("eu", "us")] + [
        "short",
        "checkout-with-a-ve~1",
    ]  # the last looks clipped
    labels = _labels(long, 20)
    assert len(set(labels.values())) == 4 and all(len(label) <= 20 for label in labels.values())
    assert labels["short"] == "short~3" and labels[long[0]] == "checkout-with-a-ve~1"
    assert _labels(["home", "search"], 20) == {"home": "home", "search": "search"}


def test_each_route_is_measured_on_its_own_and_cross_checked_with_the_fleets_count() -> None:
    """FakePrometheus (tests/support) answers route="..." queries with each route's share of the phase."""
    from types import SimpleNamespace

    from pytest_rollout.load.schedule import Segment
    from pytest_rollout.run.measure import measure_phase, measure_so_far, route_totals
    from tests.support.fakes import FakePrometheus

    counts = {"upgrade": 10_000}
    fleet = SimpleNamespace(size=1, plan=SimpleNamespace(start_at=0.0), count=lambda phase: counts.get(phase, 0))
    client = FakePrometheus(SimpleNamespace(fleets=[fleet]), routes=SHARES)  # type: ignore[arg-type]
    own = {"home": 7_000, "search": 2_500, "checkout": 400}  # the fleet counted checkout's 500 as 400

    def routes(phase: str) -> dict[str, object] | None:  # FleetTotals.routes: {route: PhaseTotals}
        if phase != "upgrade":
            return None
        return {name: SimpleNamespace(requests=n, errors=0) for name, n in own.items()}

    totals = SimpleNamespace(phase=lambda name: (10_000, 0), routes=routes)
    load = SimpleNamespace(
        run_id='r"1',
        segments=(Segment(None, 2000.0, 2000.0),),
        start_at=0.0,
        totals=totals,
        fleet=fleet,
        scrape_interval=1.0,
        eval_at=5.0,
    )
    m = measure_phase(client, MIX, load, "upgrade", 0.0, 5.0)  # type: ignore[arg-type]
    assert m.requests == 10_000 and m.route is None
    assert {name: r.requests for name, r in m.routes.items()} == {"home": 7_000, "search": 2_500, "checkout": 500}
    assert m.routes["checkout"].fleet_requests == 400 and m.routes["checkout"].route == "checkout"
    assert m.routes["checkout"].quantiles_ms[0.99] == 2.0 and m.routes["checkout"].resent == 0.0
    # a few by-route queries for every route at once, none of them the run-wide scrape or in-flight query
    by_route = [expr for key, expr in m.queries.items() if key.startswith("by_route:")]
    assert len(by_route) == 3 + 1 + 4 and all(e.startswith(("sum by (route", "histogram_quantile(")) for e in by_route)
    assert m.routes["checkout"].queries == {}  # the whole's by_route:* queries measured every route
    assert route_totals(None, "upgrade") is None and route_totals(totals, "after") is None
    assert route_totals(SimpleNamespace(phase=lambda name: None), "upgrade") is None  # no routes told
    assert route_totals(totals, "upgrade") == {"home": (7_000, 0), "search": (2_500, 0), "checkout": (400, 0)}
    entries = evaluate(MIX, [replace(m, asked_requests=10_000.0, end=5.0)])
    checkout = [e for e in entries if e.route == "checkout"]
    assert checkout and all("counted 500 requests but the fleet counted 400" in e.reason for e in checkout)
    # live: three by-route queries split by the route label
    live = measure_so_far(client, 'r"1', "upgrade", 0.0, [r.route for r in MIX.routes])
    assert live is not None and {n: r.requests for n, r in live.routes.items()} == {
        "home": 7_000,
        "search": 2_500,
        "checkout": 500,
    }
    assert measure_so_far(client, 'r"1', "upgrade", 0.0, ["home"]).routes == {}  # type: ignore[union-attr]


def test_junit_route_lines() -> None:
    from types import SimpleNamespace

    from pytest_rollout.plugin.fixture import _attach_properties

    phases = [_phase("baseline"), _phase("upgrade", checkout={"errors": 300}), _phase("after")]
    verdict = Verdict(tuple(evaluate(MIX, phases)), tuple(phases))
    item = SimpleNamespace(user_properties=[], stash={})
    run = SimpleNamespace(verdict=verdict, spec=MIX, budget=budget_for(MIX), failure=None, failed_with=None)
    _attach_properties(item, run)  # type: ignore[arg-type]
    props = dict(item.user_properties)
    assert props["rollout:upgrade:route:checkout"] == (
        "broken requests=6000 errors=300 error_rate=0.05 p50_ms=5.00 p99_ms=9.00"
    )
    assert props["rollout:upgrade:route:checkout:error_rate"].startswith("broken 0.05 [")
    assert props["rollout:upgrade:rps"].startswith("held")


def test_route_totals_add_each_routes_counts_of_a_real_fleet_without_merging_histograms() -> None:
    from pytest_rollout.load.fleet import FleetTotals
    from pytest_rollout.load.replies import ClassCounts, PhaseTotals, WorkerTotals
    from pytest_rollout.run.measure import route_totals

    def worker(home: int, cart: int, cart_5xx: int, buckets: int) -> WorkerTotals:
        per = {
            "home": PhaseTotals(ClassCounts(ok=home), histogram=(0,) * buckets),
            "cart": PhaseTotals(ClassCounts(ok=cart - cart_5xx, http_5xx=cart_5xx), histogram=(0,) * buckets),
        }
        return WorkerTotals(routes={"upgrade": per})

    same = FleetTotals([worker(700, 50, 3, 4), worker(690, 49, 1, 4)])
    assert route_totals(same, "upgrade") == {"home": (1_390, 0), "cart": (99, 4)}
    assert route_totals(same, "after") is None
    # workers of two releases: histograms of other lengths cannot be merged, the counts still add
    mixed = FleetTotals([worker(700, 50, 3, 4), worker(690, 49, 1, 5)])
    with pytest.raises(ValueError):
        mixed.routes("upgrade")
    assert route_totals(mixed, "upgrade") == {"home": (1_390, 0), "cart": (99, 4)}


def test_the_simulation_carries_a_rare_routes_remainder_from_look_to_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """A route of 0.4 requests a look (0.4% of 100 rps) gets its 12 requests in 30 s, not none; one of 0.7 a look
    gets 7 in 10 looks, not 10."""
    from pytest_rollout.judge import oc

    assert sum(oc.due(0.7, i + 1.0, round(0.7 * i)) for i in range(10)) == 7
    spec = parse_slo((), {"rps": 100, "error_rate": 0.2, "hold": "30s", "after": "30s"})
    spec = replace(
        spec, routes=(Request("GET", "/", name="home", weight=996, error_rate=0.0), Request(name="rare", weight=4))
    )
    seen: list[PhaseMeasurement] = []

    def judged(spec: object, phases: list[PhaseMeasurement], budget: object) -> list[object]:
        seen.extend(phases)
        return []

    monkeypatch.setattr(oc, "evaluate", judged)
    oc.simulate(replace(spec, abort_on_breach=False), 1.0, trials=1, upgrade_s=10.0)
    counts = {(m.phase, name): r.requests for m in seen for name, r in m.routes.items()}
    assert counts == {
        ("baseline", "home"): 2_988, ("baseline", "rare"): 12, ("upgrade", "home"): 996, ("upgrade", "rare"): 4,
        ("after", "home"): 2_988, ("after", "rare"): 12,
    }  # fmt: skip
    monkeypatch.undo()
    # the rare route failing every request (5 x its 0.2) is caught in every run; home never fails (0 x 5)
    row = oc.simulate(spec, 5.0, trials=20, seed=3)
    assert row.failed_share == 1.0, row


def test_a_route_breach_stopping_the_run_names_the_route() -> None:
    from pytest_rollout.run.phases import Phase, ProvenBreach

    found = live_breach(MIX, _phase("upgrade", checkout={"errors": 300}), budget_for(MIX))
    assert found is not None
    note = ProvenBreach(found, 100.0).note([Phase("baseline", 70.0, 100.0), Phase("upgrade", 100.0, 112.0)], 112.5)
    assert note.startswith("stopped early: 12.5s into phase upgrade, the live data proved error_rate of route ")
    assert "error_rate of route checkout broken (" in note


def test_the_summary_names_the_nodes_a_fleet_spread_over() -> None:
    from pytest_rollout.report.json_report import format_summary

    record = _record()
    record["fleet"] = {"nodes": {"w-a": "kind-worker", "w-b": "kind-worker2", "w-c": "kind-worker"}}
    assert "workers on 2 nodes (kind-worker, kind-worker2), engine" in format_summary(record)[0]
    record["fleet"] = {"nodes": {"w-a": "kind-worker", "w-b": "kind-worker"}}
    assert " nodes" not in format_summary(record)[0]  # one node: nothing to say
