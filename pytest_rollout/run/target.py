"""The target of one run through its versions: deployed, rolled to once, and rolled back when asked.

What one ``rollout.deploy()`` / ``upgrade()`` call gives is a
:class:`~pytest_rollout.platforms.base.TargetOptions`; :class:`Target` fills in what it did not give
(``TargetOptions.inherit``: the platform's defaults for version 1, the deployed version's settings for the
next), has :meth:`TargetSpec.build <pytest_rollout.platforms.base.TargetSpec.build>` check it, and numbers
it. How ``upgrade()`` rolls is an :class:`UpgradeStrategy`, checked before anything moves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from pytest_rollout.errors import RolloutError, RolloutUsageError
from pytest_rollout.platforms.base import Platform, TargetOptions, TargetSpec, UpgradeEvent
from pytest_rollout.platforms.rolling import DEFAULT_SURGE, DEFAULT_UNAVAILABLE, resolve_surge

__all__ = ["Target", "UpgradeStrategy"]


@dataclass(frozen=True, kw_only=True)
class UpgradeStrategy:
    """How ``rollout.upgrade()`` rolls, beside the new version: surge, unavailability, and the way back."""

    max_surge: int | str | None = None  # None: the platform's default (25% locally, the Deployment's own)
    max_unavailable: int | str | None = None
    rollback_on_breach: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.rollback_on_breach, bool):
            raise RolloutUsageError(
                f"rollout.upgrade(rollback_on_breach={self.rollback_on_breach!r}) must be True or False"
            )

    def check(self, replicas: int) -> None:
        """Raise RolloutUsageError if the surge or the unavailability make no rollout of *replicas* replicas."""
        resolve_surge(
            DEFAULT_SURGE if self.max_surge is None else self.max_surge,
            DEFAULT_UNAVAILABLE if self.max_unavailable is None else self.max_unavailable,
            replicas,
        )


class Target:
    """The system under test: its platform, the version deployed, and the way back (``rollback_on_breach``)."""

    def __init__(self, cwd: str | os.PathLike[str], on_event: Callable[[UpgradeEvent], None]) -> None:
        self._cwd = cwd  # where relative paths of a call are taken from, unless it gives cwd=
        self._on_event = on_event
        self._versions = 0
        self.platform: Platform | None = None
        self.deployed: TargetSpec | None = None  # the version the platform runs (the new one from the upgrade's end)
        self.strategy: UpgradeStrategy | None = None  # how the upgrade rolls, once it began

    def deploy(self, platform: Platform, given: TargetOptions) -> None:
        """Deploy version 1 on *platform*: *given*, with the platform's defaults for what it does not give."""
        self.platform = platform
        defaults = TargetOptions(ready_timeout=platform.ready_timeout_s, cwd=self._cwd)
        target = self._version(given.inherit(defaults), "deploy")
        platform.deploy(target, self._on_event)
        self.deployed = target

    def next_version(self, given: TargetOptions, strategy: UpgradeStrategy) -> TargetSpec:
        """The version to roll to: *given*, with the deployed version's settings for what it does not give.

        A bad value, of the version or of *strategy*, fails here, before anything moves.
        """
        assert self.deployed is not None, "Rollout.upgrade() asks for a version only once one was deployed"
        target = self._version(given.inherit(self.deployed.options), "upgrade")
        strategy.check(target.replicas)
        self.strategy = strategy
        return target

    def roll_back(self) -> str | None:
        """With ``rollback_on_breach``, return the target to the previous version; what was done (None: nothing)."""
        if self.strategy is None or not self.strategy.rollback_on_breach or self.platform is None:
            return None
        try:
            return self.platform.rollback(self._on_event)
        except RolloutError as exc:
            return f"rollback failed: {exc}"

    def close(self, keep: bool) -> tuple[list[str], str | None]:
        """Tear the target down, or (*keep*) mark it to stay: the problems met, and how to reach what stays."""
        if self.platform is None:
            return [], None
        if keep:
            self.platform.keep()
            return [], self.platform.describe()
        return self.platform.teardown(), None

    def _version(self, options: TargetOptions, what: str) -> TargetSpec:
        """The next version (v1, v2, ...), made of *options*; *what* names the call in what a bad value raises."""
        self._versions += 1
        return TargetSpec.build(options, version=f"v{self._versions}", what=what)
