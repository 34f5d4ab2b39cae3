"""Errors raised by pytest-rollout.

Every error says what failed, with what, and what to do about it. Three
categories tell whose it is, as httpx groups its exceptions, and decide what
an SLO test that one ends shows (:mod:`pytest_rollout.plugin.outcome`, the one
place that reads them): an InputError, like any exception of the test's own
code, fails the test as pytest would (exit 1, its traceback); a ReleaseError
is an SLO broken (exit 1); a RunError is not proven (exit 6 when no other test
failed)::

    RolloutError                        base of everything raised here
    ├── InputError                      the user's mistake: fix the test or its inputs
    │   ├── SLOSpecError (ValueError)   a bad @pytest.mark.slo argument
    │   └── RolloutUsageError           the rollout fixture used out of order, or with bad arguments
    ├── ReleaseError                    the release failed: the test fails (SLO broken)
    │   ├── ReplicaNotReady             a replica never became ready in time
    │   └── UpgradeFailed               a rolling upgrade could not complete
    └── RunError                        the run could not be done: the tool's or the machine's, never the release's
        ├── ProcessStartError (OSError) a command could not start or died early
        ├── LoadBalancerError           HAProxy refused a runtime command
        ├── FleetError                  a load worker failed or went silent
        ├── PrometheusError             Prometheus unreachable or a query failed
        └── KubernetesError             the Kubernetes API refused or failed a request

Bad command-line and ini values are reported as :class:`pytest.UsageError`,
not with these classes.
"""

from __future__ import annotations

__all__ = [
    "FleetError",
    "InputError",
    "KubernetesError",
    "LoadBalancerError",
    "ProcessStartError",
    "PrometheusError",
    "ReleaseError",
    "ReplicaNotReady",
    "RolloutError",
    "RolloutUsageError",
    "RunError",
    "SLOSpecError",
    "UpgradeFailed",
]


class RolloutError(Exception):
    """Base class of every error pytest-rollout raises."""


class InputError(RolloutError):
    """The user's mistake: a marker argument, a fixture call, a manifest."""


class ReleaseError(RolloutError):
    """The release under test failed (not ready, upgrade stuck): the test fails on it."""


class RunError(RolloutError):
    """The run could not be done (a process, the fleet, Prometheus, the cluster): never the release's failure."""


class SLOSpecError(InputError, ValueError):
    """An ``@pytest.mark.slo`` argument is missing, unknown or invalid.

    ``argument`` names the offending keyword (or ``None`` for the marker as a
    whole) so the collection error can point at it.
    """

    def __init__(self, message: str, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class RolloutUsageError(InputError):
    """The ``rollout`` fixture was used in a way that cannot work."""


class ProcessStartError(RunError, OSError):
    """A command (replica, worker, HAProxy, Prometheus) failed to start."""


class ReplicaNotReady(ReleaseError):
    """A replica did not answer its readiness path in time."""


class UpgradeFailed(ReleaseError):
    """A rolling upgrade stopped before every replica was replaced."""


class LoadBalancerError(RunError):
    """HAProxy's runtime API refused or failed a command."""


class FleetError(RunError):
    """A load-generating worker could not be started, reached or stopped."""


class PrometheusError(RunError):
    """Prometheus could not be reached, or answered a query with an error."""


class KubernetesError(RunError):
    """The Kubernetes API could not be reached, or refused or failed a request.

    ``status`` is the HTTP status the API server answered (``None`` when it
    was not reached).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
