"""The ``local`` platform: replicas are processes behind a real HAProxy.

Deploy starts the replicas (each told its port in ``PORT``), waits until each
answers 200 on its readiness path, as a kubelet readiness probe would, and
only then adds it to HAProxy's rotation. The rolling upgrade mirrors a
Deployment: surge a new replica, wait until it is ready, put it in rotation,
terminate an old one; repeat within ``max_surge`` / ``max_unavailable`` (see
:mod:`pytest_rollout.platforms.rolling`).

An old replica is terminated as the kubelet terminates a pod, and as unkindly
as a cluster routes to it: its preStop (``pre_stop``: it serves untouched)
runs first, then SIGTERM, and SIGKILL once the grace period, counted from the
start (preStop included), runs out; concurrently its endpoint leaves HAProxy's
rotation only after the endpoint delay (``--rollout-endpoint-delay``, 1 s by
default: the endpoints controller, the EndpointSlice watch and kube-proxy's
sync), while keep-alive connections already on it stay there until one side
closes them. Finishing requests in flight, refusing none it was sent, and
closing idle connections is the release's job, as it is on Kubernetes.
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_rollout.errors import ProcessStartError, ReplicaNotReady, RolloutUsageError, UpgradeFailed
from pytest_rollout.load.fleet import LocalFleet
from pytest_rollout.load.protocol import Aim
from pytest_rollout.platforms.base import TargetSpec, UpgradeEvent, UpgradeResult
from pytest_rollout.platforms.local.haproxy import HAProxy
from pytest_rollout.platforms.local.termination import Replica, Terminator
from pytest_rollout.platforms.rolling import DEFAULT_SURGE, DEFAULT_UNAVAILABLE, next_step, resolve_surge
from pytest_rollout.procs import TARGET_NICE, ProcessSet, fleet_cpus, free_port, http_get

__all__ = ["LocalPlatform"]


def _needs_command(target: TargetSpec, what: str) -> None:
    if target.form != "command":
        raise RolloutUsageError(
            f"rollout.{what}({target.form}=...) needs --rollout-platform kubernetes; "
            "the local platform runs each replica as a process: pass command=[...]"
        )


def _ready_status(replica: Replica, timeout: float) -> int:
    """The status of one GET on *replica*'s readiness path, over TLS when its scheme is https (its certificate
    unchecked, as a kubelet's HTTPS probe leaves it: readiness is not trust); OSError on connection trouble."""
    target = replica.target
    if target.scheme != "https":
        return http_get("127.0.0.1", replica.port, target.ready_path, timeout=timeout)[0]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", replica.port, timeout=timeout, context=context)
    try:
        conn.request("GET", target.ready_path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc}") from exc
    finally:
        conn.close()


