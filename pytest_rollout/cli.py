"""``pytest-rollout``: the fleet without pytest.

``pytest-rollout attack --url URL --rps N --duration 10s [--workers W] [--json]``
holds an open-loop rate against URL and prints totals, the rate held, errors
by class and latency quantiles (``--json``: one JSON object).

``pytest-rollout calibrate --url URL`` finds the highest rate one worker
holds within 1% on this machine (confirmed by a longer run) and records it; the plugin then sizes fleets
from that measurement (see :func:`measured_worker_rps`).

Requests go only where ``--url`` says; every run is bounded by ``--duration``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .control import Aim, split_headers
from .errors import RolloutError, RolloutUsageError
from .fleet import LocalFleet
from .histogram import Histogram
from .procs import ProcessSet, proc_cpu_seconds
from .schedule import Segment
from .slo import parse_duration
from .worker import CLASSES, Plan, inflight_cap

__all__ = ["attack", "calibration_path", "capacity", "held_within", "main", "measured_worker_rps"]

PHASE = "attack"
#: Fraction of the calibrated capacity the plugin gives each worker.
CALIBRATION_SHARE = 0.7


def calibration_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-rollout" / "calibration.json"


def measured_worker_rps(engine: str = "fast") -> float | None:
    """The rate to give one worker, from ``pytest-rollout calibrate`` (None if never run here)."""
    try:
        data = json.loads(calibration_path().read_text())
        return float(data["engines"][engine]["held_rps"]) * CALIBRATION_SHARE
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
) -> dict[str, Any]:
    """Run the fleet against *url* and return the summary ``--json`` prints."""
    with tempfile.TemporaryDirectory(prefix="pytest-rollout-attack-") as tmp:
        procs = ProcessSet(Path(tmp))
        public, secret = split_headers(headers or {})
        try:
            aim = Aim.at(url, secret)
        except ValueError as exc:
            raise RolloutUsageError(f"--url: {exc}") from None
        fleet = LocalFleet(procs, "attack", workers, aim)
        try:
            fleet.start()
            start = time.time() + 0.3
            segments = [Segment(ramp_s, 0.0, rps)] if ramp_s > 0 else []
            segments.append(Segment(None, rps, rps))
            template = Plan(
                url=url,
                segments=(),
                start_at=start,
                deadline=start + ramp_s + duration_s,
                method=method,
                headers=public,
                body=body,
                timeout_s=timeout_s,
                max_inflight=max_inflight or inflight_cap(rps / workers),
                phases=(("ramp", start), (PHASE, start + ramp_s)) if ramp_s > 0 else ((PHASE, start),),
                engine=engine,
            )
            engines = fleet.begin(template, segments)
            cpu_before = [proc_cpu_seconds(p.pid) for p, _ in fleet.workers]
            end = start + ramp_s + duration_s
            while time.time() < end:
                dead = fleet.dead_processes()
                if dead:
                    raise RolloutError(f"load worker {dead[0].describe()} died:\n{dead[0].log_tail()}")
                time.sleep(min(0.2, max(0.0, end - time.time())))
            cpu_after = [proc_cpu_seconds(p.pid) for p, _ in fleet.workers]
            fleet.stop_load()
            fleet.drain(settle_s=timeout_s + 2.0)
            totals = fleet.totals()
        finally:
            fleet.shutdown()
            procs.stop_all()
    hist = Histogram()
    by_class = dict.fromkeys(CLASSES, 0)
    late = 0
    max_lag = 0.0
    for w in totals.workers:
        phase = w["phases"][PHASE]
        hist.merge(Histogram.from_list(phase["histogram"], phase["latency_sum_s"]))
        for k, v in phase["by_class"].items():
            by_class[k] += int(v)
        late += int(phase["late"])
        max_lag = max(max_lag, float(w["max_lag_s"]))
    requests = sum(by_class.values())
    held = requests - by_class["dropped"]  # the late were not sent: they are counted dropped too
    cpu = sum(a - b for a, b in zip(cpu_after, cpu_before, strict=False))

    def ms(q: float) -> float | None:
        value = hist.quantile(q)
        return None if math.isnan(value) else round(value * 1000.0, 3)

    return {
        "url": url,
        "engine": ",".join(sorted(set(engines))),
        "workers": workers,
        "duration_s": duration_s,
        "requested_rps": rps,
        "held_rps": round(held / duration_s, 1),
        "requests": requests,
        "ok": by_class["ok"],
        "errors": {k: v for k, v in by_class.items() if k != "ok"},
        "late": late,
        "max_lag_ms": round(max_lag * 1000.0, 3),
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999)},
        "worker_cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu / requests * 1e6, 2) if requests else None,
    }


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
    """The highest rate *workers* workers hold within *tolerance* on this machine.

    Doubling, then four bisection steps with *trial_s* runs; then the rate found
    must hold for a *confirm_s* run too, stepping down 10% at a time until it
    does (on a noisy machine a single lucky short trial overstates capacity).
    """
    low, high = 0.0, start_rps * workers
    runs = []
    while high <= 1_000_000 * workers:
        summary = attack(url, high, trial_s, engine=engine, workers=workers)
        runs.append(summary)
        if not held_within(summary, tolerance):
            break
        low, high = high, high * 2
    for _ in range(4):
        mid = (low + high) / 2
        summary = attack(url, mid, trial_s, engine=engine, workers=workers)
        runs.append(summary)
        low, high = (mid, high) if held_within(summary, tolerance) else (low, mid)
    for _ in range(8):
        if low <= 0:
            break
        summary = attack(url, low, confirm_s, engine=engine, workers=workers)
        runs.append(summary)
        if held_within(summary, tolerance):
            break
        low *= 0.9
    else:
        low = 0.0
    return {"engine": runs[-1]["engine"], "held_rps": round(low), "runs": runs}


def _headers(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition(":")
        if not sep or not key.strip():
            raise SystemExit(f"pytest-rollout: --header {value!r}: expected 'Name: value'")
        out[key.strip()] = val.strip()
    return out


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SystemExit(f"pytest-rollout: --url {url!r}: expected an http(s) URL such as http://127.0.0.1:8080/")
    return url


def _duration(text: str, name: str) -> float:
    try:
        return parse_duration(text, name)
    except RolloutError as exc:
        raise SystemExit(f"pytest-rollout: {exc}") from None


def _print_summary(s: dict[str, Any]) -> None:
    lat = s["latency_ms"]
    errors = ", ".join(f"{k}={v}" for k, v in s["errors"].items() if v) or "none"
    print(f"engine {s['engine']}, {s['workers']} worker(s), {s['duration_s']:g}s against {s['url']}")
    print(f"asked {s['requested_rps']:,.0f} rps, held {s['held_rps']:,.0f} rps")
    print(f"requests {s['requests']:,}  ok {s['ok']:,}  late {s['late']:,}  errors: {errors}")
    print(f"latency ms  p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  p99.9 {lat['p999']}")
    print(f"worker CPU {s['worker_cpu_s']:.2f}s, {s['cpu_us_per_request']} us per request")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pytest-rollout", description="The pytest-rollout load fleet, standalone.")
    sub = parser.add_subparsers(dest="command", required=True)
    att = sub.add_parser("attack", help="hold an open-loop rate against a URL and report")
    att.add_argument("--url", required=True, type=_check_url)
    att.add_argument("--rps", required=True, type=float)
    att.add_argument("--duration", default="10s", help="how long to hold the rate (default 10s)")
    att.add_argument("--ramp", default="0s", help="climb from 0 over this long first (default 0s)")
    att.add_argument("--workers", type=int, default=1)
    att.add_argument("--engine", choices=["auto", "fast", "aiohttp"], default="auto")
    att.add_argument("--method", default="GET")
    att.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    att.add_argument("--body", default=None)
    att.add_argument("--timeout", default="5s")
    att.add_argument("--json", action="store_true", help="print one JSON object")
    cal = sub.add_parser("calibrate", help="measure what one worker holds on this machine, and record it")
    cal.add_argument("--url", required=True, type=_check_url)
    cal.add_argument("--engine", choices=["fast", "aiohttp"], default="fast")
    cal.add_argument(
        "--seconds",
        default="5s",
        help="length of each trial run; the result is confirmed by a run twice as long (default 5s)",
    )
    cal.add_argument("--start-rps", type=float, default=1000.0)
    cal.add_argument("--json", action="store_true")
    rbac = sub.add_parser(
        "rbac",
        help="print the RBAC the kubernetes platform needs, bound to a ServiceAccount, as YAML for kubectl apply",
    )
    rbac.add_argument(
        "--namespace",
        help="the existing namespace runs use (--rollout-namespace): print a Role for it; without, print the "
        "ClusterRole for per-run namespaces",
    )
    rbac.add_argument(
        "--service-account",
        default="pytest-rollout",
        metavar="NAME",
        help="ServiceAccount to bind (default pytest-rollout)",
    )
    rbac.add_argument(
        "--service-account-namespace", metavar="NS", help="its namespace (default: --namespace, else 'default')"
    )
    args = parser.parse_args(argv)
    if args.command == "rbac":
        import yaml

        from .kube_objects import RBAC_WHY, check_name, rbac_documents

        try:
            for name, value in (
                ("--namespace", args.namespace),
                ("--service-account-namespace", args.service_account_namespace),
            ):
                if value is not None:
                    check_name(value, name)
        except RolloutUsageError as exc:
            print(f"pytest-rollout: {exc}", file=sys.stderr)
            return 2
        subject_ns = args.service_account_namespace or args.namespace or "default"
        docs = rbac_documents(subject_ns, args.service_account, args.namespace)
        print("# What pytest-rollout may do, and why:")
        for what, why in RBAC_WHY:
            print(f"#   {what}: {why}")
        print(yaml.safe_dump_all(docs, sort_keys=False), end="")
        return 0

    try:
        if args.command == "attack":
            if args.rps <= 0 or args.workers < 1:
                raise SystemExit("pytest-rollout: --rps must be > 0 and --workers >= 1")
            summary = attack(
                args.url, args.rps, _duration(args.duration, "--duration"), workers=args.workers,
                engine=args.engine, method=args.method.upper(), headers=_headers(args.header),
                body=args.body.encode() if args.body is not None else None,
                timeout_s=_duration(args.timeout, "--timeout"), ramp_s=_duration(args.ramp, "--ramp"),
            )  # fmt: skip
            if args.json:
                print(json.dumps(summary))
            else:
                _print_summary(summary)
            return 0
        trial_s = _duration(args.seconds, "--seconds")
        result = capacity(args.url, args.engine, trial_s, 2 * trial_s, start_rps=args.start_rps)
        path = calibration_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError):
            recorded = {}
        recorded.setdefault("engines", {})[args.engine] = {
            "held_rps": result["held_rps"],
            "at": time.time(),
            "url": args.url,
        }
        path.write_text(json.dumps(recorded, indent=2))
        if args.json:
            print(json.dumps(result))
        else:
            print(
                f"one {result['engine']} worker holds {result['held_rps']:,} rps within 1% here; "
                f"recorded in {path} (fleets give each worker {CALIBRATION_SHARE:.0%} of it)"
            )
        return 0
    except RolloutError as exc:
        print(f"pytest-rollout: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
