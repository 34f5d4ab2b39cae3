"""Helpers shared by pytest-rollout's own tests."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_rollout.load.fleet import FleetTotals, LocalFleet
from pytest_rollout.load.protocol import Plan
from pytest_rollout.load.schedule import Segment
from pytest_rollout.procs import ProcessSet, free_port, http_get

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "app.py"


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


def run_fleet(fleet: LocalFleet, url: str, rps: float, seconds: float, **plan: object) -> tuple[FleetTotals, list[str]]:
    """Hold *rps* against *url* for *seconds* in one phase ``"p"``; the totals and the engines that ran."""
    start = time.time() + 0.3
    template = Plan(url=url, segments=(), start_at=start, deadline=start + seconds, phases=(("p", start),), **plan)  # type: ignore[arg-type]
    engines = fleet.begin(template, [Segment(None, rps, rps)])
    time.sleep(seconds + 0.4)
    fleet.stop_load()
    fleet.drain(settle_s=5)
    totals = fleet.totals()
    assert len(totals.workers) == fleet.size
    return totals, engines


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
