"""Whose failure ended a test, decided in one place by the error's category; from it the test's result and the
session's exit status.

An exception that ends an SLO test is the test's, the release's or the run's (the categories of
:mod:`pytest_rollout.errors`)::

    the test's      InputError (the rollout fixture misused, a bad argument) or any exception that is not
                    a RolloutError (the test's own code): the test fails as pytest would, its traceback
                    shown; result "test_failed", exit 1, never "not proven"
    the release's   ReleaseError (a replica never ready, an upgrade stuck): SLO broken, exit 1
    the run's       RunError (a process that would not start, the fleet, Prometheus, the cluster) or a bare
                    RolloutError: not proven, exit 6 when no other test failed

A test failed by the plugin's own verdict (``rollout.verify()``, a phase cut short) carries no fault: its
verdict decides, and is never a pass there (a run stopped on a breach the live data proved, which the final
look did not confirm, is not proven). A test whose own code failed after load was run keeps "slo_broken" when
the partial run already proved a breach (a fact about the release, and exit 1 either way); else it is
"test_failed".
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import pytest

from pytest_rollout.errors import InputError, ReleaseError, RolloutError
from pytest_rollout.judge.verdict import TestResult, Verdict
from pytest_rollout.plugin.keys import EXIT_NOT_JUDGED

__all__ = ["Blame", "FAULT_KEY", "Fault", "TEST_FAILED", "exit_status", "fault_of", "result_of"]

#: The result of an SLO test that its own code (or a misuse of the fixture) failed: nothing about the release.
TEST_FAILED = "test_failed"


class Blame(enum.StrEnum):
    """Whose failure it is; ``release`` and ``run`` are also the run's failure kinds."""

    TEST = "test"
    RELEASE = "release"
    RUN = "run"


@dataclass(frozen=True)
class Fault:
    """The exception that ended a test, as the reports tell it, and whose it is."""

    blame: Blame
    message: str  # "TypeError: Rollout.deploy() got an unexpected keyword argument 'comand'"


FAULT_KEY = pytest.StashKey[Fault]()
"""The item's fault, when an exception (not the plugin's own verdict) ended it."""


def fault_of(exc: BaseException) -> Fault:
    """Whose *exc* is, by its category alone (see the module's table)."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ReleaseError):
        return Fault(Blame.RELEASE, message)
    if isinstance(exc, InputError) or not isinstance(exc, RolloutError):
        return Fault(Blame.TEST, message)
    return Fault(Blame.RUN, message)  # a RunError, or a RolloutError of no narrower category: the tool's


def result_of(verdict: Verdict | None, fault: Fault | None, *, failed: bool = False) -> str:
    """A test's result (the JSON report's ``result`` and ``passed``, JUnit's ``rollout_result`` and
    ``rollout_passed``, what ``--rollout-save`` counts as a pass): its verdict's, unless a fault ended it (see the
    module's table); *failed*: the plugin failed the test itself. Never judged and no fault (interrupted, skipped)
    is not proven, as before."""
    judged = verdict.result if verdict is not None else TestResult.NOT_PROVEN
    if fault is None:
        if failed and judged is TestResult.PASSED:
            return str(TestResult.NOT_PROVEN)  # stopped early on a live-proven breach the final look did not confirm
        return str(judged)
    if fault.blame is Blame.RELEASE or judged is TestResult.SLO_BROKEN:
        return str(TestResult.SLO_BROKEN)  # a breach proven before the fault stands
    if fault.blame is Blame.RUN:
        return str(TestResult.NOT_PROVEN)  # a test the run failed is never a pass, even after a passing verify()
    return TEST_FAILED


def exit_status(exitstatus: int, failed: Collection[str], results: Mapping[str, str | None]) -> int:
    """The session's exit status: :data:`EXIT_NOT_JUDGED` (6) when every failed test is an SLO test whose result is
    "not proven"; else pytest's own (a broken SLO, a test's own failure or any other failing test wins: 1)."""
    if (
        exitstatus == pytest.ExitCode.TESTS_FAILED
        and failed
        and all(results.get(nodeid) == TestResult.NOT_PROVEN for nodeid in failed)
    ):
        return EXIT_NOT_JUDGED
    return exitstatus
