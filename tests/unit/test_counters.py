"""A worker's counters: each request counts for the phase in which it was due, whatever the order."""

from __future__ import annotations

import json
import random

import pytest

from pytest_rollout.load.counters import WorkerStats
from pytest_rollout.load.histogram import Histogram
from pytest_rollout.load.protocol import CLASSES, DROPPED, HTTP_5XX, OK
from pytest_rollout.load.replies import ClassCounts, WorkerTotals


def _by_phase(stats: WorkerStats) -> dict[str, tuple[int, ...]]:
    return {name: p.by_class.counts() for name, p in stats.by_phase().items()}


def test_requests_count_for_the_phase_they_were_due_in_whatever_the_order() -> None:
    """The per-request path remembers the last phase it used; requests that end out of order, and phases
    announced after requests were already counted, must still land where a fresh lookup would put them."""
    rng = random.Random(7)
    stats = WorkerStats()
    expected: dict[str, list[int]] = {name: [0] * len(CLASSES) for name in ("-", "a", "b", "c")}
    hists = {name: Histogram() for name in expected}
    edges = [("a", 10.0), ("b", 20.0), ("c", 30.0)]
    started: list[tuple[str, float]] = [("-", float("-inf"))]

    def phase_for(due: float) -> str:
        return [name for name, at in started if at <= due][-1]

    for step in range(4000):
        if edges and step % 1000 == 999:  # a phase edge is announced mid-run, ahead of the requests due in it
            name, at = edges.pop(0)
            stats.add_phase(name, at)
            started.append((name, at))
        due = rng.uniform(0.0, 40.0)  # due times jump back and forth across the edges
        klass = rng.choice((OK, OK, OK, HTTP_5XX, DROPPED))
        latency = None if klass == DROPPED else rng.uniform(0.0001, 0.5)
        stats.record(klass, due, latency)
        expected[phase_for(due)][klass] += 1
        if latency is not None:
            hists[phase_for(due)].observe(latency)
    assert _by_phase(stats) == {name: tuple(counts) for name, counts in expected.items()}
    for name, phase in stats.by_phase().items():
        assert list(phase.histogram) == hists[name].to_list()
        assert phase.latency_sum_s == pytest.approx(hists[name].sum)
    assert stats.total == 4000


def test_a_due_time_exactly_on_an_edge_counts_for_the_new_phase() -> None:
    stats = WorkerStats()
    stats.record(OK, 5.0, 0.001)  # caches "-" up to +inf
    stats.add_phase("a", 5.0)
    stats.record(OK, 5.0, 0.001)
    stats.record(OK, 4.999, 0.001)
    assert _by_phase(stats)["-"][OK] == 2 and _by_phase(stats)["a"][OK] == 1
    assert stats.phase_of(5.0) is stats.phase_stats[1] and stats.phase_of(4.0) is stats.phase_stats[0]


def test_the_totals_reply_travels_as_it_always_did() -> None:
    """GET /totals is a typed reply; its JSON is as it was, with each phase per route of the mix added
    (``routes``), and it reads back equal to what was sent."""
    stats = WorkerStats()
    stats.add_phase("a", 10.0)
    stats.record(OK, 5.0, 0.002)
    stats.record(HTTP_5XX, 11.0, 0.3)
    stats.fell_behind(12.0)
    stats.resend(12.5)
    stats.scheduled, stats.max_lag, stats.inflight, stats.max_inflight_seen = 4, 0.07, 1, 2
    totals = stats.totals("running", "fast")
    wire = json.loads(json.dumps(totals.to_json()))
    assert list(wire) == [
        "requests", "scheduled", "late", "max_lag_s", "inflight", "max_inflight_seen", "phases", "routes", "state",
        "engine",
    ]  # fmt: skip
    assert wire["routes"]["a"]["-"] == wire["phases"]["a"]  # one route: the phase's counts are its counts
    assert wire["requests"] == 3 and wire["late"] == 1 and wire["state"] == "running" and wire["engine"] == "fast"
    a = wire["phases"]["a"]
    assert list(a) == ["requests", "by_class", "errors", "late", "resent", "histogram", "latency_sum_s"]
    assert a["by_class"] == {"ok": 0, "http_4xx": 0, "http_5xx": 1, "timeout": 0, "connection": 0, "dropped": 1}
    assert (a["requests"], a["errors"], a["late"], a["resent"]) == (2, 2, 1, 1)
    assert sum(a["histogram"]) == 1 and a["latency_sum_s"] == pytest.approx(0.3)
    assert WorkerTotals.from_json(wire) == totals
    merged = totals.phases["-"] + totals.phases["a"]
    assert merged.by_class == ClassCounts(ok=1, http_5xx=1, dropped=1) and merged.latency().total == 2


