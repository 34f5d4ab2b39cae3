"""The pytest plugin: options, the ``slo`` marker, the ``rollout`` fixture, reports.

Light on purpose: aiohttp, prometheus-api-client and the platforms are
imported only when a test uses the fixture.
"""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Callable, Generator
from typing import Any

import pytest

from .errors import RolloutError, RolloutUsageError, SLOSpecError
from .session import SESSION_KEY, RolloutSession, Settings
from .slo import SLOSpec, parse_slo

SPEC_KEY = pytest.StashKey[SLOSpec]()
DEFAULT_WORKER_RPS = 2500.0
DEFAULT_WORKER_IMAGE = "pytest-rollout-worker:0.1.0"
ROLLOUT_KEY = pytest.StashKey[Any]()
OUTCOME_KEY = pytest.StashKey[str]()
_SIGTERM_KEY = pytest.StashKey[list[tuple[int, Any]]]()
_FAILED_KEY = pytest.StashKey[set[str]]()

#: Exit status when no test failed but SLO tests were not proven (too little evidence, the fleet did not hold the
#: load, Prometheus unreachable, a cluster error): nothing was shown broken, and nothing held. Never a pass.
#: Any broken SLO, or any other failing test, keeps pytest's own status 1.
EXIT_NOT_JUDGED = 6

_MARKER_DOC = (
    "slo(rps, error_rate=0.001, p50_ms=None, p90_ms=None, p95_ms=None, p99_ms=None, p999_ms=None, "
    "hold='10s', ramp='5s', after=hold, path='/', method='GET', headers=None, body=None, min_load=0.95, "
    "timeout='5s', checks=None, availability=None, regression=None, judge_ramp=False, abort_on_breach=True): "
    "the service objectives a rollout test must hold (see pytest-rollout's README)"
)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


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
    option("--rollout-report", "rollout_report", "write the JSON report to PATH", metavar="PATH")
    option(
        "--rollout-save",
        "rollout_save",
        "store this run's per-phase results (request counts, latency histograms) as baseline NAME",
        metavar="NAME",
    )
    option(
        "--rollout-compare",
        "rollout_compare",
        "compare each SLO test with baseline NAME and fail on a regression beyond the marker's "
        "regression margins (default: p99 at most 10 percent slower, error rate at most 0.001 higher)",
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
    from .baseline import check_name

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
    from .slo import parse_duration

    try:
        return parse_duration(_value(config, name), flag)
    except SLOSpecError as exc:
        raise pytest.UsageError(str(exc)) from None


def read_settings(config: pytest.Config) -> Settings:
    """Validated settings from the command line, falling back to ini values."""
    platform = str(_value(config, "rollout_platform") or "local")
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", platform):
        raise pytest.UsageError(
            f"--rollout-platform={platform!r}: expected a platform name such as local or kubernetes"
        )
    scale = _positive_float("rollout_rps_scale", "--rollout-rps-scale", _value(config, "rollout_rps_scale"))
    raw_worker_rps = _value(config, "rollout_worker_rps")
    if raw_worker_rps in (None, "") and platform != "local":
        worker_rps = DEFAULT_WORKER_RPS  # a calibration of this machine says nothing of a pod's
    elif raw_worker_rps in (None, ""):
        from .cli import measured_worker_rps

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
    from .kube import KubeSettings, parse_service

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_DOC)
    session = RolloutSession(read_settings(config))
    config.stash[SESSION_KEY] = session
    if session.settings.compare:
        from .baseline import Baselines

        try:
            session.baseline = Baselines(session.settings.baseline_dir).load(session.settings.compare)
        except RolloutUsageError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(BuiltinHooks(config), "rollout-builtin")
    _install_sigterm(config)


def _install_sigterm(config: pytest.Config) -> None:
    """Make SIGTERM end the run like Ctrl-C does, so everything started is stopped.

    Both go through :func:`pytest_rollout.interrupts.on_signal`, which raises KeyboardInterrupt at once,
    except inside a short Prometheus call, where it waits for the call to end.
    """
    from .interrupts import on_signal

    installed: list[tuple[int, Any]] = []
    try:
        for signum, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            if signal.getsignal(signum) is default:
                signal.signal(signum, on_signal)
                installed.append((signum, default))
    except ValueError:  # not the main thread (pytester in-process, say)
        pass
    config.stash[_SIGTERM_KEY] = installed


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        marker = item.get_closest_marker("slo")
        if marker is None:
            continue
        try:
            item.stash[SPEC_KEY] = parse_slo(marker.args, marker.kwargs)
        except SLOSpecError as exc:
            problems.append(f"{item.nodeid}: @pytest.mark.slo: {exc}")
    if problems:
        raise pytest.UsageError("invalid slo marker:\n" + "\n".join(problems))


