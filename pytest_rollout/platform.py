"""Where the target and the fleet run: the :class:`Platform` protocol.

A platform deploys the target's first version, serves it at one URL for the
fleet, replaces it by a rolling upgrade, names the extra scrape targets it
offers Prometheus (a load balancer's exporter, say) and removes everything
at the end. ``local`` is built in; others come from the
``pytest_rollout_make_platform`` hook.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .errors import RolloutUsageError

__all__ = ["Platform", "TargetSpec", "UpgradeEvent", "UpgradeResult"]


@dataclass(frozen=True)
class TargetSpec:
    """One version of the target, as ``rollout.deploy()`` / ``upgrade()`` describe it."""

    command: tuple[str, ...]
    version: str
    replicas: int = 1
    ready_path: str = "/healthz"
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 30.0
    grace_period_s: float = 10.0
    cwd: str | None = None

    @classmethod
    def build(
        cls,
        command: Sequence[str] | None,
        *,
        version: str,
        replicas: int,
        ready_path: str,
        env: Mapping[str, str] | None,
        ready_timeout: float,
        grace_period: float,
        cwd: str | os.PathLike[str] | None,
        what: str,
    ) -> TargetSpec:
        if command is None:
            raise RolloutUsageError(f"rollout.{what}() needs command=[...]: the argv that starts one replica")
        if isinstance(command, (str, bytes)) or not all(isinstance(a, (str, os.PathLike)) for a in command):
            raise RolloutUsageError(f"rollout.{what}(command=...) must be a list of strings (an argv), got {command!r}")
        argv = tuple(os.fspath(a) for a in command)
        if not argv:
            raise RolloutUsageError(f"rollout.{what}(command=[]) is empty")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise RolloutUsageError(f"rollout.{what}(replicas={replicas!r}) must be an int >= 1")
        if not isinstance(ready_path, str) or not ready_path.startswith("/"):
            raise RolloutUsageError(f"rollout.{what}(ready_path={ready_path!r}) must start with '/'")
        if env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise RolloutUsageError(f"rollout.{what}(env=...) must map str to str")
        if "PORT" in (env or {}):
            raise RolloutUsageError(f"rollout.{what}(env=...) must not set PORT: the platform assigns it")
        for name, value in (("ready_timeout", ready_timeout), ("grace_period", grace_period)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise RolloutUsageError(f"rollout.{what}({name}={value!r}) must be a number of seconds > 0")
        return cls(
            command=argv,
            version=version,
            replicas=replicas,
            ready_path=ready_path,
            env=dict(env or {}),
            ready_timeout_s=float(ready_timeout),
            grace_period_s=float(grace_period),
            cwd=os.fspath(cwd) if cwd is not None else None,
        )


@dataclass(frozen=True)
class UpgradeEvent:
    """Something that happened to a replica during deploy or upgrade."""

    at: float  # Unix seconds
    action: str  # start, ready, out, exit, failed
    replica: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "action": self.action, "replica": self.replica, "detail": self.detail}


@dataclass(frozen=True)
class UpgradeResult:
    start: float
    end: float
    replaced: int
    events: tuple[UpgradeEvent, ...]


@runtime_checkable
class Platform(Protocol):
    """What the ``rollout`` fixture needs from where the target runs."""

    name: str

    @property
    def url(self) -> str:
        """Where the fleet sends its requests (``http://host:port``)."""

    def deploy(self, target: TargetSpec, on_event: Callable[[UpgradeEvent], None]) -> None:
        """Bring up *target* and return once every replica is ready and serving."""

    def upgrade(
        self,
        target: TargetSpec,
        max_surge: int | str,
        max_unavailable: int | str,
        on_event: Callable[[UpgradeEvent], None],
    ) -> UpgradeResult:
        """Replace the running version by *target*, rolling, under load."""

    def scrape_targets(self, run_id: str) -> list[dict[str, Any]]:
        """Extra file_sd groups for Prometheus (may be empty)."""

    def describe(self) -> str:
        """How to reach what runs (for --rollout-keep)."""

    def teardown(self) -> list[str]:
        """Stop everything; return problems worth reporting (empty when clean)."""
