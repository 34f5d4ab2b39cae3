"""One load worker: a process that holds an open-loop arrival rate.

Run as ``python -m pytest_rollout.load.worker --port 0 --target http://HOST:PORT``
with the run's token in ``$PYTEST_ROLLOUT_WORKER_TOKEN`` (or ``--secrets DIR``
holding ``token``). It prints ``READY <port>`` on stdout once its control
server listens, then waits for a plan. It exits by itself when its standard
input closes (the controller went away), when the plan's deadline or request
cap is reached and it is told to stop, or on SIGTERM.

Who may command it and where it may aim: see :mod:`pytest_rollout.load.protocol`.
Every call but ``/metrics`` and ``/healthz`` must carry the token (401 without,
403 when wrong); a plan for any origin but ``--target``, or one carrying a
secret header, is refused (400).

Control API (JSON over HTTP, served on the worker's own event loop by :class:`ControlServer`, one method
per verb; each answer is a dataclass of :mod:`pytest_rollout.load.replies`):

- ``POST /start``  the plan (see :class:`Plan`); load begins at ``start_at``.
- ``POST /phase``  ``{"name", "at"}`` (see :class:`PhaseEdge`): requests due from Unix time ``at`` count for
  phase ``name``.
- ``POST /stop``   stop sending; requests in flight finish or time out.
- ``GET /totals``  the worker's own counts (the cross-check for Prometheus).
- ``GET /metrics`` Prometheus exposition (prometheus-client).
- ``GET /status``  state, engine, in-flight, lag.
- ``GET /healthz`` ``ok`` (no token: for probes).

Requests are scheduled, not paced by responses: request *n* is due at its
scheduled time whatever happened to request *n-1*, and its latency is measured
from that scheduled time (coordinated omission corrected). A request that
cannot even be started because too many are in flight is counted as
``dropped``, an error, never silently skipped. Nothing is retried.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import time
from collections.abc import Iterator

from aiohttp import web

from pytest_rollout.load import protocol
from pytest_rollout.load.counters import WorkerStats
from pytest_rollout.load.credentials import Credentials, guard, read_credentials
from pytest_rollout.load.engine import Engine, choose_engine
from pytest_rollout.load.exposition import CONTENT_TYPE, Exposition
from pytest_rollout.load.protocol import DROPPED, LATE_S, PhaseEdge, Plan
from pytest_rollout.load.render import route_order
from pytest_rollout.load.replies import PhaseHeard, Refusal, Started, StateReply, WorkerStatus, WorkerTotals
from pytest_rollout.load.schedule import arrivals, rate_at

__all__ = ["ControlServer", "Worker", "main"]


class Worker:
    """Holds the plan, the engine and the generator task."""

    def __init__(self) -> None:
        self.stats = WorkerStats()
        self.plan: Plan | None = None
        self.engine: Engine | None = None
        self.state = "idle"  # idle -> running -> stopping -> stopped
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.wall_offset = 0.0  # Unix time minus loop time, set at start
        self._loop_start = 0.0

    async def start(self, plan: Plan) -> None:
        if self.state != "idle":
            raise RuntimeError(f"worker already {self.state}")
        loop = asyncio.get_running_loop()
        wall_offset = time.time() - loop.time()
        self.plan = plan
        self.wall_offset = wall_offset
        self.stats.set_routes(plan.route_names)
        for name, at in plan.phases:
            self.stats.add_phase(name, at - wall_offset)
        self.engine = choose_engine(plan, self.stats, plan.engine)
        await self.engine.open()
        gc.freeze()  # what exists now lives for the whole run: keep it out of every collection
        self.state = "running"
        self._loop_start = plan.start_at - wall_offset
        self._task = loop.create_task(self._generate(plan, self._loop_start))

    async def stop(self) -> None:
        self._stopped = True

    async def finish(self) -> None:
        """Stop, and wait (bounded by the plan's timeout) until the requests in flight have ended."""
        await self.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=(self.plan.timeout_s if self.plan else 0) + 2.0)
            except TimeoutError:
                pass

    @property
    def engine_name(self) -> str | None:
        return self.engine.name if self.engine else None

    def status(self) -> WorkerStatus:
        """What ``GET /status`` answers; ``time`` is this worker's clock, for the controller's skew estimate."""
        stats = self.stats
        return WorkerStatus(
            state=self.state,
            engine=self.engine_name,
            inflight=stats.inflight,
            scheduled=stats.scheduled,
            requests=stats.total,
            max_lag_s=stats.max_lag,
            pid=os.getpid(),
            time=time.time(),
        )

    def target_rps(self) -> float:
        """The rate this worker is asked to hold now (read at scrape time, off the hot path)."""
        if self.state != "running" or self.plan is None:
            return 0.0
        return rate_at(self.plan.segments, asyncio.get_running_loop().time() - self._loop_start)

    def start_phase(self, name: str, at: float) -> None:
        """Requests due from Unix time *at* on count for phase *name*."""
        self.stats.add_phase(name, at - self.wall_offset)

    async def _generate(self, plan: Plan, loop_start: float) -> None:
        loop = asyncio.get_running_loop()
        engine = self.engine
        assert engine is not None
        stats = self.stats
        fire = engine.fire
        # the schedule is the half-open [start_at, deadline): as offsets, so that a request due exactly at the
        # deadline is never sent (a 1 s plan at 100 rps sends 100, not 101), whatever the float error of Unix times
        last_offset = round(plan.deadline - plan.start_at, 6)
        due_times: Iterator[float] = arrivals(plan.segments, plan.phase)
        max_inflight = plan.max_inflight
        sleep = asyncio.sleep
        # the route of each scheduled request, dropped ones included: request k's route and data depend on k alone
        order = route_order([route.weight for route in plan.routes])
        seen = [0] * max(1, len(plan.routes))  # each route's scheduled requests so far: its data go by this
        try:
            count = 0
            for offset in due_times:
                due = loop_start + offset
                if offset >= last_offset or count >= plan.max_requests or self._stopped:
                    break
                now = loop.time()
                if due > now:
                    await sleep(due - now)
                    if self._stopped:
                        break
                    now = loop.time()
                lag = now - due
                if lag > stats.max_lag:
                    stats.max_lag = lag
                number = count
                route = next(order)
                nth = seen[route]
                seen[route] = nth + 1
                count += 1
                stats.scheduled += 1
                if lag > LATE_S:
                    stats.fell_behind(due, route)
                    continue
                if stats.inflight >= max_inflight:
                    stats.record(DROPPED, due, None, route)
                    continue
                stats.inflight += 1
                if stats.inflight > stats.max_inflight_seen:
                    stats.max_inflight_seen = stats.inflight
                fire(due, route, number, nth)
        finally:
            self.state = "stopping"
            drain_until = loop.time() + plan.timeout_s + 1.0
            while stats.inflight > 0 and loop.time() < drain_until:
                await sleep(0.01)
            await engine.close()
            self.state = "stopped"


