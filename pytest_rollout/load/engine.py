"""Engines: what sends a worker's requests.

``fast``: HTTP/1.1 over keep-alive connections, plain or TLS (``https://``,
verified as :mod:`pytest_rollout.load.tls` says), each an
:class:`asyncio.Protocol` on uvloop's transports, responses parsed by
httptools (llhttp, in C). A response to ``HEAD`` has no body whatever its
``Content-Length`` says: each connection knows whether the request in flight
on it is a ``HEAD``, ends that answer at its headers and parses the next one
with a fresh parser. The request bytes are built once; sending a request
is a dict-free ``transport.write`` on an idle connection, or a new connection
when none is idle. No task, future or timer is created per request: timeouts
are found by a sweep every 50 ms (so a timeout fires up to 50 ms late).

New connections are opened at most ``MAX_CONNECTING`` at a time. Requests
that find no idle connection wait for the first connection to come free,
whether a new one or one whose answer just came in: after a stall, when
hundreds of requests fall due at once, opening a connection for each (about
100 us of CPU apiece) made a worker that was a few milliseconds behind open
thousands of connections and fall further behind, while the target saw a
storm of connections the plan never asked for. Over TLS the limit is
``MAX_CONNECTING_TLS``: a handshake costs a client over a millisecond of CPU
(OpenSSL 3.0), twenty times a TCP connect, so 32 at once stalled the loop for
tens of milliseconds and the connections they made went idle and closed, to be
opened again in the next burst. 8 at once still reach what one core can
handshake (about 800 a second) at round trips up to about 5 ms.

A request is never written onto a connection the server has already closed,
when the engine can know it. Closing an idle keep-alive connection is how a
graceful server ends (and how a keep-alive timeout works). So the fast engine
closes its own connections once they have been idle for ``IDLE_CLOSE_S``
(below any common server's keep-alive timeout: gunicorn's 2 s is the shortest
default), and a connection idle for more than ``STALE_CHECK_S`` is checked
(one ``poll``) before it is reused, as urllib3 checks its pooled connections.
Over TLS the check asks only whether the server has closed its side (``POLLRDHUP``,
a FIN or a reset): a TLS 1.3 server sends session tickets after the handshake,
bytes a healthy idle connection may hold unread.

What is left is the race every HTTP/1.1 client meets: a request that reaches
a server just after it chose to close the connection, before its FIN arrived.
Browsers, Go's net/http (so vegeta and k6), urllib3 and curl send an
idempotent request once more when a *reused* connection closes before any
byte of the answer (RFC 9110, 9.2.2). The engines do so too
(``Plan.resend_reused``, on by default) when the close came within
``RESEND_WINDOW_S`` of the request going out (the race's window; a request a
server had begun on usually dies later): the request goes out once more on a *new* connection, counted
``resent`` per phase, classed by the second try, its latency measured from
when it was first due. A request on a new connection, a non-idempotent one,
one that got any byte of an answer, one older than the window, and a second
try are never resent, so a release that refuses connections or kills
requests it was working on is still seen. ``slo(client="strict")`` never
resends. The ``aiohttp`` engine (:mod:`pytest_rollout.load.aiohttp_engine`),
run only where a plan asks for it or httptools is missing, does the same on
a pool of its own that closes every connection after one request.

A server whose certificate is refused fails every request as a ``connection``
error (never a crash); the first such failure is written, once, to the
worker's log (standard error) and kept in ``FastEngine.tls_failure``.

Both feed the same :class:`~pytest_rollout.load.counters.WorkerStats` with the same
outcome classes, so they give the same counts for the same run. Neither
retries otherwise, follows redirects or pipelines.
"""

from __future__ import annotations

import asyncio
import select
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from pytest_rollout.load.protocol import (
    CONNECTION,
    DEFAULT_PORTS,
    IDEMPOTENT,
    IDLE_CLOSE_S,
    RESEND_WINDOW_S,
    TIMEOUT,
    classify,
)
from pytest_rollout.load.render import CompiledMix

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

    from pytest_rollout.load.counters import WorkerStats
    from pytest_rollout.load.protocol import Plan

__all__ = ["Engine", "FastEngine", "choose_engine"]

SWEEP_S = 0.05
STALE_CHECK_S = 0.001  # a connection idle longer than this is checked before it is reused
MAX_CONNECTING = 32  # connections being opened at once, at most (32 per round trip: 32,000 a second at 1 ms)
MAX_CONNECTING_TLS = 8  # the same over TLS, where a connection costs a handshake
#: what the stale check asks of a TLS connection: has the server closed its side? (a FIN: POLLRDHUP; a reset:
#: POLLHUP/POLLERR, always reported). Not POLLIN: session tickets a TLS 1.3 server sends are healthy unread bytes
TLS_CLOSED_EVENTS = getattr(select, "POLLRDHUP", 0x2000)


