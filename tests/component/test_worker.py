"""Real load worker processes against a real HTTP server on loopback."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from itertools import takewhile

import pytest
from helpers import on_time_as_said, run_fleet, schedule_kept, start_app
from prometheus_client.parser import text_string_to_metric_families

from pytest_rollout.load import protocol
from pytest_rollout.load.fleet import LocalFleet
from pytest_rollout.load.launch import steady
from pytest_rollout.load.protocol import CLASSES, Plan
from pytest_rollout.load.replies import WorkerTotals
from pytest_rollout.load.schedule import Segment, arrivals, expected_count
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
    """Two workers share 400 rps for 3 s. The plan each gets on the wire is exactly half the rate, their
    arrivals offset by half a request so they interleave; each counts exactly the requests its schedule makes
    due, once each, so together they count the 1,200 that 400 rps over 3 s asks for, split to the request.
    (How many of those a busy machine sent in time is not this test's to say: a worker counts a request late
    only when it says it fell behind, and only the late ones go unsent.)"""
    port = start_app(procs, "app", "--delay-ms", "0")
    url = f"http://127.0.0.1:{port}/"
    fleet = make_fleet(2, url)
    plans: list[Plan] = []  # what each worker was told, read from the wire as a worker reads it
    call = fleet._call

    def recording(handle, method: str, path: str, body=None, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        if path == protocol.START:
            plans.append(Plan.from_json(body))
        return call(handle, method, path, body, timeout)

    fleet._call = recording  # type: ignore[method-assign]
    totals, _ = run_fleet(fleet, url, rps=400, seconds=3)
    assert expected_count(steady(400), 0.0, 3.0) == 1200  # what was asked
    assert sorted(plan.phase for plan in plans) == [0.0, 0.5]
    for plan in plans:
        assert plan.segments == (Segment(None, 200.0, 200.0),)  # each worker's share: half of 400 rps, exactly
        assert plan.deadline - plan.start_at == pytest.approx(3.0)
    phase = totals.merged("p")
    assert phase is not None
    schedule_kept(phase, 1200, "ok")  # every request due counted once, and every one sent was answered ok
    # what each worker's schedule makes due in [0, 3 s): 600 apiece, and it counted exactly that
    due = [sum(1 for _ in takewhile(lambda t: t < 3.0, arrivals(steady(200), at))) for at in (0.0, 0.5)]
    assert due == [600, 600]
    assert [w.phases["p"].requests for w in totals.workers] == due
    for worker in totals.workers:
        schedule_kept(worker.phases["p"], 600, "ok")
        on_time_as_said(worker)
        assert worker.scheduled == worker.requests == 600


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
    """Ten in flight at most, each answer taking 1 s: whatever the scheduler did, the first ten requests the
    worker was in time for went out (nothing frees a slot before then), and no slot freed before the last 50 ms
    of the 1 s schedule (an answer comes 1 s after its request went out), so only the five due in them could
    take one. Every other request was dropped, for the cap or for being late, and counted."""
    port = start_app(procs, "app", "--delay-ms", "1000")
    worker = one_worker(make_fleet, port, rps=100, seconds=1, max_inflight=10, timeout_s=3)
    phase = worker.phases["p"]
    assert phase.requests == 100  # every request due is counted: sent, or dropped
    assert phase.by_class.ok + phase.by_class.dropped == 100  # each answer takes 1 s: nothing else happens
    assert worker.max_inflight_seen <= 10  # the cap held
    in_time = 100 - phase.late  # the requests not dropped late: each was sent, or dropped for the cap
    assert min(10, in_time) <= phase.by_class.ok <= 10 + 5, (phase.by_class, phase.late)


def test_errors_are_classified(make_fleet: MakeFleet) -> None:
    """A server that answers every other request it gets 500, the rest 200, and keeps count: the worker classes
    each answer as the server gave it, so its counts are the server's, exactly. (A busy machine may drop
    requests late, before they are sent; those reach no server and are counted dropped.)"""
    server = _Recorder(status=lambda n: 500 if n % 2 else 200)
    try:
        totals, _ = run_fleet(make_fleet(1, server.url), server.url, 200, 3.0)
    finally:
        server.close()
    (worker,) = totals.workers
    on_time_as_said(worker)
    phase = worker.phases["p"]
    by_class = phase.by_class
    assert phase.requests == 600 and by_class.dropped == phase.late
    assert by_class.http_5xx + by_class.ok + by_class.dropped == 600  # every answer is one or the other
    answered = Counter(server.statuses)
    assert (by_class.http_5xx, by_class.ok) == (answered[500], answered[200]), (by_class, answered)
    assert answered[500] > 0 and answered[200] > 0  # both kinds of answer were classed


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


class _Recorder:
    """A real HTTP/1.1 server on loopback that records every request it gets, (method, path, body), and the
    status it answered it with: *status* of the request's number in the order they came (200 by default)."""

    def __init__(self, status: Callable[[int], int] = lambda n: 200) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        got: list[tuple[str, str, bytes]] = []
        statuses: list[int] = []
        self.got, self.statuses = got, statuses
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with lock:
                    code = status(len(got))
                    got.append((self.command, self.path, body))
                    statuses.append(code)
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = _answer  # noqa: N815 - http.server's names

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _mix_routes() -> tuple[protocol.Route, ...]:
    from pytest_rollout.load.mix import Request, Values, check_requests, compile_routes

    requests = [
        Request("GET", "/home?n=${seq}", name="home", weight=5),
        Request(
            "GET", "/search?q=${term}&n=${seq}", name="search", weight=3, data={"term": ["shoes", "hats", "socks"]}
        ),
        Request(
            "POST",
            "/cart",
            name="cart",
            weight=2,
            body='{"user": "${user}", "n": ${seq}, "id": "${uuid}"}',
            data={"user": Values(("ann", "bob"), order="cycle")},
        ),  # fmt: skip
    ]
    return compile_routes(check_requests(requests))[0]


