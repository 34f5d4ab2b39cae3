"""The lesson most teams learn in production: SIGTERM races the endpoint's removal.

On a cluster, a pod gets SIGTERM while kube-proxy is still sending it new
connections for a moment (kubernetes/kubernetes#21418). A release that stops
accepting at once on SIGTERM, as most servers do, refuses them. The local
platform does the same (``--rollout-endpoint-delay``, 1 s by default). This
release closes each connection after its response (as gunicorn's sync workers
do), so every request is a new connection and the race shows at once:

- without ``pre_stop`` the gate proves ``error_rate`` broken in ``upgrade``;
- with ``pre_stop="2s"`` (``lifecycle.preStop.sleep`` on Kubernetes) each old
  replica keeps serving until its endpoint is gone, and the upgrade passes.
"""

import sys

import pytest

V1 = [sys.executable, "examples/app.py", "--version", "1", "--no-keep-alive"]
V2 = [sys.executable, "examples/app.py", "--version", "2", "--no-keep-alive"]

BROKEN = r"SLO broken for .*\n  error_rate in phase upgrade: measured 0\.\d+ \[.*\], bound <= 0\.00500"
# 300 rps: 900 requests a phase, enough to prove error_rate <= 0.005 (738 are needed)
SLO = dict(rps=300, error_rate=0.005, p99_ms=50, ramp="1s", hold="3s", after="3s")


@pytest.mark.slo(**SLO)
def test_without_pre_stop_the_endpoint_race_is_caught(rollout):
    rollout.deploy(command=V1, replicas=3)
    rollout.ramp()
    with pytest.raises(pytest.fail.Exception, match=BROKEN):
        rollout.upgrade(command=V2)
        rollout.verify()


@pytest.mark.slo(**SLO)
def test_with_pre_stop_the_same_release_upgrades_cleanly(rollout):
    rollout.deploy(command=V1, replicas=3, pre_stop="2s")
    rollout.ramp()
    rollout.upgrade(command=V2)
