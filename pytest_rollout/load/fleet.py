"""The fleet: many worker processes holding one arrival rate together.

The controller starts the workers, gives each an equal share of the rate
with its own arrival phase (so their requests interleave), watches that they
stay alive, and at the end reads their own totals as the cross-check for
Prometheus. There is no central bottleneck: each worker schedules and sends
its own requests; the controller talks to a worker a few times per run.
"""

from __future__ import annotations

import http.client
import json
import math
import select
import socket
import sys
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pytest_rollout.errors import FleetError
from pytest_rollout.load import protocol
from pytest_rollout.load.protocol import Aim, PhaseEdge, Plan
from pytest_rollout.load.replies import PhaseHeard, PhaseTotals, Started, WorkerStatus, WorkerTotals
from pytest_rollout.procs import ManagedProcess, ProcessSet

__all__ = ["ControlledFleet", "Fleet", "FleetTotals", "LocalFleet", "workers_for"]

#: At most this many calls to workers at once: a fleet-wide call takes about as long as its slowest worker,
#: not the sum, while a fleet of hundreds does not open hundreds of connections to one API server at once.
PARALLEL_CALLS = 32


def workers_for(rps: float, per_worker_rps: float) -> int:
    """How many workers hold *rps* when one holds *per_worker_rps*."""
    if per_worker_rps <= 0:
        raise ValueError("per_worker_rps must be > 0")
    return max(1, math.ceil(rps / per_worker_rps - 1e-9))


@dataclass(frozen=True)
class FleetTotals:
    """The workers' own counts (``GET /totals`` of each), merged: the cross-check for Prometheus."""

    workers: list[WorkerTotals]

    def merged(self, name: str) -> PhaseTotals | None:
        """Phase *name* over all workers, counts and latency histograms added; None if a worker lacks it.

        Raises ValueError, naming the lengths, if the workers' histograms differ in length (workers of another
        release of pytest-rollout): use :meth:`phase` where only the counts are needed.
        """
        merged = PhaseTotals()
        for totals in self.workers:
            phase = totals.phases.get(name)
            if phase is None:
                return None
            merged += phase
        return merged

    def phase(self, name: str) -> tuple[int, int] | None:
        """``(requests, errors)`` due in phase *name* over all workers; None if a worker lacks it.

        The counts alone, added directly: no histogram is merged, so workers whose histograms differ in length
        still give their cross-check.
        """
        requests = errors = 0
        for totals in self.workers:
            phase = totals.phases.get(name)
            if phase is None:
                return None
            requests += phase.requests
            errors += phase.errors
        return requests, errors

    def routes(self, name: str) -> dict[str, PhaseTotals] | None:
        """Phase *name* per route over all workers, ``{route: totals}`` in the mix's order; None if a worker
        lacks the phase. Raises ValueError as :meth:`merged` does."""
        merged: dict[str, PhaseTotals] = {}
        for totals in self.workers:
            per = totals.routes.get(name)
            if per is None:
                return None
            for route, phase in per.items():
                merged[route] = merged.get(route, PhaseTotals()) + phase
        return merged

    @property
    def requests(self) -> int:
        return sum(t.requests for t in self.workers)

    @property
    def max_lag_s(self) -> float:
        """The largest send lag any worker saw."""
        return max((t.max_lag_s for t in self.workers), default=0.0)


