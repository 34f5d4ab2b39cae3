"""A traffic mix in real runs: every route sent in its share, judged on its own requests.

Real replicas (examples/app.py, which answers any path and can put its faults on chosen paths only) behind a real
HAProxy, a real Prometheus and real workers: a good release holds every route; a release that fails or slows
one route only is broken on that route, in the phase it happened, while the others hold; a route too rare to be
proven at the asked rate is not proven, and says what would prove it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import APP, listening

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")]

TEST = """
import sys, pytest
from pytest_rollout import Request, Values

APP = {app!r}
def app(*flags):
    return [sys.executable, APP, *flags]

MIX = [
    Request("GET", "/", name="home", weight={home}),
    Request("GET", "/search?q=${{term}}", name="search", weight=1, data={{"term": ["shoes", "hats"]}}{search}),
    Request("POST", "/cart", name="checkout", weight=1, headers={{"Content-Type": "application/json"}},
            body='{{"order": ${{seq}}, "id": "${{uuid}}"}}'),
]

@pytest.mark.slo(rps={rps}, error_rate=0.02, ramp="2s", hold="{hold}", after="4s", traffic=MIX, seed=7)
def test_release(rollout):
    rollout.deploy(command=app("--version", "1"), replicas=3, pre_stop="2s")
    rollout.ramp()
    rollout.upgrade(command=app("--version", "2"{v2}))
"""


def run(pytester: pytest.Pytester, *, v2: str = "", home: int = 2, search: str = "", rps: int = 800, hold: str = "4s"):
    pytester.makepyfile(test_release=TEST.format(app=str(APP), v2=v2, home=home, search=search, rps=rps, hold=hold))
    before = listening()
    result = pytester.runpytest_subprocess("--rollout-report", "report.json", "--rollout-workers", "2", timeout=300)
    assert listening() - before == set(), "the run left something listening"
    (test,) = json.loads((pytester.path / "report.json").read_text())["tests"]
    return result, test


def entries(test: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [v for v in test["verdicts"] if all(v.get(k) == want for k, want in match.items())]


def test_a_good_release_holds_every_route_each_sent_in_its_share(pytester: pytest.Pytester) -> None:
    result, test = run(pytester)
    assert result.ret == 0, result.stdout.str()[-4000:]
    assert test["result"] == "passed"
    for phase in ("baseline", "upgrade", "after"):
        routes = test["phases"][phase]["routes"]
        assert set(routes) == {"home", "search", "checkout"}
        assert all(r["outcome"] == "held" and r["errors"] == 0 for r in routes.values()), routes
        counts = {name: r["requests"] for name, r in routes.items()}
        total = sum(counts.values())
        assert total == test["phases"][phase]["requests"]  # the routes add up to the whole
        # each worker's order is within one of every share at any point, so a phase (the difference of two
        # points) is within two per worker and route: two workers, four
        for name, weight in (("home", 2), ("search", 1), ("checkout", 1)):
            assert abs(counts[name] - total * weight / 4) <= 4, (phase, counts)
        assert all(r["fleet_requests"] == r["requests"] for r in routes.values())  # Prometheus equals the fleet
    judged = {(v["route"], v["slo"]) for v in test["verdicts"] if v.get("route")}
    assert judged == {(r, "error_rate") for r in ("home", "search", "checkout")}
    assert test["fleet"]["seed"] == 7 and test["fleet"]["workers"] == test["workers"]  # what fixes every request
    result.stdout.fnmatch_lines(["*checkout*"])


def test_a_release_failing_one_route_is_broken_there_while_the_others_hold(pytester: pytest.Pytester) -> None:
    # version 2 answers a fifth of POST /cart with 500, every other path as version 1 does
    result, test = run(pytester, v2=', "--error-rate", "0.2", "--fault-path", "/cart"')
    assert result.ret == 1, result.stdout.str()[-4000:]
    assert test["result"] == "slo_broken"
    broken = entries(test, outcome="broken")
    assert broken and {(v["route"], v["slo"]) for v in broken} == {("checkout", "error_rate")}
    assert {v["phase"] for v in broken} <= {"upgrade", "after"}
    assert all(v["outcome"] == "held" for v in entries(test, phase="baseline", slo="error_rate"))
    for phase in {v["phase"] for v in broken}:
        assert test["phases"][phase]["routes"]["checkout"]["errors_by_class"].get("http_5xx", 0) > 0
        for other in ("home", "search"):
            assert test["phases"][phase]["routes"][other]["errors"] == 0
    result.stdout.fnmatch_lines(["*error_rate of route checkout in phase *: measured *"])


def test_a_release_slower_on_one_route_is_broken_there(pytester: pytest.Pytester) -> None:
    # search must answer within 100 ms at p99; version 2 takes 300 ms on /search only
    result, test = run(pytester, v2=', "--delay-ms", "300", "--fault-path", "/search"', search=", p99_ms=100")
    assert result.ret == 1, result.stdout.str()[-4000:]
    broken = entries(test, outcome="broken")
    assert broken and {(v["route"], v["slo"]) for v in broken} == {("search", "p99_ms")}
    assert all(v["outcome"] == "held" for v in entries(test, phase="baseline", route="search"))
    result.stdout.fnmatch_lines(["*p99_ms of route search in phase *: measured *"])


def test_a_route_too_rare_to_prove_is_not_proven_and_says_what_would_prove_it(pytester: pytest.Pytester) -> None:
    # 1 in 52 of 400 rps: about 8 searches and 8 checkouts a second, too few to prove error_rate <= 0.02 in 3 s
    result, test = run(pytester, home=50, rps=400, hold="3s")
    assert result.ret == 6, result.stdout.str()[-4000:]
    assert test["result"] == "not_proven"
    rare = entries(test, phase="baseline", route="checkout", slo="error_rate")
    assert rare and rare[0]["outcome"] == "not_proven"
    assert "would decide it" in rare[0]["reason"] and "rps in all" in rare[0]["reason"]
    assert entries(test, phase="baseline", route="home", slo="error_rate")[0]["outcome"] == "held"
    # said before the run too: the rare route's own requests a second
    result.stdout.fnmatch_lines(["*checkout (*% of 400 rps = * requests a second)*"])
