"""The example SLO test: a well-behaved v2 replaces v1 under 2,000 requests per second."""

import sys

import pytest

V1 = [sys.executable, "examples/app.py", "--version", "1"]
V2 = [sys.executable, "examples/app.py", "--version", "2"]


@pytest.mark.slo(rps=2_000, error_rate=0.001, p99_ms=100, hold="20s")
def test_upgrade(rollout):
    rollout.deploy(command=V1, replicas=3)
    rollout.ramp()
    rollout.upgrade(command=V2)