class Engine(Protocol):
    name: str

    async def open(self) -> None: ...

    def fire(self, due: float, route: int = 0, number: int = 0, nth: int | None = None) -> None:
        """Send scheduled request *number* (the worker's count from 0), the *nth* on *route* (its index in the
        plan's routes; *nth* defaults to *number*, as in a one-route mix), due at loop time *due* (the caller
        counted it in flight)."""

    async def close(self) -> None: ...


def fast_engine_refusal(plan: Plan) -> str | None:
    """Why the fast engine cannot run *plan*, or None if it can."""
    parts = urlsplit(plan.url)
    if parts.scheme not in DEFAULT_PORTS:
        return f"{parts.scheme}:// needs the aiohttp engine"
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "httptools is not installed"
    return None


def choose_engine(plan: Plan, stats: WorkerStats, name: str = "auto") -> Engine:
    """The engine for *plan*: ``fast`` where it can, else ``aiohttp`` (or the one *name* insists on)."""
    if name not in ("auto", "fast", "aiohttp"):
        raise ValueError(f"unknown engine {name!r}: use auto, fast or aiohttp")
    refusal = fast_engine_refusal(plan)
    if name == "fast" and refusal:
        raise ValueError(f"the fast engine cannot run this plan: {refusal}")
    if name == "aiohttp" or refusal:
        from pytest_rollout.load.aiohttp_engine import AiohttpEngine

        return AiohttpEngine(plan, stats)
    return FastEngine(plan, stats)


def compiled_mix(plan: Plan) -> CompiledMix:
    """*plan*'s routes ready to send, for the worker it names."""
    return CompiledMix(plan.routes, plan.url, plan.seed, plan.worker)


