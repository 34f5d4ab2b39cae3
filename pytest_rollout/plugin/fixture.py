"""The ``rollout`` fixture and the test-phase hooks that verify its SLOs inside the call phase."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_rollout.errors import InputError
from pytest_rollout.judge.verdict import TestResult
from pytest_rollout.plugin.keys import FAILED_KEY, OUTCOME_KEY, ROLLOUT_KEY, SPEC_KEY
from pytest_rollout.plugin.outcome import FAULT_KEY, Blame, Fault, fault_of, result_of
from pytest_rollout.plugin.session import SESSION_KEY
from pytest_rollout.report.record import route_line

__all__ = ["pytest_runtest_call", "pytest_runtest_makereport", "rollout"]

_PACKAGE = Path(__file__).parent.parent  # pytest_rollout/


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
        result = _result(item, run)
        record = run.to_json(item.stash.get(OUTCOME_KEY, "interrupted"), result=result)
        fault = item.stash.get(FAULT_KEY, None)
        if fault is not None and not record.get("failure"):
            record["failure"] = fault.message
        session.results.append(record)
        if run.verdict is not None:
            session.measured[item.nodeid] = (run.verdict.phases, result == TestResult.PASSED)
        session.problems.extend(f"{item.nodeid}: {problem}" for problem in problems)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Verify the SLOs inside the call phase, so a breach is a test failure, not a teardown error.

    An exception from the test body, or from the automatic ``verify()`` after it (a bug in a
    ``pytest_rollout_add_verdicts`` hook, say), is settled by its category (:mod:`pytest_rollout.plugin.outcome`):
    the test's own is raised as it came, traceback and all; the release's and the run's fail the test with their
    message alone. A failure the plugin raised itself (``Rollout.failed_with``: its verdict, a run stopped early) is
    its verdict's.
    """
    try:
        try:
            result = yield
            run = item.stash.get(ROLLOUT_KEY, None)
            if run is not None and run.verdict is None:
                run.verify()
            return result
        except (Exception, pytest.fail.Exception) as exc:
            run = item.stash.get(ROLLOUT_KEY, None)
            if run is not None and exc is run.failed_with:
                raise
            fault = fault_of(exc)
            item.stash[FAULT_KEY] = fault
            if run is not None and run.verdict is None:
                _settle(run, fault)
            if fault.blame is Blame.TEST:
                if isinstance(exc, InputError):
                    _cut_at_the_package(exc)
                raise
            raise pytest.fail.Exception(fault.message, pytrace=False) from None
    finally:
        run = item.stash.get(ROLLOUT_KEY, None)
        if run is not None:
            _attach_properties(item, run)


def _cut_at_the_package(exc: BaseException) -> None:
    """End *exc*'s traceback where the test called into this package: a misused fixture is shown at the test's
    own line, the way pytest hides its own frames."""
    tb, last_outside = exc.__traceback__, None
    while tb is not None:
        inside = Path(tb.tb_frame.f_code.co_filename).is_relative_to(_PACKAGE)
        if inside and last_outside is not None:
            last_outside.tb_next = None
            return
        last_outside = None if inside else tb
        tb = tb.tb_next


def _result(item: pytest.Item, run: Any) -> str:
    """The test's result, for every report alike (JSON, JUnit, a saved baseline): from its verdict, its fault and
    whether the plugin failed it itself (:func:`~pytest_rollout.plugin.outcome.result_of`)."""
    return result_of(run.verdict, item.stash.get(FAULT_KEY, None), failed=run.failed_with is not None)


def _settle(run: Any, fault: Fault) -> None:
    """Record the release's or the run's failure on *run* and judge what it measured, for the report only.

    The test's own failure is not the run's: what load ran is judged as it is, and nothing when none ran.
    """
    if fault.blame is not Blame.TEST:
        run.record_failure(fault.message, str(fault.blame))
    elif run.load is None:
        return
    _judge_quietly(run)


def _attach_properties(item: pytest.Item, run: Any) -> None:
    """Put the verdict into the test's user properties, so ``--junitxml`` carries it.

    Names: ``rollout:<phase>:<slo>``; in a mix of several routes, ``rollout:<phase>:route:<name>`` (the route's
    counts) and ``rollout:<phase>:route:<name>:<slo>``, where *name* is the route's with ``%`` written ``%25`` and
    ``:`` written ``%3A``, so a name never holds a ``:`` and every property name splits on ``:`` unambiguously.
    """
    verdict = run.verdict
    fault = item.stash.get(FAULT_KEY, None)
    if (verdict is None and fault is None) or any(name == "rollout_passed" for name, _ in item.user_properties):
        return
    result = _result(item, run)
    item.user_properties.append(("rollout_passed", str(result == TestResult.PASSED).lower()))
    item.user_properties.append(("rollout_result", result))
    if verdict is None:
        return
    item.user_properties.append(("rollout_requested_rps", f"{run.spec.requested_rps:g}"))
    item.user_properties.append(("rollout_risk", run.budget.sentence()))
    for e in verdict.entries:
        measured = "n/a" if e.measured is None else f"{e.measured:.6g}"
        if e.low is not None and e.high is not None:
            measured += f" [{e.low:.6g}, {e.high:.6g}]"
        bound = "n/a" if e.bound is None else f"{e.bound:g}"
        name = f"rollout:{e.phase}:{e.slo}" if e.route is None else f"rollout:{e.phase}:route:{_junit(e.route)}:{e.slo}"
        item.user_properties.append((name, f"{e.outcome} {measured} {e.comparison} {bound}"))
    for m in verdict.phases:  # a mix of several routes: each route's own counts and outcome, phase by phase
        for route, own in m.routes.items():
            item.user_properties.append((f"rollout:{m.phase}:route:{_junit(route)}", route_line(own, verdict.entries)))


def _junit(route: str) -> str:
    """A route's name in a JUnit property name: ``%`` and ``:`` percent-encoded (``api:v1`` is ``api%3Av1``)."""
    return route.replace("%", "%25").replace(":", "%3A")


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
        if report.when == "setup" and call.excinfo is not None and FAULT_KEY not in item.stash:
            # another fixture of the test failed after the rollout fixture was set up: settled by category too
            item.stash[FAULT_KEY] = fault_of(call.excinfo.value)
    if ROLLOUT_KEY in item.stash:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            item.stash[OUTCOME_KEY] = "error" if report.when == "setup" else report.outcome
    return report
