"""The fleet without pytest: hold an open-loop rate against a URL and summarise it (`pytest-rollout attack`),
and find the highest rate one worker holds within 1% (`pytest-rollout calibrate`).

Requests go only where the URL says; every run is bounded by its duration."""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytest_rollout.errors import RolloutError, RolloutUsageError
from pytest_rollout.load.fleet import LocalFleet
from pytest_rollout.load.launch import PlanOptions, Rate, start_plan
from pytest_rollout.load.mix import Request, check_requests, compile_routes
from pytest_rollout.load.protocol import Aim
from pytest_rollout.load.replies import PhaseTotals
from pytest_rollout.numeric import number_or_none
from pytest_rollout.procs import ProcessSet, proc_cpu_seconds

__all__ = ["PHASE", "attack", "capacity", "held_within", "highest_rate"]

PHASE = "attack"


def attack(
    url: str,
    rps: float,
    duration_s: float,
    *,
    workers: int = 1,
    engine: str = "auto",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout_s: float = 5.0,
    ramp_s: float = 0.0,
    max_inflight: int | None = None,
    resend_reused: bool = True,
    traffic: Sequence[Request] = (),
    seed: int = 0,
    tls_verify: bool = True,
    tls_ca_pem: str | None = None,
) -> dict[str, Any]:
    """Run the fleet against *url* and return the summary ``--json`` prints.

    *traffic*: a mix of requests to send instead of one *method* to *url* (its path then only names the origin);
    the summary then has ``routes``, each route's requests and errors. *tls_ca_pem* (PEM text) / *tls_verify*:
    what an ``https://`` *url*'s certificate is checked against (curl's ``--cacert`` / ``--insecure``)."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    mix = tuple(traffic) or (Request(method.upper(), target, headers=dict(headers or {}), body=body),)
    try:
        compiled = compile_routes(check_requests(mix))
        routes = compiled.routes
    except ValueError as exc:
        raise RolloutUsageError(f"traffic: {exc}" if traffic else f"the request: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="pytest-rollout-attack-") as tmp:
        procs = ProcessSet(Path(tmp))
        try:
            aim = Aim.of(url, compiled)
        except ValueError as exc:
            raise RolloutUsageError(f"--url: {exc}") from None
        fleet = LocalFleet(procs, "attack", workers, aim)
        self_before = _self_cpu()
        try:
            spawned = time.monotonic()
            fleet.start()
            start_s = time.monotonic() - spawned
            options = PlanOptions(
                routes=routes,
                seed=seed,
                timeout_s=timeout_s,
                max_inflight=max_inflight,
                engine=engine,
                resend_reused=resend_reused,
                tls_verify=tls_verify,
                tls_ca_pem=tls_ca_pem,
            )
            # the plans go out all at once; the lead leaves a big fleet time to get them before the first request
            rate = Rate(rps, ramp_s + duration_s, ramp_s, ((PHASE, ramp_s),))
            launched = start_plan(fleet, url, rate, options, lead_s=0.3 + 0.01 * workers)
            cpu_before = [proc_cpu_seconds(p.pid) for p, _ in fleet.workers]
            while time.time() < launched.end_at:
                dead = fleet.dead_processes()
                if dead:
                    raise RolloutError(f"load worker {dead[0].describe()} died:\n{dead[0].log_tail()}")
                time.sleep(min(0.2, max(0.0, launched.end_at - time.time())))
            cpu_after = [proc_cpu_seconds(p.pid) for p, _ in fleet.workers]
            # each worker ends its schedule at the deadline by itself: wait for that (bounded) before the stop, so
            # that a worker still behind at the end counts every request due, sent or dropped, not a stopped few
            fleet.drain(settle_s=timeout_s + 2.0)
            fleet.stop_load()
            fleet.drain(settle_s=timeout_s + 2.0)
            totals = fleet.totals()
            controller_cpu = _self_cpu() - self_before
        finally:
            fleet.shutdown()
            procs.stop_all()
    phase = totals.merged(PHASE)
    if phase is None:
        raise RolloutError(f"a load worker counted nothing for phase {PHASE!r}")
    hist = phase.latency()
    by_class = phase.by_class
    requests = phase.requests
    held = requests - by_class.dropped  # the late were not sent: they are counted dropped too
    cpu = sum(a - b for a, b in zip(cpu_after, cpu_before, strict=False))

    def ms(q: float) -> float | None:
        value = number_or_none(hist.quantile(q))
        return None if value is None else round(value * 1000.0, 3)

    return {
        "url": url,
        "engine": ",".join(sorted(set(launched.engines))),
        "workers": workers,
        "duration_s": duration_s,
        "requested_rps": rps,
        "held_rps": round(held / duration_s, 1),
        "requests": requests,
        "ok": by_class.ok,
        "errors": {k: v for k, v in by_class.items() if k != "ok"},
        "late": phase.late,
        "resent": phase.resent,
        **({"routes": _per_route(totals.routes(PHASE))} if len(routes) > 1 else {}),
        "max_lag_ms": round(totals.max_lag_s * 1000.0, 3),
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999)},
        "worker_cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu / requests * 1e6, 2) if requests else None,
        # the controller: spawn to every worker ready, plans handed out (all at once), its own CPU for the run
        "fleet_start_s": round(start_s, 3),
        "plan_s": round(launched.plan_s, 4),
        "controller_cpu_s": round(controller_cpu, 3),
    }


def _per_route(routes: dict[str, PhaseTotals] | None) -> dict[str, dict[str, Any]]:
    return {
        name: {"requests": p.requests, "ok": p.by_class.ok, "errors": p.errors, "dropped": p.by_class.dropped}
        for name, p in (routes or {}).items()
    }


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def held_within(summary: dict[str, Any], tolerance: float = 0.01) -> bool:
    """True when an attack held its asked rate within *tolerance*, with no errors."""
    return bool(summary["held_rps"] >= summary["requested_rps"] * (1 - tolerance)) and not any(
        summary["errors"].values()
    )


def capacity(
    url: str,
    engine: str,
    trial_s: float,
    confirm_s: float,
    *,
    workers: int = 1,
    start_rps: float = 1000.0,
    tolerance: float = 0.01,
) -> dict[str, Any]:
    """The highest rate *workers* workers hold within *tolerance* on this machine (see :func:`highest_rate`)."""

    def trial(rps: float, seconds: float) -> dict[str, Any]:
        return attack(url, rps, seconds, engine=engine, workers=workers)

    found = highest_rate(trial, start_rps * workers, trial_s, confirm_s, tolerance=tolerance)
    return {"engine": found["runs"][-1]["engine"], **found}


def highest_rate(
    trial: Callable[[float, float], dict[str, Any]],
    start_rps: float,
    trial_s: float,
    confirm_s: float,
    *,
    tolerance: float = 0.01,
    ceiling_rps: float = 10_000_000.0,
) -> dict[str, Any]:
    """The highest rate at which ``trial(rps, seconds)`` holds within *tolerance* (:func:`held_within`).

    Any generator can be searched this way (the benchmark searches its peers with it): doubling from
    *start_rps*, then four bisection steps with *trial_s* runs; then the rate found must hold for a
    *confirm_s* run too, stepping down until it does: 10% at a time, then 30% (on a noisy machine a single
    lucky short trial overstates capacity, and a long run can hold much less than a short one). A short trial
    that fails while the rate is still doubling is run once more before the rate counts as too high: on a
    shared machine one stall of another process's making fails a trial (a single request sent over 50 ms
    late does), and without the second try a search stopped at a tenth of the capacity. Bisection trials
    are run once: retried, they let lucky short trials carry the search past what a long run holds.
    """
    low, high = 0.0, start_rps
    runs: list[dict[str, Any]] = []

    def holds(rps: float, seconds: float, tries: int) -> bool:
        for _ in range(tries):
            summary = trial(rps, seconds)
            runs.append(summary)
            if held_within(summary, tolerance):
                return True
        return False

    while high <= ceiling_rps and holds(high, trial_s, 2):
        low, high = high, high * 2
    for _ in range(4):
        mid = (low + high) / 2
        low, high = (mid, high) if holds(mid, trial_s, 1) else (low, mid)
    for step in range(8):
        if low <= 0:
            break
        if holds(low, confirm_s, 1):
            break
        low *= 0.9 if step < 4 else 0.7
    else:
        low = 0.0
    return {"held_rps": round(low), "runs": runs}
