"""The hint for a broken upgrade whose errors follow the old pods' termination (pytest_rollout.run.hints)."""

from __future__ import annotations

from pytest_rollout.judge.verdict import Kind, Outcome, make_entry
from pytest_rollout.platforms.base import UpgradeEvent
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