@runtime_checkable
class Fleet(Protocol):
    """What a run needs from its load workers, wherever they run."""

    size: int
    start_lead_s: float  # how far ahead of the first request the plan is sent
    discovery_s: float  # how long Prometheus may take to find every worker
    edges: dict[str, float]  # phase -> how late (s) the last worker heard of its start; see announce
    placement: dict[str, str]  # worker -> the node (or host) it runs on, known once started

    @property
    def edge_lead_s(self) -> float:
        """How far ahead a phase edge is announced, so that every worker hears of it in time."""

    def discovery_hint(self, sd_dir: Path) -> str:
        """How a Prometheus must find these workers (said when it does not)."""

    def start(self) -> None: ...

    def scrape_targets(self) -> list[dict[str, Any]]: ...

    def begin(self, plan: Plan) -> list[str]: ...

    def announce(self, phase: str, at: float) -> None: ...

    def clocks(self) -> list[float]: ...

    def dead(self) -> list[str]: ...

    def stop_load(self) -> None: ...

    def drain(self, settle_s: float) -> None: ...

    def totals(self, settle_s: float = 10.0) -> FleetTotals: ...

    def shutdown(self) -> None: ...


class ControlledFleet:
    """The controller's side of the worker protocol, over any transport.

    Subclasses say how to reach a worker (:meth:`_call`, sending :attr:`token`
    in :data:`~pytest_rollout.load.protocol.TOKEN_HEADER`), which workers there are
    (:meth:`_handles`) and which still live (:meth:`_alive`). Every worker is
    created with :attr:`aim`: the one target it may load, and the secret headers.
    """

    size: int
    aim: Aim
    token: str
    edges: dict[str, float]
    placement: dict[str, str]
    start_lead_s = 0.5
    discovery_s = 20.0

    @property
    def edge_lead_s(self) -> float:
        """0.25 s, and 10 ms more for each worker: the word goes to every worker at once, 32 at a time."""
        return 0.25 + 0.01 * self.size

    def discovery_hint(self, sd_dir: Path) -> str:
        return (
            f"It must discover the file_sd target files in {sd_dir} (file_sd_configs; "
            "choose that directory with --rollout-sd-dir)."
        )

    def _handles(self) -> list[Any]:
        raise NotImplementedError

    def _alive(self, handle: Any) -> bool:
        raise NotImplementedError

    def _call(self, handle: Any, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        raise NotImplementedError

    def _death(self, handle: Any) -> FleetError:
        return FleetError(f"load worker {handle} died")

    def begin(self, plan: Plan) -> list[str]:
        """Give every worker its share of the whole *plan* (:meth:`Plan.for_worker`); returns the engine each runs."""
        try:
            aimed = protocol.origin(plan.url)
        except ValueError as exc:
            raise FleetError(f"the plan's URL: {exc}") from None
        if aimed != self.aim.target:
            raise FleetError(
                f"the plan aims at {aimed}, but this fleet's workers were created to load {self.aim.target}"
            )
        secret = set()
        for route in plan.routes:
            secret |= set(protocol.split_headers(route.headers, self.aim.secret_names())[1])
        if secret:
            raise FleetError(
                f"the plan carries secret header(s) {', '.join(sorted(secret))}: give them to the fleet when it is "
                "made (Aim.secret_headers, Aim.route_headers), never in a plan"
            )
        handles = self._handles()
        # each worker's share of the rate, its arrival phase, and its place (${seq} and the per-request data)
        try:
            plans = [plan.for_worker(i, self.size) for i in range(len(handles))]
        except ValueError as exc:  # a plan that is already one worker's share
            raise FleetError(f"the fleet cannot start this plan: {exc}") from None

        def start(i: int) -> str:
            return str(Started.from_json(self._call(handles[i], "POST", protocol.START, plans[i].to_json())).engine)

        return self._each(start, range(len(handles)))

    def announce(self, phase: str, at: float) -> None:
        """Tell every worker, all at once, that requests due from Unix time *at* on belong to *phase*.

        Each answer says how long after *at*, by the worker's own clock, the word arrived (``late_s``, 0 when
        it came ahead): requests due in that gap that had already completed counted for the phase before.
        The largest gap of each phase is kept in :attr:`edges` for the report.
        """

        edge = PhaseEdge(phase, at)

        def tell(handle: Any) -> float:
            if not self._alive(handle):
                return 0.0
            answer = self._call(handle, "POST", protocol.PHASE, edge.to_json(), timeout=5.0)
            return PhaseHeard.from_json(answer).late_s if isinstance(answer, dict) else 0.0

        self.edges[phase] = max(self._each(tell, self._handles()), default=0.0)

    def stop_load(self) -> None:
        def stop(handle: Any) -> None:
            if self._alive(handle):
                try:
                    self._call(handle, "POST", protocol.STOP, {}, timeout=5.0)
                except FleetError:
                    pass

        self._each(stop, self._handles())

    def drain(self, settle_s: float) -> None:
        """Wait (bounded) until every live worker has stopped and its requests in flight ended."""
        deadline = time.monotonic() + settle_s

        def settle(handle: Any) -> None:
            while self._alive(handle) and time.monotonic() < deadline:
                if self._status(handle).finished:
                    break
                time.sleep(0.05)

        self._each(settle, self._handles())

    def totals(self, settle_s: float = 10.0) -> FleetTotals:
        """Each live worker's own totals, once its requests in flight have ended."""
        deadline = time.monotonic() + settle_s

        def read(handle: Any) -> WorkerTotals:
            if not self._alive(handle):
                raise self._death(handle)
            while True:
                totals = WorkerTotals.from_json(self._call(handle, "GET", protocol.TOTALS))
                if totals.finished or time.monotonic() >= deadline:
                    return totals
                time.sleep(0.1)

        return FleetTotals(self._each(read, self._handles()))

    def _status(self, handle: Any, timeout: float = 10.0) -> WorkerStatus:
        return WorkerStatus.from_json(self._call(handle, "GET", protocol.STATUS, timeout=timeout))

    def clocks(self) -> list[float]:
        """How far each worker's clock is off this machine's, in seconds, beyond what a round trip explains.

        A worker reads its clock while the call is under way, so a worker with the same clock answers a time
        between the call's start and end: that counts 0, however slow the round trip. A time outside that
        window is off by at least its distance to it (signed: ahead is positive). Phase edges are Unix times
        read by each worker's own clock, so a worker off by this much moves its edges by as much; the run
        reports the largest (``fleet.clock_skew_s``).
        """

        def offset(handle: Any) -> float:
            before = time.time()
            answer = self._call(handle, "GET", protocol.STATUS, timeout=5.0)
            after = time.time()
            theirs = WorkerStatus.from_json(answer).time if isinstance(answer, dict) else None
            if theirs is None:
                return 0.0
            return theirs - after if theirs > after else min(0.0, theirs - before)

        return self._each(offset, self._handles())

    def _quit_all(self) -> None:
        def quit_one(handle: Any) -> None:
            if self._alive(handle):
                try:
                    self._call(handle, "POST", protocol.QUIT, {}, timeout=2.0)
                except FleetError:
                    pass

        self._each(quit_one, self._handles())

    @staticmethod
    def _each(call: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """*call* on every item at once (threads, at most :data:`PARALLEL_CALLS`), results in order.

        The first exception raised is raised here, after every call has ended.
        """
        items = list(items)
        if len(items) <= 1:
            return [call(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(PARALLEL_CALLS, len(items)), thread_name_prefix="fleet") as pool:
            futures = [pool.submit(call, item) for item in items]
        return [f.result() for f in futures]


class LocalFleet(ControlledFleet):
    """Worker processes on this machine, each with a control port on 127.0.0.1."""

    def __init__(self, procs: ProcessSet, run_id: str, size: int, aim: Aim, cpus: Collection[int] = ()) -> None:
        if size < 1:
            raise FleetError(f"a fleet needs at least one worker, got {size}")
        self.aim = aim
        self.token = protocol.new_token()
        self.procs = procs
        self.cpus = sorted(cpus)  # the fleet's own CPUs (none: anywhere)
        self.run_id = run_id
        self.size = size
        self.edges: dict[str, float] = {}
        self.workers: list[tuple[ManagedProcess, int]] = []
        self.placement: dict[str, str] = {}

    def start(self, timeout: float | None = None) -> None:
        """Start every worker and wait until each reports its control port.

        Workers are pinned one to a CPU of the fleet's own when there are CPUs enough for one each; with more
        workers than CPUs they share every CPU (the run says so before any load). The wait is 20 s, and half
        a second more for each worker, since they all start at once and share the machine.
        """
        if timeout is None:
            timeout = 20.0 + 0.5 * self.size
        cpus = self.cpus if len(self.cpus) >= self.size else []
        pending: list[ManagedProcess] = []
        # the token, secret headers and secret data go through the environment: /proc/PID/environ is readable
        # by this user only, a command line by everyone
        secrets = {protocol.TOKEN_ENV: self.token, **self.aim.environment()}
        for i in range(self.size):
            proc = self.procs.start(
                f"worker-{self.run_id}-{i}",
                [sys.executable, "-m", "pytest_rollout.load.worker", "--port", "0", "--target", self.aim.target],
                stdout_pipe=True,
                stdin_pipe=True,
                cpus=[cpus[i]] if cpus else None,
                env=secrets,
            )
            pending.append(proc)
        deadline = time.monotonic() + timeout
        for proc in pending:
            port = self._read_ready(proc, deadline)
            self.workers.append((proc, port))
        host = socket.gethostname()
        self.placement = {f"worker-{i}": host for i in range(self.size)}

    @staticmethod
    def _read_ready(proc: ManagedProcess, deadline: float) -> int:
        assert proc.popen.stdout is not None
        fd = proc.popen.stdout.fileno()
        buf = b""
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FleetError(f"load worker {proc.describe()} did not start in time:\n{proc.log_tail()}")
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if ready:
                chunk = proc.popen.stdout.read1(4096)  # type: ignore[attr-defined]
                if not chunk:
                    raise FleetError(
                        f"load worker {proc.describe()} exited at start (code {proc.popen.wait()}):\n{proc.log_tail()}"
                    )
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode(errors="replace").strip()
        if not line.startswith("READY "):
            raise FleetError(f"load worker {proc.describe()} said {line!r} instead of 'READY <port>'")
        return int(line.split()[1])

    def scrape_targets(self) -> list[dict[str, Any]]:
        """file_sd groups naming every worker, labelled with the run and worker index."""
        return [
            {"targets": [f"127.0.0.1:{port}"], "labels": {"run": self.run_id, "worker": str(i)}}
            for i, (_, port) in enumerate(self.workers)
        ]

    def _handles(self) -> list[Any]:
        return list(self.workers)

    def _alive(self, handle: Any) -> bool:
        proc: ManagedProcess = handle[0]
        return proc.alive()

    def _death(self, handle: Any) -> FleetError:
        proc: ManagedProcess = handle[0]
        return FleetError(f"load worker {proc.describe()} died (exit code {proc.returncode}):\n{proc.log_tail()}")

    def _call(self, handle: Any, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        port: int = handle[1]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {protocol.TOKEN_HEADER: self.token}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = json.loads(resp.read() or b"null")
            if resp.status != 200:
                raise FleetError(f"load worker on port {port} refused {method} {path}: {data}")
            return data
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise FleetError(f"load worker on port {port} did not answer {method} {path}: {exc}") from exc
        finally:
            conn.close()

    def dead(self) -> list[str]:
        """One line for each worker process that exited."""
        return [f"{proc.describe()} exit code {proc.returncode}" for proc, _ in self.workers if not proc.alive()]

    def dead_processes(self) -> list[ManagedProcess]:
        return [proc for proc, _ in self.workers if not proc.alive()]

    def shutdown(self) -> None:
        self._quit_all()
        for proc, _ in self.workers:
            proc.stop(grace=5.0)
            self.procs.forget(proc)
        self.workers.clear()
