"""Was the machine the run's own? The CPU used by other processes while each phase ran.

A latency bound is a statement about the release. On a laptop or a shared CI
runner the release's replicas, the load balancer and the fleet share the CPUs
with whatever else runs there; when something else takes a large share, the
release's requests wait for a CPU and its latency says more about the machine
than about the release (measured here: an unchanged release compared with
itself read +29% to +56% at p99 while another process kept one of two cores
busy).

So on the local platform, where every process of the run descends from the
pytest process, a :class:`MachineWatch` samples twice a second:

- the machine's busy CPU time, from ``/proc/stat`` (user, nice, system, and
  steal: time the hypervisor gave to other guests); irq and softirq time are
  left out on both sides, since the kernel may charge the run's own network
  work there;
- the run's own CPU time: this process and every descendant, live
  (``/proc/PID/stat``) or reaped (``getrusage(RUSAGE_CHILDREN)``).

The difference, over a phase, is what other processes (and other guests) took:
:class:`MachineShare`. When it is at least :data:`BUSY_SHARE` of the machine,
a latency entry the evidence would make broken is *not proven* instead, with
the shares named (see :mod:`pytest_rollout.judge.rules`); held stays held (a
release that met its bound on a busy machine met it), and error rates are
judged as ever. A release that burns CPU itself is the run's own share, never
an excuse. Off Linux, or on the Kubernetes platform (its pods are not this
process's descendants), there is no watch and nothing is excused.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from bisect import bisect_right
from dataclasses import replace

from pytest_rollout.judge.verdict import BUSY_SHARE, MachineShare, PhaseMeasurement

__all__ = ["BUSY_SHARE", "MachineWatch", "machine_cpu", "run_cpu", "with_share"]

SAMPLE_S = 0.5
MIN_WINDOW_S = 2.0  # a phase shorter than this is judged on the machine's last MIN_WINDOW_S


def machine_cpu() -> tuple[float, float] | None:
    """``(busy, steal)`` CPU seconds of the whole machine since boot, or None without ``/proc/stat``."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != b"cpu" or len(fields) < 9:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, steal = (int(fields[i]) for i in (1, 2, 3, 8))
    return (user + nice + system + steal) / tick, steal / tick


def _descendants_cpu(root: int) -> float:
    """CPU seconds of *root*'s live descendants, each with the children it has reaped (``cutime``, ``cstime``)."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        pid = int(name)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
    total, todo = 0.0, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            total += cpu[child]
            todo.append(child)
    return total


def run_cpu() -> float:
    """CPU seconds used by this process and all its descendants, live or reaped (at any depth: a process reaped
    by a descendant is in that descendant's ``cutime``; one reaped by this process, in ``RUSAGE_CHILDREN``)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime + _descendants_cpu(os.getpid())


class MachineWatch:
    """Samples the machine's and the run's CPU time twice a second, on a thread, until :meth:`stop`."""

    def __init__(self, interval_s: float = SAMPLE_S) -> None:
        self.interval_s = interval_s
        self.cpus = os.cpu_count() or 1
        self.samples: list[tuple[float, float, float, float]] = []  # (unix time, busy, steal, run)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls) -> MachineWatch | None:
        """A running watch, or None where the machine cannot be read (not Linux)."""
        if machine_cpu() is None:
            return None
        watch = cls()
        watch.sample()
        watch._thread = threading.Thread(target=watch._loop, name="pytest-rollout-machine", daemon=True)
        watch._thread.start()
        return watch

    def sample(self) -> None:
        cpu = machine_cpu()
        if cpu is None:
            return
        run = run_cpu()
        self.samples.append((time.time(), cpu[0], cpu[1], run))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()

    def share(self, start: float, end: float) -> MachineShare | None:
        """The shares over ``[start, end]`` (Unix seconds), from the last sample at or before its start to the last at or before its end, the window widened
        back to :data:`MIN_WINDOW_S` for a short phase or an early live look (the seconds just before are the
        best guess at the machine's state then); None when fewer than a second of samples covers it."""
        samples = list(self.samples)
        times = [s[0] for s in samples]
        i = max(0, bisect_right(times, min(start, end - MIN_WINDOW_S)) - 1)  # the last sample at or before it
        j = bisect_right(times, end) - 1
        if i >= len(samples) or j < 0 or times[j] - times[i] < 1.0:
            return None
        (t0, busy0, steal0, run0), (t1, busy1, steal1, run1) = samples[i], samples[j]
        capacity = self.cpus * (t1 - t0)
        run = max(0.0, run1 - run0) / capacity
        steal = max(0.0, steal1 - steal0) / capacity
        others = min(1.0, max(0.0, (busy1 - busy0) - (run1 - run0)) / capacity)
        return MachineShare(others=others, run=min(1.0, run), steal=min(steal, others), cpus=self.cpus, seconds=t1 - t0)


def with_share(m: PhaseMeasurement, watch: MachineWatch | None, end: float | None = None) -> PhaseMeasurement:
    """*m* with the machine's shares over its phase (to *end*, default its own end) where *watch* knows them."""
    if watch is None:
        return m
    share = watch.share(m.start, m.end if end is None else end)
    return m if share is None else replace(m, machine=share)