def test_the_cross_check_counts_add_whatever_the_workers_histograms() -> None:
    """The run's cross-checks need only requests and errors: FleetTotals.phase adds those up directly, so workers
    whose histograms differ in length (another release's image) still give them; merging the histograms says
    what is wrong instead of failing inside zip()."""
    from pytest_rollout.load.fleet import FleetTotals
    from pytest_rollout.load.replies import PhaseTotals

    new = PhaseTotals(by_class=ClassCounts(ok=7, http_5xx=2), histogram=(0,) * 156)
    old = PhaseTotals(by_class=ClassCounts(ok=5, dropped=1), histogram=(0,) * 100)
    fleet = FleetTotals([WorkerTotals(phases={"p": new}), WorkerTotals(phases={"p": old})])
    assert fleet.phase("p") == (15, 3)
    assert fleet.phase("q") is None
    assert FleetTotals([WorkerTotals(phases={"p": new}), WorkerTotals()]).phase("p") is None
    with pytest.raises(ValueError, match="latency histograms of 156 and 100 buckets.*different releases"):
        fleet.merged("p")
    assert FleetTotals([WorkerTotals(phases={"p": new})] * 2).merged("p") == new + new


def test_each_route_counts_apart_and_the_phase_is_their_sum() -> None:
    stats = WorkerStats()
    stats.set_routes(["home", "cart"])
    stats.add_phase("a", 10.0)
    stats.record(OK, 11.0, 0.002, 0)
    stats.record(OK, 11.0, 0.004, 0)
    stats.record(HTTP_5XX, 11.0, 0.3, 1)
    stats.fell_behind(12.0, 1)
    stats.resend(12.5, 0)
    totals = stats.totals("stopped", "fast")
    home, cart = totals.routes["a"]["home"], totals.routes["a"]["cart"]
    assert (home.by_class.ok, home.errors, home.resent, home.latency().total) == (2, 0, 1, 2)
    assert (cart.by_class.http_5xx, cart.by_class.dropped, cart.late, cart.latency().total) == (1, 1, 1, 1)
    assert totals.phases["a"] == home + cart and list(totals.routes["-"]) == ["home", "cart"]
    assert WorkerTotals.from_json(json.loads(json.dumps(totals.to_json()))) == totals
    with pytest.raises(ValueError, match="before the first request"):
        stats.set_routes(["x"])


def test_the_fleet_sums_each_route_over_its_workers() -> None:
    from pytest_rollout.load.fleet import FleetTotals
    from pytest_rollout.load.replies import PhaseTotals

    def worker(home: int, cart: int) -> WorkerTotals:
        per = {"home": PhaseTotals(by_class=ClassCounts(ok=home)), "cart": PhaseTotals(by_class=ClassCounts(ok=cart))}
        return WorkerTotals(phases={"p": per["home"] + per["cart"]}, routes={"p": per})

    fleet = FleetTotals([worker(7, 1), worker(6, 2)])
    routes = fleet.routes("p")
    assert routes is not None and {k: v.requests for k, v in routes.items()} == {"home": 13, "cart": 3}
    assert fleet.routes("q") is None
