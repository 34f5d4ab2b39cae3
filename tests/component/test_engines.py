"""The fast engine and the aiohttp engine give the same counts, classes and latencies."""

from __future__ import annotations

import math
import time

import pytest
from helpers import on_time_as_said, run_fleet, schedule_kept, start_app
from waits import connections_lost, idle_past_check, readable, wait_for

from pytest_rollout.load.aiohttp_engine import AiohttpEngine
from pytest_rollout.load.counters import WorkerStats
from pytest_rollout.load.engine import FastEngine, build_request, choose_engine
from pytest_rollout.load.histogram import BOUNDS, Histogram
from pytest_rollout.load.mix import Route
from pytest_rollout.load.protocol import Plan
from pytest_rollout.procs import ProcessSet, free_port


def run_engine(make_fleet, url: str, engine: str, rps: float = 200, seconds: float = 1.5, **plan: object):  # type: ignore[no-untyped-def]
    """The phase one worker counted on *engine*, and the seconds its whole run took (no latency is longer)."""
    fleet = make_fleet(1, url)
    began = time.monotonic()
    totals, (ran,) = run_fleet(fleet, url, rps, seconds, engine=engine, **plan)
    took = time.monotonic() - began
    assert ran == engine
    (worker,) = totals.workers
    on_time_as_said(worker)
    return worker.phases["p"], took


@pytest.mark.parametrize(
    ("flags", "path", "plan", "expected"),
    [
        (("--delay-ms", "20"), "/", {}, "ok"),
        (("--delay-ms", "0", "--error-rate", "1.0"), "/", {}, "http_5xx"),
        (("--delay-ms", "0"), "/no-such-page", {}, "http_4xx"),
        (("--delay-ms", "1000"), "/", {"timeout_s": 0.2}, "timeout"),
        (None, "/", {}, "connection"),
    ],
    ids=["ok", "5xx", "4xx", "timeout", "refused"],
)
def test_engines_agree(
    procs: ProcessSet, make_fleet, flags: tuple[str, ...] | None, path: str, plan: dict, expected: str
) -> None:
    """Both engines count the same schedule and class every answer the same. (Which requests a busy machine
    made late differs from run to run, so the two are compared on the requests each sent.)"""
    port = start_app(procs, "app", *flags) if flags is not None else free_port()
    url = f"http://127.0.0.1:{port}{path}"
    fast, fast_took = run_engine(make_fleet, url, "fast", **plan)
    slow, slow_took = run_engine(make_fleet, url, "aiohttp", **plan)
    for phase in (fast, slow):
        schedule_kept(phase, 300, expected)  # 1.5 s x 200 rps; every request sent answered as *expected*
    fast_hist, slow_hist = fast.latency(), slow.latency()
    assert fast_hist.total == fast.requests - fast.late and slow_hist.total == slow.requests - slow.late
    # Bounds no scheduler stall can break (a stall only makes a latency longer, and a late answer a timeout)
    if expected == "ok":
        # the server's 20 ms is in every latency (measured from when the request was due), less a millisecond on
        # each side (the server's and the worker's uvloop clocks tick in whole milliseconds, read once a turn of
        # the loop), and none is longer than the worker's whole run
        assert outside(fast_hist, 0.018, fast_took) == 0 and outside(slow_hist, 0.018, slow_took) == 0
    if expected == "timeout":
        # a timeout is never recorded before its 0.2 s have passed (and every request sent was classed a
        # timeout, none waited for the server's 1 s: schedule_kept above)
        assert outside(fast_hist, 0.2, fast_took) == 0 and outside(slow_hist, 0.2, slow_took) == 0


def outside(hist: Histogram, low: float, high: float) -> int:
    """How many latencies *hist* holds in buckets wholly below *low* or wholly above *high* (buckets are about
    9% wide: a quantile interpolated inside one could read a little under its values)."""
    lower_edges, upper_edges = (0.0, *BOUNDS), (*BOUNDS, math.inf)
    return sum(c for lo, hi, c in zip(lower_edges, upper_edges, hist.counts, strict=True) if hi < low or lo >= high)


