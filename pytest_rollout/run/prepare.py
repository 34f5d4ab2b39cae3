"""Before any load: the checks Prometheus must parse, what each phase can prove, and how big the fleet is.

Each is said before the first request, so a run that can never prove its
SLOs, or a machine that cannot hold its fleet, says so up front.
"""

from __future__ import annotations

import time

from pytest_rollout.errors import PrometheusError, RolloutUsageError
from pytest_rollout.judge.prometheus import PrometheusAPI
from pytest_rollout.judge.provable import provable, risk_line
from pytest_rollout.judge.risk import RiskBudget
from pytest_rollout.load.fleet import workers_for
from pytest_rollout.load.protocol import Plan
from pytest_rollout.platforms.base import Platform
from pytest_rollout.slo import SLOSpec

__all__ = [
    "AIOHTTP_WORKER_RPS",
    "TLS_WORKER_SHARE",
    "check_trust",
    "fleet_size",
    "headroom_warning",
    "provable_lines",
    "validate_checks",
]

#: Rate one worker is given when the aiohttp engine runs (only where the user asks for engine=aiohttp) and
#: --rollout-worker-rps is not set: it holds 3,000 to 7,000 rps on one core where the fast engine holds 20,000 to
#: 30,000 (README, "Measured").
AIOHTTP_WORKER_RPS = 1000.0

#: The share of its plain HTTP rate one fast-engine worker holds over TLS, unless --rollout-worker-rps says what a
#: worker holds: measured 16,000 rps over HTTPS against 87,000 over HTTP on one core (bench_fleet, same run), about
#: a fifth; the calibration and the default are plain HTTP's.
TLS_WORKER_SHARE = 0.2


def validate_checks(client: PrometheusAPI, spec: SLOSpec, run_id: str) -> None:
    """Let Prometheus parse every user check before any load starts."""
    for check in spec.checks:
        expr = check.render(run_id, "baseline", "1s")
        try:
            client.query(expr, time.time())
        except PrometheusError as exc:
            raise RolloutUsageError(
                f"slo check {check.name!r}: {exc}. Fix the expression in @pytest.mark.slo(checks=...)"
            ) from None


def provable_lines(spec: SLOSpec, budget: RiskBudget) -> list[tuple[str, bool]]:
    """``(line, ok)``: the run's risk, then each phase's best proof; ``ok`` False when an SLO can never be held."""
    lengths = {"ramp": spec.ramp_s, "baseline": spec.hold_s, "upgrade": 0.0, "after": spec.after_s}
    if spec.ramp_s <= 0:
        del lengths["ramp"]
    lines = [(f"[rollout] risk: {risk_line(spec, budget)}", True)]
    return lines + [(f"[rollout] {phase}: {text}", ok) for phase, text, ok in provable(spec, lengths)]


def fleet_size(
    platform: Platform, spec: SLOSpec, workers: int | None, worker_rps: float, worker_rps_given: bool
) -> int:
    """*workers* when set, else enough workers for the requested rate, sized for the engine that will run."""
    if workers:
        return workers
    from pytest_rollout.load.engine import fast_engine_refusal
    from pytest_rollout.load.mix import Route

    routes = tuple(Route.of(r.method.upper(), r.path) for r in spec.routes) or (Route.of(spec.method, spec.path),)
    probe = Plan(url=platform.url + routes[0].target, segments=(), start_at=0.0, deadline=0.0, routes=routes)
    if not worker_rps_given and fast_engine_refusal(probe) is not None:
        worker_rps = min(worker_rps, AIOHTTP_WORKER_RPS)  # the calibration and default are the fast engine's
    elif not worker_rps_given and probe.url.startswith("https://"):
        worker_rps *= TLS_WORKER_SHARE  # the calibration and the default are plain HTTP's
    return workers_for(spec.requested_rps, worker_rps)


def check_trust(url: str, spec: SLOSpec, timeout_s: float = 2.0) -> None:
    """Before any load on an ``https://`` *url*: one TLS handshake with the fleet's trust (the marker's tls_ca /
    tls_verify). A certificate that trust refuses is the test's mistake, not the release's: RolloutUsageError
    saying what to pass, rather than a run whose every request is a connection error. Anything else (a url this
    machine cannot reach, as a cluster's service may be) is left to the fleet."""
    if not url.startswith("https://"):
        return
    import socket
    import ssl
    from urllib.parse import urlsplit

    from pytest_rollout.load.tls import client_context

    plan = Plan(
        url=url, segments=(), start_at=0.0, deadline=0.0, tls_verify=spec.tls_verify, tls_ca_pem=spec.tls_ca_pem
    )
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            client_context(plan).wrap_socket(sock, server_hostname=host).close()
    except ssl.SSLCertVerificationError as exc:
        trusted = f"the CA in tls_ca={spec.tls_ca!r}" if spec.tls_ca_pem else "the system's trusted CAs"
        raise RolloutUsageError(
            f"{url}: certificate verify failed ({exc.verify_message or exc}; checked against {trusted}): the fleet "
            'would refuse every connection. Trust its CA with slo(tls_ca="ca.pem"), or accept a test certificate '
            "with slo(tls_verify=False)"
        ) from None
    except (OSError, ValueError):
        return


def headroom_warning(platform: Platform, spec: SLOSpec, workers: int) -> str | None:
    """A warning when this machine cannot give the fleet a core per worker (None when it can, or on a cluster)."""
    cores = platform.fleet_cpus
    if not cores or workers <= len(cores):
        return None  # a cluster schedules its pods; an unpinned machine is the user's to size
    return (
        f"[rollout] warning: {workers} load workers for {spec.requested_rps:,.0f} rps, but this machine "
        f"sets {len(cores)} CPU(s) aside for the fleet: the workers share the machine with the target and "
        "may fall behind, which leaves phases not proven. Lower --rollout-rps-scale, or run on a machine "
        "with more cores."
    )
