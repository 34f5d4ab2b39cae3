"""The pytest plugin: options, the ``slo`` marker, the ``rollout`` fixture, reports.

Light on purpose: a session without SLO tests gets its options parsed and
nothing else (no settings read, no file opened, no signal handler); aiohttp,
prometheus-api-client and the platforms are imported only when a test uses
the fixture. The hooks live in this package's modules (options, fixture,
summary, builtin) and are gathered here, where pytest finds them.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from pytest_rollout.errors import RolloutUsageError, SLOSpecError
from pytest_rollout.plugin.builtin import BuiltinHooks
from pytest_rollout.plugin.fixture import pytest_runtest_call, pytest_runtest_makereport, rollout
from pytest_rollout.plugin.keys import EXIT_NOT_JUDGED, SIGTERM_KEY, SPEC_KEY
from pytest_rollout.plugin.options import pytest_addoption, read_settings
from pytest_rollout.plugin.session import SESSION_KEY, RolloutSession
from pytest_rollout.plugin.summary import pytest_sessionfinish, pytest_terminal_summary
from pytest_rollout.slo import parse_slo

__all__ = [
    "EXIT_NOT_JUDGED",
    "pytest_addhooks",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_runtest_call",
    "pytest_runtest_makereport",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "pytest_unconfigure",
    "read_settings",
    "rollout",
]


_MARKER_DOC = (
    "slo(rps, error_rate=0.001, p50_ms=None, p90_ms=None, p95_ms=None, p99_ms=None, p999_ms=None, "
    "hold='10s', ramp='5s', after=hold, path='/', method='GET', headers=None, secret_headers=None, body=None, "
    "min_load=0.95, "
    "timeout='5s', checks=None, availability=None, regression=None, judge_ramp=False, abort_on_breach=True, "
    "risk=None, client='retrying', end_when_held=None, traffic=None, seed=None): "
    "the service objectives a rollout test must hold (see pytest-rollout's README)"
)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_rollout.plugin import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker and the built-in hooks; nothing else until a session has SLO tests."""
    config.addinivalue_line("markers", _MARKER_DOC)
    config.pluginmanager.register(BuiltinHooks(config), "rollout-builtin")


def _activate(config: pytest.Config) -> None:
    """A session with SLO tests: read and check the settings, load a baseline, make SIGTERM act like Ctrl-C."""
    if SESSION_KEY in config.stash:
        return
    session = RolloutSession(read_settings(config))
    if session.settings.compare:
        from pytest_rollout.judge.baseline import Baselines

        try:
            session.baseline = Baselines(session.settings.baseline_dir).load(session.settings.compare)
        except RolloutUsageError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = session
    _install_sigterm(config)


def _install_sigterm(config: pytest.Config) -> None:
    """Make SIGTERM end the run like Ctrl-C does, so everything started is stopped.

    Both go through :func:`pytest_rollout.run.interrupts.on_signal`, which raises KeyboardInterrupt at once,
    except inside a short Prometheus call, where it waits for the call to end.
    """
    from pytest_rollout.run.interrupts import on_signal

    installed: list[tuple[int, Any]] = []
    try:
        for signum, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            if signal.getsignal(signum) is default:
                signal.signal(signum, on_signal)
                installed.append((signum, default))
    except ValueError:  # not the main thread (pytester in-process, say)
        pass
    config.stash[SIGTERM_KEY] = installed


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        marker = item.get_closest_marker("slo")
        if marker is None:
            continue
        try:
            item.stash[SPEC_KEY] = parse_slo(marker.args, marker.kwargs, base_dir=str(item.path.parent))
        except SLOSpecError as exc:
            problems.append(f"{item.nodeid}: @pytest.mark.slo: {exc}")
    if problems:
        raise pytest.UsageError("invalid slo marker:\n" + "\n".join(problems))
    if any(SPEC_KEY in item.stash for item in items):
        _activate(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    rollout_session = config.stash.get(SESSION_KEY, None)
    if rollout_session is not None:
        rollout_session.close()
    from pytest_rollout.run.interrupts import on_signal

    for signum, default in config.stash.get(SIGTERM_KEY, []):
        if signal.getsignal(signum) is on_signal:
            signal.signal(signum, default)