def test_choose_engine() -> None:
    stats = WorkerStats()

    def plan(url: str, method: str = "GET") -> Plan:
        return Plan(url=url, segments=(), start_at=0, deadline=0, routes=(Route.of(method, "/"),))

    assert isinstance(choose_engine(plan("http://127.0.0.1:1/"), stats), FastEngine)
    assert isinstance(choose_engine(plan("https://127.0.0.1:1/"), stats), FastEngine)
    assert isinstance(choose_engine(plan("http://127.0.0.1:1/", "HEAD"), stats), FastEngine)
    assert isinstance(choose_engine(plan("http://127.0.0.1:1/"), stats, "aiohttp"), AiohttpEngine)
    with pytest.raises(ValueError, match="ftp:// needs the aiohttp engine"):
        choose_engine(plan("ftp://127.0.0.1:1/"), stats, "fast")
    with pytest.raises(ValueError, match="unknown engine"):
        choose_engine(plan("http://127.0.0.1:1/"), stats, "turbo")


def test_request_bytes() -> None:
    plan = Plan(
        url="http://127.0.0.1:8080/a?b=1",
        segments=(),
        start_at=0,
        deadline=0,
        routes=(
            Route.of("POST", "/a?b=1", {"Authorization": "Bearer x", "Connection": "close", "Host": "evil"}, b"{}"),
        ),
    )
    request = build_request(plan)
    head, body = request.split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /a?b=1 HTTP/1.1"
    assert "Host: 127.0.0.1:8080" in lines and "Authorization: Bearer x" in lines and "Content-Length: 2" in lines
    assert not any(line.startswith(("Connection", "Host: evil")) for line in lines)
    assert body == b"{}"


class _KeepAliveServer:
    """A real HTTP/1.1 keep-alive server on a thread (blocking sockets), which closes its idle connections
    when told to, as a graceful server does at the end of its drain; it records who closed each connection."""

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    def __init__(self) -> None:
        import socket
        import threading

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.served = 0
        self.closed_by_client = 0
        self.dropped = 0
        self.drop = {"reused": 0, "fresh": 0}  # requests to answer by closing the connection, by connection kind
        self.drop_after_s = 0.0  # how long the server works on a request it then drops (0: it never began)
        self.idle: list[socket.socket] = []
        self.received: list[bytes] = []  # every read, in order
        self.lock = threading.Lock()
        self.stopped = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.stopped:  # (closing the listener does not wake a blocked accept: it may take one more)
                    conn.close()
                    return
                self.accepted += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn) -> None:  # type: ignore[no-untyped-def]
        import time

        with self.lock:
            self.idle.append(conn)
        served_here = 0
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return  # closed by close_idle()
            if not data:
                with self.lock:
                    self.closed_by_client += 1
                    if conn in self.idle:
                        self.idle.remove(conn)
                conn.close()
                return
            kind = "reused" if served_here else "fresh"
            with self.lock:
                self.received.append(data)
                drop = self.drop[kind] > 0
                if drop:  # the server had chosen to close this connection as the request came in
                    self.drop[kind] -= 1
                    self.dropped += 1
                    self.idle.remove(conn)
                else:
                    self.served += data.count(b"\r\n\r\n")
            if drop:
                time.sleep(self.drop_after_s)
                conn.close()
                return
            served_here += data.count(b"\r\n\r\n")
            conn.sendall(self.RESPONSE * data.count(b"\r\n\r\n"))

    def close_idle(self) -> None:
        import socket

        with self.lock:
            for conn in self.idle:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self.idle.clear()

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
        self.listener.close()
        self.close_idle()


