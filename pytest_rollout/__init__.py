"""pytest-rollout: make "this release upgrades with zero downtime at N rps" an ordinary pytest test.

The public API; everything else is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_rollout.errors import (
    FleetError,
    InputError,
    KubernetesError,
    LoadBalancerError,
    ProcessStartError,
    PrometheusError,
    ReleaseError,
    ReplicaNotReady,
    RolloutError,
    RolloutUsageError,
    RunError,
    SLOSpecError,
    UpgradeFailed,
)

if TYPE_CHECKING:
    from pytest_rollout.judge.verdict import PhaseMeasurement, Verdict, VerdictEntry
    from pytest_rollout.load.mix import Request as Request  # lazily exported (see _LAZY)
    from pytest_rollout.load.mix import Values as Values
    from pytest_rollout.load.protocol import Aim
    from pytest_rollout.platforms.base import Platform, TargetSpec, UpgradeEvent, UpgradeResult
    from pytest_rollout.run.rollout import Phase, Rollout
    from pytest_rollout.slo import SLOSpec, parse_duration, parse_slo

# Loaded on first use (PEP 562): a load worker imports pytest_rollout.load.worker, and with it this package,
# on every start; it must not pay for pytest, the platforms and the judge (a 64-worker fleet starts 64 times).
_LAZY = {
    "PhaseMeasurement": "pytest_rollout.judge.verdict",
    "Verdict": "pytest_rollout.judge.verdict",
    "VerdictEntry": "pytest_rollout.judge.verdict",
    "Aim": "pytest_rollout.load.protocol",
    "Request": "pytest_rollout.load.mix",
    "Values": "pytest_rollout.load.mix",
    "Platform": "pytest_rollout.platforms.base",
    "TargetSpec": "pytest_rollout.platforms.base",
    "UpgradeEvent": "pytest_rollout.platforms.base",
    "UpgradeResult": "pytest_rollout.platforms.base",
    "Phase": "pytest_rollout.run.rollout",
    "Rollout": "pytest_rollout.run.rollout",
    "SLOSpec": "pytest_rollout.slo",
    "parse_duration": "pytest_rollout.slo",
    "parse_slo": "pytest_rollout.slo",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_rollout' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "Aim",
    "FleetError",
    "InputError",
    "KubernetesError",
    "LoadBalancerError",
    "Phase",
    "PhaseMeasurement",
    "Platform",
    "ProcessStartError",
    "PrometheusError",
    "ReleaseError",
    "ReplicaNotReady",
    "Request",
    "Rollout",
    "RolloutError",
    "RolloutUsageError",
    "RunError",
    "SLOSpec",
    "SLOSpecError",
    "TargetSpec",
    "UpgradeEvent",
    "UpgradeFailed",
    "UpgradeResult",
    "Values",
    "Verdict",
    "VerdictEntry",
    "__version__",
    "parse_duration",
    "parse_slo",
]
