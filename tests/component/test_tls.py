"""HTTPS and HEAD on the fast engine, against real servers on the loopback (tests/support/tlsserver.py) with
certificates made for the test (tests/support/tlscert.py): keep-alive reuse counted at the server, the stale
check, idle close, timeouts and the resend as for plain HTTP; a refused certificate is a connection error;
a HEAD answer ends at its headers, whatever its Content-Length says."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import on_time_as_said, run_fleet, schedule_kept
from tlscert import TestPKI, make_ca, make_pki
from tlsserver import HTTPServer
from waits import connections_lost, idle_past_check, readable, settle, wait_for

from pytest_rollout.load.aiohttp_engine import AiohttpEngine
from pytest_rollout.load.counters import WorkerStats
from pytest_rollout.load.engine import FastEngine, build_request, choose_engine, fast_engine_refusal
from pytest_rollout.load.mix import Route
from pytest_rollout.load.protocol import Plan

Request = Callable[..., Awaitable[None]]
Scenario = Callable[[Any, Request, HTTPServer], Awaitable[None]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA that signed nothing the servers here present."""
    pem, _ = make_ca(tmp_path_factory.mktemp("other"), "other-ca")
    return pem.read_text()


@pytest.fixture
def server(pki: TestPKI) -> Iterator[HTTPServer]:
    server = HTTPServer((pki.server_pem, pki.server_key))
    yield server
    server.stop()


def plan_for(url: str, method: str | None = None, **plan: Any) -> Plan:
    """A plan for *url*; *method* makes its one route (``routes`` may give several instead)."""
    if method is not None:
        plan["routes"] = (Route.of(method, urlsplit(url).path or "/"),)
    return Plan(url=url, segments=(), start_at=0, deadline=0, **plan)


def run_engine(server: HTTPServer, scenario: Scenario, engine_class: type = FastEngine, **plan: Any) -> WorkerStats:
    """Run *scenario* with one engine against *server* on uvloop; the stats it counted. Nothing the engine does
    may raise inside the loop's callbacks."""
    import uvloop

    the_plan = plan_for(plan.pop("url", server.url), **plan)
    stats = WorkerStats(routes=the_plan.route_names or ("-",))
    problems: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: problems.append(context))
        engine = engine_class(the_plan, stats)
        await engine.open()

        async def request(route: int = 0) -> None:
            stats.inflight += 1
            engine.fire(loop.time(), route)
            deadline = loop.time() + 10
            while stats.inflight and loop.time() < deadline:
                await asyncio.sleep(0.005)
            assert stats.inflight == 0, "a request never ended"

        try:
            await scenario(engine, request, server)
        finally:
            await engine.close()
            await connections_lost(engine, urlsplit(the_plan.url).port or 443)

    uvloop.run(main())
    assert problems == [], problems
    return stats


def counts(stats: WorkerStats) -> dict[str, int]:
    phase = stats.by_phase()["-"]
    return {k: v for k, v in phase.by_class.items() if v} | ({"resent": phase.resent} if phase.resent else {})


async def requests(n: int, request: Request) -> None:
    for _ in range(n):
        await request()


def test_the_fast_engine_runs_https_and_head() -> None:
    stats = WorkerStats()
    assert fast_engine_refusal(plan_for("https://127.0.0.1:1/")) is None
    assert fast_engine_refusal(plan_for("http://127.0.0.1:1/", method="HEAD")) is None
    assert isinstance(choose_engine(plan_for("https://127.0.0.1:1/"), stats), FastEngine)
    assert isinstance(choose_engine(plan_for("https://127.0.0.1:1/", method="HEAD"), stats, "fast"), FastEngine)
    assert isinstance(choose_engine(plan_for("https://127.0.0.1:1/"), stats, "aiohttp"), AiohttpEngine)
    assert fast_engine_refusal(plan_for("ftp://127.0.0.1:1/")) == "ftp:// needs the aiohttp engine"
    # the default port is not written in the Host header, whichever the scheme
    assert b"\r\nHost: example.test\r\n" in build_request(plan_for("https://example.test/"))
    assert b"\r\nHost: example.test:80\r\n" in build_request(plan_for("https://example.test:80/"))


@pytest.mark.parametrize("engine_class", [FastEngine, AiohttpEngine], ids=["fast", "aiohttp"])
def test_https_reuses_one_connection_for_every_request(server: HTTPServer, pki: TestPKI, engine_class: type) -> None:
    """Twenty requests one after another: one connection and one handshake at the server, twenty answers."""
    stats = run_engine(server, lambda e, request, s: requests(20, request), engine_class, tls_ca_pem=pki.ca_text)
    assert counts(stats) == {"ok": 20}
    assert server.accepted == 1 and server.handshakes == 1 and server.served == {"GET": 20}


