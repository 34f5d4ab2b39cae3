"""A worker's counters: each request counts for the phase in which it was due, whatever the order."""

from __future__ import annotations

import random

import pytest

from pytest_rollout.load.counters import WorkerStats
from pytest_rollout.load.histogram import Histogram
from pytest_rollout.load.protocol import CLASSES, DROPPED, HTTP_5XX, OK


def _by_phase(stats: WorkerStats) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p["by_class"].values()) for name, p in stats.totals()["phases"].items()}


def test_requests_count_for_the_phase_they_were_due_in_whatever_the_order() -> None:
    """The per-request path remembers the last phase it used; requests that end out of order, and phases
    announced after requests were already counted, must still land where a fresh lookup would put them."""
    rng = random.Random(7)
    stats = WorkerStats()
    expected: dict[str, list[int]] = {name: [0] * len(CLASSES) for name in ("-", "a", "b", "c")}
    hists = {name: Histogram() for name in expected}
    edges = [("a", 10.0), ("b", 20.0), ("c", 30.0)]
    started: list[tuple[str, float]] = [("-", float("-inf"))]

    def phase_for(due: float) -> str:
        return [name for name, at in started if at <= due][-1]

    for step in range(4000):
        if edges and step % 1000 == 999:  # a phase edge is announced mid-run, ahead of the requests due in it
            name, at = edges.pop(0)
            stats.add_phase(name, at)
            started.append((name, at))
        due = rng.uniform(0.0, 40.0)  # due times jump back and forth across the edges
        klass = rng.choice((OK, OK, OK, HTTP_5XX, DROPPED))
        latency = None if klass == DROPPED else rng.uniform(0.0001, 0.5)
        stats.record(klass, due, latency)
        expected[phase_for(due)][klass] += 1
        if latency is not None:
            hists[phase_for(due)].observe(latency)
    assert _by_phase(stats) == {name: tuple(counts) for name, counts in expected.items()}
    for name, phase in stats.totals()["phases"].items():
        assert phase["histogram"] == hists[name].to_list()
        assert phase["latency_sum_s"] == pytest.approx(hists[name].sum)
    assert stats.total == 4000


def test_a_due_time_exactly_on_an_edge_counts_for_the_new_phase() -> None:
    stats = WorkerStats()
    stats.record(OK, 5.0, 0.001)  # caches "-" up to +inf
    stats.add_phase("a", 5.0)
    stats.record(OK, 5.0, 0.001)
    stats.record(OK, 4.999, 0.001)
    assert _by_phase(stats)["-"][OK] == 2 and _by_phase(stats)["a"][OK] == 1
    assert stats.phase_of(5.0) is stats.phase_stats[1] and stats.phase_of(4.0) is stats.phase_stats[0]