def _run_fast_engine(
    scenario, engine_class=FastEngine, stats=None, **plan_args
) -> tuple[WorkerStats, _KeepAliveServer]:  # type: ignore[no-untyped-def]
    import asyncio

    import uvloop

    server = _KeepAliveServer()
    stats = stats if stats is not None else WorkerStats()
    plan = Plan(url=f"http://127.0.0.1:{server.port}/", segments=(), start_at=0, deadline=0, **plan_args)

    async def main() -> None:
        engine = engine_class(plan, stats)
        await engine.open()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: problems.append(context))

        async def request() -> None:
            stats.inflight += 1
            engine.fire(loop.time())
            deadline = loop.time() + 5
            while stats.inflight and loop.time() < deadline:
                await asyncio.sleep(0.01)

        await scenario(engine, request, server)
        await engine.close()
        await connections_lost(engine, server.port)

    problems: list[dict] = []

    try:
        uvloop.run(main())
    finally:
        server.stop()
    # nothing the engine does raises inside the loop's callbacks (a connection lost after close() once did)
    assert problems == [], problems
    return stats, server


def test_a_request_never_goes_onto_a_connection_the_server_has_closed() -> None:
    """A graceful server closes its idle keep-alive connections; a busy machine can hold that FIN unread while
    the requests due meanwhile go out. The fast engine checks an idle connection before reusing it."""

    async def scenario(engine: FastEngine, request, server: _KeepAliveServer) -> None:  # type: ignore[no-untyped-def]
        await request()  # one connection, now idle (the server holds it idle from its accept)
        (conn,) = engine.idle
        # no await from here to the next request: the loop cannot read the FIN before the request is due
        idle_past_check(conn)
        server.close_idle()
        wait_for(lambda: readable(conn.fd), "the server's FIN at the engine's socket")
        await request()

    stats, server = _run_fast_engine(scenario)
    by_class = stats.by_phase()["-"].by_class
    assert by_class.ok == 2 and by_class.connection == 0, by_class
    assert server.accepted == 2 and server.served == 2


#: gunicorn's keep-alive timeout, the shortest among common servers: the engines must close an idle connection
#: before it. The margin over IDLE_CLOSE_S is a busy machine's slack.
GUNICORN_KEEPALIVE_S = 2.0


def test_the_fast_engine_closes_idle_connections_before_a_server_would() -> None:
    """The engine closes a connection idle for IDLE_CLOSE_S (its sweep runs every 50 ms), well before gunicorn's
    2 s would. The time from the connection going idle to its close is read from the loop's clock, the clock
    the engine itself uses; the test waits for the close itself, not for a fixed time."""
    from pytest_rollout.load.protocol import IDLE_CLOSE_S

    async def scenario(engine: FastEngine, request, server: _KeepAliveServer) -> None:  # type: ignore[no-untyped-def]
        import asyncio

        await request()
        await request()  # reuses the connection: it was idle well under IDLE_CLOSE_S
        assert server.accepted == 1
        loop = asyncio.get_running_loop()
        (conn,) = engine.idle
        idle_at = conn.idle_at  # the loop's time it went idle
        closed: asyncio.Future[float] = loop.create_future()
        lost = engine.lost

        def watched(gone) -> None:  # type: ignore[no-untyped-def]
            lost(gone)
            if gone is conn and not closed.done():
                closed.set_result(loop.time())

        engine.lost = watched  # type: ignore[method-assign]
        closed_at = await asyncio.wait_for(closed, IDLE_CLOSE_S + 10)
        assert engine.idle == []
        assert IDLE_CLOSE_S <= closed_at - idle_at < GUNICORN_KEEPALIVE_S, closed_at - idle_at
        await request()  # on a new connection

    stats, server = _run_fast_engine(scenario)
    assert stats.by_phase()["-"].by_class.ok == 3
    wait_for(lambda: server.closed_by_client, "the server thread seeing the client's close")
    assert server.accepted == 2 and server.closed_by_client >= 1


