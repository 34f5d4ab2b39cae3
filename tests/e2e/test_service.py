"""The local platform's Service is as unforgiving as kube-proxy: real rollouts of real servers.

- Balancing is per connection (HAProxy ``mode tcp``): a keep-alive connection
  stays on its replica, even while that replica terminates.
- A replica's endpoint leaves rotation ``--rollout-endpoint-delay`` (1 s) after
  its termination begins, concurrently with preStop and SIGTERM, as on a
  cluster; ``pre_stop`` keeps it serving untouched before SIGTERM.

gunicorn is the real third-party server here: its sync workers close every
connection after one response, and on SIGTERM it stops accepting at once.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from helpers import APP, run_slo_test

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")]

TESTS = Path(__file__).resolve().parents[1] / "support"  # where wsgi_app.py is
# 400 rps: baseline 4 s = 1,600 requests; error_rate 0.005 is provable from 738 requests, so an upgrade of about
# five seconds (three gunicorn starts, a 3 s preStop, the drain) can prove it held. gunicorn's sync workers
# take a new connection for every request: four of them per replica leave a busy 2-core machine headroom
SLO = 'rps=400, error_rate=0.005, p99_ms=400, ramp="2s", hold="4s", after="3s"'


def gunicorn(version: str) -> list[str]:
    gunicorn = shutil.which("gunicorn") or "gunicorn"
    return [
        "sh",
        "-c",
        f"exec {gunicorn} --chdir {TESTS} --workers 4 --graceful-timeout 10 --bind 127.0.0.1:$PORT "
        f"--env VERSION={version} wsgi_app:app",
    ]


@pytest.fixture
def needs_gunicorn() -> None:
    if shutil.which("gunicorn") is None:
        pytest.skip("gunicorn is not installed (it is in the test extras: pip install -e '.[test]')")


@pytest.mark.usefixtures("needs_gunicorn")
def test_gunicorn_without_pre_stop_is_broken_by_the_endpoint_race(pytester: pytest.Pytester) -> None:
    """SIGTERM closes gunicorn's listener while its endpoint is still in rotation for a second: refused connections."""
    result, test = run_slo_test(pytester, gunicorn("1"), gunicorn("2"), SLO)
    assert result.ret == 1, result.stdout.str()[-3000:]
    (err,) = [v for v in test["verdicts"] if v["slo"] == "error_rate" and v["phase"] == "upgrade"]
    assert err["outcome"] == "broken" and err["interval"][0] > 0.005
    assert test["phases"]["upgrade"]["errors_by_class"]["connection"] > 0
    assert test["phases"]["baseline"]["errors"] == 0


@pytest.mark.usefixtures("needs_gunicorn")
def test_gunicorn_with_pre_stop_passes(pytester: pytest.Pytester) -> None:
    delay = ("--rollout-endpoint-delay", "1s")  # the default, given as the README shows it
    result, test = run_slo_test(pytester, gunicorn("1"), gunicorn("2"), SLO, ', pre_stop="3s"', *delay)
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert all(phase["errors"] == 0 for phase in test["phases"].values())
    # termination as the kubelet does it: preStop, then SIGTERM; the endpoint leaves after the delay, concurrently
    for i in range(3):
        name = f"v1-{i}"
        at = {e["action"]: e["at"] for e in test["events"] if e["replica"] == name}
        assert {"terminating", "out", "sigterm", "exit"} <= set(at), at
        assert 0.8 <= at["out"] - at["terminating"] <= 1.6  # --rollout-endpoint-delay 1s
        assert 2.9 <= at["sigterm"] - at["terminating"] <= 3.6  # pre_stop 3s
        assert at["exit"] >= at["sigterm"]
    upgrade = test["phases"]["upgrade"]
    last_exit = max(e["at"] for e in test["events"] if e["action"] == "exit")
    assert last_exit <= upgrade["end"]  # the upgrade lasts until the last old replica has exited


def test_a_release_that_never_closes_idle_connections_shows_the_errors_kube_proxy_would(
    pytester: pytest.Pytester,
) -> None:
    """Keep-alive connections stay pinned to a terminating replica; one that lingers and exits resets them."""
    app = [sys.executable, str(APP)]
    # 200 ms a request: about 40 in flight on each replica when it exits, nearly all worked on for longer than the
    # 10 ms in which the fleet, as real clients do, sends a request again (a CI run at 50 ms saw 22 fail)
    v1 = [*app, "--version", "1", "--delay-ms", "200", "--on-sigterm", "linger", "--linger-s", "2"]
    v2 = [*app, "--version", "2", "--delay-ms", "50"]
    slo = 'rps=600, error_rate=0.001, ramp="2s", hold="4s", after="3s"'
    result, test = run_slo_test(pytester, v1, v2, slo, deploy_kw=', pre_stop="2s"')
    assert result.ret == 1, result.stdout.str()[-3000:]
    upgrade = test["phases"]["upgrade"]
    assert upgrade["errors_by_class"]["connection"] > 0
    (err,) = [v for v in test["verdicts"] if v["slo"] == "error_rate" and v["phase"] == "upgrade"]
    assert err["outcome"] == "broken"
