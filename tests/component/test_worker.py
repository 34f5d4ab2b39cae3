"""Real load worker processes against a real HTTP server on loopback."""

from __future__ import annotations

from collections.abc import Callable

from helpers import on_time_as_said, run_fleet, schedule_kept, start_app
from prometheus_client.parser import text_string_to_metric_families

from pytest_rollout.load.fleet import LocalFleet
from pytest_rollout.load.protocol import CLASSES
from pytest_rollout.load.replies import WorkerTotals
from pytest_rollout.procs import ProcessSet, free_port, http_get

MakeFleet = Callable[[int, str], LocalFleet]

# A request a worker could not send within 50 ms of its time is not sent: it is counted late, and dropped. A busy
# machine can make a worker that late, so no test here asserts how many were sent on time; each asserts what holds
# whatever the scheduler did (every request due counted once, each in one class, late exactly when the worker fell
# behind) and what the code under test decides (the class of every answer, the cap, the split of the rate).


def one_worker(make_fleet: MakeFleet, port: int, rps: float, seconds: float, **plan: object) -> WorkerTotals:
    url = f"http://127.0.0.1:{port}/"
    totals, _ = run_fleet(make_fleet(1, url), url, rps, seconds, **plan)
    (worker,) = totals.workers
    on_time_as_said(worker)
    return worker


def test_two_workers_hold_the_rate_exactly(procs: ProcessSet, make_fleet: MakeFleet) -> None:
    port = start_app(procs, "app", "--delay-ms", "0")
    url = f"http://127.0.0.1:{port}/"
    totals, _ = run_fleet(make_fleet(2, url), url, rps=400, seconds=3)
    phase = totals.merged("p")
    assert phase is not None
    # requests due in [start, deadline): exactly the schedule, 3 s x 400 rps, split between two interleaved workers
    schedule_kept(phase, 1200, "ok")  # and every one sent was answered ok
    shares = [w.phases["p"].requests for w in totals.workers]
    assert sum(shares) == 1200 and abs(shares[0] - shares[1]) <= 1
    for worker in totals.workers:
        schedule_kept(worker.phases["p"], worker.phases["p"].requests, "ok")
        on_time_as_said(worker)
        assert worker.scheduled == worker.requests == worker.phases["p"].requests


def test_metrics_exposition(procs: ProcessSet, make_fleet: MakeFleet) -> None:
    port = start_app(procs, "app", "--delay-ms", "0")
    url = f"http://127.0.0.1:{port}/"
    fleet = make_fleet(1, url)
    totals, _ = run_fleet(fleet, url, rps=100, seconds=1)
    ((_, worker_port),) = fleet.workers
    status, body = http_get("127.0.0.1", worker_port, "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    requests = {
        (s.labels["phase"], s.labels["class"]): s.value
        for s in families["rollout_requests"].samples
        if s.name == "rollout_requests_total"
    }
    counted = totals.workers[0].phases["p"]
    schedule_kept(counted, 100, "ok")
    # the exposition says what the worker counted, class by class (every class exported from the start)
    assert {klass: requests[("p", klass)] for klass in CLASSES} == dict(counted.by_class.items())
    assert requests[("p", "ok")] + requests[("p", "dropped")] == 100
    buckets = [
        s
        for s in families["rollout_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["phase"] == "p"
    ]
    assert len(buckets) == 156 and buckets[-1].labels["le"] == "+Inf"
    assert buckets[-1].value == requests[("p", "ok")]  # a latency for every request sent, none for the dropped


def test_a_stalled_server_shows_as_timeouts_not_as_a_slower_client(procs: ProcessSet, make_fleet: MakeFleet) -> None:
    """Open loop: requests keep falling due while the server stalls; each stalled one times out."""
    port = start_app(procs, "app", "--delay-ms", "400")
    phase = one_worker(make_fleet, port, rps=50, seconds=2, timeout_s=0.2).phases["p"]
    schedule_kept(phase, 100, "timeout")  # the schedule was kept, and every request sent timed out


def test_in_flight_cap_counts_drops(procs: ProcessSet, make_fleet: MakeFleet) -> None:
    port = start_app(procs, "app", "--delay-ms", "1000")
    worker = one_worker(make_fleet, port, rps=100, seconds=1, max_inflight=10, timeout_s=3)
    phase = worker.phases["p"]
    assert phase.requests == 100  # every request due is counted: sent, or dropped
    assert phase.by_class.ok + phase.by_class.dropped == 100  # each answer takes 1 s: nothing else happens
    assert worker.max_inflight_seen <= 10  # the cap held
    # a slot frees only when an answer comes, 1 s after its request went out: after the last request was due,
    # short of one sent up to 50 ms late; so at most the cap and those few were sent, and the rest were dropped,
    # for the cap or for being late (without the cap, all 100 on time would have been sent)
    assert 1 <= phase.by_class.ok <= 15


def test_errors_are_classified(procs: ProcessSet, make_fleet: MakeFleet) -> None:
    port = start_app(procs, "app", "--delay-ms", "0", "--error-rate", "0.5")
    phase = one_worker(make_fleet, port, rps=200, seconds=2).phases["p"]
    by_class = phase.by_class
    assert phase.requests == 400 and by_class.dropped == phase.late
    assert by_class.http_5xx + by_class.ok + by_class.dropped == 400  # every answer is one or the other
    assert 0.35 < by_class.http_5xx / (by_class.http_5xx + by_class.ok) < 0.65


def test_connection_refused_is_a_connection_error(make_fleet: MakeFleet) -> None:
    phase = one_worker(make_fleet, free_port(), rps=50, seconds=1).phases["p"]
    schedule_kept(phase, 50, "connection")


def test_worker_exits_when_its_controller_goes_away(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(1, "http://127.0.0.1:9/")
    ((proc, _),) = fleet.workers
    assert proc.popen.stdin is not None
    proc.popen.stdin.close()  # what happens when pytest is killed
    proc.popen.wait(timeout=10)
    assert not proc.alive()