def test_a_burst_opens_at_most_max_connecting_connections_at_once() -> None:
    """After a stall hundreds of requests fall due at once. Opening a connection for each made a worker a few
    milliseconds behind open thousands and fall further behind; the engine opens MAX_CONNECTING at a time, and
    the waiting requests take whichever connection comes free first. Every request is still answered."""
    from pytest_rollout.load.engine import MAX_CONNECTING

    most = []

    async def scenario(engine: FastEngine, request, server: _KeepAliveServer) -> None:  # type: ignore[no-untyped-def]
        import asyncio

        loop = asyncio.get_running_loop()
        connect = engine._connect

        def counted() -> None:
            connect()
            most.append(engine.connecting)

        engine._connect = counted  # type: ignore[method-assign]
        now = loop.time()
        for _ in range(500):  # no await in between: all 500 are due before any connection is made
            engine.stats.inflight += 1
            engine.fire(now)
        assert engine.connecting == MAX_CONNECTING and len(engine.waiting) == 500
        deadline = loop.time() + 10
        while engine.stats.inflight and loop.time() < deadline:
            await asyncio.sleep(0.01)

    stats, server = _run_fast_engine(scenario)
    assert max(most) == MAX_CONNECTING
    assert stats.by_phase()["-"].by_class.ok == 500 and stats.total == 500
    # (the server's accept thread may not have taken every connection made in the kernel's backlog yet)
    assert server.served == 500 and server.accepted <= len(most)


#: The resend window for the test below. The engines' own (RESEND_WINDOW_S, 10 ms) is shorter than a busy
#: machine may take to run the server thread's close, which would make the race a request "in flight".
WIDE_WINDOW_S = 0.5


