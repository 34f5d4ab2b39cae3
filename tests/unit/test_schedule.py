"""Open-loop arrival schedules."""

from __future__ import annotations

import itertools
import math

import pytest

from pytest_rollout.load.schedule import Segment, arrivals, expected_count, rate_at


def test_constant_rate_is_exact_without_drift() -> None:
    times = list(itertools.islice(arrivals([Segment(None, 1000.0, 1000.0)]), 1_000_001))
    assert times[0] == 0.0
    assert times[1000] == pytest.approx(1.0)
    assert times[1_000_000] == pytest.approx(1000.0, abs=1e-9)


def test_ramp_then_hold_counts_match_the_integral() -> None:
    segments = [Segment(10.0, 0.0, 100.0), Segment(None, 100.0, 100.0)]
    times = list(itertools.takewhile(lambda t: t < 20.0, arrivals(segments)))
    # 10 s ramp to 100 rps = 500 requests, then 10 s at 100 rps = 1000
    assert len(times) == pytest.approx(1500, abs=1)
    assert sum(1 for t in times if t < 10.0) == pytest.approx(500, abs=1)
    assert expected_count(segments, 0.0, 20.0) == pytest.approx(1500)
    assert expected_count(segments, 5.0, 10.0) == pytest.approx(375)
    assert times == sorted(times)


def test_ramp_rate_rises_linearly() -> None:
    times = list(
        itertools.takewhile(lambda t: t < 10.0, arrivals([Segment(10.0, 0.0, 1000.0), Segment(None, 1000.0, 1000.0)]))
    )
    first_second = sum(1 for t in times if t < 1.0)
    last_second = sum(1 for t in times if t >= 9.0)
    assert first_second == pytest.approx(50, abs=1)
    assert last_second == pytest.approx(950, abs=1)


def test_phases_interleave_workers() -> None:
    a = list(itertools.islice(arrivals([Segment(None, 10.0, 10.0)], phase=0.0), 3))
    b = list(itertools.islice(arrivals([Segment(None, 10.0, 10.0)], phase=0.5), 3))
    assert a == pytest.approx([0.0, 0.1, 0.2])
    assert b == pytest.approx([0.05, 0.15, 0.25])


def test_finite_schedule_ends() -> None:
    times = list(arrivals([Segment(2.0, 5.0, 5.0)]))
    assert len(times) == 10
    assert all(0 <= t < 2.0 for t in times)


@pytest.mark.parametrize(
    "segments",
    [[], [Segment(None, 5, 5), Segment(1, 5, 5)], [Segment(None, 0, 0)], [Segment(None, 1, 2)], [Segment(-1, 1, 1)]],
)
def test_invalid_schedules(segments: list[Segment]) -> None:
    with pytest.raises(ValueError):
        next(arrivals(segments))


def test_expected_count_open_segment() -> None:
    assert expected_count([Segment(None, 50.0, 50.0)], 2.0, 4.0) == pytest.approx(100.0)
    assert math.isinf(Segment(None, 1, 1).count())


def test_rate_at() -> None:
    segments = [Segment(10.0, 0.0, 100.0), Segment(None, 100.0, 100.0)]
    assert rate_at(segments, -1.0) == 0.0
    assert rate_at(segments, 2.5) == pytest.approx(25.0)
    assert rate_at(segments, 60.0) == 100.0
    assert rate_at([Segment(2.0, 5.0, 5.0)], 3.0) == 0.0
