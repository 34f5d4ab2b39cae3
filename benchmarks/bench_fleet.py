"""Benchmark: one fleet worker against wrk, on the same nginx, in the same run.

    ROLLOUT_SETUP_BENCH=1 scripts/setup && python3 benchmarks/bench_fleet.py [--seconds 10] [--json out.json]

nginx (one worker process, a 3-byte body) runs pinned to core 0; wrk and the
fleet run pinned to the other cores, one at a time. For each engine the
benchmark finds the highest rate one worker holds within 1% (no errors, at
most 1% of requests late or dropped), then measures CPU microseconds per
request for each engine at a common rate and for wrk at full speed, and prints
the ratio to wrk. The rate found in short trials must then hold for a full-length run. It also
measures how held rate scales from 1 to N workers
(N = cores - 1) and what the controller costs per worker. Everything it
starts listens on 127.0.0.1 and is stopped at the end. Timings on a shared
machine are noisy: compare the ratios, and rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_rollout.load.attack import attack, capacity
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured run (default 10)")
    parser.add_argument("--search-seconds", type=float, default=5.0, help="length of each capacity trial (default 5)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    server_core = cores[0] if len(cores) > 1 else None
    client_cores = set(cores[1:]) if len(cores) > 1 else set(cores)
    results: dict[str, Any] = {"machine": {"cores": len(cores), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory(prefix="pytest-rollout-bench-") as tmpdir:
        nginx, url = start_nginx(Path(tmpdir), server_core)
        try:
            os.sched_setaffinity(0, client_cores)  # workers and wrk inherit it
            results["wrk"] = run_wrk(url, args.seconds)
            engines: dict[str, Any] = {}
            for engine in ("fast", "aiohttp"):
                found = capacity(url, engine, args.search_seconds, args.seconds, start_rps=2000.0)
                held, runs = found["held_rps"], found["runs"]
                engines[engine] = {
                    "held_rps_within_1pct": held,
                    "trials": [(r["requested_rps"], r["held_rps"]) for r in runs],
                }
            common = min(e["held_rps_within_1pct"] for e in engines.values())
            for engine, data in engines.items():
                s = attack(url, common, args.seconds, engine=engine)
                data["at_common_rate"] = {
                    k: s[k] for k in ("requested_rps", "held_rps", "cpu_us_per_request", "latency_ms")
                }
                data["ratio_cpu_per_request_to_wrk"] = s["cpu_us_per_request"] / results["wrk"]["cpu_us_per_request"]
            results["engines"] = engines
            scaling = []
            for workers in range(1, len(client_cores) + 1):
                rate = engines["fast"]["held_rps_within_1pct"] * 0.8 * workers
                self_before = resource.getrusage(resource.RUSAGE_SELF)
                s = attack(url, rate, args.seconds, engine="fast", workers=workers)
                self_after = resource.getrusage(resource.RUSAGE_SELF)
                controller = (self_after.ru_utime - self_before.ru_utime) + (self_after.ru_stime - self_before.ru_stime)
                scaling.append(
                    {
                        "workers": workers,
                        "requested_rps": rate,
                        "held_rps": s["held_rps"],
                        "controller_cpu_ms_per_worker_second": controller / workers / args.seconds * 1000,
                    }
                )
            results["scaling"] = scaling
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)

    wrk = results["wrk"]
    print(f"machine: {len(cores)} cores; nginx on core {server_core}, generators on {sorted(client_cores)}")
    print(f"{'generator':<22}{'held rps (1 core)':>20}{'CPU us/request':>16}{'ratio to wrk':>14}")
    print(f"{'wrk (C, closed loop)':<22}{wrk['rps']:>20,.0f}{wrk['cpu_us_per_request']:>16.2f}{1.0:>14.2f}")
    for engine, data in results["engines"].items():
        print(
            f"{'worker, ' + engine:<22}{data['held_rps_within_1pct']:>20,.0f}"
            f"{data['at_common_rate']['cpu_us_per_request']:>16.2f}{data['ratio_cpu_per_request_to_wrk']:>14.2f}"
        )
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
