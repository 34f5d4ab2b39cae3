"""The CPU other processes take while a run's phase lasts: what the machine watch reads, with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pytest_rollout.judge.verdict import BUSY_SHARE, MachineShare
from pytest_rollout.run.machine import MachineWatch, RunCPU, machine_cpu, run_cpu

BURN = (
    "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end and time.time() < {deadline}: pass\n"
)


def burn(seconds: float) -> list[str]:
    """A process that uses *seconds* of CPU (and stops by itself within a minute whatever happens)."""
    return [sys.executable, "-c", BURN.format(s=seconds, deadline=time.time() + 60)]


def test_the_run_counts_its_descendants_live_and_reaped_at_any_depth() -> None:
    before = run_cpu()
    # a child that starts a grandchild and reaps it: the grandchild's CPU is in the child's cutime, then in ours
    script = f"import subprocess\nsubprocess.run({burn(0.3)!r}, check=True)\n"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert run_cpu() - before >= 0.3


def test_a_process_of_the_run_orphaned_and_reaped_elsewhere_still_counts_as_the_runs() -> None:
    """A replica's workers outlive a master that was killed: reparented, then reaped by init, their CPU is in no
    process of the run. The run's count keeps what it last saw of them, so it never drops (a drop would read as
    other processes' work, and excuse a latency breach)."""
    tracker = RunCPU()
    before = tracker()
    # the child starts the grandchild, says its pid, and exits without reaping it once told to (its stdin closed)
    script = f"import subprocess, sys\nprint(subprocess.Popen({burn(0.6)!r}).pid, flush=True)\nsys.stdin.read()\n"
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    grandchild = int(child.stdout.readline())
    seen = [tracker()]
    deadline = time.time() + 30
    while grandchild not in tracker.known and time.time() < deadline:  # seen as the run's while its parent lives
        time.sleep(0.01)
        seen.append(tracker())
    assert grandchild in tracker.known
    child.stdin.close()  # now the child exits: the grandchild is orphaned, and reaped by init
    while time.time() < deadline:
        seen.append(tracker())
        alive = [pid for pid in tracker.known if pid != child.pid]
        if child.poll() is not None and not alive:
            break
        time.sleep(0.2)
    child.wait()
    child.stdout.close()
    seen.append(tracker())
    assert seen == sorted(seen), seen  # never down
    assert seen[-1] - before >= 0.5, seen  # the orphan's CPU is the run's


def test_a_machine_busy_with_another_process_is_seen_and_the_run_is_not_blamed(tmp_path: Path) -> None:
    """A process that is not the run's (started by a process that exits at once, so it is nobody's child here)
    keeps a CPU busy: its CPU shows as the others', not the run's."""
    assert machine_cpu() is not None
    watch = MachineWatch.start()
    assert watch is not None
    start = time.time()
    pid_file = tmp_path / "hog.pid"
    spawner = (
        f"import subprocess\np = subprocess.Popen({burn(1.5)!r})\nopen({str(pid_file)!r}, 'w').write(str(p.pid))\n"
    )
    subprocess.run([sys.executable, "-c", spawner], check=True, timeout=30)  # exits at once: the hog is orphaned
    hog = int(pid_file.read_text())
    try:
        while os.path.exists(f"/proc/{hog}") and time.time() < start + 30:
            time.sleep(0.1)
        ended = time.time()
        while not (watch.samples and watch.samples[-1][0] > ended) and time.time() < ended + 30:
            time.sleep(0.05)  # until the watch's own thread has taken a sample after the hog ended
        assert watch.samples[-1][0] > ended, "the watch took no sample after the hog ended"
        watch.stop()
        share = watch.share(start, time.time())
    finally:
        try:
            os.kill(hog, 9)  # it stops by itself; this only makes sure
        except ProcessLookupError:
            pass
    assert share is not None
    capacity = share.cpus * share.seconds
    # the hog used 1.5 CPU-seconds: most show as the others' (the kernel's tick accounting is coarse), not the run's
    assert share.others * capacity >= 0.75, share
    assert share.run * capacity < 0.5, share


def test_shares_and_their_sentence() -> None:
    watch = MachineWatch()
    watch.cpus = 2
    # (unix time, machine busy s, steal s, run s): over 10 s, 20 CPU-seconds of capacity
    watch.samples = [(100.0, 50.0, 1.0, 10.0), (105.0, 55.0, 1.5, 12.0), (110.0, 64.0, 2.0, 14.0)]
    share = watch.share(100.0, 110.0)
    assert share == MachineShare(others=0.5, run=0.2, steal=0.05, cpus=2, seconds=10.0)
    assert share.busy and BUSY_SHARE <= 0.5
    assert (
        share.sentence()
        == "other processes took 50% of this machine's 2 CPUs over 10.0s (steal 5%; the run itself 20%)"
    )
    # a short phase (or an early live look) is judged on the last two seconds
    assert watch.share(109.5, 110.0) == MachineShare(others=0.7, run=0.2, steal=0.05, cpus=2, seconds=5.0)
    assert watch.share(99.0, 100.5) is None  # under a second of samples: nothing is excused
    assert watch.share(200.0, 300.0) is None
