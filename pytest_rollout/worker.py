"""One load worker: a process that holds an open-loop arrival rate.

Run as ``python -m pytest_rollout.worker --port 0 --target http://HOST:PORT``
with the run's token in ``$PYTEST_ROLLOUT_WORKER_TOKEN`` (or ``--secrets DIR``
holding ``token``). It prints ``READY <port>`` on stdout once its control
server listens, then waits for a plan. It exits by itself when its standard
input closes (the controller went away), when the plan's deadline or request
cap is reached and it is told to stop, or on SIGTERM.

Who may command it and where it may aim: see :mod:`pytest_rollout.control`.
Every call but ``/metrics`` and ``/healthz`` must carry the token (401 without,
403 when wrong); a plan for any origin but ``--target``, or one carrying a
secret header, is refused (400).

Control API (JSON over HTTP, served on the worker's own event loop):

- ``POST /start``  the plan (see :class:`Plan`); load begins at ``start_at``.
- ``POST /phase``  ``{"name", "at"}``: requests due from Unix time ``at`` count for phase ``name``.
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
import dataclasses
import gc
import json
import math
import os
import signal
import sys
import time
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import control
from .engine import Engine, choose_engine
from .histogram import BOUNDS, Histogram
from .schedule import Segment, arrivals, rate_at

__all__ = ["CLASSES", "Credentials", "Plan", "WorkerStats", "inflight_cap", "main"]

#: Outcome classes of a request. ``ok`` is any status below 400.
CLASSES: tuple[str, ...] = ("ok", "http_4xx", "http_5xx", "timeout", "connection", "dropped")
ERROR_CLASSES: tuple[str, ...] = CLASSES[1:]
_OK, _4XX, _5XX, _TIMEOUT, _CONN, _DROPPED = range(len(CLASSES))

#: A request sent more than this many seconds after it was due is late: not "held".
LATE_S = 0.05


def inflight_cap(peak_rps: float) -> int:
    """Default cap on one worker's requests in flight: a quarter second of its peak rate.

    Enough to ride out a 250 ms stall of the target without dropping anything,
    bounded so a hung target cannot pile up sockets without end (1,024 to 32,768).
    """
    return int(min(32768, max(1024, math.ceil(peak_rps * 0.25))))


@dataclass(frozen=True)
class Plan:
    """What a worker is told to do."""

    url: str
    segments: tuple[Segment, ...]
    start_at: float  # Unix seconds
    deadline: float  # Unix seconds: no request is scheduled after this
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout_s: float = 5.0
    phase: float = 0.0
    max_requests: int = 10_000_000
    max_inflight: int = 1024  # requests in flight at most; more are counted as dropped
    connections: int = 0  # keep-alive connections at most; 0: as many as max_inflight (open loop)
    phases: tuple[tuple[str, float], ...] = ()  # (name, Unix start), in order
    engine: str = "auto"  # auto (fast where it can), fast or aiohttp

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        body = data.get("body")
        return cls(
            url=str(data["url"]),
            segments=tuple(Segment(s[0], float(s[1]), float(s[2])) for s in data["segments"]),
            start_at=float(data["start_at"]),
            deadline=float(data["deadline"]),
            method=str(data.get("method", "GET")),
            headers={str(k): str(v) for k, v in (data.get("headers") or {}).items()},
            body=body.encode("latin-1") if isinstance(body, str) else None,
            timeout_s=float(data.get("timeout_s", 5.0)),
            phase=float(data.get("phase", 0.0)),
            max_requests=int(data.get("max_requests", 10_000_000)),
            max_inflight=int(data.get("max_inflight", 1024)),
            connections=int(data.get("connections", 0)),
            phases=tuple((str(n), float(t)) for n, t in data.get("phases", ())),
            engine=str(data.get("engine", "auto")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "segments": [[s.duration, s.start_rps, s.end_rps] for s in self.segments],
            "start_at": self.start_at,
            "deadline": self.deadline,
            "method": self.method,
            "headers": dict(self.headers),
            "body": self.body.decode("latin-1") if self.body is not None else None,
            "timeout_s": self.timeout_s,
            "phase": self.phase,
            "max_requests": self.max_requests,
            "max_inflight": self.max_inflight,
            "connections": self.connections,
            "phases": [[n, t] for n, t in self.phases],
            "engine": self.engine,
        }


class PhaseStats:
    """Counts for the requests *due* in one phase.

    Every request is sent on time or not at all: one the worker could not send
    within :data:`LATE_S` of when it was due (it fell behind: no CPU, a pause)
    is ``dropped`` and counted ``late`` too, and so is one that found the
    in-flight cap full. Sending the overdue ones in a burst would load the
    target with a spike the plan never asked for, and blame the release for
    the latency it causes. ``hist`` holds the latency of the requests sent.
    """

    __slots__ = ("by_class", "hist", "late")

    def __init__(self) -> None:
        self.by_class = [0] * len(CLASSES)
        self.hist = Histogram()
        self.late = 0

    def totals(self) -> dict[str, Any]:
        return {
            "requests": sum(self.by_class),
            "by_class": dict(zip(CLASSES, self.by_class, strict=False)),
            "errors": sum(self.by_class[1:]),
            "late": self.late,
            "histogram": self.hist.to_list(),
            "latency_sum_s": self.hist.sum,
        }


class WorkerStats:
    """Counters a worker keeps in-process: no locks, no label look-ups.

    Every request is attributed to the phase in which it was *due* (not the one
    in which it ended), so per-phase totals are exact whatever the scrape
    timing. Phase starts arrive with the plan or later through ``POST /phase``;
    requests due before the first phase count under ``"-"``.
    """

    __slots__ = (
        "phase_times",
        "phase_stats",
        "phase_names",
        "scheduled",
        "late",
        "max_lag",
        "inflight",
        "max_inflight_seen",
        "total",
    )

    def __init__(self) -> None:
        self.phase_times: list[float] = [-math.inf]  # loop times, ascending
        self.phase_stats: list[PhaseStats] = [PhaseStats()]
        self.phase_names: list[str] = ["-"]
        self.scheduled = 0
        self.late = 0
        self.max_lag = 0.0
        self.inflight = 0
        self.max_inflight_seen = 0
        self.total = 0

    def add_phase(self, name: str, loop_start: float) -> None:
        """Requests due at or after *loop_start* (loop time) count for phase *name*."""
        if name in self.phase_names:
            raise ValueError(f"phase {name!r} already started")
        if loop_start < self.phase_times[-1]:
            raise ValueError(f"phase {name!r} starts before phase {self.phase_names[-1]!r}")
        self.phase_times.append(loop_start)
        self.phase_stats.append(PhaseStats())
        self.phase_names.append(name)

    def phase_of(self, due: float) -> PhaseStats:
        return self.phase_stats[bisect_right(self.phase_times, due) - 1]

    def record(self, klass: int, due: float, latency: float | None) -> None:
        stats = self.phase_of(due)
        stats.by_class[klass] += 1
        if latency is not None:
            stats.hist.observe(latency)
        self.total += 1

    def fell_behind(self, due: float) -> None:
        """The request due at *due* could not be sent on time: it is not sent (late, and dropped)."""
        self.late += 1
        self.phase_of(due).late += 1
        self.record(_DROPPED, due, None)

    def totals(self) -> dict[str, Any]:
        return {
            "requests": self.total,
            "scheduled": self.scheduled,
            "late": self.late,
            "max_lag_s": self.max_lag,
            "inflight": self.inflight,
            "max_inflight_seen": self.max_inflight_seen,
            "phases": {name: st.totals() for name, st in zip(self.phase_names, self.phase_stats, strict=False)},
        }


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
        loop_deadline = plan.deadline - (plan.start_at - loop_start)
        due_times: Iterator[float] = arrivals(plan.segments, plan.phase)
        max_inflight = plan.max_inflight
        sleep = asyncio.sleep
        try:
            count = 0
            for offset in due_times:
                due = loop_start + offset
                if due > loop_deadline or count >= plan.max_requests or self._stopped:
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
                count += 1
                stats.scheduled += 1
                if lag > LATE_S:
                    stats.fell_behind(due)
                    continue
                if stats.inflight >= max_inflight:
                    stats.record(_DROPPED, due, None)
                    continue
                stats.inflight += 1
                if stats.inflight > stats.max_inflight_seen:
                    stats.max_inflight_seen = stats.inflight
                fire(due)
        finally:
            self.state = "stopping"
            drain_until = loop.time() + plan.timeout_s + 1.0
            while stats.inflight > 0 and loop.time() < drain_until:
                await sleep(0.01)
            await engine.close()
            self.state = "stopped"


class _Collector:
    """prometheus-client collector that reads :class:`WorkerStats` at scrape time."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        stats = self.worker.stats
        requests = CounterMetricFamily(
            "rollout_requests",
            "Requests completed, by the phase in which they were due and by outcome class.",
            labels=["phase", "class"],
        )
        late = CounterMetricFamily(
            "rollout_late",
            f"Requests not sent because the worker was more than {LATE_S * 1000:g} ms behind (also counted dropped).",
            labels=["phase"],
        )
        hist = HistogramMetricFamily(
            "rollout_request_duration_seconds",
            "Latency from each request's scheduled start to its end (coordinated omission corrected).",
            labels=["phase"],
        )
        for name, phase in zip(stats.phase_names, stats.phase_stats, strict=False):
            for klass, value in zip(CLASSES, phase.by_class, strict=False):
                requests.add_metric([name, klass], value)
            late.add_metric([name], phase.late)
            cumulative = phase.hist.cumulative()
            buckets = [(_le(bound), float(c)) for bound, c in zip(BOUNDS, cumulative, strict=False)]
            buckets.append(("+Inf", float(cumulative[-1])))
            hist.add_metric([name], buckets, phase.hist.sum)
        yield requests
        yield late
        yield hist
        yield CounterMetricFamily("rollout_scheduled", "Requests that fell due.", value=stats.scheduled)
        yield GaugeMetricFamily("rollout_inflight", "Requests in flight now.", value=stats.inflight)
        yield GaugeMetricFamily("rollout_max_lag_seconds", "Largest send lag seen so far.", value=stats.max_lag)
        yield GaugeMetricFamily(
            "rollout_target_rps", "The rate this worker is asked to hold now.", value=self.worker.target_rps()
        )


