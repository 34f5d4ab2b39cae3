"""The ``aiohttp`` engine: aiohttp's client, where a plan asks for it (``engine="aiohttp"``) or httptools is
missing. It speaks TLS with the same settings as the fast engine (:mod:`pytest_rollout.load.tls`). It counts and classes requests as :mod:`pytest_rollout.load.engine` describes, and resends as it
does, on a connection of its own."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from pytest_rollout.load.protocol import CONNECTION, IDEMPOTENT, IDLE_CLOSE_S, RESEND_WINDOW_S, TIMEOUT, classify

if TYPE_CHECKING:
    from pytest_rollout.load.counters import WorkerStats
    from pytest_rollout.load.protocol import Plan

__all__ = ["AiohttpEngine"]

Parts = tuple[str, str, dict[str, str], bytes | None]  # method, URL, headers, body of one request


class AiohttpEngine:
    """Sends each request with aiohttp's client over keep-alive connections."""

    name = "aiohttp"

    def __init__(self, plan: Plan, stats: WorkerStats) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.plan = plan
        self.stats = stats
        self.session: aiohttp.ClientSession | None = None
        self.fresh: aiohttp.ClientSession | None = None  # a new connection for every request: second tries
        self.tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        from pytest_rollout.load.render import CompiledMix

        self.mix = CompiledMix(plan.routes, plan.url, plan.seed, plan.worker)
        # per route: whether its request may be sent a second time (only an idempotent method)
        self.resend_reused = [plan.resend_reused and r.method.upper() in IDEMPOTENT for r in plan.routes]

    async def open(self) -> None:
        aiohttp = self._aiohttp
        limit = self.plan.connections or self.plan.max_inflight
        tls: Any = True  # aiohttp's default; for https:// the context both engines build from the plan
        if self.plan.url.lower().startswith("https:"):
            from pytest_rollout.load.tls import client_context

            tls = client_context(self.plan)
        # which requests went out on a reused connection: the only ones a second try may follow
        reuse = aiohttp.TraceConfig()
        reuse.on_connection_reuseconn.append(_note_reused)
        self.session = await self._session(
            aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300, keepalive_timeout=IDLE_CLOSE_S, ssl=tls), reuse
        )
        if any(self.resend_reused):
            self.fresh = await self._session(aiohttp.TCPConnector(limit=limit, force_close=True, ssl=tls), None)

    async def _session(self, connector: Any, trace: Any) -> Any:
        aiohttp = self._aiohttp
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.plan.timeout_s),
            auto_decompress=False,
            raise_for_status=False,
            trace_configs=[trace] if trace is not None else None,
        )
        # aiohttp silently re-sends an idempotent request once when a keep-alive
        # connection fails, fresh or reused, uncounted: the engine does that
        # itself, counted, and only where clients do. aiohttp has no public
        # switch; its own test client turns it off the same way.
        if not hasattr(session, "_retry_connection"):
            await session.close()
            raise RuntimeError(
                f"aiohttp {aiohttp.__version__}: cannot turn off its silent retry of failed requests "
                "(ClientSession._retry_connection is gone); pin aiohttp<4 or report this to pytest-rollout"
            )
        session._retry_connection = False
        return session

    def fire(self, due: float, route: int = 0, number: int = 0, nth: int | None = None) -> None:
        task = asyncio.get_running_loop().create_task(self._send(due, route, self.mix.parts(route, number, nth)))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, due: float, route: int, parts: Parts) -> None:
        klass = await self._try(self.session, due, route, parts)
        if klass is None:  # its reused connection closed before the answer: once more, on a new connection
            self.stats.resend(due, route)
            again = await self._try(self.fresh, due, route, parts)
            klass = CONNECTION if again is None else again
        stats = self.stats
        stats.inflight -= 1
        stats.record(klass, due, asyncio.get_running_loop().time() - due, route)

    async def _try(self, session: Any, due: float, route: int, parts: Parts) -> int | None:
        """The outcome class of one try on *session*; None when it may be sent once more."""
        assert session is not None
        aiohttp = self._aiohttp
        plan = self.plan
        method, url, headers, body = parts
        reused = SimpleNamespace(reused=False)
        left = due + plan.timeout_s - asyncio.get_running_loop().time()
        if left <= 0:
            return TIMEOUT
        answered = False
        started = asyncio.get_running_loop().time()
        try:
            async with session.request(
                method, url, headers=headers, data=body, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=left), trace_request_ctx=reused,
            ) as resp:  # fmt: skip
                answered = True
                await resp.read()
                return classify(resp.status)
        except TimeoutError:
            return TIMEOUT
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            soon = asyncio.get_running_loop().time() - started <= RESEND_WINDOW_S
            if reused.reused and not answered and soon and session is self.session and self.resend_reused[route]:
                return CONNECTION if self._closed else None
            return CONNECTION
        except (aiohttp.ClientError, OSError, RuntimeError):  # RuntimeError: the session was closed under it
            return CONNECTION

    async def close(self) -> None:
        self._closed = True
        for session in (self.session, self.fresh):
            if session is not None:
                await session.close()


async def _note_reused(session: Any, context: Any, params: Any) -> None:
    context.trace_request_ctx.reused = True
