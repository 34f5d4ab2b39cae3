"""pytest-rollout: make "this release upgrades with zero downtime at N rps" an ordinary pytest test.

The public API; everything else is internal.
"""

from __future__ import annotations

from .errors import (
    FleetError,
    KubernetesError,
    LoadBalancerError,
    ProcessStartError,
    PrometheusError,
    ReplicaNotReady,
    RolloutError,
    RolloutUsageError,
    SLOSpecError,
    UpgradeFailed,
)
from .platform import Platform, TargetSpec, UpgradeEvent, UpgradeResult
from .rollout import Phase, Rollout, Verdict
from .slo import SLOSpec, parse_duration, parse_slo
from .verdict import PhaseMeasurement, VerdictEntry

__version__ = "0.1.0"

__all__ = [
    "FleetError",
    "KubernetesError",
    "LoadBalancerError",
    "Phase",
    "PhaseMeasurement",
    "Platform",
    "ProcessStartError",
    "PrometheusError",
    "ReplicaNotReady",
    "Rollout",
    "RolloutError",
    "RolloutUsageError",
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