def _le(bound: float) -> str:
    return repr(bound) if not math.isinf(bound) else "+Inf"


@dataclass(frozen=True)
class Credentials:
    """What a worker is given at start and never over its control API: the token, its target, the secret headers."""

    token: str
    target: str  # an origin: see control.origin
    secret_headers: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print the token or header values
        return f"Credentials(target={self.target!r}, secret_headers={sorted(self.secret_headers)!r})"

    def admit(self, plan: Plan) -> Plan:
        """*plan* with the secret headers added, or ValueError when it aims elsewhere or carries a secret."""
        aimed = control.origin(plan.url)
        if aimed != self.target:
            raise ValueError(
                f"the plan aims at {aimed}, but this worker may load only {self.target} "
                "(fixed when it was started: --target)"
            )
        secret = control.ALWAYS_SECRET | {name.lower() for name in self.secret_headers}
        carried = sorted(name for name in plan.headers if name.lower() in secret)
        if carried:
            raise ValueError(
                f"the plan carries secret header(s) {', '.join(carried)}: a worker takes secret headers only when "
                "it starts (environment or --secrets), never in a plan"
            )
        return dataclasses.replace(plan, headers={**plan.headers, **self.secret_headers})


def _guard(credentials: Credentials) -> Any:
    """aiohttp middleware: every path but the open ones needs the run's token."""
    from aiohttp import web

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path not in control.OPEN_PATHS:
            given = request.headers.get(control.TOKEN_HEADER)
            if given is None:
                return web.json_response(
                    {"error": f"no {control.TOKEN_HEADER} header: this worker obeys only the run that started it"},
                    status=401,
                    headers={"WWW-Authenticate": control.TOKEN_HEADER},
                )
            if not control.token_matches(given, credentials.token):
                return web.json_response({"error": f"wrong {control.TOKEN_HEADER}"}, status=403)
        return await handler(request)

    return guard


