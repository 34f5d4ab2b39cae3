"""Hooks pytest-rollout calls, for a ``conftest.py`` or plugin to implement.

Factory hooks are ``firstresult``: the first implementation that returns
something other than ``None`` wins. The plugin implements each of them itself
(``trylast``), so an implementation in a conftest runs first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

__all__ = [
    "pytest_rollout_add_verdicts",
    "pytest_rollout_make_platform",
    "pytest_rollout_phase_end",
    "pytest_rollout_phase_start",
    "pytest_rollout_upgrade",
]

if TYPE_CHECKING:
    from pytest_rollout.judge.verdict import VerdictEntry
    from pytest_rollout.platforms.base import Platform, TargetSpec, UpgradeResult
    from pytest_rollout.run.rollout import Rollout


@pytest.hookspec(firstresult=True)
def pytest_rollout_make_platform(
    config: pytest.Config, name: str, run_dir: Any, procs: Any, rollout: Rollout
) -> Platform | None:
    """Return the platform called *name* (from ``--rollout-platform``), or None if it is not yours.

    *run_dir* is the run's temporary directory (a :class:`pathlib.Path`),
    *procs* the :class:`pytest_rollout.procs.ProcessSet` to start processes with
    and *rollout* the test's :class:`pytest_rollout.Rollout` (its ``run_id``,
    ``nodeid``, ``spec``).

    .. versionchanged:: 0.2 the *rollout* argument.

    .. versionadded:: 0.1
    """


@pytest.hookspec(firstresult=True)
def pytest_rollout_upgrade(
    rollout: Rollout, platform: Platform, target: TargetSpec, max_surge: int | str, max_unavailable: int | str
) -> UpgradeResult | None:
    """Perform the rolling upgrade to *target* (e.g. a ``helm upgrade``), or return None to leave it to others.

    The default implementation calls ``platform.upgrade``. The upgrade phase
    spans this call; raise :class:`pytest_rollout.UpgradeFailed` when it fails.

    .. versionadded:: 0.1
    """


@pytest.hookspec
def pytest_rollout_phase_start(rollout: Rollout, phase: str, at: float) -> None:
    """Phase *phase* (``ramp``, ``baseline``, ``upgrade``, ``after``) starts at Unix time *at*.

    The hook is called ahead of *at* (by up to the fleet's edge lead, a fraction of a second), so that every
    worker knows of the edge in time: something meant to happen during the phase waits until *at*.

    .. versionadded:: 0.1
    """


@pytest.hookspec
def pytest_rollout_phase_end(rollout: Rollout, phase: str, start: float, end: float) -> None:
    """Phase *phase* ended; it spanned Unix times *start* to *end*.

    .. versionadded:: 0.1
    """


@pytest.hookspec
def pytest_rollout_add_verdicts(rollout: Rollout, entries: list[VerdictEntry]) -> list[VerdictEntry] | None:
    """Return extra verdict entries to add to *entries* (the plugin's own, read-only).

    An added entry with ``passed=False`` fails the test: that is how a hook
    vetoes a release the built-in SLOs would let through.

    .. versionadded:: 0.1
    """
