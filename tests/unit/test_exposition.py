"""A worker's /metrics text, written by hand (pytest_rollout.load.exposition): read back by prometheus_client's
own parser, every series says what the counts say, for every phase and route, odd route names included."""

from __future__ import annotations

import random
import time

from prometheus_client.parser import text_string_to_metric_families

from pytest_rollout.load.counters import WorkerStats
from pytest_rollout.load.exposition import Exposition
from pytest_rollout.load.histogram import BOUNDS
from pytest_rollout.load.protocol import CLASSES

ROUTES = ["home", 'GET "/q"\\x', "line\nbreak", "ünï"]


def _stats(seed: int) -> WorkerStats:
    rng = random.Random(seed)
    stats = WorkerStats(ROUTES)
    for i in range(3):
        stats.add_phase(f"p{i}", 10.0 * i)
    for _ in range(5_000):
        due = rng.uniform(-5, 30)
        route = rng.randrange(len(ROUTES))
        klass = rng.randrange(len(CLASSES))
        if rng.random() < 0.05:
            stats.fell_behind(due, route)
        else:
            stats.record(klass, due, None if CLASSES[klass] == "dropped" else rng.expovariate(20), route)
        if rng.random() < 0.01:
            stats.resend(due, route)
    stats.scheduled, stats.inflight, stats.max_lag = 5_000, 7, 0.0125
    return stats


def test_the_text_reads_back_as_the_counts_for_every_phase_and_route() -> None:
    stats = _stats(7)
    text = Exposition().render(stats, 123.5).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    by_route = stats.by_route()
    assert set(by_route) == {"-", "p0", "p1", "p2"}
    requests = {(s.labels["phase"], s.labels["route"], s.labels["class"]): s.value
                for s in families["rollout_requests"].samples}  # fmt: skip
    late = {(s.labels["phase"], s.labels["route"]): s.value for s in families["rollout_late"].samples}
    resent = {(s.labels["phase"], s.labels["route"]): s.value for s in families["rollout_resent"].samples}
    hist = families["rollout_request_duration_seconds"].samples
    for phase, routes in by_route.items():
        for route, totals in routes.items():
            assert {k: requests[(phase, route, k)] for k in CLASSES} == dict(totals.by_class.items())
            assert late[(phase, route)] == totals.late and resent[(phase, route)] == totals.resent
            mine = [s for s in hist if s.labels["phase"] == phase and s.labels["route"] == route]
            buckets = [s for s in mine if s.name.endswith("_bucket")]
            assert [float(s.labels["le"]) for s in buckets] == [*BOUNDS, float("inf")]
            values = [s.value for s in buckets]
            assert values == sorted(values)  # cumulative
            answered = sum(v for k, v in totals.by_class.items() if k != "dropped")
            (count,) = [s.value for s in mine if s.name.endswith("_count")]
            (total,) = [s.value for s in mine if s.name.endswith("_sum")]
            assert values[-1] == count == answered
            assert abs(total - stats.phase_stats[stats.phase_names.index(phase)][ROUTES.index(route)].hist.sum) < 1e-9
    gauges = {f.name: f.samples[0].value for f in families.values() if len(f.samples) == 1}
    assert gauges == {"rollout_scheduled": 5_000, "rollout_inflight": 7, "rollout_max_lag_seconds": 0.0125,
                      "rollout_target_rps": 123.5}  # fmt: skip


def test_a_large_mix_renders_in_a_few_milliseconds_and_the_prefixes_are_kept() -> None:
    """20 routes over 5 phases: ~16,000 lines. The time is printed, not asserted (a busy machine varies it); what
    is asserted is that the second scrape reuses every series' prefixes and says the same."""
    stats = WorkerStats([f"route-{i}" for i in range(20)])
    for i in range(4):
        stats.add_phase(f"p{i}", 10.0 * i)
    exposition = Exposition()
    first = exposition.render(stats, 1.0)
    kept = dict(exposition._series)
    started = time.perf_counter()
    second = exposition.render(stats, 1.0)
    took_ms = (time.perf_counter() - started) * 1e3
    print(f"20 routes x 5 phases: {len(first.splitlines()):,} lines in {took_ms:.1f} ms")
    assert first == second and len(kept) == 100 and all(exposition._series[k] is v for k, v in kept.items())


def test_gauges_that_are_not_finite_are_written_as_the_text_format_spells_them() -> None:
    stats = WorkerStats(["r"])
    for value, spelled in ((float("inf"), "+Inf"), (float("-inf"), "-Inf"), (float("nan"), "NaN"), (2.5, "2.5")):
        text = Exposition().render(stats, value).decode()
        assert f"rollout_target_rps {spelled}\n" in text
        (family,) = [f for f in text_string_to_metric_families(text) if f.name == "rollout_target_rps"]
        assert str(family.samples[0].value) in ("inf", "-inf", "nan", "2.5")