async def _serve(
    host: str, port: int, credentials: Credentials, serve: bool = False, metrics_port: int | None = None
) -> None:
    from aiohttp import web
    from prometheus_client import CollectorRegistry, generate_latest

    worker = Worker()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(worker))  # type: ignore[arg-type]
    done = asyncio.Event()

    async def start(request: web.Request) -> web.Response:
        try:
            plan = credentials.admit(Plan.from_json(await request.json()))
            await worker.start(plan)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return web.json_response({"state": worker.state, "engine": worker.engine.name if worker.engine else None})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def phase(request: web.Request) -> web.Response:
        try:
            data = await request.json()
            worker.start_phase(str(data["name"]), float(data["at"]))
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return web.json_response({"phases": worker.stats.phase_names})

    async def stop(request: web.Request) -> web.Response:
        await worker.stop()
        return web.json_response({"state": worker.state})

    async def totals(request: web.Request) -> web.Response:
        data = worker.stats.totals()
        data["state"] = worker.state
        data["engine"] = worker.engine.name if worker.engine else None
        return web.json_response(data)

    async def status(request: web.Request) -> web.Response:
        stats = worker.stats
        return web.json_response(
            {
                "state": worker.state,
                "engine": worker.engine.name if worker.engine else None,
                "inflight": stats.inflight,
                "scheduled": stats.scheduled,
                "requests": stats.total,
                "max_lag_s": stats.max_lag,
                "pid": os.getpid(),
            }
        )

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")

    async def quit_(request: web.Request) -> web.Response:
        done.set()
        return web.json_response({"state": "exiting"})

    app = web.Application(middlewares=[_guard(credentials)])
    app.router.add_post("/start", start)
    app.router.add_post("/stop", stop)
    app.router.add_post("/phase", phase)
    app.router.add_post("/quit", quit_)
    app.router.add_get("/totals", totals)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runners = [web.AppRunner(app, access_log=None, handle_signals=False)]
    if metrics_port is not None:  # Prometheus and probes on a port of their own (a NetworkPolicy tells them apart)
        open_app = web.Application()
        open_app.router.add_get("/metrics", metrics)
        open_app.router.add_get("/healthz", healthz)
        runners.append(web.AppRunner(open_app, access_log=None, handle_signals=False))
    sites = []
    for runner, where in zip(runners, (port, metrics_port), strict=False):
        await runner.setup()
        site = web.TCPSite(runner, host, where, reuse_address=True)
        await site.start()
        sites.append(site)
    bound = sites[0]._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"READY {bound}", flush=True)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    if not serve:
        _watch_stdin(loop, done)
    await done.wait()
    await worker.stop()
    if worker._task is not None:
        try:
            await asyncio.wait_for(worker._task, timeout=(worker.plan.timeout_s if worker.plan else 0) + 2.0)
        except TimeoutError:
            pass
    for runner in runners:
        await runner.cleanup()


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
    parser = argparse.ArgumentParser(prog="python -m pytest_rollout.worker", description=__doc__.split("\n")[0])
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
        help=f"a directory holding the control token ({control.TOKEN_FILE}) and optionally the secret headers "
        f"({control.HEADERS_FILE}, a JSON object): the Secret volume on Kubernetes. Without it, the token is read "
        f"from ${control.TOKEN_ENV} and the headers from ${control.HEADERS_ENV}",
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
        credentials = _credentials(args.target, args.secrets)
    except ValueError as exc:
        parser.error(str(exc))
    _raise_fd_limit()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(_serve(args.host, args.port, credentials, args.serve, args.metrics_port))
    else:
        uvloop.run(_serve(args.host, args.port, credentials, args.serve, args.metrics_port))
    return 0