class ControlServer:
    """The worker's control API: one method per verb, each answering with a typed reply (:mod:`.replies`).

    :meth:`serve` listens, prints ``READY <port>``, and runs until told to quit (``POST /quit``, SIGTERM,
    SIGINT, or standard input closing), then lets the load end and closes.
    """

    def __init__(self, worker: Worker, credentials: Credentials) -> None:
        self.worker = worker
        self.credentials = credentials
        self.exposition = Exposition()
        self.done = asyncio.Event()

    # the verbs

    async def start(self, request: web.Request) -> web.Response:
        try:
            plan = self.credentials.admit(Plan.from_json(await request.json()))
            await self.worker.start(plan)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            return _reply(Refusal.of(exc), status=400)
        return _reply(Started(state=self.worker.state, engine=self.worker.engine_name))

    async def phase(self, request: web.Request) -> web.Response:
        try:
            edge = PhaseEdge.from_json(await request.json())
            self.worker.start_phase(edge.name, edge.at)
        except (KeyError, TypeError, ValueError) as exc:
            return _reply(Refusal.of(exc), status=400)
        # how long after the edge (by this worker's clock) the word came: requests due in that gap and already
        # answered counted for the phase before
        late_s = max(0.0, time.time() - edge.at)
        return _reply(PhaseHeard(phases=tuple(self.worker.stats.phase_names), late_s=late_s))

    async def stop(self, request: web.Request) -> web.Response:
        await self.worker.stop()
        return _reply(StateReply(self.worker.state))

    async def quit(self, request: web.Request) -> web.Response:
        self.done.set()
        return _reply(StateReply("exiting"))

    async def totals(self, request: web.Request) -> web.Response:
        return _reply(self.worker.stats.totals(self.worker.state, self.worker.engine_name))

    async def status(self, request: web.Request) -> web.Response:
        return _reply(self.worker.status())

    async def metrics(self, request: web.Request) -> web.Response:
        body = self.exposition.render(self.worker.stats, self.worker.target_rps())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    # serving

    def control_app(self) -> web.Application:
        """Every verb, behind the token guard."""
        app = web.Application(middlewares=[guard(self.credentials)])
        app.router.add_post(protocol.START, self.start)
        app.router.add_post(protocol.STOP, self.stop)
        app.router.add_post(protocol.PHASE, self.phase)
        app.router.add_post(protocol.QUIT, self.quit)
        app.router.add_get(protocol.TOTALS, self.totals)
        app.router.add_get(protocol.STATUS, self.status)
        app.router.add_get(protocol.METRICS, self.metrics)
        app.router.add_get(protocol.HEALTHZ, self.healthz)
        return app

    def open_app(self) -> web.Application:
        """Prometheus and probes on a port of their own (a NetworkPolicy tells them apart)."""
        app = web.Application()
        app.router.add_get(protocol.METRICS, self.metrics)
        app.router.add_get(protocol.HEALTHZ, self.healthz)
        return app

    async def serve(self, host: str, port: int, metrics_port: int | None = None, watch_stdin: bool = True) -> None:
        apps = [(self.control_app(), port)]
        if metrics_port is not None:
            apps.append((self.open_app(), metrics_port))
        runners: list[web.AppRunner] = []
        for app, where in apps:
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, host, where, reuse_address=True).start()
            runners.append(runner)
        print(f"READY {runners[0].addresses[0][1]}", flush=True)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.done.set)
        if watch_stdin:
            _watch_stdin(loop, self.done)
        await self.done.wait()
        await self.worker.finish()
        for runner in runners:
            await runner.cleanup()


