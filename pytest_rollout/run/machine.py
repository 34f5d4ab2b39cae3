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
  (``/proc/PID/stat``) or reaped (``getrusage(RUSAGE_CHILDREN)``), orphans
  included (:class:`RunCPU`);
- over the CPUs this process may run on (its affinity), not the whole host.

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

__all__ = ["BUSY_SHARE", "MachineWatch", "RunCPU", "machine_cpu", "run_cpu", "with_share"]

SAMPLE_S = 0.5
MIN_WINDOW_S = 2.0  # a phase shorter than this is judged on the machine's last MIN_WINDOW_S


def machine_cpu(cpus: frozenset[int] | None = None) -> tuple[float, float] | None:
    """``(busy, steal)`` CPU seconds since boot of the CPUs *cpus* (default: all), or None without ``/proc/stat``."""
    try:
        with open("/proc/stat", "rb") as fh:
            lines = [line.split() for line in fh if line.startswith(b"cpu")]
    except OSError:
        return None
    if cpus is None:
        rows = [f for f in lines if f[0] == b"cpu"]
    else:
        rows = [f for f in lines if f[0] != b"cpu" and f[0][3:].isdigit() and int(f[0][3:]) in cpus]
    if not rows or any(len(f) < 9 for f in rows):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = sum(int(f[1]) + int(f[2]) + int(f[3]) + int(f[8]) for f in rows)  # user, nice, system, steal
    return busy / tick, sum(int(f[8]) for f in rows) / tick


def _processes() -> dict[int, tuple[int, int, float]]:
    """Every process: pid -> (parent pid, start time in ticks, CPU seconds with the children it has reaped)."""
    table = {}
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
        cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick  # utime, stime, cutime, cstime
        table[int(name)] = (int(fields[1]), int(fields[19]), cpu)
    return table


class RunCPU:
    """CPU seconds used by this process and every process it started, at any depth, never going down.

    A live descendant counts with the children it has reaped (``cutime``); one
    this process reaped is in ``RUSAGE_CHILDREN`` (read after the walk, so a
    reap in between counts twice for a moment rather than not at all). A
    process once seen in the run stays in it when it is orphaned (a replica's
    workers whose master was killed), and when it ends reaped by a process
    outside the run its last CPU is kept: the run's CPU never drops, and so
    never shows as other processes' work.
    """

    def __init__(self) -> None:
        self.root = os.getpid()
        self.known: dict[int, tuple[int, int, float]] = {}  # pid -> (parent pid, start, CPU), as last seen
        self.departed = 0.0

    def __call__(self) -> float:
        table = _processes()
        previous = set(self.known)
        for pid, (ppid, start, cpu) in list(self.known.items()):
            if pid in table and table[pid][1] == start:
                continue
            del self.known[pid]
            if ppid != self.root and ppid not in previous:
                self.departed += cpu  # reaped outside the run (an orphan, by init): its CPU is nowhere else
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        todo = [self.root, *self.known]
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in self.known:
                    self.known[child] = table[child]
                    todo.append(child)
        for pid in self.known:
            self.known[pid] = table[pid]
        own = resource.getrusage(resource.RUSAGE_SELF)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime + self.departed
        return total + sum(cpu for _, _, cpu in self.known.values())


def run_cpu() -> float:
    """CPU seconds used so far by this process and all its descendants, live or reaped (one look)."""
    return RunCPU()()


class MachineWatch:
    """Samples the machine's and the run's CPU time twice a second, on a thread, until :meth:`stop`."""

    def __init__(self, interval_s: float = SAMPLE_S) -> None:
        self.interval_s = interval_s
        # the CPUs this process (and so the run) may use: on a runner pinned to some, the others' work elsewhere
        # is not the run's competition
        try:
            self.cpu_set: frozenset[int] | None = frozenset(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            self.cpu_set = None
        self.cpus = len(self.cpu_set) if self.cpu_set else (os.cpu_count() or 1)
        self.run_cpu = RunCPU()
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
        cpu = machine_cpu(self.cpu_set)
        if cpu is None:
            return
        run = self.run_cpu()
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


def with_share(m: PhaseMeasurement, watch: MachineWatch | None) -> PhaseMeasurement:
    """*m* with the machine's shares over its phase where *watch* knows them."""
    if watch is None:
        return m
    share = watch.share(m.start, m.end)
    return m if share is None else replace(m, machine=share)
