"""An HTTPS target in real runs: replicas serving TLS (examples/app.py --tls-cert/--tls-key) behind a real HAProxy
(layer 4: TLS passes through to the replicas, its health checks speak TLS), a real Prometheus and real workers on
the fast engine.

A good release passes when the marker trusts the test CA (``tls_ca``); with the marker's trust left at the system's
CAs, the test's certificate would be refused on every connection: that is the test's mistake, not the release's,
so the run stops before any load with a usage error saying what to pass, rather than judging the release broken.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import APP, listening
from tlscert import make_pki

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_haproxy", "needs_prometheus")]

TEST = """
import sys, pytest

APP = {app!r}
def app(*flags):
    return [sys.executable, APP, *flags, "--tls-cert", "pki/server.pem", "--tls-key", "pki/server.key"]

@pytest.mark.slo(rps=400, error_rate=0.01, ramp="2s", hold="4s", after="4s"{trust})
def test_release(rollout):
    rollout.deploy(command=app("--version", "1"), replicas=3, pre_stop="2s", scheme="https")
    assert rollout.url.startswith("https://127.0.0.1:")
    rollout.ramp()
    rollout.upgrade(command=app("--version", "2"))
"""


def run(pytester: pytest.Pytester, trust: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    pki = make_pki(pytester.path / "pki")
    (pytester.path / "ca.pem").write_text(pki.ca_text)  # beside the test file: slo(tls_ca="ca.pem") finds it
    pytester.makepyfile(test_release=TEST.format(app=str(APP), trust=trust))
    before = listening()
    result = pytester.runpytest_subprocess("--rollout-report", "report.json", "--rollout-workers", "2", timeout=300)
    assert listening() - before == set(), "the run left something listening"
    (test,) = json.loads((pytester.path / "report.json").read_text())["tests"]
    return result, test


def test_a_good_release_over_https_passes_on_the_fast_engine_trusting_the_test_ca(pytester: pytest.Pytester) -> None:
    result, test = run(pytester, ', tls_ca="ca.pem"')
    assert result.ret == 0, result.stdout.str()[-4000:]
    assert test["result"] == "passed"
    assert test["engine"] == "fast"
    for phase in ("baseline", "upgrade", "after"):
        assert test["phases"][phase]["requests"] > 0 and test["phases"][phase]["errors"] == 0, test["phases"][phase]
    assert any(e["action"] == "out" for e in test["events"])  # v1's replicas were replaced under load


def test_a_good_release_over_https_passes_accepting_a_test_certificate_with_tls_verify_false(
    pytester: pytest.Pytester,
) -> None:
    """The README's other way to load a target with a throwaway certificate: ``slo(tls_verify=False)``."""
    result, test = run(pytester, ", tls_verify=False")
    assert result.ret == 0, result.stdout.str()[-4000:]
    assert test["result"] == "passed" and test["engine"] == "fast"
    for phase in ("baseline", "upgrade", "after"):
        assert test["phases"][phase]["requests"] > 0 and test["phases"][phase]["errors"] == 0, test["phases"][phase]


def test_a_test_certificate_the_marker_does_not_trust_is_a_usage_error_before_any_load(
    pytester: pytest.Pytester,
) -> None:
    result, test = run(pytester, "")
    # the test's own mistake (a usage error, like a bad argument): it fails as pytest would, exit 1, never broken
    assert result.ret == 1, result.stdout.str()[-4000:]
    assert test["result"] == "test_failed"  # the release is not at fault: the test's trust is
    assert test["workers"] == 0 and test["verdicts"] == []  # stopped before any worker started
    result.stdout.fnmatch_lines(
        ["*certificate verify failed*system's trusted CAs*slo(tls_ca=*ca.pem*slo(tls_verify=False)*"]
    )
