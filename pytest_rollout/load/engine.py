"""Engines: what sends a worker's requests.

``fast``: plain HTTP/1.1 over keep-alive connections, each an
:class:`asyncio.Protocol` on uvloop's transports, responses parsed by
httptools (llhttp, in C). The request bytes are built once; sending a request
is a dict-free ``transport.write`` on an idle connection, or a new connection
when none is idle. No task, future or timer is created per request: timeouts
are found by a sweep every 50 ms (so a timeout fires up to 50 ms late).

New connections are opened at most ``MAX_CONNECTING`` at a time. Requests
that find no idle connection wait for the first connection to come free,
whether a new one or one whose answer just came in: after a stall, when
hundreds of requests fall due at once, opening a connection for each (about
100 us of CPU apiece) made a worker that was a few milliseconds behind open
thousands of connections and fall further behind, while the target saw a
storm of connections the plan never asked for.

A request is never written onto a connection the server has already closed.
Closing an idle keep-alive connection is how a graceful server ends (and how
a keep-alive timeout works); a client that writes onto it at that moment loses
the request, and real clients absorb that with a retry (RFC 9112, 9.3.1),
which the engines do not do, since a retry would also hide a release that
drops requests. So the fast engine closes its own connections once they have
been idle for ``IDLE_CLOSE_S`` (below any common server's keep-alive timeout:
gunicorn's 2 s is the shortest default), and a connection idle for more than
``STALE_CHECK_S`` is checked (one ``poll``) before it is reused, as urllib3
checks its pooled connections: a busy machine can hold a server's FIN unread
while the requests due meanwhile go out. Only the server's own half of the
race is left: a request that reaches a server after it chose to close the
connection, with no FIN yet sent, still fails, as it would for any client.

``aiohttp``: aiohttp's client, for what the fast engine does not do (TLS,
``HEAD``, anything but ``http://``). Its silent retry of idempotent requests
on reused connections is switched off.

Both feed the same :class:`~pytest_rollout.load.counters.WorkerStats` with the same
outcome classes, so they give the same counts for the same run. Neither
retries, follows redirects or pipelines.
"""

from __future__ import annotations

import asyncio
import select
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from pytest_rollout.load.protocol import CONNECTION, HTTP_4XX, HTTP_5XX, OK, TIMEOUT

if TYPE_CHECKING:
    from pytest_rollout.load.counters import WorkerStats
    from pytest_rollout.load.protocol import Plan

__all__ = ["AiohttpEngine", "Engine", "FastEngine", "choose_engine"]

SWEEP_S = 0.05
IDLE_CLOSE_S = 0.5  # the fast engine closes a connection idle this long (aiohttp's pool too)
STALE_CHECK_S = 0.001  # a connection idle longer than this is checked before it is reused
MAX_CONNECTING = 32  # connections being opened at once, at most (32 per round trip: 32,000 a second at 1 ms)


def _classify(status: int) -> int:
    if status < 400:
        return OK
    if status < 500:
        return HTTP_4XX
    return HTTP_5XX


class Engine(Protocol):
    name: str

    async def open(self) -> None: ...

    def fire(self, due: float) -> None:
        """Send one request due at loop time *due* (the caller counted it in flight)."""

    async def close(self) -> None: ...


def fast_engine_refusal(plan: Plan) -> str | None:
    """Why the fast engine cannot run *plan*, or None if it can."""
    parts = urlsplit(plan.url)
    if parts.scheme != "http":
        return f"{parts.scheme}:// needs the aiohttp engine"
    if plan.method == "HEAD":
        return "HEAD needs the aiohttp engine"
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
        return AiohttpEngine(plan, stats)
    return FastEngine(plan, stats)


