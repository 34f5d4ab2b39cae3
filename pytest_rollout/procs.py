"""Starting, watching and stopping the processes a run owns.

Every process is started in a session of its own (so a Ctrl-C at the terminal
reaches pytest alone, which then stops its children in order), its output goes
to a log file in the run directory, and it is recorded with its PID and its
kernel start time. Stopping is by that PID only, after checking the start time
still matches, so a recycled PID is never signalled. Nothing is killed by name.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from pytest_rollout.errors import ProcessStartError

__all__ = [
    "ManagedProcess",
    "ProcessSet",
    "free_port",
    "http_get",
    "fleet_cpus",
    "proc_cpu_seconds",
    "proc_start_time",
    "reap_stale_runs",
]


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time (clock ticks since boot) of *pid*, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


#: How much lower the target's scheduling priority is than the fleet's (``nice``): a replica starting up, or
#: a busy one, then cannot starve the fleet that measures it, yet may use every CPU the fleet leaves idle.
TARGET_NICE = 10


def fleet_cpus(available: Collection[int] | None = None) -> frozenset[int]:
    """The CPUs the local fleet's workers are pinned to: the last half of this process's (none with one CPU).

    The fleet must never be starved by the target it measures: a starved fleet
    sends late, and although late sends are never blamed on the release, they
    leave a phase not proven. So the workers get CPUs of their own (one each, in
    turn), and the target (replicas, load balancer) runs at a lower priority
    (:data:`TARGET_NICE`) on any CPU. Prometheus and pytest are left as they are.
    """
    cpus = sorted(available if available is not None else os.sched_getaffinity(0))
    if len(cpus) < 2:
        return frozenset()
    return frozenset(cpus[-(len(cpus) // 2) :])


def proc_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, seconds) used so far by *pid*; 0.0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return 0.0
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on *host*."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def http_get(host: str, port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """One plain GET; raises OSError (incl. timeouts) on connection trouble."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc}") from exc
    finally:
        conn.close()


class ManagedProcess:
    """One child process, its log and its identity."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.start_time = proc_start_time(popen.pid)
        self.log_path = log_path

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.alive() and proc_start_time(self.pid) == self.start_time:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, wait up to *grace* seconds, then SIGKILL. Returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                try:
                    self.popen.wait(timeout=5.0)
                except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
                    pass
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        return self.popen.poll()

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid})"


class ProcessSet:
    """The processes one run started, recorded in ``<run_dir>/processes.json``."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.processes: list[ManagedProcess] = []
        self._record = run_dir / "processes.json"

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdout_pipe: bool = False,
        stdin_pipe: bool = False,
        cpus: Collection[int] | None = None,
        nice: int = 0,
    ) -> ManagedProcess:
        """Start *argv*; its output goes to ``<run_dir>/<name>.log`` (or a pipe for stdout).

        With *cpus*, the process (and what it forks later) runs only on those CPUs; with
        *nice*, at that lower scheduling priority (what it forks later inherits it too).
        """
        log_path = self.run_dir / f"{name}.log"
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with open(log_path, "ab") as log:
            try:
                popen = subprocess.Popen(
                    list(argv),
                    env=full_env,
                    cwd=cwd,
                    stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                    stdout=subprocess.PIPE if stdout_pipe else log,
                    stderr=log,
                    start_new_session=True,
                    close_fds=True,
                )
            except FileNotFoundError as exc:
                raise ProcessStartError(
                    f"cannot start {name}: command not found: {argv[0]!r}; check the path "
                    f"(relative paths are taken from {os.path.abspath(cwd or os.curdir)})"
                ) from exc
            except PermissionError as exc:
                raise ProcessStartError(f"cannot start {name}: {argv[0]!r} is not executable: {exc}") from exc
            except OSError as exc:
                raise ProcessStartError(f"cannot start {name}: {argv[0]!r}: {exc}") from exc
        try:
            if cpus:
                os.sched_setaffinity(popen.pid, cpus)
            if nice:
                os.setpriority(os.PRIO_PROCESS, popen.pid, os.getpriority(os.PRIO_PROCESS, 0) + nice)
        except OSError:  # gone already, or a kernel that refuses: it runs as it is
            pass
        proc = ManagedProcess(name, popen, log_path)
        self.processes.append(proc)
        self._save()
        return proc

    def _save(self) -> None:
        data = [{"name": p.name, "pid": p.pid, "start_time": p.start_time} for p in self.processes if p.alive()]
        tmp = self._record.with_suffix(".tmp")
        owner = {"owner_pid": os.getpid(), "owner_start_time": proc_start_time(os.getpid())}
        tmp.write_text(json.dumps({**owner, "processes": data}))
        tmp.replace(self._record)

    def forget(self, proc: ManagedProcess) -> None:
        if proc in self.processes:
            self.processes.remove(proc)
            self._save()

    def stop_all(self, grace: float = 5.0) -> list[str]:
        """Stop every process still alive, newest first. Returns what needed SIGKILL or failed."""
        problems: list[str] = []
        for proc in reversed(self.processes):
            if proc.alive():
                started = time.monotonic()
                proc.stop(grace)
                if proc.alive():
                    problems.append(f"{proc.describe()} did not exit")
                elif time.monotonic() - started >= grace:
                    problems.append(f"{proc.describe()} needed SIGKILL")
            else:
                proc.stop(0)
        self.processes.clear()
        self._save()
        return problems


RUN_PREFIX = "pytest-rollout-"


def alive_as_recorded(pid: int, start_time: int | None) -> bool:
    return start_time is not None and proc_start_time(pid) == start_time


def reap_stale_runs(temp_dir: str | os.PathLike[str] | None = None, grace: float = 3.0) -> list[str]:
    """Stop what earlier runs that died (SIGKILL, say) left behind, and remove their directories.

    A run directory is stale when the pytest process that owns it is gone. Only
    the processes it recorded are stopped, each only if its PID still belongs to
    the same process (same kernel start time). Returns one line per process stopped.
    """
    import shutil
    import tempfile

    base = Path(temp_dir or tempfile.gettempdir())
    done: list[str] = []
    for root in sorted(base.glob(RUN_PREFIX + "*")):
        records = sorted(root.rglob("processes.json"))
        if not root.is_dir() or not records:
            continue
        owners_alive = False
        stale: list[tuple[str, int, int | None]] = []
        for record in records:
            try:
                data = json.loads(record.read_text())
            except (OSError, ValueError):
                continue
            if alive_as_recorded(int(data.get("owner_pid", 0)), data.get("owner_start_time")):
                owners_alive = True
                break
            stale.extend((str(p["name"]), int(p["pid"]), p.get("start_time")) for p in data.get("processes", []))
        if owners_alive:
            continue
        for name, pid, start_time in stale:
            if not alive_as_recorded(pid, start_time):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline and alive_as_recorded(pid, start_time):
                    time.sleep(0.05)
                if alive_as_recorded(pid, start_time):
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            done.append(f"{name} (pid {pid}) left by an earlier run in {root}")
        shutil.rmtree(root, ignore_errors=True)
    return done