def test_session_tickets_unread_on_an_idle_connection_do_not_discard_it(pki: TestPKI) -> None:
    """A TLS 1.3 server sends session tickets after the handshake. Here they reach a connection the engine holds
    idle while its loop is busy (unread, as a poll for input would find them): the stale check must not take
    them for a close, and the request goes out on that connection."""
    server = HTTPServer((pki.server_pem, pki.server_key), hold_after_handshake=True)

    async def scenario(engine: FastEngine, request: Request, server: HTTPServer) -> None:
        engine._connect()  # a connection with no request waiting: it goes idle once the handshake is done
        await settle(lambda: engine.idle and server.held_after_handshake, "an idle connection, its tickets held")
        assert server.held_after_handshake == 1
        (conn,) = engine.idle
        assert not readable(conn.fd)  # nothing has come yet: the tickets are still held
        idle_past_check(conn)  # (so the engine checks it before it reuses it: the check must let it be)
        # no await from here to the request: the loop cannot read the tickets before it is due
        server.release()
        wait_for(lambda: readable(conn.fd), "the session tickets at the engine's idle socket")
        await request()
        await request()

    try:
        stats = run_engine(server, scenario, tls_ca_pem=pki.ca_text)
    finally:
        server.stop()
    assert counts(stats) == {"ok": 2}
    assert server.accepted == 1 and server.served == {"GET": 2}


def test_an_idle_tls_connection_the_server_closed_is_not_reused(server: HTTPServer, pki: TestPKI) -> None:
    """A graceful server closes its idle connections; the engine sees it before reusing one, over TLS too."""

    async def scenario(engine: FastEngine, request: Request, server: HTTPServer) -> None:
        await request()
        (conn,) = engine.idle
        # no await from here to the next request: the loop cannot read the close before it is due
        idle_past_check(conn)
        wait_for(lambda: server.idle_connections == 1, "the server holding the connection idle")
        server.close_idle()
        wait_for(lambda: readable(conn.fd), "the server's close at the engine's socket")
        await request()

    stats = run_engine(server, scenario, tls_ca_pem=pki.ca_text)
    assert counts(stats) == {"ok": 2}
    assert server.accepted == 2 and server.served == {"GET": 2}


def test_the_engine_closes_an_idle_tls_connection_itself(server: HTTPServer, pki: TestPKI) -> None:
    async def scenario(engine: FastEngine, request: Request, server: HTTPServer) -> None:
        await request()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (engine.idle or engine.conns) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert not engine.conns, "the idle connection was never closed"
        await request()  # on a new connection

    stats = run_engine(server, scenario, tls_ca_pem=pki.ca_text)
    assert counts(stats) == {"ok": 2}
    assert server.accepted == 2


def test_a_burst_opens_at_most_max_connecting_tls_connections_at_once(server: HTTPServer, pki: TestPKI) -> None:
    """A handshake costs a millisecond of CPU: a burst of requests opens MAX_CONNECTING_TLS connections at a time,
    and every request is answered, on far fewer connections than requests."""
    from pytest_rollout.load.engine import MAX_CONNECTING_TLS

    async def scenario(engine: FastEngine, request: Request, server: HTTPServer) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for _ in range(100):  # no await in between: all 100 are due before any connection is made
            engine.stats.inflight += 1
            engine.fire(now)
        assert engine.connecting == MAX_CONNECTING_TLS < len(engine.waiting) == 100
        deadline = loop.time() + 10
        while engine.stats.inflight and loop.time() < deadline:
            await asyncio.sleep(0.01)

    stats = run_engine(server, scenario, tls_ca_pem=pki.ca_text)
    assert counts(stats) == {"ok": 100}
    assert server.served == {"GET": 100} and server.handshakes < 100


def test_a_slow_tls_answer_times_out(server: HTTPServer, pki: TestPKI) -> None:
    server.delay_s = 1.0
    stats = run_engine(server, lambda e, request, s: request(), tls_ca_pem=pki.ca_text, timeout_s=0.2)
    assert counts(stats) == {"timeout": 1}


