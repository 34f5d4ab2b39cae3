"""The ``rollout`` fixture and the test-phase hooks that verify its SLOs inside the call phase."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import Any

import pytest

from pytest_rollout.errors import RolloutError
from pytest_rollout.plugin.keys import FAILED_KEY, OUTCOME_KEY, ROLLOUT_KEY, SPEC_KEY
from pytest_rollout.plugin.session import SESSION_KEY

__all__ = ["pytest_runtest_call", "pytest_runtest_makereport", "rollout"]


@pytest.fixture
def rollout(request: pytest.FixtureRequest) -> Generator[Any, None, None]:
    """Deploy a target, put it under the marker's load, upgrade it, and judge the SLOs.

    See :class:`pytest_rollout.Rollout`.
    """
    from pytest_rollout.run.rollout import Rollout

    item = request.node
    spec = item.stash.get(SPEC_KEY, None)
    if spec is None:
        raise pytest.UsageError(
            f"{item.nodeid}: the rollout fixture needs an @pytest.mark.slo(rps=...) marker on the test"
        )
    session = request.config.stash[SESSION_KEY]
    scaled = spec.scaled(session.settings.rps_scale)
    if scaled.risk is None:
        scaled = replace(scaled, risk=session.settings.risk)
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
                run.record_failure(f"{type(exc).__name__}: {exc}")
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
    item.user_properties.append(("rollout_risk", run.budget.sentence()))
    for e in verdict.entries:
        measured = "n/a" if e.measured is None else f"{e.measured:.6g}"
        if e.low is not None and e.high is not None:
            measured += f" [{e.low:.6g}, {e.high:.6g}]"
        bound = "n/a" if e.bound is None else f"{e.bound:g}"
        item.user_properties.append((f"rollout:{e.phase}:{e.slo}", f"{e.outcome} {measured} {e.comparison} {bound}"))


def _judge_quietly(run: Any) -> None:
    """Judge for the report only; the test's own failure is what the user sees."""
    try:
        run.judge()
    except Exception:  # noqa: BLE001 - the original failure matters more
        pass


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        item.config.stash.setdefault(FAILED_KEY, set()).add(item.nodeid)
    if ROLLOUT_KEY in item.stash:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            item.stash[OUTCOME_KEY] = "error" if report.when == "setup" else report.outcome
    return report
