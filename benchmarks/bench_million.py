"""Benchmark: a fleet the size a million needs, on this machine, scraped by a real Prometheus.

    ROLLOUT_SETUP_BENCH=1 scripts/setup && python3 benchmarks/bench_million.py [--workers 64] [--rps 6400]
        [--seconds 10] [--repeat 3] [--json out.json]
    sudo scripts/cluster up && python3 benchmarks/bench_million.py --kubeconfig FILE --rps 1600 [--worker-cpu 30m]

A million requests a second at about 16,000 per worker pod is 64 workers. This
starts 64 local workers at once against nginx (pinned to core 0, as in
bench_fleet.py), with a real Prometheus scraping every one of them (file_sd,
1 s), and holds ``--rps`` for ``--seconds``. As a rollout does, the plan carries
the first phase edge and two more edges are announced during the run, each
ahead of its time. Each run measures:

- start: spawn to every worker ready (they start at once), and plans handed out (all at once);
- held: requests sent on time, and whether the merged totals equal the schedule exactly;
- the controller's own CPU per worker-second, and the workers' CPU per request;
- clock skew (each worker's clock against the controller's) and phase-edge lateness;
- Prometheus: series per worker and resident memory per series.

With ``--kubeconfig`` the fleet is worker pods on that cluster instead (the
single-node cluster of ``scripts/cluster``, with its images loaded): the
target is examples/kind/app-v1.yaml (two replicas, no simulated work), plans and
phase edges travel through the API server's pod proxy, and the cluster's
Prometheus finds the pods by their annotations. Each pod asks for
``--worker-cpu`` (64 pods of the default one core do not fit a small node);
the workers' CPU and Prometheus' memory are not measured there.

Figures are medians of ``--repeat`` runs. The workers may run on every core
(64 of them cannot each have one here), sharing them with Prometheus and the
controller; nginx stays on core 0. Everything listens
on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_fleet import make_certificates, start_nginx

from pytest_rollout.judge.prometheus import LocalPrometheus, PromClient, write_targets
from pytest_rollout.load.fleet import Fleet, LocalFleet
from pytest_rollout.load.launch import PlanOptions, Rate, clock_skew, start_plan
from pytest_rollout.load.protocol import Aim
from pytest_rollout.load.replies import ClassCounts
from pytest_rollout.procs import ProcessSet, http_get, proc_cpu_seconds


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) * 1024 if match else 0


def head_series(prometheus: LocalPrometheus) -> int:
    _, body = http_get("127.0.0.1", prometheus.port, "/metrics", timeout=5.0)
    match = re.search(rb"^prometheus_tsdb_head_series (\S+)$", body, re.M)
    return int(float(match.group(1))) if match else 0


def one_run(
    index: int, url: str, workers: int, rps: float, seconds: float, tmp: Path, client: PromClient, sd_dir: Path
) -> dict[str, Any]:
    (tmp / f"run-{index}").mkdir()
    procs = ProcessSet(tmp / f"run-{index}")
    run_id = f"million-{index}"
    fleet = LocalFleet(procs, run_id, workers, Aim.at(url, {}))
    spawned_wall, spawned, cpu_before = time.time(), time.monotonic(), self_cpu()
    try:
        fleet.start()
        start_s = time.monotonic() - spawned
        write_targets(sd_dir, "fleet", run_id, fleet.scrape_targets())
        seen = client.wait_for_targets(run_id, workers, timeout_s=60.0)
        pids = [proc.pid for proc, _ in fleet.workers]
        return measure(
            fleet, url, run_id, workers, rps, seconds, client, spawned_wall, cpu_before, start_s, seen,
            lambda: sum(proc_cpu_seconds(pid) for pid in pids),
        )  # fmt: skip
    finally:
        fleet.shutdown()
        procs.stop_all()


def measure(
    fleet: Fleet,
    url: str,
    run_id: str,
    workers: int,
    rps: float,
    seconds: float,
    client: PromClient,
    spawned_wall: float,
    cpu_before: float,
    start_s: float,
    seen: int,
    workers_cpu: Callable[[], float] | None,
) -> dict[str, Any]:
    """Hold *rps* over the started *fleet* for *seconds*, with one phase edge in the plan and two announced."""
    rate = Rate(rps, seconds, phases=(("first", 0.0),))  # an edge known in advance travels in the plan
    launched = start_plan(
        fleet, url, rate, PlanOptions(engine="fast"), lead_s=max(fleet.start_lead_s, 0.5 + 0.01 * workers)
    )
    start_at = launched.start_at
    skew = clock_skew(fleet)
    worker_cpu_before = workers_cpu() if workers_cpu else 0.0
    for name, fraction in (("second", 1 / 3), ("third", 2 / 3)):  # edges decided during the run
        time.sleep(max(0.0, start_at + seconds * fraction - fleet.edge_lead_s - time.time()))
        fleet.announce(name, time.time() + fleet.edge_lead_s)
    time.sleep(max(0.0, start_at + seconds - time.time()))
    worker_cpu = workers_cpu() - worker_cpu_before if workers_cpu else None
    fleet.stop_load()
    fleet.drain(settle_s=7.0)
    totals = fleet.totals()
    # every worker's final counts are in Prometheus after two more scrapes
    time.sleep(2 * client.scrape_interval(run_id) + 1.0)
    series = client.query(f'count by (worker) ({{run="{run_id}"}})', time.time())
    controller_cpu = self_cpu() - cpu_before
    by_class = sum((phase.by_class for worker in totals.workers for phase in worker.phases.values()), ClassCounts())
    requests = totals.requests
    return {
        "workers_seen_by_prometheus": seen,
        "fleet_start_s": start_s,
        "plan_s": launched.plan_s,
        "spawn_to_sending_s": start_at - spawned_wall,
        "requests": requests,
        "schedule": round(rps * seconds),
        "exact": requests == round(rps * seconds),
        "held_rps": (requests - by_class.dropped) / seconds,
        "errors": {k: v for k, v in by_class.items() if k != "ok"},
        "max_lag_ms": totals.max_lag_s * 1000,
        "clock_skew_ms": skew * 1000,
        "edge_late_ms": max(fleet.edges.values()) * 1000,
        "controller_cpu_s": controller_cpu,
        "controller_cpu_ms_per_worker_second": controller_cpu / workers / seconds * 1000,
        "worker_cpu_us_per_request": worker_cpu / requests * 1e6 if requests and worker_cpu is not None else None,
        "series_per_worker": statistics.median(v for _, v in series) if series else 0,
    }


def kube_run(index: int, kubeconfig: str, workers: int, rps: float, seconds: float, worker_cpu: str) -> dict[str, Any]:
    """One run on a real cluster (scripts/cluster): the example app as the target, the fleet as worker pods,
    the cluster's Prometheus (monitoring/prometheus:9090) finding them by their annotations."""
    from pytest_rollout.platforms.kubernetes.api import KubeSettings
    from pytest_rollout.platforms.kubernetes.platform import KubePlatform
    from pytest_rollout.platforms.kubernetes.portforward import PortForward

    settings = KubeSettings(
        kubeconfig=kubeconfig,
        worker_image=WORKER_IMAGE,
        prometheus_service="monitoring/prometheus:9090",
        worker_cpu=worker_cpu,
        timeout_s=900.0,
    )
    run_id = f"million-{os.getpid()}-{index}"
    cpu_before = self_cpu()
    platform = KubePlatform(settings, run_id, "bench_million", lifetime_s=3600.0)
    forward = PortForward(platform.api, settings.prometheus_service or "")
    try:
        platform.apply(target_manifests())
        done, message, _ = platform.follow("shop", time.monotonic() + 300, lambda event: None)
        if not done:
            raise SystemExit(f"the target did not become available: {message}\n{platform.explain('shop')}")
        url = f"http://shop.{platform.namespace}.svc:8080/"
        forward.start()
        client = PromClient(forward.url)
        fleet = platform.make_fleet(run_id, workers, Aim.at(url, {}))
        spawned_wall, spawned = time.time(), time.monotonic()
        fleet.start()
        start_s = time.monotonic() - spawned
        seen = client.wait_for_targets(run_id, workers, timeout_s=180.0)
        return measure(fleet, url, run_id, workers, rps, seconds, client, spawned_wall, cpu_before, start_s, seen, None)
    finally:
        forward.close()
        problems = platform.teardown(wait_s=300.0)
        if problems:
            print("teardown:", *problems, sep="\n  ", file=sys.stderr)


