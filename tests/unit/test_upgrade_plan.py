"""Rolling-upgrade arithmetic (maxSurge / maxUnavailable)."""

from __future__ import annotations

import pytest

from pytest_rollout.errors import RolloutUsageError
from pytest_rollout.platforms.rolling import next_step, resolve_surge
from pytest_rollout.run.target import UpgradeStrategy


@pytest.mark.parametrize(
    ("surge", "unavailable", "replicas", "expected"),
    [
        ("25%", "25%", 3, (1, 0)),
        ("25%", "25%", 4, (1, 1)),
        ("25%", "25%", 10, (3, 2)),
        (1, 0, 3, (1, 0)),
        (0, 1, 3, (0, 1)),
        ("100%", 0, 2, (2, 0)),
        (2, 5, 3, (2, 3)),
    ],
)
def test_resolve(surge: object, unavailable: object, replicas: int, expected: tuple[int, int]) -> None:
    assert resolve_surge(surge, unavailable, replicas) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("surge", "unavailable"), [(0, 0), ("0%", "10%"), (-1, 1), ("x", 1), (True, 1), (1.5, 1)])
def test_resolve_rejects(surge: object, unavailable: object) -> None:
    with pytest.raises(RolloutUsageError):
        resolve_surge(surge, unavailable, 3)  # type: ignore[arg-type]


def simulate(replicas: int, surge: int, unavailable: int) -> list[tuple[int, int, int]]:
    """Run the planner to completion; every new replica becomes ready when waited for."""
    old, ready, pending = replicas, 0, 0
    seen = []
    for _ in range(100):
        if not old and ready == replicas:
            return seen
        step = next_step(replicas, surge, unavailable, old, ready, pending)
        old -= step.retire
        pending += step.start
        seen.append((old, ready, pending))
        assert old + ready + pending <= replicas + surge, "surge ceiling broken"
        assert old + ready >= replicas - unavailable, "availability floor broken"
        if pending:
            pending -= 1
            ready += 1
    raise AssertionError("no progress")


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable"), [(3, 1, 0), (3, 0, 1), (4, 1, 1), (10, 3, 2), (1, 1, 0), (2, 2, 0)]
)
def test_planner_completes_within_bounds(replicas: int, surge: int, unavailable: int) -> None:
    simulate(replicas, surge, unavailable)


def test_surge_first_when_nothing_may_be_unavailable() -> None:
    step = next_step(3, 1, 0, old=3, new_ready=0, new_pending=0)
    assert (step.retire, step.start) == (0, 1)
    step = next_step(3, 1, 0, old=3, new_ready=1, new_pending=0)
    assert (step.retire, step.start) == (1, 1)


def test_an_upgrade_strategy_is_checked_before_anything_moves() -> None:
    UpgradeStrategy().check(3)  # the defaults: 25% and 25%
    UpgradeStrategy(max_surge=0, max_unavailable=1).check(3)
    with pytest.raises(RolloutUsageError, match="max_surge"):
        UpgradeStrategy(max_surge="lots").check(3)
    with pytest.raises(RolloutUsageError, match=r"rollback_on_breach=1\) must be True or False"):
        UpgradeStrategy(rollback_on_breach=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        UpgradeStrategy(1, 0)  # type: ignore[misc]  # keyword-only: surge and unavailable cannot be swapped
