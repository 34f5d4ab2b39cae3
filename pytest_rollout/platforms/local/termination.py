"""Replicas, and how an old one is terminated: as the kubelet terminates a pod.

preStop first, then SIGTERM, then SIGKILL once the grace period (counted from
the start, preStop included) runs out; concurrently its endpoint leaves the
load balancer after the endpoint delay, as kube-proxy learns of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pytest_rollout.platforms.base import TargetSpec, UpgradeEvent
from pytest_rollout.platforms.local.haproxy import HAProxy
from pytest_rollout.procs import ManagedProcess, ProcessSet

__all__ = ["Replica", "Terminator"]


@dataclass
class Replica:
    name: str
    port: int
    process: ManagedProcess
    target: TargetSpec
    started: float

    def describe(self) -> str:
        return f"replica {self.name} (pid {self.process.pid}, port {self.port})"


class Terminator:
    """Terminates old replicas in the background, each on a thread of its own."""

    def __init__(self, lb: HAProxy, procs: ProcessSet, endpoint_delay_s: float, problems: list[str]) -> None:
        self.lb = lb
        self.procs = procs
        self.endpoint_delay_s = endpoint_delay_s  # termination start -> the endpoint leaves rotation
        self.problems = problems  # the platform's: reported at teardown
        self._threads: list[threading.Thread] = []

    def retire(self, replica: Replica, on_event: Callable[[UpgradeEvent], None]) -> None:
        """Terminate an old replica as the kubelet terminates a pod; the steps run in the background."""
        on_event(UpgradeEvent(time.time(), "terminating", replica.name, self.plan(replica)))
        thread = threading.Thread(
            target=self._terminate, args=(replica, on_event), daemon=True, name=f"terminate-{replica.name}"
        )
        self._threads.append(thread)
        thread.start()

    def plan(self, replica: Replica) -> str:
        target = replica.target
        pre = f"preStop {target.pre_stop_s:g}s, then " if target.pre_stop_s else ""
        return (
            f"{pre}SIGTERM; endpoint removed after {self.endpoint_delay_s:g}s; "
            f"SIGKILL at {target.grace_period_s:g}s (grace period)"
        )

    def _terminate(self, replica: Replica, on_event: Callable[[UpgradeEvent], None]) -> None:
        """preStop, then SIGTERM, the grace period counted from the start (preStop included), then SIGKILL;
        concurrently, the endpoint leaves rotation after the endpoint delay, as kube-proxy learns of it."""
        began = time.monotonic()
        target = replica.target
        grace = target.grace_period_s
        self.lb.hold_in_rotation(replica.name)  # a terminating pod leaves with its endpoint, not by a probe
        endpoint = threading.Timer(self.endpoint_delay_s, self._endpoint_gone, (replica, on_event))
        endpoint.daemon = True
        endpoint.start()
        pre = min(target.pre_stop_s, grace)
        if pre > 0:
            time.sleep(pre)  # the replica serves untouched, like lifecycle.preStop.sleep
        on_event(UpgradeEvent(time.time(), "sigterm", replica.name))
        code = replica.process.stop(grace=max(0.0, grace - (time.monotonic() - began)))
        took = time.monotonic() - began
        detail = f"code {code} after {took:.2f}s"
        if took >= grace:
            detail += " (SIGKILL after the grace period)"
        on_event(UpgradeEvent(time.time(), "exit", replica.name, detail))
        endpoint.join()
        if not self.lb.remove_server(replica.name):
            self.problems.append(f"HAProxy kept server {replica.name} (still had connections)")
        self.procs.forget(replica.process)

    def _endpoint_gone(self, replica: Replica, on_event: Callable[[UpgradeEvent], None]) -> None:
        self.lb.take_out(replica.name)
        on_event(UpgradeEvent(time.time(), "out", replica.name, f"endpoint removed after {self.endpoint_delay_s:g}s"))

    def join(self) -> None:
        """Wait until every replica being terminated has exited."""
        for thread in self._threads:
            thread.join()
        self._threads.clear()
