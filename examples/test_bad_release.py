"""A bad release caught on purpose: v2 is slower, and the gate says so.

In a real suite this test would simply fail; here it asserts the failure so
that `pytest examples/` shows the gate working both ways and still passes.
The breach is proven from the live data as soon as the upgrade ends, so the
run stops there (``abort_on_breach``) instead of holding the ``after`` phase.
"""

import sys

import pytest

V1 = [sys.executable, "examples/app.py", "--version", "1"]
SLOW_V2 = [sys.executable, "examples/app.py", "--version", "2", "--delay-ms", "60"]

BROKEN = r"SLO broken for .*\n  p99_ms in phase (upgrade|after): measured \d+\.\d\d ms \[.*\], bound <= 50"


@pytest.mark.slo(rps=1_000, error_rate=0.001, p99_ms=50, hold="10s")
def test_slow_release_is_caught(rollout):
    rollout.deploy(command=V1, replicas=3, pre_stop="2s")
    rollout.ramp()
    with pytest.raises(pytest.fail.Exception, match=BROKEN):
        rollout.upgrade(command=SLOW_V2)
        rollout.verify()
    assert rollout.verdict.result == "slo_broken"