@pytest.mark.parametrize("engine_class", [FastEngine, AiohttpEngine], ids=["fast", "aiohttp"])
def test_a_reused_tls_connection_closed_unanswered_is_resent_once(
    server: HTTPServer, pki: TestPKI, engine_class: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As over plain HTTP (test_engines.py, whose reasons for the wider window hold here too)."""
    import pytest_rollout.load.aiohttp_engine
    import pytest_rollout.load.engine

    for module in (pytest_rollout.load.engine, pytest_rollout.load.aiohttp_engine):
        monkeypatch.setattr(module, "RESEND_WINDOW_S", 0.5)

    async def scenario(engine: Any, request: Request, server: HTTPServer) -> None:
        await request()
        server.drop_reused = 1
        await request()

    stats = run_engine(server, scenario, engine_class, tls_ca_pem=pki.ca_text)
    assert counts(stats) == {"ok": 2, "resent": 1}
    assert server.dropped == 1 and server.accepted == 2 and server.served == {"GET": 2}


@pytest.mark.parametrize("engine_class", [FastEngine, AiohttpEngine], ids=["fast", "aiohttp"])
@pytest.mark.parametrize(
    ("trust", "host"),
    [("other CA", "127.0.0.1"), ("system", "127.0.0.1"), ("test CA", "127.0.0.2")],
    ids=["wrong-ca", "system-trust", "wrong-name"],
)
def test_a_refused_certificate_is_a_connection_error_on_every_request(
    pki: TestPKI, other_ca: str, engine_class: type, trust: str, host: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A CA that did not sign the server's certificate, the system's CAs (which know nothing of the test's), and a
    certificate for another name: each request counts as a connection error, the worker goes on, and the fast
    engine says why once, on standard error (the worker's log)."""
    server = HTTPServer((pki.server_pem, pki.server_key), host=host)
    ca = {"other CA": other_ca, "system": None, "test CA": pki.ca_text}[trust]
    try:
        stats = run_engine(server, lambda e, request, s: requests(3, request), engine_class, tls_ca_pem=ca)
    finally:
        server.stop()
    assert counts(stats) == {"connection": 3}
    assert server.served == {} and server.handshakes == 0 and server.failed_handshakes >= 1
    if engine_class is FastEngine:
        said = capfd.readouterr().err
        assert said.count("certificate was refused") == 1, said
        assert server.url.rstrip("/") in said and "tls_verify=False" in said and "tls_ca=" in said


@pytest.mark.parametrize("engine_class", [FastEngine, AiohttpEngine], ids=["fast", "aiohttp"])
def test_tls_verify_false_accepts_a_test_certificate(server: HTTPServer, engine_class: type) -> None:
    stats = run_engine(server, lambda e, request, s: requests(3, request), engine_class, tls_verify=False)
    assert counts(stats) == {"ok": 3} and server.handshakes == 1


def test_a_ca_that_is_not_pem_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="tls_ca_pem: not PEM certificates"):
        FastEngine(plan_for("https://127.0.0.1:1/", tls_ca_pem="not a certificate"), WorkerStats())


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_head_answers_end_at_their_headers_and_the_connection_is_reused(pki: TestPKI, tls: bool) -> None:
    """The server answers HEAD with Content-Length: 2 and no body. Parsed as a GET's, the answer would never end
    (a timeout), and the next answer's first two bytes would be taken for its body."""
    server = HTTPServer((pki.server_pem, pki.server_key) if tls else None)
    try:
        stats = run_engine(server, lambda e, request, s: requests(5, request), method="HEAD", tls_ca_pem=pki.ca_text)
    finally:
        server.stop()
    assert counts(stats) == {"ok": 5}
    assert server.accepted == 1 and server.served == {"HEAD": 5}


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_a_head_then_a_get_share_one_connection(pki: TestPKI, tls: bool) -> None:
    """Whether an answer has a body is decided per request in flight, so the requests of a mix can share a
    connection: HEAD, GET, HEAD, GET on one connection, every answer whole."""
    server = HTTPServer((pki.server_pem, pki.server_key) if tls else None)
    mix = (Route.of("HEAD", "/"), Route.of("GET", "/"))

    async def scenario(engine: FastEngine, request: Request, server: HTTPServer) -> None:
        for route in (0, 1, 0, 1):  # HEAD, GET, HEAD, GET
            await request(route)
        assert len(engine.conns) == 1

    try:
        stats = run_engine(server, scenario, tls_ca_pem=pki.ca_text, routes=mix)
    finally:
        server.stop()
    assert counts(stats) == {"ok": 4}
    assert server.accepted == 1 and server.served == {"HEAD": 2, "GET": 2}


def test_a_worker_runs_https_on_the_fast_engine(make_fleet, server: HTTPServer, pki: TestPKI) -> None:  # type: ignore[no-untyped-def]
    """A real worker process, its plan over the wire: https picks the fast engine, every request answered, the
    connections reused (far fewer than requests)."""
    totals, (ran,) = run_fleet(make_fleet(1, server.url), server.url, 100, 1.0, tls_ca_pem=pki.ca_text)
    assert ran == "fast"
    (worker,) = totals.workers
    on_time_as_said(worker)
    phase = worker.phases["p"]
    schedule_kept(phase, 100, "ok")
    assert server.served == {"GET": phase.by_class.ok}
    # connections reused: fewer than the requests sent (how many more than one a busy machine's stalls made the
    # worker open, while requests waited for an answer, is the scheduler's)
    assert server.accepted < phase.by_class.ok, (server.accepted, phase.by_class)


def test_a_worker_whose_server_certificate_is_refused_says_why(
    make_fleet,  # type: ignore[no-untyped-def]
    server: HTTPServer,
    other_ca: str,
) -> None:
    """Every request a connection error, not a crash; the worker's log names the refused certificate."""
    fleet = make_fleet(1, server.url)
    totals, (ran,) = run_fleet(fleet, server.url, 50, 0.5, tls_ca_pem=other_ca)
    assert ran == "fast"
    (worker,) = totals.workers
    schedule_kept(worker.phases["p"], 25, "connection")
    assert server.served == {}
    ((proc, _),) = fleet.workers
    log = Path(proc.log_path).read_text()
    assert log.count("the server's certificate was refused") == 1, log
