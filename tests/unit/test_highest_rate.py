"""The capacity search behind `calibrate` and the benchmark, with a generator whose capacity is known."""

from __future__ import annotations

from typing import Any

from pytest_rollout.load.attack import highest_rate


def generator(capacity: float, hiccups: set[float] | None = None):  # type: ignore[no-untyped-def]
    """A trial that holds every rate up to *capacity*, except once at each rate in *hiccups* (a stall)."""
    hiccups = set(hiccups or ())
    calls: list[tuple[float, float]] = []

    def trial(rps: float, seconds: float) -> dict[str, Any]:
        calls.append((rps, seconds))
        stalled = rps in hiccups
        hiccups.discard(rps)
        late = 5 if stalled or rps > capacity else 0
        return {"requested_rps": rps, "held_rps": rps - late, "errors": {"dropped": late}}

    return trial, calls


def test_finds_the_capacity_and_confirms_it_with_a_long_run() -> None:
    trial, calls = generator(13_000)
    found = highest_rate(trial, 1000, 5, 10)
    # doubling to 16,000 (fails twice), bisection between 8,000 and 16,000, then one long run
    assert 12_000 <= found["held_rps"] <= 13_000
    assert (round(calls[-1][0]), calls[-1][1]) == (found["held_rps"], 10)
    assert all(seconds == 5 for _, seconds in calls[:-1])


def test_one_stall_does_not_end_the_search() -> None:
    """A single failed short trial (one request over 50 ms late) while doubling is tried again before the rate
    counts as too high; a rate over capacity fails both tries; bisection trials are run once."""
    trial, calls = generator(13_000, hiccups={4000})
    found = highest_rate(trial, 1000, 5, 10)
    assert 12_000 <= found["held_rps"] <= 13_000
    assert calls.count((4000, 5)) == 2 and calls.count((16_000, 5)) == 2
    assert calls.count((12_000, 5)) == 1 and calls.count((14_000, 5)) == 1  # bisection: 12,000 holds, 14,000 not


def test_a_long_run_that_fails_steps_the_rate_down_far_enough() -> None:
    """A long run may hold far less than short trials did: 10% steps, then 30% ones, find it."""
    trial, calls = generator(13_000)
    holds_short_only = {"limit": 4_000.0}

    def flaky(rps: float, seconds: float) -> dict[str, Any]:
        summary = trial(rps, seconds)
        if seconds == 10 and rps > holds_short_only["limit"]:
            return {**summary, "held_rps": rps * 0.9}
        return summary

    found = highest_rate(flaky, 1000, 5, 10)
    assert 2_000 < found["held_rps"] <= 4_000
    assert round([rps for rps, seconds in calls if seconds == 10][-1]) == found["held_rps"]
