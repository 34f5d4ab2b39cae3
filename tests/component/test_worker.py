"""Real load worker processes against a real HTTP server on loopback."""

from __future__ import annotations

from collections.abc import Callable

from helpers import run_fleet, start_app
from prometheus_client.parser import text_string_to_metric_families

from pytest_rollout.load.fleet import LocalFleet
from pytest_rollout.procs import ProcessSet, free_port, http_get

MakeFleet = Callable[[int, str], LocalFleet]


def phase_of_one(make_fleet: MakeFleet, port: int, rps: float, seconds: float, **plan: object) -> dict:
    url = f"http://127.0.0.1:{port}/"
    totals, _ = run_fleet(make_fleet(1, url), url, rps, seconds, **plan)
    return dict(totals.workers[0]["phases"]["p"])


def test_two_workers_hold_the_rate_exactly(procs: ProcessSet, make_fleet: MakeFleet) -> None:
    port = start_app(procs, "app", "--delay-ms", "0")
    url = f"http://127.0.0.1:{port}/"
    totals, _ = run_fleet(make_fleet(2, url), url, rps=400, seconds=3)
    requests, errors = totals.phase("p")  # type: ignore[misc]
    # requests due in [start, deadline): 3 s at 400 rps, split between two interleaved workers
    assert requests == 1200  # exactly the schedule: [start, deadline) holds 3 s x 400 rps
    assert errors == 0
    shares = [w["phases"]["p"]["requests"] for w in totals.workers]
    assert sum(shares) == requests and abs(shares[0] - shares[1]) <= 1
    assert all(w["phases"]["p"]["by_class"]["ok"] == w["phases"]["p"]["requests"] for w in totals.workers)


def test_metrics_exposition(procs: ProcessSet, make_fleet: MakeFleet) -> None:
    port = start_app(procs, "app", "--delay-ms", "0")
    url = f"http://127.0.0.1:{port}/"
    fleet = make_fleet(1, url)
    run_fleet(fleet, url, rps=100, seconds=1)
    ((_, worker_port),) = fleet.workers
    status, body = http_get("127.0.0.1", worker_port, "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    requests = {
        (s.labels["phase"], s.labels["class"]): s.value
        for s in families["rollout_requests"].samples
        if s.name == "rollout_requests_total"
    }
    assert requests[("p", "ok")] == 100
    assert requests[("p", "http_5xx")] == 0  # every class exported from the start
    buckets = [
        s
        for s in families["rollout_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["phase"] == "p"
    ]
    assert len(buckets) == 156 and buckets[-1].labels["le"] == "+Inf"
    assert buckets[-1].value == requests[("p", "ok")]


def test_a_stalled_server_shows_as_timeouts_not_as_a_slower_client(procs: ProcessSet, make_fleet: MakeFleet) -> None:
    """Open loop: requests keep falling due while the server stalls; each stalled one times out."""
    port = start_app(procs, "app", "--delay-ms", "400")
    phase = phase_of_one(make_fleet, port, rps=50, seconds=2, timeout_s=0.2)
    assert phase["requests"] == 100  # the schedule was kept
    assert phase["by_class"]["timeout"] == phase["requests"]


def test_in_flight_cap_counts_drops(procs: ProcessSet, make_fleet: MakeFleet) -> None:
    port = start_app(procs, "app", "--delay-ms", "1000")
    phase = phase_of_one(make_fleet, port, rps=100, seconds=1, max_inflight=10, timeout_s=3)
    assert phase["requests"] == 100
    assert phase["by_class"]["dropped"] == phase["requests"] - 10
    assert phase["by_class"]["ok"] == 10


def test_errors_are_classified(procs: ProcessSet, make_fleet: MakeFleet) -> None:
    port = start_app(procs, "app", "--delay-ms", "0", "--error-rate", "0.5")
    phase = phase_of_one(make_fleet, port, rps=200, seconds=2)
    assert phase["by_class"]["http_5xx"] + phase["by_class"]["ok"] == phase["requests"]
    assert 0.35 < phase["by_class"]["http_5xx"] / phase["requests"] < 0.65


def test_connection_refused_is_a_connection_error(make_fleet: MakeFleet) -> None:
    phase = phase_of_one(make_fleet, free_port(), rps=50, seconds=1)
    assert phase["by_class"]["connection"] == phase["requests"] == 50


def test_worker_exits_when_its_controller_goes_away(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(1, "http://127.0.0.1:9/")
    ((proc, _),) = fleet.workers
    assert proc.popen.stdin is not None
    proc.popen.stdin.close()  # what happens when pytest is killed
    proc.popen.wait(timeout=10)
    assert not proc.alive()