def _reply(
    reply: Started | PhaseHeard | StateReply | WorkerStatus | WorkerTotals | Refusal, status: int = 200
) -> web.Response:
    return web.json_response(reply.to_json(), status=status)


def _watch_stdin(loop: asyncio.AbstractEventLoop, done: asyncio.Event) -> None:
    """Set *done* when standard input reaches EOF: the controller is gone."""
    if sys.stdin is None or sys.stdin.isatty():
        return
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            done.set()

    try:
        loop.add_reader(fd, readable)
    except (OSError, ValueError, NotImplementedError):
        pass


def _raise_fd_limit() -> None:
    """Each request in flight holds a connection: allow as many descriptors as the hard limit."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_rollout.load.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address of the control server (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port of the control server (0: any free port)")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="run until SIGTERM or POST /quit, ignoring standard input (in a container; "
        "by default the worker exits when its standard input closes, i.e. when its controller is gone)",
    )
    parser.add_argument(
        "--target",
        metavar="URL",
        help="the only origin (scheme://host:port) this worker may load; plans aimed elsewhere are refused",
    )
    parser.add_argument(
        "--secrets",
        metavar="DIR",
        help=f"a directory holding the control token ({protocol.TOKEN_FILE}) and optionally the secret headers "
        f"({protocol.HEADERS_FILE}, a JSON object): the Secret volume on Kubernetes. Without it, the token is read "
        f"from ${protocol.TOKEN_ENV} and the headers from ${protocol.HEADERS_ENV}",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="also serve /metrics and /healthz (no token) on this port, so a NetworkPolicy can admit Prometheus "
        "and the control port separately",
    )
    args = parser.parse_args(argv)
    try:
        credentials = read_credentials(args.target, args.secrets)
    except ValueError as exc:
        parser.error(str(exc))
    _raise_fd_limit()

    async def serve() -> None:
        server = ControlServer(Worker(), credentials)
        await server.serve(args.host, args.port, args.metrics_port, watch_stdin=not args.serve)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve())
    else:
        uvloop.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