WORKER_IMAGE = "pytest-rollout-worker:0.1.0"
APP_MANIFESTS = Path(__file__).resolve().parent.parent / "examples" / "kind" / "app-v1.yaml"


def target_manifests() -> list[dict[str, Any]]:
    """The kind walkthrough's v1 (Deployment and Service ``shop``), with two replicas and no simulated work."""
    from pytest_rollout.platforms.kubernetes.manifests import load_manifests

    docs = load_manifests([APP_MANIFESTS], "deploy")
    for doc in docs:
        if doc["kind"] == "Deployment":
            doc["spec"]["replicas"] = 2
            for container in doc["spec"]["template"]["spec"]["containers"]:
                container["args"] = [*container.get("args", []), "--delay-ms", "0"]
    return docs


def local_runs(args: argparse.Namespace, server_core: int | None) -> tuple[list[dict[str, Any]], tuple[int, ...]]:
    """``--repeat`` runs of local workers against nginx, and Prometheus' memory and series before and after."""
    with tempfile.TemporaryDirectory(prefix="pytest-rollout-million-") as tmpdir:
        tmp = Path(tmpdir)
        make_certificates(tmp)  # nginx's TLS listener needs them, though this benchmark sends plain HTTP
        nginx, url, _ = start_nginx(tmp, server_core)
        (tmp / "prometheus").mkdir()
        procs = ProcessSet(tmp / "prometheus")
        prometheus = LocalPrometheus(procs, tmp / "prometheus", scrape_interval_s=1.0, sd_dir=tmp / "sd")
        try:
            prometheus.start()
            client = PromClient(prometheus.url)
            assert prometheus.process is not None
            time.sleep(3.0)
            rss_idle, series_idle = rss_bytes(prometheus.process.pid), head_series(prometheus)
            runs = [
                one_run(i, url, args.workers, args.rps, args.seconds, tmp, client, prometheus.sd_dir)
                for i in range(args.repeat)
            ]
            rss_busy, series_busy = rss_bytes(prometheus.process.pid), head_series(prometheus)
        finally:
            prometheus.stop()
            procs.stop_all()
            nginx.terminate()
            nginx.wait(timeout=10)
    return runs, (rss_idle, series_idle, rss_busy, series_busy)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=64, help="workers (default 64: a million at ~16k each)")
    parser.add_argument("--rps", type=float, default=6400.0, help="the whole fleet's rate (default 6,400)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is shown (default 3)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--kubeconfig",
        help="run the fleet as worker pods on this cluster (scripts/cluster up prints it) instead of local processes",
    )
    parser.add_argument(
        "--worker-cpu", default="30m", help="with --kubeconfig: each worker pod's CPU request and limit (default 30m)"
    )
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    server_core = cores[0] if len(cores) > 1 else None
    series_idle = series_busy = rss_idle = rss_busy = 0
    if args.kubeconfig:
        server_core = None
        runs = [
            kube_run(i, args.kubeconfig, args.workers, args.rps, args.seconds, args.worker_cpu)
            for i in range(args.repeat)
        ]
    else:
        runs, (rss_idle, series_idle, rss_busy, series_busy) = local_runs(args, server_core)

    def med(key: str) -> float:
        values = [float(r[key]) for r in runs if r[key] is not None]
        return statistics.median(values) if values else float("nan")

    added = max(1, series_busy - series_idle)
    results = {
        "machine": {"cores": len(cores), "python": sys.version.split()[0]},
        "workers": args.workers,
        "requested_rps": args.rps,
        "seconds": args.seconds,
        "runs": runs,
        "median": {
            key: med(key)
            for key in (
                "fleet_start_s",
                "plan_s",
                "spawn_to_sending_s",
                "held_rps",
                "max_lag_ms",
                "clock_skew_ms",
                "edge_late_ms",
                "controller_cpu_ms_per_worker_second",
                "worker_cpu_us_per_request",
                "series_per_worker",
            )
        },
        "all_exact": all(r["exact"] for r in runs),
        "prometheus": {
            "head_series_added": added,
            "rss_added_bytes": rss_busy - rss_idle,
            "bytes_per_series": (rss_busy - rss_idle) / added,
        },
    }
    m = results["median"]
    where = f"worker pods on {args.kubeconfig}" if args.kubeconfig else f"nginx on core {server_core}"
    print(f"machine: {len(cores)} cores; {where}; medians of {args.repeat} runs")
    print(
        f"{args.workers} workers asked {args.rps:,.0f} rps for {args.seconds:g}s: held {m['held_rps']:,.0f}; "
        f"totals equal the schedule in every run: {results['all_exact']}"
    )
    print(
        f"start: {m['fleet_start_s']:.1f}s spawn to all ready, plans out in {m['plan_s'] * 1000:.0f} ms, "
        f"{m['spawn_to_sending_s']:.1f}s spawn to sending; worst lag {m['max_lag_ms']:.0f} ms"
    )
    print(
        f"controller: {m['controller_cpu_ms_per_worker_second']:.2f} ms CPU per worker-second (start-up included); "
        + (
            "worker pods' CPU not measured"
            if args.kubeconfig
            else f"workers {m['worker_cpu_us_per_request']:.1f} us CPU per request"
        )
    )
    print(f"clocks: skew {m['clock_skew_ms']:.2f} ms; phase edges heard late by {m['edge_late_ms']:.2f} ms at most")
    p = results["prometheus"]
    memory = (
        ""
        if args.kubeconfig
        else f"; {p['bytes_per_series'] / 1024:.1f} KiB resident per series "
        f"({p['head_series_added']:,} series, {p['rss_added_bytes'] / 2**20:.0f} MiB)"
    )
    print(f"prometheus: {m['series_per_worker']:.0f} series per worker{memory}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
