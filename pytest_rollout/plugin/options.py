"""Command-line options and ini values: declared, then read and checked into Settings (only for a session with SLO tests)."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from pytest_rollout.errors import RolloutUsageError, SLOSpecError
from pytest_rollout.plugin.session import Settings

__all__ = ["DEFAULT_WORKER_IMAGE", "DEFAULT_WORKER_RPS", "pytest_addoption", "read_settings"]

DEFAULT_WORKER_RPS = 2500.0


DEFAULT_WORKER_IMAGE = "pytest-rollout-worker:0.1.0"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rollout", "pytest-rollout: SLO-gated rolling upgrades under load")

    def option(flag: str, ini: str, help: str, ini_type: Any = "string", default: Any = None, **kw: Any) -> None:
        group.addoption(flag, dest=ini, default=None, help=f"{help} (ini: {ini})", **kw)
        parser.addini(ini, help, type=ini_type, default=default)

    option(
        "--rollout-platform",
        "rollout_platform",
        "where target and fleet run: local (default) or kubernetes",
        metavar="NAME",
        default="local",
    )
    option(
        "--rollout-rps-scale",
        "rollout_rps_scale",
        "multiply every marker's rps by FLOAT; 0.01 runs a 1,000,000 rps test at 10,000",
        metavar="FLOAT",
        default="1.0",
    )
    option(
        "--rollout-risk",
        "rollout_risk",
        "the run's false-fail risk for markers that do not set risk=: at most this share of runs fails a "
        "release that meets every bound (default 0.01)",
        metavar="FRACTION",
        default="0.01",
    )
    option("--rollout-report", "rollout_report", "write the JSON report to PATH", metavar="PATH")
    option(
        "--rollout-save",
        "rollout_save",
        "add this run's per-phase results (request counts, latency histograms) to baseline NAME, which keeps "
        "each test's newest 20 runs; a comparison needs at least 3 runs of the unchanged release",
        metavar="NAME",
    )
    option(
        "--rollout-compare",
        "rollout_compare",
        "compare each SLO test with the saved runs of baseline NAME and fail on a regression beyond their "
        "spread and the marker's regression margins (default: p99 at most 10 percent slower, error rate at most "
        "0.001 higher)",
        metavar="NAME",
    )
    option(
        "--rollout-baseline-dir",
        "rollout_baseline_dir",
        "where baselines are stored (default: .pytest-rollout/baselines under the rootdir)",
        metavar="DIR",
    )
    option(
        "--rollout-html",
        "rollout_html",
        "write the HTML report (charts, verdicts, PromQL; one self-contained file) to PATH",
        metavar="PATH",
    )
    option(
        "--prometheus-url", "rollout_prometheus_url", "use the Prometheus at URL instead of starting one", metavar="URL"
    )
    group.addoption(
        "--rollout-keep",
        dest="rollout_keep",
        action="store_true",
        default=None,
        help="leave target, load balancer and Prometheus running for debugging, and print how to "
        "reach them (ini: rollout_keep)",
    )
    parser.addini("rollout_keep", "leave everything running after the run", type="bool", default=False)
    option(
        "--rollout-worker-rps",
        "rollout_worker_rps",
        "requests per second one load worker is given (sizes the fleet; default: what "
        "`pytest-rollout calibrate` measured here, else 2500; on kubernetes 2500)",
        metavar="RPS",
    )
    option(
        "--rollout-workers", "rollout_workers", "number of load workers (default: from rps / worker rps)", metavar="N"
    )
    option(
        "--rollout-upgrade-timeout",
        "rollout_upgrade_timeout",
        "longest an upgrade may take before the fleet's own deadline (default 300s)",
        metavar="DURATION",
        default="300s",
    )
    option(
        "--rollout-endpoint-delay",
        "rollout_endpoint_delay",
        "local platform: how long after a replica's termination begins its endpoint leaves the load balancer's "
        "rotation, as kube-proxy learns of it on a cluster (default 1s; 0 removes it at once)",
        metavar="DURATION",
        default="1s",
    )
    option(
        "--rollout-sd-dir",
        "rollout_sd_dir",
        "directory for the file_sd target files naming each run's workers and load balancer; point your "
        "Prometheus's file_sd_configs at DIR/*.json when you use --prometheus-url (default: a temporary "
        "directory read by the Prometheus the plugin starts)",
        metavar="DIR",
    )
    kube = parser.getgroup("rollout-kubernetes", "pytest-rollout on --rollout-platform kubernetes")

    def kube_option(flag: str, ini: str, help: str, default: Any = None, **kw: Any) -> None:
        kube.addoption(flag, dest=ini, default=None, help=f"{help} (ini: {ini})", **kw)
        parser.addini(ini, help, default=default)

    kube_option(
        "--rollout-kubeconfig",
        "rollout_kubeconfig",
        "kubeconfig to use (default: KUBECONFIG, else ~/.kube/config)",
        metavar="PATH",
    )
    kube_option(
        "--rollout-kube-context",
        "rollout_kube_context",
        "kubeconfig context to use (default: its current context)",
        metavar="NAME",
    )
    kube_option(
        "--rollout-namespace",
        "rollout_namespace",
        "run in this existing namespace (objects labelled with the run, deleted at the end); by default each "
        "run creates its own namespace rollout-<run id> and deletes it",
        metavar="NAME",
    )
    kube_option(
        "--rollout-worker-image",
        "rollout_worker_image",
        f"image of the load worker pods (default {DEFAULT_WORKER_IMAGE}; build it from docker/worker.Dockerfile)",
        metavar="IMAGE",
    )
    kube_option(
        "--rollout-kube-timeout",
        "rollout_kube_timeout",
        "how long deploys and the worker pods may take to become available (default 300s)",
        metavar="DURATION",
        default="300s",
    )
    kube_option(
        "--rollout-prometheus-service",
        "rollout_prometheus_service",
        "reach the cluster's Prometheus by a port-forward to this Service (NAMESPACE/NAME:PORT), "
        "instead of --prometheus-url",
        metavar="NS/NAME:PORT",
    )
    parser.addini("rollout_haproxy", "path of the haproxy binary (default: from PATH)", default="haproxy")
    parser.addini("rollout_prometheus", "path of the prometheus binary (default: from PATH)", default="prometheus")


def _value(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name, default=None)
    return config.getini(name) if value is None else value


def _positive_float(name: str, flag: str, raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise pytest.UsageError(f"{flag}={raw!r}: expected a number, e.g. {flag}=0.5") from None
    if not math.isfinite(value) or value <= 0:
        raise pytest.UsageError(f"{flag}={raw!r}: must be a number greater than 0")
    return value


def _baseline_name(name: str | None, flag: str) -> str | None:
    from pytest_rollout.judge.baseline import check_name

    if name is None:
        return None
    try:
        return check_name(str(name), flag)
    except RolloutUsageError as exc:
        raise pytest.UsageError(str(exc)) from None


def _html_path(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise pytest.UsageError(
            f"--rollout-html={path!r} needs matplotlib to draw its charts: pip install 'pytest-rollout[html]'"
        ) from None
    return str(path)


def _duration(config: pytest.Config, name: str, flag: str) -> float:
    from pytest_rollout.slo import parse_duration

    try:
        return parse_duration(_value(config, name), flag)
    except SLOSpecError as exc:
        raise pytest.UsageError(str(exc)) from None


def _risk(raw: Any) -> float:
    from pytest_rollout.slo import parse_risk

    try:
        return parse_risk(float(raw), "--rollout-risk")
    except (TypeError, ValueError):  # SLOSpecError included
        raise pytest.UsageError(f"--rollout-risk={raw!r}: expected a fraction in (0, 0.5], e.g. 0.01") from None


def read_settings(config: pytest.Config) -> Settings:
    """Validated settings from the command line, falling back to ini values."""
    platform = str(_value(config, "rollout_platform") or "local")
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", platform):
        raise pytest.UsageError(
            f"--rollout-platform={platform!r}: expected a platform name such as local or kubernetes"
        )
    scale = _positive_float("rollout_rps_scale", "--rollout-rps-scale", _value(config, "rollout_rps_scale"))
    risk = _risk(_value(config, "rollout_risk"))
    raw_worker_rps = _value(config, "rollout_worker_rps")
    if raw_worker_rps in (None, "") and platform != "local":
        worker_rps = DEFAULT_WORKER_RPS  # a calibration of this machine says nothing of a pod's
    elif raw_worker_rps in (None, ""):
        from pytest_rollout.load.calibration import measured_worker_rps

        worker_rps = measured_worker_rps() or DEFAULT_WORKER_RPS
    else:
        worker_rps = _positive_float("rollout_worker_rps", "--rollout-worker-rps", raw_worker_rps)
    workers_raw = _value(config, "rollout_workers")
    workers = None
    if workers_raw not in (None, ""):
        try:
            workers = int(workers_raw)
        except (TypeError, ValueError):
            raise pytest.UsageError(f"--rollout-workers={workers_raw!r}: expected a whole number >= 1") from None
        if workers < 1:
            raise pytest.UsageError(f"--rollout-workers={workers_raw!r}: expected a whole number >= 1")
    upgrade_timeout = _duration(config, "rollout_upgrade_timeout", "--rollout-upgrade-timeout")
    endpoint_delay = _duration(config, "rollout_endpoint_delay", "--rollout-endpoint-delay")
    url = _value(config, "rollout_prometheus_url") or None
    if url is not None and not re.match(r"^https?://[^/\s]+", str(url)):
        raise pytest.UsageError(f"--prometheus-url={url!r}: expected an http(s) URL such as http://127.0.0.1:9090")
    keep = config.getoption("rollout_keep", default=None)
    kube = _kube_settings(config, platform, url, upgrade_timeout)
    return Settings(
        platform=platform,
        rps_scale=scale,
        risk=risk,
        report=_value(config, "rollout_report") or None,
        html=_html_path(_value(config, "rollout_html") or None),
        save=_baseline_name(_value(config, "rollout_save") or None, "--rollout-save"),
        compare=_baseline_name(_value(config, "rollout_compare") or None, "--rollout-compare"),
        baseline_dir=str(_value(config, "rollout_baseline_dir") or config.rootpath / ".pytest-rollout" / "baselines"),
        prometheus_url=url,
        keep=bool(config.getini("rollout_keep") if keep is None else keep),
        worker_rps=worker_rps,
        worker_rps_given=raw_worker_rps not in (None, ""),
        workers=workers,
        haproxy=str(config.getini("rollout_haproxy") or "haproxy"),
        prometheus=str(config.getini("rollout_prometheus") or "prometheus"),
        upgrade_timeout_s=upgrade_timeout,
        endpoint_delay_s=endpoint_delay,
        sd_dir=str(_value(config, "rollout_sd_dir") or "") or None,
        kube=kube,
        prometheus_service=kube.prometheus_service if kube else None,
    )


def _kube_settings(config: pytest.Config, platform: str, url: str | None, upgrade_timeout: float) -> Any:
    """The kubernetes platform's settings (None on other platforms)."""
    from pytest_rollout.platforms.kubernetes.api import KubeSettings
    from pytest_rollout.platforms.kubernetes.portforward import parse_service

    if platform != "kubernetes":
        return None
    timeout = _duration(config, "rollout_kube_timeout", "--rollout-kube-timeout")
    namespace = _value(config, "rollout_namespace") or None
    if namespace is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", str(namespace)):
        raise pytest.UsageError(f"--rollout-namespace={namespace!r}: not a valid namespace name")
    service = _value(config, "rollout_prometheus_service") or None
    if service is not None:
        try:
            parse_service(str(service))
        except ValueError as exc:
            raise pytest.UsageError(f"--rollout-prometheus-service={service!r}: {exc}") from None
    if url is None and service is None:
        raise pytest.UsageError(
            "--rollout-platform kubernetes needs the cluster's Prometheus: --prometheus-url URL, or "
            "--rollout-prometheus-service NAMESPACE/NAME:PORT for a port-forward to it "
            "(examples/kind/prometheus.yaml is one that fits)"
        )
    if url is not None and service is not None:
        raise pytest.UsageError("give --prometheus-url or --rollout-prometheus-service, not both")
    return KubeSettings(
        kubeconfig=_value(config, "rollout_kubeconfig") or None,
        context=_value(config, "rollout_kube_context") or None,
        namespace=str(namespace) if namespace else None,
        worker_image=str(_value(config, "rollout_worker_image") or DEFAULT_WORKER_IMAGE),
        timeout_s=timeout,
        upgrade_timeout_s=upgrade_timeout,
        prometheus_service=str(service) if service else None,
    )
