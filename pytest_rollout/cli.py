"""``pytest-rollout``: the fleet without pytest.

``pytest-rollout attack --url URL --rps N --duration 10s [--workers W] [--json]``
holds an open-loop rate against URL and prints totals, the rate held, errors
by class and latency quantiles (``--json``: one JSON object).

``pytest-rollout calibrate --url URL`` finds the highest rate one worker
holds within 1% on this machine (confirmed by a longer run) and records it; the plugin then sizes fleets
from that measurement (see :func:`measured_worker_rps`).

``pytest-rollout oc rps=1000 error_rate=0.001 p99_ms=50 hold=20s`` prints the
gate's operating characteristic for a marker's arguments: how often a release
at 0.5, 0.8, 1, 1.5 and 2 times its bounds fails a run, and how soon, by
simulating the exact rules a run uses (:mod:`pytest_rollout.judge.oc`).

Requests go only where ``--url`` says; every run is bounded by ``--duration``.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from typing import Any
from urllib.parse import urlsplit

from pytest_rollout.errors import RolloutError, RolloutUsageError
from pytest_rollout.load.attack import attack, capacity
from pytest_rollout.load.calibration import CALIBRATION_SHARE, record_calibration
from pytest_rollout.slo import parse_duration

__all__ = ["main"]


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


def _cacert(args: argparse.Namespace) -> str | None:
    """The text of --cacert (PEM), checked as the workers will load it; None without it."""
    if args.cacert is None:
        return None
    if args.insecure:
        raise SystemExit("pytest-rollout: --cacert and --insecure contradict each other: give one")
    try:
        with open(args.cacert, encoding="ascii") as fh:
            pem = fh.read()
        ssl.create_default_context(cadata=pem)
    except (ValueError, ssl.SSLError) as exc:  # first: an SSLError is an OSError
        raise SystemExit(f"pytest-rollout: --cacert {args.cacert}: not PEM certificates ({exc})") from None
    except OSError as exc:
        raise SystemExit(f"pytest-rollout: --cacert {args.cacert}: cannot read it: {exc.strerror}") from None
    return pem


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
    print(f"requests {s['requests']:,}  ok {s['ok']:,}  late {s['late']:,}  resent {s['resent']:,}  errors: {errors}")
    print(f"latency ms  p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  p99.9 {lat['p999']}")
    print(f"worker CPU {s['worker_cpu_s']:.2f}s, {s['cpu_us_per_request']} us per request")


def _marker(pairs: list[str]) -> dict[str, Any]:
    """``["rps=1000", "hold=20s"]`` as marker keyword arguments (Python literals, else strings)."""
    import ast

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SystemExit(f"pytest-rollout oc: {pair!r}: expected KEY=VALUE, e.g. p99_ms=50")
        try:
            out[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key.strip()] = raw
    return out


def _oc(args: argparse.Namespace) -> int:
    from pytest_rollout.judge.oc import operating_characteristic
    from pytest_rollout.judge.provable import risk_line
    from pytest_rollout.judge.risk import budget_for
    from pytest_rollout.slo import parse_slo

    if args.trials < 1:
        raise SystemExit("pytest-rollout oc: --trials must be >= 1")
    try:
        spec = parse_slo((), _marker(args.marker))
    except RolloutError as exc:
        raise SystemExit(f"pytest-rollout oc: {exc}") from None
    upgrade_s = _duration(args.upgrade, "--upgrade")
    rows = operating_characteristic(
        spec, trials=args.trials, seed=args.seed, upgrade_s=upgrade_s, compared=args.compare
    )
    budget = budget_for(spec, args.compare)
    if args.json:
        print(json.dumps({"risk": budget.to_json(), "rows": [r.to_json() for r in rows]}))
        return 0
    print(f"risk: {risk_line(spec, budget)}")
    print(
        f"simulated: {args.trials:,} runs per row at {spec.requested_rps:,.0f} rps, phases "
        f"{spec.hold_s:g}s / upgrade {upgrade_s:g}s / {spec.after_s:g}s, looked at once a second"
    )
    print("  bounds x  runs failed  stopped live  caught after (median)")
    for r in rows:
        caught = "-" if r.caught_after_s is None else f"{r.caught_after_s:g}s"
        print(f"  {r.multiple:8g}  {r.failed_share:11.2%}  {r.stopped_live:12,}  {caught:>21}")
    return 0


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
    att.add_argument(
        "--strict-client",
        action="store_true",
        help="never send a request twice (by default an idempotent request whose reused connection closed before "
        "any byte of the answer is sent once more on a new connection, as browsers and Go clients do)",
    )
    att.add_argument("--cacert", metavar="PATH", help="https: trust the CA certificate(s) in this PEM file")
    att.add_argument("--insecure", "-k", action="store_true", help="https: do not check the server's certificate")
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
    oc = sub.add_parser(
        "oc",
        help="simulate how often the gate fails a release at 0.5x to 2x its bounds, for a marker's arguments",
    )
    oc.add_argument(
        "marker", nargs="+", metavar="KEY=VALUE", help="the slo marker's arguments, e.g. rps=1000 p99_ms=50"
    )
    oc.add_argument("--upgrade", default="10s", help="how long the simulated upgrade phase lasts (default 10s)")
    oc.add_argument("--trials", type=int, default=2000, help="simulated runs per row (default 2000)")
    oc.add_argument("--seed", type=int, default=0)
    oc.add_argument("--compare", action="store_true", help="count a baseline comparison's claims in the budget")
    oc.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "oc":
        return _oc(args)
    if args.command == "rbac":
        import yaml

        from pytest_rollout.platforms.kubernetes.objects import check_name
        from pytest_rollout.platforms.kubernetes.rbac import RBAC_WHY, rbac_documents

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
                resend_reused=not args.strict_client, tls_verify=not args.insecure, tls_ca_pem=_cacert(args),
            )  # fmt: skip
            if args.json:
                print(json.dumps(summary))
            else:
                _print_summary(summary)
            return 0
        trial_s = _duration(args.seconds, "--seconds")
        result = capacity(args.url, args.engine, trial_s, 2 * trial_s, start_rps=args.start_rps)
        path = record_calibration(args.engine, result["held_rps"], args.url)
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