@pytest.fixture
def rollout(request: pytest.FixtureRequest) -> Generator[Any, None, None]:
    """Deploy a target, put it under the marker's load, upgrade it, and judge the SLOs.

    See :class:`pytest_rollout.Rollout`.
    """
    from .rollout import Rollout

    item = request.node
    spec = item.stash.get(SPEC_KEY, None)
    if spec is None:
        raise pytest.UsageError(
            f"{item.nodeid}: the rollout fixture needs an @pytest.mark.slo(rps=...) marker on the test"
        )
    session = request.config.stash[SESSION_KEY]
    scaled = spec.scaled(session.settings.rps_scale)
    if scaled.requested_rps < 1:
        raise pytest.UsageError(
            f"{item.nodeid}: rps={spec.rps:g} scaled by --rollout-rps-scale={session.settings.rps_scale:g} "
            f"is {scaled.requested_rps:g}, less than 1 request per second"
        )
    run = Rollout(session, scaled, item.nodeid, request.config)
    item.stash[ROLLOUT_KEY] = run
    try:
        yield run
    finally:
        problems = run.close()
        # no call-phase report means the run was interrupted before or during the test body
        session.results.append(run.to_json(item.stash.get(OUTCOME_KEY, "interrupted")))
        if run.verdict is not None:
            session.measured[item.nodeid] = (run.verdict.phases, run.verdict.passed)
        session.problems.extend(f"{item.nodeid}: {problem}" for problem in problems)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Verify the SLOs inside the call phase, so a breach is a test failure, not a teardown error."""
    try:
        try:
            result = yield
        except RolloutError as exc:
            run = item.stash.get(ROLLOUT_KEY, None)
            if run is not None and run.verdict is None:
                run._failure = run._failure or f"{type(exc).__name__}: {exc}"
                _judge_quietly(run)
            raise pytest.fail.Exception(f"{type(exc).__name__}: {exc}", pytrace=False) from None
        except Exception:
            run = item.stash.get(ROLLOUT_KEY, None)
            if run is not None and run.verdict is None:
                _judge_quietly(run)
            raise
        run = item.stash.get(ROLLOUT_KEY, None)
        if run is not None and run.verdict is None:
            run.verify()
        return result
    finally:
        run = item.stash.get(ROLLOUT_KEY, None)
        if run is not None:
            _attach_properties(item, run)


def _attach_properties(item: pytest.Item, run: Any) -> None:
    """Put the verdict into the test's user properties, so ``--junitxml`` carries it."""
    verdict = run.verdict
    if verdict is None or any(name == "rollout_passed" for name, _ in item.user_properties):
        return
    item.user_properties.append(("rollout_passed", str(verdict.passed).lower()))
    item.user_properties.append(("rollout_result", str(verdict.result)))
    item.user_properties.append(("rollout_requested_rps", f"{run.spec.requested_rps:g}"))
    for e in verdict.entries:
        measured = "n/a" if e.measured is None else f"{e.measured:.6g}"
        if e.low is not None and e.high is not None:
            measured += f" [{e.low:.6g}, {e.high:.6g}]"
        bound = "n/a" if e.bound is None else f"{e.bound:g}"
        item.user_properties.append((f"rollout:{e.phase}:{e.slo}", f"{e.outcome} {measured} {e.comparison} {bound}"))


