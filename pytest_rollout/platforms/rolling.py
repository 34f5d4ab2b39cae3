"""Rolling-upgrade arithmetic, as a Kubernetes Deployment does it. Pure logic.

``max_surge`` and ``max_unavailable`` take an int or a percentage string of
the desired replicas; like Kubernetes, a surge percentage rounds up and an
unavailable percentage rounds down, and both may not be 0. The defaults are
Kubernetes' own, 25% and 25% (for 3 replicas: surge 1, unavailable 0).

At each step the controller first retires as many old replicas as the
availability floor allows (``replicas - max_unavailable`` must stay ready),
then starts as many new ones as the ceiling allows
(``replicas + max_surge`` may exist), then waits for a new one to be ready.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pytest_rollout.errors import RolloutUsageError

__all__ = ["DEFAULT_SURGE", "DEFAULT_UNAVAILABLE", "Step", "next_step", "resolve_surge"]

#: Kubernetes' own defaults for a Deployment's rolling update.
DEFAULT_SURGE = DEFAULT_UNAVAILABLE = "25%"

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _resolve(value: int | str, replicas: int, name: str, round_up: bool) -> int:
    if isinstance(value, bool):
        raise RolloutUsageError(f"{name}={value!r} must be an int or a percentage like '25%'")
    if isinstance(value, int):
        if value < 0:
            raise RolloutUsageError(f"{name}={value} must be >= 0")
        return value
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match:
            exact = float(match.group(1)) * replicas / 100.0
            return math.ceil(exact - 1e-9) if round_up else math.floor(exact + 1e-9)
    raise RolloutUsageError(f"{name}={value!r} must be an int or a percentage like '25%'")


def resolve_surge(max_surge: int | str, max_unavailable: int | str, replicas: int) -> tuple[int, int]:
    """``(surge, unavailable)`` as replica counts for *replicas* desired replicas."""
    surge = _resolve(max_surge, replicas, "max_surge", round_up=True)
    unavailable = _resolve(max_unavailable, replicas, "max_unavailable", round_up=False)
    if surge == 0 and unavailable == 0:
        raise RolloutUsageError(
            f"max_surge={max_surge!r} and max_unavailable={max_unavailable!r} are both 0 for {replicas} "
            "replicas: the upgrade could never make progress; allow a surge of at least 1"
        )
    return surge, min(unavailable, replicas)


@dataclass(frozen=True)
class Step:
    retire: int  # old replicas to take out of rotation and terminate now
    start: int  # new replicas to start now


def next_step(replicas: int, surge: int, unavailable: int, old: int, new_ready: int, new_pending: int) -> Step:
    """What to do now, given counts of live old, ready new and starting new replicas."""
    floor = replicas - unavailable
    retire = max(0, min(old, old + new_ready - floor))
    old -= retire
    start = max(0, min(replicas + surge - (old + new_ready + new_pending), replicas - new_ready - new_pending))
    return Step(retire=retire, start=start)
