"""The hint for a broken upgrade whose errors follow the old pods' termination (pytest_rollout.run.hints)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from kubernetes.client import V1ObjectMeta, V1Pod

from pytest_rollout.judge.verdict import Kind, Outcome, make_entry
from pytest_rollout.platforms.base import UpgradeEvent
from pytest_rollout.platforms.kubernetes.watch import happened, terminating_since
from pytest_rollout.run.hints import termination_hint

BROKEN = [make_entry(Kind.ERROR_RATE, "error_rate", "upgrade", 0.05, 0.001, Outcome.BROKEN, "x")]
HELD = [make_entry(Kind.ERROR_RATE, "error_rate", "upgrade", 0.0, 0.001, Outcome.HELD)]
UPGRADE = (100.0, 130.0)


def out(at: float, pod: str, pre_stop: float | None = 0.0, grace: float | None = 30.0) -> UpgradeEvent:
    return UpgradeEvent(at, "out", pod, "terminating", pre_stop, grace)


def series(*bad: float) -> list[list[float]]:
    """An error-rate series over the upgrade, one point a second, non-zero at *bad* times."""
    return [[float(t), 0.02 if t in bad else 0.0] for t in range(95, 140)]


def test_errors_that_follow_each_termination_name_the_pods_facts_and_the_remedies() -> None:
    events = [out(105.0, "shop-a"), out(112.0, "shop-b"), out(119.0, "shop-c")]
    hint = termination_hint(BROKEN, events, series(106, 107, 108, 113, 114, 120), UPGRADE)
    assert hint is not None
    assert "3 of 3 terminations were followed by errors, the first 1.0s after shop-a began" in hint
    assert "lasted up to 3.0s after a termination began" in hint
    assert "Those pods had no preStop sleep and a grace period of 30s." in hint
    assert "preStop sleep of at least the endpoint propagation time" in hint and "about 3s or more" in hint
    assert "more than 3s plus the drain (now 30s)" in hint


def test_the_pods_own_pre_stop_and_grace_period_are_the_ones_named() -> None:
    events = [out(105.0, "shop-a", pre_stop=1.0, grace=2.0)]
    hint = termination_hint(BROKEN, events, series(106, 109, 110), UPGRADE)
    assert hint is not None
    assert "a preStop sleep of 1s and a grace period of 2s" in hint and "about 5s or more" in hint


def test_no_hint_when_the_facts_point_elsewhere() -> None:
    events = [out(105.0, "shop-a"), out(112.0, "shop-b")]
    assert termination_hint(HELD, events, series(106), UPGRADE) is None  # nothing broken
    assert termination_hint(BROKEN, events, series(101, 106), UPGRADE) is None  # errors before any termination
    assert termination_hint(BROKEN, events, series(106, 135), UPGRADE[:1] + (140.0,)) is None  # errors long after
    assert termination_hint(BROKEN, events, series(), UPGRADE) is None  # no errors (broken on latency)
    assert termination_hint(BROKEN, [], series(106), UPGRADE) is None  # no termination seen
    unknown = [out(105.0, "v1-0", pre_stop=None, grace=None)]  # a platform that does not say how it terminates
    assert termination_hint(BROKEN, unknown, series(106), UPGRADE) is None
    assert termination_hint(BROKEN, events, series(106), None) is None  # no upgrade phase
    # the new version's own 5xx answers follow the terminations too (maxUnavailable 0): not this cause
    assert termination_hint(BROKEN, events, series(106), UPGRADE, {"http_5xx": 40, "connection": 2}) is None
    assert termination_hint(BROKEN, events, series(106), UPGRADE, {"connection": 30, "timeout": 20}) is not None


def test_the_kind_race_run_that_lost_its_hint_keeps_it_with_terminations_timed_by_the_api_server() -> None:
    """A real run (the kind race test in CI, 2026-12-06): the watcher saw the first old pod terminating at
    574.63, 0.6 s after the error series' first non-zero point (574.0, its 3 s window holding the first
    refused connections). Timed by the poll, the errors came "before any termination" and the hint was lost;
    timed by the API server (deletion timestamp less the grace period, a whole second: 574 - 20 + 20 =
    574.0 at most), it is given."""
    base = 1796592000.0
    upgrade = (base + 571.708, base + 581.984)
    rates = [0.0] * 14 + [0.0078, 0.0073, 0.0146, 0.0158, 0.0216, 0.0442, 0.0, 1.0, 1.0]
    times = list(range(560, 580)) + [580, 583, 584]
    errors = [[base + t, r] for t, r in zip(times, rates, strict=True)]
    by_class = {"http_4xx": 0, "http_5xx": 0, "timeout": 1490, "connection": 7}
    polled = [out(base + 574.630, "shop-45vbn", grace=20.0), out(base + 576.970, "shop-t5rbt", grace=20.0)]
    polled.append(out(base + 579.488, "shop-6x662", grace=20.0))
    assert termination_hint(BROKEN, polled, errors, upgrade, by_class) is None
    # each pod's deletion timestamp as the API server wrote it: when it was asked for (a little before the
    # poll saw it), plus 20 s, cut down to the second
    pods = [
        V1Pod(
            metadata=V1ObjectMeta(
                deletion_timestamp=datetime.fromtimestamp(math.floor(e.at - 0.1) + 20.0, tz=UTC),
                deletion_grace_period_seconds=20,
            )
        )
        for e in polled
    ]
    served = [
        UpgradeEvent(happened(base + 574.3, e.at, terminating_since(pod)), "out", e.replica, e.detail, 0.0, 20.0)
        for e, pod in zip(polled, pods, strict=True)
    ]
    assert [e.at - base for e in served] == [574.0, 576.0, 579.0]
    hint = termination_hint(BROKEN, served, errors, upgrade, by_class)
    assert hint is not None and "3 of 3 terminations were followed by errors" in hint


def test_a_change_is_timed_by_the_api_server_only_where_its_clock_agrees_with_the_polls() -> None:
    # between the last listing that did not show it (less the server's one-second precision) and this one
    assert happened(100.0, 102.5, 101.0) == 101.0
    assert happened(100.0, 102.5, 99.0) == 99.0  # a whole second cut down: 99.9 written as 99
    assert happened(100.0, 102.5, 102.5) == 102.5
    # a server clock ahead of this one, or behind it, is not taken; nor a missing time
    assert happened(100.0, 102.5, 103.0) == 102.5
    assert happened(100.0, 102.5, 98.9) == 102.5
    assert happened(100.0, 102.5, None) == 102.5


def test_a_pod_not_terminating_has_no_termination_time() -> None:
    assert terminating_since(V1Pod(metadata=V1ObjectMeta(name="shop-a"))) is None


def test_an_out_stamped_up_to_a_second_before_the_upgrade_began_is_still_the_upgrades() -> None:
    # the server's whole second may put a termination the upgrade caused just before its start
    hint = termination_hint(BROKEN, [out(99.5, "shop-a")], series(101, 102), UPGRADE)
    assert hint is not None and "1 of 1 terminations" in hint
    assert termination_hint(BROKEN, [out(98.5, "shop-a")], series(101, 102), UPGRADE) is None