def build_request(plan: Plan, route: int = 0, number: int = 0) -> bytes:
    """The bytes of scheduled request *number* on *route* of *plan*."""
    return compiled_mix(plan).wire(route, number)


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request on it at a time."""

    __slots__ = (
        "engine", "transport", "fd", "parser", "due", "status", "done", "keep", "idle_at", "pooled", "used",
        "answered", "sent_at", "resend", "route", "data", "head",
    )  # fmt: skip

    def __init__(self, engine: FastEngine, resend: _Resend | None = None) -> None:
        import httptools

        self.engine = engine
        self.transport: asyncio.Transport | None = None
        self.fd = -1
        self.parser = httptools.HttpResponseParser(self)
        self.due = 0.0  # due time of the request in flight; 0.0 when idle
        self.status = 0
        self.done = False
        self.keep = True
        self.idle_at = 0.0  # loop time it last went idle
        self.pooled = False  # whether it is in the engine's idle list
        self.used = 0  # requests answered on it: a reused connection has used > 0
        self.answered = False  # whether any byte of the answer to the request in flight came back
        self.sent_at = 0.0  # loop time the request in flight went out
        self.resend = resend  # the request this connection was opened to send a second time
        self.route = 0  # the route of the request in flight
        self.data = b""  # its bytes, sent again as they were if it is resent
        self.head = False  # whether the request in flight is a HEAD: its answer ends at its headers

    def send(self, due: float, route: int, data: bytes) -> None:
        self.due = due
        self.route = route
        self.data = data
        self.answered = False
        self.sent_at = self.engine._time()
        self.transport.write(data)  # type: ignore[union-attr]
        self.head = self.engine.heads[route]

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        self.engine.connected(self)

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except Exception:  # noqa: BLE001 - httptools.HttpParserError and friends
            self.fail(CONNECTION)
            return
        if self.done:
            self.done = False
            self.used += 1
            due, self.due = self.due, 0.0
            self.engine.completed(self, due, classify(self.status), self.keep, self.route)

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.lost(self)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        parser = self.parser
        self.status = parser.get_status_code()
        self.keep = parser.should_keep_alive()
        if self.head:
            # no body follows, whatever Content-Length says (RFC 9110, 9.3.2), but llhttp does not know the request
            # was a HEAD and would wait for one: the answer is complete, and the next is parsed by a fresh parser
            self.done = True
            self.parser = type(parser)(self)

    def on_message_complete(self) -> None:
        self.done = True

    def closed_by_peer(self, poller: select.poll) -> bool:
        """Whether the server has closed this idle connection (or, over plain HTTP, sent on it unasked) without us
        having read it yet: either way it must not carry another request. Over TLS only a close counts (see
        TLS_CLOSED_EVENTS)."""
        if self.fd < 0:
            return False
        poller.register(self.fd, self.engine.closed_events)
        try:
            return bool(poller.poll(0))
        finally:
            poller.unregister(self.fd)

    def fail(self, klass: int) -> None:
        """End the request in flight with *klass* and drop the connection."""
        due, self.due = self.due, 0.0
        if due:
            self.engine.ended(due, klass, self.route)
        if self.transport is not None:
            self.transport.abort()


class _Resend:
    """A request on its way to a second try, while its new connection is being opened."""

    __slots__ = ("due", "route", "data")

    def __init__(self, due: float, route: int, data: bytes) -> None:
        self.due = due  # 0.0 once it has ended (sent, timed out or failed)
        self.route = route
        self.data = data  # the bytes sent the first time: sent again as they were

    def take(self) -> float:
        due, self.due = self.due, 0.0
        return due


class FastEngine:
    """HTTP/1.1 keep-alive, plain or TLS, on raw transports, httptools parsing."""

    name = "fast"

    def __init__(self, plan: Plan, stats: WorkerStats) -> None:
        parts = urlsplit(plan.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            from pytest_rollout.load.tls import client_context

            self.tls = client_context(plan)
        self.tls_failure: str | None = None  # why the first TLS connection failed, if one did
        # the stale check: any unasked byte or close on plain HTTP; over TLS only a close (see TLS_CLOSED_EVENTS)
        self.closed_events = TLS_CLOSED_EVENTS if self.tls is not None else select.POLLIN
        self.max_connecting = MAX_CONNECTING_TLS if self.tls is not None else MAX_CONNECTING
        self.heads = [r.method.upper() == "HEAD" for r in plan.routes] or [False]  # answers that end at headers
        self.plan = plan
        self.stats = stats
        self.mix = compiled_mix(plan)
        self.wire = self.mix.wire
        self.limit = plan.connections or plan.max_inflight
        self.conns: set[_Conn] = set()  # every open connection, idle or not
        self.idle: list[_Conn] = []  # in the order they went idle: the most recent is reused first
        self.connecting = 0
        # requests waiting for a connection to come free: (due time, route, bytes)
        self.waiting: deque[tuple[float, int, bytes]] = deque()
        self.resending: set[_Resend] = set()  # requests whose new connection for a second try is being opened
        # per route: whether its request may be sent a second time (only an idempotent method)
        self.resend_reused = [plan.resend_reused and r.method.upper() in IDEMPOTENT for r in plan.routes]
        self.timeout = plan.timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._time: Any = None  # the loop's clock, looked up once
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._poller = select.poll()

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._time = self._loop.time
        self._sweeper = self._loop.call_later(SWEEP_S, self._sweep)

    def fire(self, due: float, route: int = 0, number: int = 0, nth: int | None = None) -> None:
        data = self.wire(route, number, nth)
        idle = self.idle
        while idle:
            conn = idle.pop()
            conn.pooled = False
            if conn.idle_at < due - STALE_CHECK_S and conn.closed_by_peer(self._poller):
                conn.transport.abort()  # type: ignore[union-attr]
                continue
            conn.send(due, route, data)
            return
        self.waiting.append((due, route, data))
        self._open_for_waiting()

    def _open_for_waiting(self) -> None:
        """Open connections for the requests waiting beyond those already being opened: at most
        MAX_CONNECTING at once, and within the limit on connections."""
        busy = len(self.conns) - len(self.idle)
        while (
            self.connecting < len(self.waiting)
            and self.connecting < self.max_connecting
            and self.connecting + busy < self.limit
        ):
            self._connect()

    def _connect(self) -> None:
        assert self._loop is not None
        self.connecting += 1
        task = self._open(lambda: _Conn(self))
        task.add_done_callback(self._connect_done)

    def _open(self, protocol: Callable[[], _Conn]) -> asyncio.Task[Any]:
        """A task opening one connection to the target: TCP, then TLS for ``https://``."""
        assert self._loop is not None
        if self.tls is None:
            opening = self._loop.create_connection(protocol, self.host, self.port)
        else:
            opening = self._loop.create_connection(
                protocol, self.host, self.port, ssl=self.tls, server_hostname=self.host,
                ssl_handshake_timeout=self.timeout,
            )  # fmt: skip
        task = self._loop.create_task(opening)
        if self.tls is not None and self.tls_failure is None:
            task.add_done_callback(self._tls_checked)
        return task

    def _tls_checked(self, task: asyncio.Task[Any]) -> None:
        """Say once, in the worker's log, why TLS connections fail (a refused certificate, most often)."""
        if self.tls_failure is None and not task.cancelled() and task.exception() is not None:
            from pytest_rollout.load.tls import report_failure

            self.tls_failure = report_failure(task.exception(), self.origin, self.plan)  # type: ignore[arg-type]

    def _connect_done(self, task: asyncio.Task[Any]) -> None:
        self.connecting -= 1
        if task.cancelled() or task.exception() is not None:
            # the request that asked for this connection fails: no retry
            if self.waiting:
                due, route, _ = self.waiting.popleft()
                self.ended(due, CONNECTION, route)
        if not self._closed:
            # requests that came while connections were being made, or beyond MAX_CONNECTING, still need theirs
            self._open_for_waiting()

    def connected(self, conn: _Conn) -> None:
        resend = conn.resend
        due = resend.take() if resend is not None else 0.0
        if resend is not None:
            self.resending.discard(resend)
        if self._closed:
            if due:
                self.ended(due, CONNECTION, resend.route)  # type: ignore[union-attr]
            conn.transport.abort()  # type: ignore[union-attr]
            return
        self.conns.add(conn)
        if due:
            conn.send(due, resend.route, resend.data)  # type: ignore[union-attr]
        else:
            self._next(conn)

    def _resend(self, due: float, route: int, data: bytes) -> None:
        """Send the request due at *due* once more, on a new connection: its reused one closed unanswered."""
        assert self._loop is not None
        self.stats.resend(due, route)
        resend = _Resend(due, route, data)
        self.resending.add(resend)
        task = self._open(lambda: _Conn(self, resend))
        task.add_done_callback(partial(self._resend_done, resend))

    def _resend_done(self, resend: _Resend, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.resending.discard(resend)
            due = resend.take()
            if due:
                self.ended(due, CONNECTION, resend.route)

    def _next(self, conn: _Conn) -> None:
        """*conn* is free: it takes the oldest waiting request, or goes idle."""
        if self.waiting:
            conn.send(*self.waiting.popleft())
        else:
            conn.idle_at = self._time()
            conn.pooled = True
            self.idle.append(conn)

    def completed(self, conn: _Conn, due: float, klass: int, keep: bool, route: int) -> None:
        self.ended(due, klass, route)
        if keep and not self._closed:
            self._next(conn)
        else:
            # the whole answer is in: reset rather than close, so no TIME_WAIT is left behind. A release that
            # closes every connection (Connection: close) would otherwise leave one per request for a minute
            conn.transport.abort()  # type: ignore[union-attr]
            if self.waiting and not self._closed:
                self._open_for_waiting()

    def lost(self, conn: _Conn) -> None:
        if conn.due:
            due, conn.due = conn.due, 0.0
            if (
                conn.used
                and not conn.answered
                and self.resend_reused[conn.route]
                and not self._closed
                and self._time() - conn.sent_at <= RESEND_WINDOW_S
            ):
                self._resend(due, conn.route, conn.data)  # the race every keep-alive client meets: sent once more
            else:
                self.ended(due, CONNECTION, conn.route)
        self.conns.discard(conn)
        if conn.pooled:
            conn.pooled = False
            self.idle.remove(conn)
        if self.waiting and not self._closed:
            self._open_for_waiting()

    def ended(self, due: float, klass: int, route: int = 0) -> None:
        stats = self.stats
        stats.inflight -= 1
        stats.record(klass, due, self._time() - due, route)

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        limit = now - self.timeout
        for conn in [c for c in self.conns if c.due and c.due < limit]:
            conn.fail(TIMEOUT)
        while self.waiting and self.waiting[0][0] < limit:
            due, route, _ = self.waiting.popleft()
            self.ended(due, TIMEOUT, route)
        for resend in [r for r in self.resending if 0.0 < r.due < limit]:
            self.resending.discard(resend)  # its connection, if it comes, goes to the pool
            self.ended(resend.take(), TIMEOUT, resend.route)
        # the oldest idle connections come first: close those idle for IDLE_CLOSE_S before a server may
        idle = self.idle
        stale = 0
        while stale < len(idle) and idle[stale].idle_at < now - IDLE_CLOSE_S:
            stale += 1
        if stale:
            for conn in idle[:stale]:
                conn.pooled = False
                conn.transport.abort()  # type: ignore[union-attr]
            del idle[:stale]
        if not self._closed:
            self._sweeper = self._loop.call_later(SWEEP_S, self._sweep)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in self.idle:
            conn.pooled = False
        self.idle.clear()
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
