"""The live progress line (its text; the real run that shows it is in tests/e2e/test_reports.py)."""

from __future__ import annotations

from pytest_rollout.report.progress import format_progress


def test_the_progress_line_shows_phase_load_errors_latency_and_upgrade() -> None:
    line = format_progress(
        "upgrade", 3.2, None, 2000.0, {"rps": 1998.4, "error_rate": 0.00012, "p99_ms": 8.94}, upgrade=(2, 3)
    )
    assert line == (
        "[rollout] upgrade 3s | held 1,998 of 2,000 rps | errors 0.012% | p99 8.9 ms | upgrade 2 of 3 new replicas ready"
    )


def test_unknown_values_are_question_marks_not_zeros() -> None:
    line = format_progress("baseline", 12.0, 20.0, 500.0, {"rps": None, "error_rate": None, "p99_ms": None})
    assert line == "[rollout] baseline 12s/20s | held ? of 500 rps | errors ? | p99 ?"
    assert "\r" not in line
