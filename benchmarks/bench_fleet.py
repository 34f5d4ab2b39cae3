"""Benchmark: the fleet's engines against their peers, on the same nginx, in the same run.

    ROLLOUT_SETUP_BENCH=1 scripts/setup && python3 benchmarks/bench_fleet.py [--seconds 10] [--repeat 3] [--json out.json]

nginx (one worker process, a 3-byte body) runs pinned to core 0; every
generator runs pinned to the other cores, one at a time:

- our worker, ``fast`` and ``aiohttp`` engines (open loop, Python);
- vegeta (open loop, Go), built from the Go module proxy by scripts/setup where Go exists;
- wrk (closed loop, C): no rate to hold, so only its full speed and CPU per request, the floor to compare with.

k6 is not run: it is under the AGPL, which this project does not build or ship; the line says so.

For each open-loop generator the benchmark finds the highest rate it holds within 1%
(:func:`~pytest_rollout.load.attack.highest_rate`: doubling, bisection, then a full-length run must
confirm it), then measures CPU microseconds per request at a common rate (the lowest of those highest
rates) and at its own highest rate. "Held" means every request answered 200 and at least 99% of the
schedule sent; our workers must also send each request within 50 ms of its due time (vegeta has no such
rule: it sends late rather than not at all). Each figure is the median of ``--repeat`` runs (3).
It also measures the fleet from 1 to N workers (N = cores - 1) and what the controller costs.
Everything it starts listens on 127.0.0.1 and is stopped at the end. Timings on a shared machine are
noisy: compare the ratios, and rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_rollout.load.attack import attack, highest_rate
from pytest_rollout.load.protocol import inflight_cap
from pytest_rollout.procs import free_port, http_get

NGINX_CONF = """
worker_processes 1;
{affinity}
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}
}}
"""


def start_nginx(tmp: Path, server_core: int | None) -> tuple[subprocess.Popen[bytes], str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise SystemExit("nginx not found: ROLLOUT_SETUP_BENCH=1 scripts/setup installs it")
    port = free_port()
    affinity = f"worker_cpu_affinity {1 << server_core:b};" if server_core is not None else ""
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp, port=port, affinity=affinity))
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            if http_get("127.0.0.1", port, "/")[0] == 200:
                return proc, f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"nginx did not start: {(tmp / 'error.log').read_text()}")


def run_wrk(url: str, seconds: float, connections: int = 64) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: ROLLOUT_SETUP_BENCH=1 scripts/setup installs it")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{int(seconds)}s", url], capture_output=True, text=True, check=True
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "requests": requests, "cpu_s": cpu, "cpu_us_per_request": cpu / requests * 1e6}


VEGETA_VERSION = "v12.13.0"


def find_vegeta() -> str | None:
    """vegeta on PATH, or where scripts/setup builds it (``~/.cache/pytest-rollout/bin``)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pytest-rollout" / "bin" / "vegeta"
    return shutil.which("vegeta") or (str(cache) if cache.exists() else None)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_vegeta(vegeta: str, url: str, rps: float, seconds: float) -> dict[str, Any]:
    """One open-loop vegeta attack; a summary shaped like ``attack``'s, so the same search applies."""
    cap = inflight_cap(rps)
    with tempfile.TemporaryDirectory(prefix="pytest-rollout-vegeta-") as tmp:
        results = Path(tmp) / "results.bin"
        before = _children_cpu()
        subprocess.run(
            [vegeta, "attack", f"-rate={rps:.0f}/1s", f"-duration={seconds:g}s", "-timeout=5s", f"-output={results}",
             # the same cap on requests in flight (and so connections) as our worker's: uncapped, vegeta opens
             # connection after connection once it falls behind, until nginx refuses them and nearly all fail
             f"-max-workers={cap}", f"-max-connections={cap}"],
            input=f"GET {url}\n".encode(), check=True, capture_output=True, timeout=seconds + 60,
        )  # fmt: skip
        cpu = _children_cpu() - before
        report = json.loads(
            subprocess.run(
                [vegeta, "report", "-type=json", str(results)], check=True, capture_output=True, timeout=60
            ).stdout
        )
    requests = int(report["requests"])
    ok = int(report.get("status_codes", {}).get("200", 0))
    scheduled = round(rps * seconds)
    return {
        "engine": "vegeta",
        "requested_rps": rps,
        "held_rps": ok / seconds,
        "requests": requests,
        # vegeta may end a few requests short of its schedule; held_rps counts only answers, so the shortfall
        # counts against its 1% like our late requests do, but is not an error (ours: any late one fails it)
        "errors": {"failed": requests - ok},
        "short": max(0, scheduled - requests),
        "cpu_us_per_request": cpu / requests * 1e6 if requests else None,
        "latency_ms": {"p50": report["latencies"]["50th"] / 1e6, "p99": report["latencies"]["99th"] / 1e6},
    }


