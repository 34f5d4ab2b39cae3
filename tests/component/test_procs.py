"""Clean-up after a run killed hard, when PIDs were reused: real processes, real signals.

A run records each process it starts with its PID and the kernel's start time
(``/proc/PID/stat`` field 22). After a SIGKILL of pytest, the next run stops what
was recorded, but only where the PID still belongs to the same process: a PID
the kernel gave to another process since must never be signalled. Waiting for
the kernel to hand out the same PID again would take a whole PID space of forks,
so these tests write the record a reused PID would leave (a live PID, another
start time); the processes and signals are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_rollout.procs import RUN_PREFIX, ManagedProcess, ProcessSet, proc_start_time, reap_stale_runs

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes this test starts outside any run; each is stopped, by its PID, at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def bystander(started: list[subprocess.Popen[bytes]]) -> tuple[subprocess.Popen[bytes], int]:
    """A process outside any run, and its kernel start time."""
    proc = subprocess.Popen(SLEEP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started.append(proc)
    assert wait_for(lambda: proc_start_time(proc.pid) is not None)
    start = proc_start_time(proc.pid)
    assert start is not None
    return proc, start


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def rewrite(run_dir: Path, change: Callable[[dict[str, object]], None]) -> None:
    record = run_dir / "processes.json"
    data = json.loads(record.read_text())
    change(data)
    record.write_text(json.dumps(data))


def killed_run(tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> tuple[Path, ManagedProcess]:
    """A run directory as a pytest killed with SIGKILL leaves it: a record of one live replica whose owner is gone."""
    run_dir = tmp_path / f"{RUN_PREFIX}killed"
    run_dir.mkdir()
    replica = ProcessSet(run_dir).start("replica-v1-0", SLEEP)
    started.append(replica.popen)
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner.wait()  # the owner's PID now belongs to no process (or, later, to another one)
    rewrite(run_dir, lambda data: data.update(owner_pid=owner.pid))
    return run_dir, replica


def test_a_recorded_process_whose_pid_now_belongs_to_another_is_never_signalled(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    run_dir, replica = killed_run(tmp_path, started)
    other, start = bystander(started)

    def reuse(data: dict[str, object]) -> None:
        # the recorded haproxy died; the kernel then gave its PID to `other` (a later start time)
        entries = data["processes"]
        assert isinstance(entries, list)
        entries.append({"name": "haproxy", "pid": other.pid, "start_time": start - 1})

    rewrite(run_dir, reuse)
    stopped = reap_stale_runs(tmp_path, grace=0.5)
    # the replica recorded as it runs is stopped; the process holding the reused PID is untouched
    assert stopped == [f"replica-v1-0 (pid {replica.pid}) left by an earlier run in {run_dir}"]
    assert wait_for(lambda: gone(replica.pid))
    assert other.poll() is None and proc_start_time(other.pid) == start
    assert not run_dir.exists()


def test_a_dead_owners_pid_reused_by_a_live_process_does_not_keep_its_run_alive(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    run_dir, replica = killed_run(tmp_path, started)
    other, start = bystander(started)

    def reuse_owner(data: dict[str, object]) -> None:
        data["owner_pid"], data["owner_start_time"] = other.pid, start - 1

    rewrite(run_dir, reuse_owner)
    assert reap_stale_runs(tmp_path, grace=0.5) == [
        f"replica-v1-0 (pid {replica.pid}) left by an earlier run in {run_dir}"
    ]
    assert wait_for(lambda: gone(replica.pid))
    assert other.poll() is None  # the process holding the owner's old PID is not the owner, and is left alone


def test_a_run_whose_owner_still_runs_is_left_alone(tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    run_dir, replica = killed_run(tmp_path, started)

    def alive_owner(data: dict[str, object]) -> None:
        data["owner_pid"], data["owner_start_time"] = os.getpid(), proc_start_time(os.getpid())

    rewrite(run_dir, alive_owner)
    assert reap_stale_runs(tmp_path, grace=0.5) == []
    assert replica.alive() and run_dir.exists()
    replica.signal(signal.SIGKILL)