class LocalPlatform:
    """Replicas as local processes, HAProxy as the Service."""

    name = "local"
    ready_timeout_s = 30.0
    desired_replicas: int | None = None  # always the spec's

    def __init__(
        self,
        procs: ProcessSet,
        run_dir: Path,
        *,
        haproxy_binary: str = "haproxy",
        request_timeout_s: float = 30.0,
        endpoint_delay_s: float = 1.0,
    ) -> None:
        self.procs = procs
        self.endpoint_delay_s = endpoint_delay_s  # termination start -> the endpoint leaves rotation
        self.run_dir = run_dir
        self.haproxy_binary = haproxy_binary
        self.request_timeout_s = request_timeout_s
        self.lb: HAProxy | None = None
        self.fleet_cpus = fleet_cpus()  # the fleet is never starved by the target (see procs.fleet_cpus)
        self.replicas: list[Replica] = []  # in rotation
        self._counter: dict[str, int] = {}
        self._terminator: Terminator | None = None  # made with HAProxy
        self._problems: list[str] = []
        self._current: TargetSpec | None = None
        self._previous: tuple[TargetSpec, int | str | None, int | str | None] | None = (
            None  # (version, surge, unavailable)
        )

    # -- the Platform protocol -------------------------------------------------

    @property
    def url(self) -> str:
        if self.lb is None:
            raise RuntimeError("not deployed")
        return self.lb.url

    def deploy(self, target: TargetSpec, on_event: Callable[[UpgradeEvent], None]) -> None:
        _needs_command(target, "deploy")
        if self.lb is None:
            self.lb = HAProxy(
                self.procs,
                self.run_dir,
                ready_path=target.ready_path,
                binary=self.haproxy_binary,
                server_timeout_s=self.request_timeout_s,
                scheme=target.scheme,
            )
            self.lb.start()
            self._terminator = Terminator(self.lb, self.procs, self.endpoint_delay_s, self._problems)
        self._current = target
        pending = [self._start_replica(target, on_event) for _ in range(target.replicas)]
        try:
            while pending:
                replica = self._wait_ready_any(pending, on_event)
                pending.remove(replica)
                self._into_rotation(replica)
        except ReplicaNotReady:
            for replica in pending:
                self._stop_now(replica, on_event, "deploy failed")
            raise

    def upgrade(
        self,
        target: TargetSpec,
        max_surge: int | str | None,
        max_unavailable: int | str | None,
        on_event: Callable[[UpgradeEvent], None],
    ) -> UpgradeResult:
        assert self.lb is not None, "deploy first"
        _needs_command(target, "upgrade")
        if target.scheme != self.lb.scheme:
            raise RolloutUsageError(
                f"rollout.upgrade(scheme={target.scheme!r}): the target was deployed with scheme={self.lb.scheme!r}, "
                "and the fleet's url cannot change under load; leave scheme out to keep it"
            )
        max_surge = DEFAULT_SURGE if max_surge is None else max_surge
        max_unavailable = DEFAULT_UNAVAILABLE if max_unavailable is None else max_unavailable
        if self._current is not None:
            self._previous = (self._current, max_surge, max_unavailable)
        self._current = target
        replicas = target.replicas
        surge, unavailable = resolve_surge(max_surge, max_unavailable, replicas)
        start = time.time()
        events: list[UpgradeEvent] = []

        def note(event: UpgradeEvent) -> None:
            events.append(event)
            on_event(event)

        old = [r for r in self.replicas if r.target.version != target.version]
        new_ready: list[Replica] = []
        pending: list[Replica] = []
        replaced = 0
        try:
            while old or len(new_ready) < replicas:
                step = next_step(replicas, surge, unavailable, len(old), len(new_ready), len(pending))
                for _ in range(step.retire):
                    assert self._terminator is not None
                    retired = old.pop(0)
                    self.replicas.remove(retired)
                    self._terminator.retire(retired, note)
                    replaced += 1
                for _ in range(step.start):
                    pending.append(self._start_replica(target, note))
                if pending:
                    replica = self._wait_ready_any(pending, note)
                    pending.remove(replica)
                    self._into_rotation(replica)
                    new_ready.append(replica)
                elif step.retire == 0 and step.start == 0:
                    raise UpgradeFailed(  # pragma: no cover - the planner always makes progress
                        f"upgrade stalled: old={len(old)} ready={len(new_ready)} (surge {surge}, unavailable {unavailable})"
                    )
        except ReplicaNotReady as exc:
            for replica in pending:
                self._stop_now(replica, note, "upgrade failed")
            self._join_terminators()
            serving = ", ".join(sorted(r.name for r in self.replicas)) or "none"
            message = (
                f"upgrade to {target.version} failed: {exc}. "
                f"{len(self.replicas)} replica(s) still in rotation: {serving}."
            )
        else:
            self._join_terminators()
            return UpgradeResult(start=start, end=time.time(), replaced=replaced, events=tuple(events))
        raise UpgradeFailed(message)

    def make_fleet(self, run_id: str, size: int, aim: Aim) -> LocalFleet:
        return LocalFleet(self.procs, run_id, size, aim, cpus=self.fleet_cpus)

    def rollback(self, on_event: Callable[[UpgradeEvent], None]) -> str:
        """Roll back to the version before the last upgrade, the same rolling way."""
        if self._previous is None:
            raise UpgradeFailed("nothing to roll back: no upgrade has started")
        target, surge, unavailable = self._previous
        result = self.upgrade(target, surge, unavailable, on_event)
        self._previous = None
        return f"rolled back to {target.version} ({target.describe()}): {result.replaced} replica(s) replaced"

    def scrape_targets(self, run_id: str) -> list[dict[str, Any]]:
        if self.lb is None:
            return []
        return [{"targets": [self.lb.metrics_target], "labels": {"run": run_id, "component": "haproxy"}}]

    def keep(self) -> None:
        """--rollout-keep: nothing to mark; the processes stay up until the session ends."""

    def describe(self) -> str:
        lines = []
        if self.lb is not None:
            lines.append(
                f"HAProxy: {self.lb.url} (admin socket {self.lb.socket_path}, metrics "
                f"http://{self.lb.metrics_target}/metrics, pid {self.lb.process.pid if self.lb.process else '?'})"
            )
        for r in self.replicas:
            lines.append(f"{r.describe()}: {' '.join(r.target.command)}")
        return "\n".join(lines)

    def teardown(self) -> list[str]:
        self._join_terminators()
        for replica in list(self.replicas):
            replica.process.stop(grace=replica.target.grace_period_s)
        self.replicas.clear()
        if self.lb is not None:
            self.lb.stop()
        problems, self._problems = self._problems, []
        return problems

    # -- replicas ---------------------------------------------------------------

    def _start_replica(self, target: TargetSpec, on_event: Callable[[UpgradeEvent], None]) -> Replica:
        index = self._counter.get(target.version, 0)
        self._counter[target.version] = index + 1
        name = f"{target.version}-{index}"
        port = free_port()
        env = dict(target.env)
        env["PORT"] = str(port)
        try:
            process = self.procs.start(f"replica-{name}", target.command, env=env, cwd=target.cwd, nice=TARGET_NICE)
        except ProcessStartError as exc:
            if isinstance(exc.__cause__, (FileNotFoundError, PermissionError)):
                # the test's own command names nothing runnable: its mistake, not the run's (exit 1, not 6)
                raise RolloutUsageError(f"{exc} (the command the test gave for {target.version})") from None
            raise
        replica = Replica(name=name, port=port, process=process, target=target, started=time.time())
        on_event(UpgradeEvent(time.time(), "start", name, f"pid {process.pid}, port {port}"))
        return replica

    def _wait_ready_any(self, pending: list[Replica], on_event: Callable[[UpgradeEvent], None]) -> Replica:
        """Poll the readiness path of every pending replica until one answers 200."""
        last: dict[str, str] = {}
        while True:
            now = time.time()
            for replica in pending:
                if not replica.process.alive():
                    on_event(
                        UpgradeEvent(now, "failed", replica.name, f"exited with code {replica.process.returncode}")
                    )
                    raise ReplicaNotReady(
                        f"{replica.describe()} exited with code {replica.process.returncode} before it was ready; "
                        f"its last output:\n{replica.process.log_tail()}"
                    )
                try:
                    status = _ready_status(replica, timeout=1.0)
                    last[replica.name] = f"HTTP {status}"
                    if status == 200:
                        on_event(
                            UpgradeEvent(time.time(), "ready", replica.name, f"after {now - replica.started:.2f}s")
                        )
                        return replica
                except OSError as exc:
                    last[replica.name] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if now - replica.started > replica.target.ready_timeout_s:
                    on_event(UpgradeEvent(now, "failed", replica.name, "not ready in time"))
                    raise ReplicaNotReady(
                        f"{replica.describe()} did not become ready: GET {replica.target.ready_path} did not answer "
                        f"200 within {replica.target.ready_timeout_s:g}s (last answer: {last.get(replica.name)})"
                    )
            time.sleep(0.05)

    def _into_rotation(self, replica: Replica) -> None:
        assert self.lb is not None
        self.lb.add_server(replica.name, replica.port)
        self.replicas.append(replica)

    def _stop_now(self, replica: Replica, on_event: Callable[[UpgradeEvent], None], why: str) -> None:
        code = replica.process.stop(grace=2.0)
        on_event(UpgradeEvent(time.time(), "exit", replica.name, f"stopped ({why}), code {code}"))
        self.procs.forget(replica.process)

    def _join_terminators(self) -> None:
        if self._terminator is not None:
            self._terminator.join()
