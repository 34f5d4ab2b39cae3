"""The plugin's own implementations of its hooks (make_platform, upgrade); a conftest's run first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_rollout.plugin.session import SESSION_KEY

__all__ = ["BuiltinHooks"]


class BuiltinHooks:
    """The plugin's own implementations of its hooks; a conftest's run first."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_rollout_make_platform(
        self, config: pytest.Config, name: str, run_dir: Any, procs: Any, rollout: Any
    ) -> Any:
        settings = config.stash[SESSION_KEY].settings
        if name == "local":
            from pytest_rollout.platforms.local.platform import LocalPlatform

            return LocalPlatform(
                procs, run_dir, haproxy_binary=settings.haproxy, endpoint_delay_s=settings.endpoint_delay_s
            )
        if name == "kubernetes":
            from pytest_rollout.platforms.kubernetes.platform import KubePlatform

            return KubePlatform(settings.kube, rollout.run_id, rollout.nodeid, rollout.lifetime_s())
        return None

    @pytest.hookimpl(trylast=True)
    def pytest_rollout_upgrade(
        self, rollout: Any, platform: Any, target: Any, max_surge: Any, max_unavailable: Any
    ) -> Any:
        on_event: Callable[[Any], None] = rollout.note_event
        return platform.upgrade(target, max_surge, max_unavailable, on_event)
