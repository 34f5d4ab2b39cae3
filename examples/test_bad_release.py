"""A bad release caught on purpose: v2 is slower, and the gate says so.

In a real suite this test would simply fail; here it asserts the failure so
that `pytest examples/` shows the gate working both ways and still passes.
"""

import sys

import pytest

V1 = [sys.executable, "examples/app.py", "--version", "1"]
SLOW_V2 = [sys.executable, "examples/app.py", "--version", "2", "--delay-ms", "150"]


@pytest.mark.slo(rps=2_000, error_rate=0.001, p99_ms=100, hold="10s")
def test_slow_release_is_caught(rollout):
    rollout.deploy(command=V1, replicas=3)
    rollout.ramp()
    rollout.upgrade(command=SLOW_V2)
    with pytest.raises(pytest.fail.Exception, match=r"p99_ms in phase after: measured \d+\.\d\d ms, bound <= 100"):
        rollout.verify()
