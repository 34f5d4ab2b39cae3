import sys, pytest
V1 = [sys.executable, "examples/app.py", "--version", "1"]
V2 = [sys.executable, "examples/app.py", "--version", "2"]

@pytest.mark.slo(rps=500, error_rate=0.01, p99_ms=100, ramp="3s", hold="4s")
def test_small(rollout):
    rollout.deploy(command=V1, replicas=3)
    rollout.ramp()
    rollout.upgrade(command=V2)