def median_of(repeat: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    values = [measure() for _ in range(repeat)]
    return statistics.median(values), values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured run (default 10)")
    parser.add_argument("--search-seconds", type=float, default=5.0, help="length of each capacity trial (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is shown (default 3)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    server_core = cores[0] if len(cores) > 1 else None
    client_cores = set(cores[1:]) if len(cores) > 1 else set(cores)
    results: dict[str, Any] = {"machine": {"cores": len(cores), "python": sys.version.split()[0]}}
    vegeta = find_vegeta()
    with tempfile.TemporaryDirectory(prefix="pytest-rollout-bench-") as tmpdir:
        nginx, url = start_nginx(Path(tmpdir), server_core)
        try:
            os.sched_setaffinity(0, client_cores)  # workers and peers inherit it
            wrk_runs = [run_wrk(url, args.seconds) for _ in range(args.repeat)]
            results["wrk"] = {
                "rps": statistics.median(r["rps"] for r in wrk_runs),
                "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in wrk_runs),
                "runs": wrk_runs,
            }
            trials: dict[str, Callable[[float, float], dict[str, Any]]] = {
                "fast": lambda rps, s: attack(url, rps, s, engine="fast"),
                "aiohttp": lambda rps, s: attack(url, rps, s, engine="aiohttp"),
            }
            if vegeta is not None:
                trials["vegeta"] = lambda rps, s: run_vegeta(vegeta, url, rps, s)  # type: ignore[arg-type]
            generators: dict[str, Any] = {}
            for name, trial in trials.items():
                searches = [highest_rate(trial, 2000.0, args.search_seconds, args.seconds) for _ in range(args.repeat)]
                generators[name] = {
                    "held_rps_within_1pct": statistics.median(f["held_rps"] for f in searches),
                    "searches": [[(r["requested_rps"], r["held_rps"]) for r in f["runs"]] for f in searches],
                }
            common = min(g["held_rps_within_1pct"] for g in generators.values())
            results["common_rps"] = common
            for name, data in generators.items():
                trial = trials[name]
                at_common = [trial(common, args.seconds) for _ in range(args.repeat)]
                at_own = [trial(data["held_rps_within_1pct"], args.seconds) for _ in range(args.repeat)]
                data["cpu_us_at_common"] = statistics.median(r["cpu_us_per_request"] for r in at_common)
                data["cpu_us_at_own_highest"] = statistics.median(r["cpu_us_per_request"] for r in at_own)
                data["held_at_own_highest"] = [round(r["held_rps"]) for r in at_own]
            ours = generators["fast"]
            for data in generators.values():
                data["cpu_ratio_to_fast"] = data["cpu_us_at_common"] / ours["cpu_us_at_common"]
                data["rate_ratio_to_fast"] = data["held_rps_within_1pct"] / ours["held_rps_within_1pct"]
            results["generators"] = generators
            results["skipped"] = {
                "k6": "not built or run: it is under the AGPL, which this project does not build or ship",
                **({} if vegeta else {"vegeta": "not found: ROLLOUT_SETUP_BENCH=1 scripts/setup builds it (needs Go)"}),
            }
            scaling = []
            for workers in range(1, len(client_cores) + 1):
                rate = ours["held_rps_within_1pct"] * 0.8 * workers
                s = attack(url, rate, args.seconds, engine="fast", workers=workers)
                scaling.append(
                    {
                        "workers": workers,
                        "requested_rps": rate,
                        "held_rps": s["held_rps"],
                        "controller_cpu_ms_per_worker_second": s["controller_cpu_s"] / workers / args.seconds * 1000,
                    }
                )
            results["scaling"] = scaling
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)

    print(f"machine: {len(cores)} cores; nginx on core {server_core}, generators on {sorted(client_cores)}")
    print(f"medians of {args.repeat} runs; common rate {common:,.0f} rps")
    print(
        f"{'generator':<24}{'held rps (1 core)':>18}{'us/req common':>15}{'us/req own max':>16}"
        f"{'CPU vs fast':>13}{'rate vs fast':>14}"
    )
    wrk = results["wrk"]
    print(f"{'wrk (C, closed loop)':<24}{wrk['rps']:>18,.0f}{'':>15}{wrk['cpu_us_per_request']:>16.2f}")
    labels = {"fast": "worker, fast", "aiohttp": "worker, aiohttp", "vegeta": "vegeta (Go, open loop)"}
    for name, data in generators.items():
        print(
            f"{labels[name]:<24}{data['held_rps_within_1pct']:>18,.0f}{data['cpu_us_at_common']:>15.2f}"
            f"{data['cpu_us_at_own_highest']:>16.2f}{data['cpu_ratio_to_fast']:>13.2f}{data['rate_ratio_to_fast']:>14.2f}"
        )
    for name, why in results["skipped"].items():
        print(f"{name}: {why}")
    for row in results["scaling"]:
        print(
            f"{row['workers']} worker(s): asked {row['requested_rps']:,.0f} rps, held {row['held_rps']:,.0f}; "
            f"controller {row['controller_cpu_ms_per_worker_second']:.2f} ms CPU per worker-second"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