def build_request(plan: Plan) -> bytes:
    parts = urlsplit(plan.url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{plan.method} {target} HTTP/1.1", f"Host: {host}:{port}" if port != 80 else f"Host: {host}"]
    seen = {"host"}
    for key, value in plan.headers.items():
        if key.lower() in ("host", "content-length", "connection", "transfer-encoding"):
            continue
        lines.append(f"{key}: {value}")
        seen.add(key.lower())
    body = plan.body or b""
    if body or plan.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    if "user-agent" not in seen:
        lines.append("User-Agent: pytest-rollout")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request on it at a time."""

    __slots__ = ("engine", "transport", "fd", "parser", "due", "status", "done", "keep", "idle_at", "pooled")

    def __init__(self, engine: FastEngine) -> None:
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

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        self.engine.connected(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:  # noqa: BLE001 - httptools.HttpParserError and friends
            self.fail(CONNECTION)
            return
        if self.done:
            self.done = False
            due, self.due = self.due, 0.0
            self.engine.completed(self, due, _classify(self.status), self.keep)

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.lost(self)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.done = True

    def closed_by_peer(self, poller: select.poll) -> bool:
        """Whether the server has closed this idle connection (or sent on it unasked) without us having read it
        yet: either way it must not carry another request."""
        if self.fd < 0:
            return False
        poller.register(self.fd, select.POLLIN)
        try:
            return bool(poller.poll(0))
        finally:
            poller.unregister(self.fd)

    def fail(self, klass: int) -> None:
        """End the request in flight with *klass* and drop the connection."""
        due, self.due = self.due, 0.0
        if due:
            self.engine.ended(due, klass)
        if self.transport is not None:
            self.transport.abort()


class FastEngine:
    """Plain HTTP/1.1 keep-alive on raw transports, httptools parsing."""

    name = "fast"

    def __init__(self, plan: Plan, stats: WorkerStats) -> None:
        parts = urlsplit(plan.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.plan = plan
        self.stats = stats
        self.request = build_request(plan)
        self.limit = plan.connections or plan.max_inflight
        self.conns: set[_Conn] = set()  # every open connection, idle or not
        self.idle: list[_Conn] = []  # in the order they went idle: the most recent is reused first
        self.connecting = 0
        self.waiting: deque[float] = deque()  # due times waiting for a connection to come free
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

    def fire(self, due: float) -> None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            conn.pooled = False
            if conn.idle_at < due - STALE_CHECK_S and conn.closed_by_peer(self._poller):
                conn.transport.abort()  # type: ignore[union-attr]
                continue
            conn.due = due
            conn.transport.write(self.request)  # type: ignore[union-attr]
            return
        self.waiting.append(due)
        self._open_for_waiting()

    def _open_for_waiting(self) -> None:
        """Open connections for the requests waiting beyond those already being opened: at most
        MAX_CONNECTING at once, and within the limit on connections."""
        busy = len(self.conns) - len(self.idle)
        while (
            self.connecting < len(self.waiting)
            and self.connecting < MAX_CONNECTING
            and self.connecting + busy < self.limit
        ):
            self._connect()

    def _connect(self) -> None:
        assert self._loop is not None
        self.connecting += 1
        task = self._loop.create_task(self._loop.create_connection(lambda: _Conn(self), self.host, self.port))
        task.add_done_callback(self._connect_done)

    def _connect_done(self, task: asyncio.Task[Any]) -> None:
        self.connecting -= 1
        if task.cancelled() or task.exception() is not None:
            # the request that asked for this connection fails: no retry
            if self.waiting:
                self.ended(self.waiting.popleft(), CONNECTION)
        if not self._closed:
            # requests that came while connections were being made, or beyond MAX_CONNECTING, still need theirs
            self._open_for_waiting()

    def connected(self, conn: _Conn) -> None:
        if self._closed:
            conn.transport.abort()  # type: ignore[union-attr]
            return
        self.conns.add(conn)
        self._next(conn)

    def _next(self, conn: _Conn) -> None:
        """*conn* is free: it takes the oldest waiting request, or goes idle."""
        if self.waiting:
            conn.due = self.waiting.popleft()
            conn.transport.write(self.request)  # type: ignore[union-attr]
        else:
            conn.idle_at = self._time()
            conn.pooled = True
            self.idle.append(conn)

    def completed(self, conn: _Conn, due: float, klass: int, keep: bool) -> None:
        self.ended(due, klass)
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
            self.ended(due, CONNECTION)
        self.conns.discard(conn)
        if conn.pooled:
            conn.pooled = False
            self.idle.remove(conn)
        if self.waiting and not self._closed:
            self._open_for_waiting()

    def ended(self, due: float, klass: int) -> None:
        stats = self.stats
        stats.inflight -= 1
        stats.record(klass, due, self._time() - due)

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        limit = now - self.timeout
        for conn in [c for c in self.conns if c.due and c.due < limit]:
            conn.fail(TIMEOUT)
        while self.waiting and self.waiting[0] < limit:
            self.ended(self.waiting.popleft(), TIMEOUT)
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


class AiohttpEngine:
    """Sends each request with aiohttp's client over keep-alive connections."""

    name = "aiohttp"

    def __init__(self, plan: Plan, stats: WorkerStats) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.plan = plan
        self.stats = stats
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        aiohttp = self._aiohttp
        limit = self.plan.connections or self.plan.max_inflight
        connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300, keepalive_timeout=IDLE_CLOSE_S)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.plan.timeout_s),
            auto_decompress=False,
            raise_for_status=False,
        )
        # aiohttp silently re-sends an idempotent request once when a reused
        # keep-alive connection fails: exactly the failure a rollout gate must
        # see (a replica killed with requests in flight). aiohttp has no public
        # switch; its own test client turns it off the same way.
        if not hasattr(session, "_retry_connection"):
            await session.close()
            raise RuntimeError(
                f"aiohttp {aiohttp.__version__}: cannot turn off its silent retry of failed requests "
                "(ClientSession._retry_connection is gone); pin aiohttp<4 or report this to pytest-rollout"
            )
        session._retry_connection = False
        self.session = session

    def fire(self, due: float) -> None:
        task = asyncio.get_running_loop().create_task(self._send(due))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, due: float) -> None:
        assert self.session is not None
        aiohttp = self._aiohttp
        plan = self.plan
        try:
            async with self.session.request(
                plan.method, plan.url, headers=plan.headers, data=plan.body, allow_redirects=False
            ) as resp:
                await resp.read()
                klass = _classify(resp.status)
        except TimeoutError:
            klass = TIMEOUT
        except (aiohttp.ClientError, OSError):
            klass = CONNECTION
        stats = self.stats
        stats.inflight -= 1
        stats.record(klass, due, asyncio.get_running_loop().time() - due)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