def _send_mix(
    make_fleet: MakeFleet, engine: str, seed: int
) -> tuple[dict[int, tuple[str, str, bytes]], list[WorkerTotals], str]:
    """Two workers send the mix at 100 rps for 1 s: what the server got, by ${seq}; each worker's totals; and
    the first worker's /metrics."""
    server = _Recorder()
    try:
        fleet = make_fleet(2, server.url)
        totals, engines = run_fleet(fleet, server.url, 100, 1.0, routes=_mix_routes(), seed=seed, engine=engine)
        assert engines == [engine, engine]
        metrics = http_get("127.0.0.1", fleet.workers[0][1], "/metrics")[1].decode()
    finally:
        server.close()
    by_seq: dict[int, tuple[str, str, bytes]] = {}
    for method, path, body in server.got:
        n = int(json.loads(body)["n"]) if body else int(re.search(r"n=(\d+)", path).group(1))  # type: ignore[union-attr]
        assert n not in by_seq  # ${seq} is unique in the run, over both workers
        by_seq[n] = (method, path, body)
    return by_seq, totals.workers, metrics


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_a_mix_is_sent_in_its_exact_shares_with_its_data_filled_in(make_fleet: MakeFleet, engine: str) -> None:
    """A 5:3:2 mix from two real workers: each worker's 50 scheduled requests split 25/15/10 exactly, counted
    per route in its totals and under the route label of its /metrics; the server got each request with its
    data filled in, ${seq} numbering the fleet's requests 0..99; the same seed sends the same requests."""
    by_seq, workers, metrics = _send_mix(make_fleet, engine, seed=3)
    for worker in workers:
        on_time_as_said(worker)
        routes = worker.routes["p"]
        assert {name: p.requests for name, p in routes.items()} == {"home": 25, "search": 15, "cart": 10}
        assert sum(routes.values(), type(worker.phases["p"])()) == worker.phases["p"]
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    labelled = {s.labels["route"]: 0.0 for s in families["rollout_requests"].samples if s.labels.get("phase") == "p"}
    for s in families["rollout_requests"].samples:
        if s.name == "rollout_requests_total" and s.labels["phase"] == "p":
            labelled[s.labels["route"]] = labelled.get(s.labels["route"], 0.0) + s.value
    assert labelled == {"home": 25, "search": 15, "cart": 10}
    sent = by_seq
    dropped = sum(w.phases["p"].by_class.dropped for w in workers)
    assert len(sent) == 100 - dropped and set(sent) <= set(range(100))
    for n, (method, path, body) in sent.items():
        if method == "POST":
            data = json.loads(body)
            assert path == "/cart" and data["user"] == ("ann", "bob")[n % 2] and len(data["id"]) == 36
        elif path.startswith("/search"):
            assert re.fullmatch(rf"/search\?q=(shoes|hats|socks)&n={n}", path)
        else:
            assert path == f"/home?n={n}"
    # which numbers a busy machine made late differs from run to run: runs are compared on the numbers both sent
    again, _, _ = _send_mix(make_fleet, engine, seed=3)
    other, _, _ = _send_mix(make_fleet, engine, seed=4)
    both = set(sent) & set(again)
    assert both and all(sent[n] == again[n] for n in both)  # the same request for every number
    carts = [n for n in set(sent) & set(other) if sent[n][0] == "POST"]
    assert carts and all(sent[n][2] != other[n][2] for n in carts)  # another seed, other draws (each ${uuid})
