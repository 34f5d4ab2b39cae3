"""Errors raised by pytest-rollout.

Every error says what failed, with what, and what to do about it. The tree::

    RolloutError                    base of everything raised here
    ├── SLOSpecError (ValueError)   a bad @pytest.mark.slo argument
    ├── RolloutUsageError           the rollout fixture used out of order
    ├── ProcessStartError (OSError) a command could not start or died early
    ├── ReplicaNotReady             a replica never became ready in time
    ├── UpgradeFailed               a rolling upgrade could not complete
    ├── LoadBalancerError           HAProxy refused a runtime command
    ├── FleetError                  a load worker failed or went silent
    ├── PrometheusError             Prometheus unreachable or a query failed
    └── KubernetesError             the Kubernetes API refused or failed a request

Bad command-line and ini values are reported as :class:`pytest.UsageError`,
not with these classes.
"""

from __future__ import annotations


class RolloutError(Exception):
    """Base class of every error pytest-rollout raises."""


class SLOSpecError(RolloutError, ValueError):
    """An ``@pytest.mark.slo`` argument is missing, unknown or invalid.

    ``argument`` names the offending keyword (or ``None`` for the marker as a
    whole) so the collection error can point at it.
    """

    def __init__(self, message: str, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class RolloutUsageError(RolloutError):
    """The ``rollout`` fixture was used in a way that cannot work."""


class ProcessStartError(RolloutError, OSError):
    """A command (replica, worker, HAProxy, Prometheus) failed to start."""


class ReplicaNotReady(RolloutError):
    """A replica did not answer its readiness path in time."""


class UpgradeFailed(RolloutError):
    """A rolling upgrade stopped before every replica was replaced."""


class LoadBalancerError(RolloutError):
    """HAProxy's runtime API refused or failed a command."""


class FleetError(RolloutError):
    """A load-generating worker could not be started, reached or stopped."""


class PrometheusError(RolloutError):
    """Prometheus could not be reached, or answered a query with an error."""


class KubernetesError(RolloutError):
    """The Kubernetes API could not be reached, or refused or failed a request.

    ``status`` is the HTTP status the API server answered (``None`` when it
    was not reached).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
