"""A real load worker process against a real HTTP server on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import start_app
from prometheus_client.parser import text_string_to_metric_families

from pytest_rollout.fleet import LocalFleet
from pytest_rollout.procs import ProcessSet, free_port, http_get
from pytest_rollout.schedule import Segment
from pytest_rollout.worker import Plan


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessSet]:
    procs = ProcessSet(tmp_path)
    yield procs
    assert procs.stop_all() == []


def run(fleet: LocalFleet, port: int, rps: float, seconds: float, **plan: object) -> dict:
    start = time.time() + 0.3
    template = Plan(
        url=f"http://127.0.0.1:{port}/",
        segments=(),
        start_at=start,
        deadline=start + seconds,
        phases=(("steady", start),),
        **plan,
    )  # type: ignore[arg-type]
    fleet.begin(template, [Segment(None, rps, rps)])
    time.sleep(seconds + 0.5)
    fleet.stop_load()
    fleet.drain(settle_s=5)
    totals = fleet.totals()
    assert len(totals.workers) == fleet.size
    return {"totals": totals, "steady": totals.phase("steady")}


def test_two_workers_hold_the_rate_exactly(procs: ProcessSet) -> None:
    port = start_app(procs, "app", "--delay-ms", "0")
    fleet = LocalFleet(procs, "t1", 2)
    fleet.start()
    try:
        result = run(fleet, port, rps=400, seconds=3)
        requests, errors = result["steady"]
        # requests due in [start, deadline): 3 s at 400 rps, split between two interleaved workers
        assert requests == pytest.approx(1200, abs=2)
        assert errors == 0
        metrics = {}
        for w in result["totals"].workers:
            assert w["phases"]["steady"]["by_class"]["ok"] == w["phases"]["steady"]["requests"]
            metrics[w["phases"]["steady"]["requests"]] = True
        assert sum(w["phases"]["steady"]["requests"] for w in result["totals"].workers) == requests
    finally:
        fleet.shutdown()


def test_metrics_exposition(procs: ProcessSet) -> None:
    port = start_app(procs, "app", "--delay-ms", "0")
    fleet = LocalFleet(procs, "t2", 1)
    fleet.start()
    try:
        run(fleet, port, rps=100, seconds=1)
        ((_, worker_port),) = fleet.workers
        status, body = http_get("127.0.0.1", worker_port, "/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        requests = {
            (s.labels["phase"], s.labels["class"]): s.value
            for s in families["rollout_requests"].samples
            if s.name == "rollout_requests_total"
        }
        assert requests[("steady", "ok")] == pytest.approx(100, abs=1)
        assert requests[("steady", "http_5xx")] == 0  # every class exported from the start
        buckets = [
            s
            for s in families["rollout_request_duration_seconds"].samples
            if s.name.endswith("_bucket") and s.labels["phase"] == "steady"
        ]
        assert len(buckets) == 156 and buckets[-1].labels["le"] == "+Inf"
        assert buckets[-1].value == requests[("steady", "ok")]
    finally:
        fleet.shutdown()


def test_a_stalled_server_shows_as_timeouts_not_as_a_slower_client(procs: ProcessSet) -> None:
    """Open loop: requests keep falling due while the server stalls; each stalled one times out."""
    port = start_app(procs, "app", "--delay-ms", "400")
    fleet = LocalFleet(procs, "t3", 1)
    fleet.start()
    try:
        result = run(fleet, port, rps=50, seconds=2, timeout_s=0.2)
        w = result["totals"].workers[0]["phases"]["steady"]
        assert w["requests"] == pytest.approx(100, abs=1)  # the schedule was kept
        assert w["by_class"]["timeout"] == w["requests"]
    finally:
        fleet.shutdown()


def test_in_flight_cap_counts_drops(procs: ProcessSet) -> None:
    port = start_app(procs, "app", "--delay-ms", "1000")
    fleet = LocalFleet(procs, "t4", 1)
    fleet.start()
    try:
        result = run(fleet, port, rps=100, seconds=1, max_inflight=10, timeout_s=3)
        w = result["totals"].workers[0]["phases"]["steady"]
        assert w["requests"] == pytest.approx(100, abs=1)
        assert w["by_class"]["dropped"] == w["requests"] - 10
        assert w["by_class"]["ok"] == 10
    finally:
        fleet.shutdown()


def test_errors_are_classified(procs: ProcessSet) -> None:
    port = start_app(procs, "app", "--delay-ms", "0", "--error-rate", "0.5")
    fleet = LocalFleet(procs, "t5", 1)
    fleet.start()
    try:
        w = run(fleet, port, rps=200, seconds=2)["totals"].workers[0]["phases"]["steady"]
        assert w["by_class"]["http_5xx"] + w["by_class"]["ok"] == w["requests"]
        assert 0.35 < w["by_class"]["http_5xx"] / w["requests"] < 0.65
    finally:
        fleet.shutdown()


def test_connection_refused_is_a_connection_error(procs: ProcessSet) -> None:
    fleet = LocalFleet(procs, "t6", 1)
    fleet.start()
    try:
        w = run(fleet, free_port(), rps=50, seconds=1)["totals"].workers[0]["phases"]["steady"]
        assert w["by_class"]["connection"] == w["requests"] == pytest.approx(50, abs=1)
    finally:
        fleet.shutdown()


def test_worker_exits_when_its_controller_goes_away(procs: ProcessSet) -> None:
    fleet = LocalFleet(procs, "t7", 1)
    fleet.start()
    ((proc, _),) = fleet.workers
    assert proc.popen.stdin is not None
    proc.popen.stdin.close()  # what happens when pytest is killed
    proc.popen.wait(timeout=10)
    assert not proc.alive()
    fleet.shutdown()
