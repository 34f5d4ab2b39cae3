"""The end of a session: the exit status (decided first, from the verdicts alone), the reports, the terminal summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_rollout.judge.verdict import TestResult
from pytest_rollout.plugin.keys import EXIT_NOT_JUDGED, FAILED_KEY
from pytest_rollout.plugin.outcome import TEST_FAILED, exit_status
from pytest_rollout.plugin.session import SESSION_KEY, RolloutSession

__all__ = ["pytest_sessionfinish", "pytest_terminal_summary"]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    rollout_session = session.config.stash.get(SESSION_KEY, None)
    if rollout_session is None:
        return
    # the exit status is decided first, from the results alone (plugin/outcome.py): no report renderer can change it
    failed = session.config.stash.get(FAILED_KEY, set())
    results = {r["nodeid"]: r.get("result") for r in rollout_session.results}
    status = exit_status(exitstatus, failed, results)
    if status != exitstatus:
        session.exitstatus = status
    settings = rollout_session.settings
    try:
        if settings.report:
            from pytest_rollout.report.json_report import write_report

            report = settings.report
            _render(rollout_session, "JSON report", lambda: write_report(
                report, rollout_session.results, interrupted=exitstatus == pytest.ExitCode.INTERRUPTED
            ))  # fmt: skip
        if settings.save and rollout_session.measured:
            from pytest_rollout.judge.baseline import Baselines

            def save() -> None:
                saved = Baselines(settings.baseline_dir).save(
                    settings.save or "",
                    {k: v[0] for k, v in rollout_session.measured.items()},
                    {k: v[1] for k, v in rollout_session.measured.items()},
                )
                rollout_session.notes.append(f"baseline {settings.save!r} saved to {saved}")

            _render(rollout_session, "baseline", save)
        if settings.html and rollout_session.results:
            from pytest_rollout.report.html_report import write_html

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


def _before_any_load(record: dict[str, Any]) -> list[str]:
    """One line for a test its own code failed before any load: there is no table to show, nor anything to prove."""
    if record.get("result") != TEST_FAILED or record.get("phases"):
        return []
    return [f"{record['nodeid']} TEST FAILED before any load: {record.get('failure')} (see its failure above)"]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rollout_session = config.stash.get(SESSION_KEY, None)
    if rollout_session is None:
        return
    from pytest_rollout.report.json_report import format_summary

    if rollout_session.results and config.get_verbosity() >= -1:
        terminalreporter.section("rollout SLO summary")
        for record in rollout_session.results:
            try:
                lines = _before_any_load(record) or format_summary(record)
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
    if TestResult.NOT_PROVEN in results and TestResult.SLO_BROKEN not in results:
        terminalreporter.write_line(
            f"rollout: {results.count(TestResult.NOT_PROVEN)} SLO test(s) not proven (nothing was shown broken, nor held): "
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
