"""The example SLO test: a well-behaved v2 replaces v1 under 2,000 requests per second.

The app stops accepting at once on SIGTERM, as most servers do, while its
endpoint leaves the load balancer a moment later (on a cluster as on the local
platform): ``pre_stop`` keeps each old replica serving until its endpoint is
gone. examples/test_endpoint_delay.py shows what happens without it.

The p99 bound, 400 ms, leaves a busy 2-core machine room for its own hiccups
(a good release measured up to 243 ms p99 over a 4 s phase on a shared CI VM);
examples/test_bad_release.py holds a release to the same 400 ms and catches
one that answers 600 ms slower.
"""

import sys

import pytest

V1 = [sys.executable, "examples/app.py", "--version", "1"]
V2 = [sys.executable, "examples/app.py", "--version", "2"]


@pytest.mark.slo(rps=2_000, error_rate=0.001, p99_ms=400, hold="20s")
def test_upgrade(rollout):
    rollout.deploy(command=V1, replicas=3, pre_stop="2s")
    rollout.ramp()
    rollout.upgrade(command=V2)
