"""Helpers shared by pytest-rollout's own tests."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pytest_rollout.load.fleet import FleetTotals, LocalFleet
from pytest_rollout.load.launch import PlanOptions, Rate, start_plan
from pytest_rollout.load.protocol import LATE_S
from pytest_rollout.load.replies import PhaseTotals, WorkerTotals
from pytest_rollout.procs import ProcessSet, free_port, http_get

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "app.py"


@functools.cache
def ci_skips() -> ModuleType:
    """``.ci/skips.py``: the README's "What may skip" list and its matching, the code ``.ci/run`` checks with.

    Loaded once, from its file (``.ci/`` is no package): ``tests/conftest.py`` fails unlisted skips with it, and
    ``tests/unit/test_docs.py`` tests it; both get this same module.
    """
    spec = importlib.util.spec_from_file_location("ci_skips", ROOT / ".ci" / "skips.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def app_command(*flags: str) -> list[str]:
    """argv of the example app with *flags* (see examples/app.py)."""
    return [sys.executable, str(APP), *flags]


def start_app(procs: ProcessSet, name: str, *flags: str) -> int:
    """Start the example app under *procs*, wait until it is ready, return its port."""
    port = free_port()
    procs.start(name, app_command("--startup-s", "0", *flags), env={"PORT": str(port)})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if http_get("127.0.0.1", port, "/healthz")[0] == 200:
                return port
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"example app {name} did not become ready")


def listening() -> set[str]:
    """Local TCP listening sockets (hex address:port), from /proc/net/tcp and tcp6."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    out.add(fields[1])
    return out


def run_fleet(fleet: LocalFleet, url: str, rps: float, seconds: float, **plan: Any) -> tuple[FleetTotals, list[str]]:
    """Hold *rps* against *url* for *seconds* in one phase ``"p"``; the totals and the engines that ran.

    Each worker ends the schedule by itself at its deadline: this waits for that (every worker reports its
    plan finished and its requests in flight ended), bounded, rather than for a fixed time; a busy machine
    only makes it wait longer. So every request due is counted, sent or dropped, whatever the scheduler did.
    """
    options = PlanOptions(**plan)
    launched = start_plan(fleet, url, Rate(rps, seconds, phases=(("p", 0.0),)), options, lead_s=0.3)
    timeout_s = options.timeout_s
    fleet.drain(settle_s=launched.end_at - time.time() + timeout_s + 30.0)
    totals = fleet.totals(settle_s=0.0)
    assert len(totals.workers) == fleet.size
    assert all(w.finished for w in totals.workers), [w.state for w in totals.workers]
    return totals, launched.engines


def schedule_kept(phase: PhaseTotals, scheduled: int, answered: str) -> None:
    """The invariants of one phase that hold whatever the scheduler did.

    Every request due is counted exactly once (*scheduled* in all); the only requests not sent are the ones
    the worker could not send within 50 ms of their time (``late``, counted ``dropped``); every one sent was
    answered as class *answered*.
    """
    counts = dict(phase.by_class.items())
    assert phase.requests == scheduled, counts
    assert counts["dropped"] == phase.late, (counts, phase.late)
    assert counts[answered] + phase.late == scheduled, (counts, phase.late)


def on_time_as_said(worker: WorkerTotals) -> None:
    """A worker counts requests late exactly when it says it fell more than 50 ms behind (its max lag)."""
    assert (worker.late > 0) == (worker.max_lag_s > LATE_S), (worker.late, worker.max_lag_s)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SLO_TEST = """
import pytest
V1 = {v1!r}
V2 = {v2!r}

@pytest.mark.slo({slo})
def test_release(rollout):
    rollout.deploy(command=V1, replicas=3{deploy_kw})
    rollout.ramp()
    rollout.upgrade(command=V2)
"""


def run_slo_test(
    pytester: pytest.Pytester, v1: list[str], v2: list[str], slo: str, deploy_kw: str = "", *args: str
) -> tuple[pytest.RunResult, dict[str, Any]]:
    """Run one SLO test rolling *v1* to *v2* in an inner pytest (a subprocess, as a user would).

    Returns the run's result and its JSON report entry, once it has checked that nothing is left listening.
    """
    pytester.makepyfile(test_release=SLO_TEST.format(v1=v1, v2=v2, slo=slo, deploy_kw=deploy_kw))
    before = listening()
    result = pytester.runpytest_subprocess("--rollout-report", "report.json", *args, timeout=300)
    assert listening() - before == set(), "the run left something listening"
    (test,) = json.loads((pytester.path / "report.json").read_text())["tests"]
    return result, test
