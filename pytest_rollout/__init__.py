"""pytest-rollout: make "this release upgrades with zero downtime at N rps" an ordinary pytest test.

The public API; everything else is internal.
"""

from __future__ import annotations

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
from pytest_rollout.judge.verdict import PhaseMeasurement, Verdict, VerdictEntry
from pytest_rollout.load.protocol import Aim
from pytest_rollout.platforms.base import Platform, TargetSpec, UpgradeEvent, UpgradeResult
from pytest_rollout.run.rollout import Phase, Rollout
from pytest_rollout.slo import SLOSpec, parse_duration, parse_slo

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
    "Verdict",
    "VerdictEntry",
    "__version__",
    "parse_duration",
    "parse_slo",
]