def _judge_quietly(run: Any) -> None:
    """Judge for the report only; the test's own failure is what the user sees."""
    try:
        run._judge()
    except Exception:  # noqa: BLE001 - the original failure matters more
        pass


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        item.config.stash.setdefault(_FAILED_KEY, set()).add(item.nodeid)
    if ROLLOUT_KEY in item.stash:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            item.stash[OUTCOME_KEY] = "error" if report.when == "setup" else report.outcome
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    rollout_session = session.config.stash.get(SESSION_KEY, None)
    if rollout_session is None:
        return
    # the exit status is decided first, from the verdicts alone: no report renderer can change it
    failed = session.config.stash.get(_FAILED_KEY, set())
    results = {r["nodeid"]: r.get("result") for r in rollout_session.results}
    if exitstatus == pytest.ExitCode.TESTS_FAILED and failed and all(results.get(n) == "not_proven" for n in failed):
        session.exitstatus = EXIT_NOT_JUDGED
    settings = rollout_session.settings
    try:
        if settings.report:
            from .report import write_report

            report = settings.report
            _render(rollout_session, "JSON report", lambda: write_report(
                report, rollout_session.results, interrupted=exitstatus == pytest.ExitCode.INTERRUPTED
            ))  # fmt: skip
        if settings.save and rollout_session.measured:
            from .baseline import Baselines

            def save() -> None:
                saved = Baselines(settings.baseline_dir).save(
                    settings.save or "",
                    {k: v[0] for k, v in rollout_session.measured.items()},
                    {k: v[1] for k, v in rollout_session.measured.items()},
                )
                rollout_session.notes.append(f"baseline {settings.save!r} saved to {saved}")

            _render(rollout_session, "baseline", save)
        if settings.html and rollout_session.results:
            from .html_report import write_html

            html = settings.html
            _render(rollout_session, "HTML report", lambda: write_html(html, rollout_session.results))
    finally:
        rollout_session.close()


def _render(rollout_session: RolloutSession, what: str, render: Callable[[], object]) -> None:
    """Run one report writer; a failure is reported as the writer's, never hides the verdict or the exit status."""
    try:
        render()
    except Exception as exc:  # noqa: BLE001 - a renderer's bug must not bury the result
        rollout_session.notes.append(f"the {what} could not be written: {type(exc).__name__}: {exc}")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rollout_session = config.stash.get(SESSION_KEY, None)
    if rollout_session is None:
        return
    from .report import format_summary

    if rollout_session.results and config.get_verbosity() >= -1:
        terminalreporter.section("rollout SLO summary")
        for record in rollout_session.results:
            try:
                lines = format_summary(record)
            except Exception as exc:  # noqa: BLE001 - a renderer's bug must not bury the verdict
                lines = [
                    f"{record.get('nodeid')} {str(record.get('result', '?')).replace('_', ' ').upper()}: "
                    "the terminal summary could "
                    f"not be rendered: {type(exc).__name__}: {exc} (please report this; the verdict stands)"
                ]
            for line in lines:
                terminalreporter.write_line(line)
    for problem in rollout_session.problems:
        terminalreporter.write_line(f"rollout clean-up: {problem}", yellow=True)
    results = [r.get("result") for r in rollout_session.results]
    if "not_proven" in results and "slo_broken" not in results:
        terminalreporter.write_line(
            f"rollout: {results.count('not_proven')} SLO test(s) not proven (nothing was shown broken, nor held): "
            f"exit status {EXIT_NOT_JUDGED} unless another test failed; each message says what would prove it",
            yellow=True,
        )
    for line in rollout_session.reaped:
        terminalreporter.write_line(f"rollout: stopped {line}", yellow=True)
    for note in rollout_session.notes:
        terminalreporter.write_line(f"rollout: {note}")
    if rollout_session.settings.keep and rollout_session.kept:
        terminalreporter.section("rollout: left running (--rollout-keep)")
        for line in rollout_session.kept:
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    rollout_session = config.stash.get(SESSION_KEY, None)
    if rollout_session is not None:
        rollout_session.close()
    from .interrupts import on_signal

    for signum, default in config.stash.get(_SIGTERM_KEY, []):
        if signal.getsignal(signum) is on_signal:
            signal.signal(signum, default)


class BuiltinHooks:
    """The plugin's own implementations of its hooks; a conftest's run first."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_rollout_make_platform(
        self, config: pytest.Config, name: str, run_dir: Any, procs: Any, rollout: Any
    ) -> Any:
        settings = config.stash[SESSION_KEY].settings
        if name == "local":
            from .local import LocalPlatform

            return LocalPlatform(
                procs, run_dir, haproxy_binary=settings.haproxy, endpoint_delay_s=settings.endpoint_delay_s
            )
        if name == "kubernetes":
            from .kube import KubePlatform

            return KubePlatform(settings.kube, rollout.run_id, rollout.nodeid, rollout.lifetime_s())
        return None

    @pytest.hookimpl(trylast=True)
    def pytest_rollout_upgrade(
        self, rollout: Any, platform: Any, target: Any, max_surge: Any, max_unavailable: Any
    ) -> Any:
        on_event: Callable[[Any], None] = rollout.note_event
        return platform.upgrade(target, max_surge, max_unavailable, on_event)