@pytest.mark.parametrize("engine_class", [FastEngine, AiohttpEngine], ids=["fast", "aiohttp"])
@pytest.mark.parametrize(
    ("plan", "drop", "expected"),
    [
        # the race every keep-alive client meets: sent once more on a new connection, as clients do
        ({}, {"reused": 1}, {"ok": 2, "connection": 0, "resent": 1, "dropped": 1, "accepted": 2}),
        # strict: counted as it happened
        ({"resend_reused": False}, {"reused": 1}, {"ok": 1, "connection": 1, "resent": 0, "dropped": 1}),
        # a request is not idempotent: never sent twice
        ({"routes": (Route.of("POST", "/"),)}, {"reused": 1}, {"ok": 1, "connection": 1, "resent": 0, "dropped": 1}),
        # a new connection closed unanswered is the release's failure: never resent
        ({}, {"fresh": 1}, {"ok": 1, "connection": 1, "resent": 0, "dropped": 1}),
        # the second try fails too: one error, sent twice, never a third time
        ({}, {"reused": 1, "fresh": 1}, {"ok": 1, "connection": 1, "resent": 1, "dropped": 2}),
        # the server worked on it past the window, then died: a release that kills requests in flight is still seen
        ({}, {"reused": 1, "after": WIDE_WINDOW_S + 0.25}, {"ok": 1, "connection": 1, "resent": 0, "dropped": 1}),
    ],
    ids=["resent", "strict", "post", "fresh", "twice", "in-flight"],
)
def test_a_reused_connection_closed_unanswered_is_resent_once_as_clients_do(
    engine_class: type, plan: dict, drop: dict, expected: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server closes a connection just as a request arrives on it (no FIN yet when it went out). Browsers, Go
    and curl send an idempotent request once more when that happens on a reused connection; the fleet does too,
    counts it ``resent``, and measures its latency from when it was first due.

    The window is widened to WIDE_WINDOW_S, so that whether the close counts as the race does not depend on
    how soon the scheduler runs the server's thread; the in-flight case closes after the widened window."""
    import pytest_rollout.load.aiohttp_engine
    import pytest_rollout.load.engine

    for module in (pytest_rollout.load.engine, pytest_rollout.load.aiohttp_engine):
        monkeypatch.setattr(module, "RESEND_WINDOW_S", WIDE_WINDOW_S)  # the real one: the next test

    async def scenario(engine, request, server: _KeepAliveServer) -> None:  # type: ignore[no-untyped-def]
        await request()  # the first request of a connection is answered, unless a fresh drop is armed first
        server.drop_after_s = drop.get("after", 0.0)
        server.drop.update({k: v for k, v in drop.items() if k != "after"})
        await request()

    if "fresh" in drop and "reused" not in drop:
        # the first request of a new connection is closed unanswered, and the second is answered on another

        async def scenario(engine, request, server: _KeepAliveServer) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
            server.drop.update(drop)
            await request()
            await request()

    stats, server = _run_fast_engine(scenario, engine_class, **plan)
    phase = stats.by_phase()["-"]
    got = {"ok": phase.by_class.ok, "connection": phase.by_class.connection, "resent": phase.resent}
    got["dropped"] = server.dropped
    if "accepted" in expected:
        got["accepted"] = server.accepted
    assert got == expected
    assert stats.inflight == 0 and stats.total == 2


@pytest.mark.parametrize("engine_class", [FastEngine, AiohttpEngine], ids=["fast", "aiohttp"])
def test_in_a_mix_only_idempotent_routes_are_resent_and_with_their_own_bytes(
    engine_class: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GET with a templated path and a POST share the connections. The race on a reused connection: the POST is
    counted a connection error on its own route and never sent twice; the GET goes once more with the very bytes
    of its first try (its own ${seq}, not a new request's), counted resent on its route."""
    import asyncio

    import pytest_rollout.load.aiohttp_engine
    import pytest_rollout.load.engine

    for module in (pytest_rollout.load.engine, pytest_rollout.load.aiohttp_engine):
        monkeypatch.setattr(module, "RESEND_WINDOW_S", WIDE_WINDOW_S)
    routes = (Route("get", "GET", "/g/${seq}"), Route("post", "POST", "/p", body=b"x"))

    async def scenario(engine, request, server: _KeepAliveServer) -> None:  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()

        async def fire(route: int, number: int) -> None:
            engine.stats.inflight += 1
            engine.fire(loop.time(), route, number, number)
            deadline = loop.time() + 5
            while engine.stats.inflight and loop.time() < deadline:
                await asyncio.sleep(0.01)

        await fire(0, 0)  # a connection, now reused by each next request
        server.drop["reused"] = 1
        await fire(1, 1)  # the POST meets the race
        await fire(0, 2)
        server.drop["reused"] = 1
        await fire(0, 3)  # the GET meets it

    stats, server = _run_fast_engine(scenario, engine_class, routes=routes, stats=WorkerStats(["get", "post"]))
    per = stats.by_route()["-"]
    assert (per["get"].by_class.ok, per["get"].resent, per["get"].by_class.connection) == (3, 1, 0)
    assert (per["post"].by_class.ok, per["post"].resent, per["post"].by_class.connection) == (0, 0, 1)
    third = [data for data in server.received if b"/g/3 " in data]
    assert len(third) == 2 and third[0].split(b"\r\n")[0] == third[1].split(b"\r\n")[0] == b"GET /g/3 HTTP/1.1"
    if engine_class is FastEngine:  # the very bytes (aiohttp asks its one-off connection to close)
        assert third[0] == third[1]
    assert sum(data.count(b"POST /p ") for data in server.received) == 1


def test_both_engines_resend_within_the_one_10_ms_window() -> None:
    """The test above widens the window; the one the engines use is protocol's 10 ms, the same object in both
    engines (imported, not a copy that could drift from what the README says)."""
    import pytest_rollout.load.aiohttp_engine
    import pytest_rollout.load.engine
    from pytest_rollout.load import protocol

    assert protocol.RESEND_WINDOW_S == 0.01
    for module in (pytest_rollout.load.engine, pytest_rollout.load.aiohttp_engine):
        assert module.RESEND_WINDOW_S is protocol.RESEND_WINDOW_S, module.__name__