def _credentials(target: str | None, secrets_dir: str | None) -> Credentials:
    """The token, target and secret headers given at start; ValueError naming what is missing or wrong."""
    if not target:
        raise ValueError("--target URL is required: the one origin this worker may load")
    origin = control.origin(target)
    if secrets_dir is not None:
        try:
            with open(os.path.join(secrets_dir, control.TOKEN_FILE), encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise ValueError(f"--secrets {secrets_dir}: cannot read the token: {exc.strerror}") from None
        try:
            with open(os.path.join(secrets_dir, control.HEADERS_FILE), encoding="utf-8") as fh:
                raw_headers = fh.read()
        except FileNotFoundError:
            raw_headers = "{}"
        except OSError as exc:
            raise ValueError(f"--secrets {secrets_dir}: cannot read {control.HEADERS_FILE}: {exc.strerror}") from None
    else:
        token = os.environ.pop(control.TOKEN_ENV, "").strip()  # popped: nothing this process starts inherits it
        raw_headers = os.environ.pop(control.HEADERS_ENV, "") or "{}"
    if not token:
        raise ValueError(
            f"no control token: set ${control.TOKEN_ENV} or pass --secrets DIR (a worker never runs without one)"
        )
    try:
        headers = json.loads(raw_headers)
    except ValueError:
        headers = None
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValueError("the secret headers must be a JSON object of strings")  # never echo the value
    return Credentials(token=token, target=origin, secret_headers=headers)


if __name__ == "__main__":
    sys.exit(main())
