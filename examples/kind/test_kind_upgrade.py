"""The example SLO tests on a kind cluster (run by examples/kind/run.sh).

The target is examples/app.py as an image; the fleet is a Deployment of
worker pods; Prometheus is examples/kind/prometheus.yaml, reached through a
port-forward. Collected only with ``--rollout-platform kubernetes`` (see
examples/conftest.py).
"""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.slo(rps=500, error_rate=0.001, p99_ms=250, hold="20s")
def test_upgrade_v1_to_v2(rollout):
    rollout.deploy(manifests=[HERE / "app-v1.yaml"])
    rollout.ramp()
    rollout.upgrade(manifests=[HERE / "app-v2.yaml"])
    rollout.verify()


@pytest.mark.slo(rps=500, error_rate=0.001, p99_ms=250, hold="20s")
def test_slow_release_is_caught_and_rolled_back(rollout):
    rollout.deploy(manifests=[HERE / "app-v1.yaml"])
    rollout.ramp()
    # the breach is proven from the live data during the upgrade, which stops there and rolls back
    with pytest.raises(pytest.fail.Exception, match=r"(?s)p99.*rolled back deployment shop"):
        rollout.upgrade(manifests=[HERE / "app-v2-slow.yaml"], rollback_on_breach=True)
        rollout.verify()
