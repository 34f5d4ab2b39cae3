"""The worker's answers, typed: what :class:`~pytest_rollout.load.protocol.Plan` is to the controller's calls.

Each reply is a frozen dataclass the worker builds and sends with ``to_json()``
and the controller reads back with ``from_json()``, so neither side reads a
reply by string key. The JSON on the wire is the same as it always was.

- ``POST /start``: :class:`Started`; ``POST /phase``: :class:`PhaseHeard`;
  ``POST /stop`` and ``POST /quit``: :class:`StateReply`;
- ``GET /status``: :class:`WorkerStatus`; ``GET /totals``: :class:`WorkerTotals`
  (one :class:`PhaseTotals` per phase, counts by outcome in :class:`ClassCounts`);
- a refused call (400): :class:`Refusal`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass, field, fields
from typing import Any

from pytest_rollout.load.histogram import BOUNDS, Histogram
from pytest_rollout.load.protocol import CLASSES

__all__ = [
    "ClassCounts",
    "FINISHED",
    "PhaseHeard",
    "PhaseTotals",
    "Refusal",
    "Started",
    "StateReply",
    "WorkerStatus",
    "WorkerTotals",
]


@dataclass(frozen=True)
class ClassCounts:
    """Requests by outcome class (the fields are :data:`~pytest_rollout.load.protocol.CLASSES`, in order)."""

    ok: int = 0
    http_4xx: int = 0
    http_5xx: int = 0
    timeout: int = 0
    connection: int = 0
    dropped: int = 0  # not sent: late, or the in-flight cap was full

    @classmethod
    def of(cls, counts: Sequence[int]) -> ClassCounts:
        """From counts indexed as :data:`CLASSES` (the worker's hot path counts into a list)."""
        return cls(*(int(c) for c in counts))

    @property
    def total(self) -> int:
        return sum(self.counts())

    @property
    def errors(self) -> int:
        """Every class but ``ok``."""
        return self.total - self.ok

    def counts(self) -> tuple[int, ...]:
        return tuple(int(c) for c in astuple(self))

    def items(self) -> Iterator[tuple[str, int]]:
        """``(class, count)`` in the order of :data:`CLASSES`."""
        return zip(CLASSES, self.counts(), strict=True)

    def __add__(self, other: ClassCounts) -> ClassCounts:
        return ClassCounts.of([a + b for a, b in zip(self.counts(), other.counts(), strict=True)])

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClassCounts:
        return cls.of([int(data.get(name, 0)) for name in CLASSES])

    def to_json(self) -> dict[str, int]:
        return dict(self.items())


if tuple(f.name for f in fields(ClassCounts)) != CLASSES:  # pragma: no cover - a guard for whoever adds a class
    raise ImportError("ClassCounts' fields must be protocol.CLASSES, in order")

_EMPTY_HISTOGRAM = (0,) * (len(BOUNDS) + 1)

#: A worker in one of these states has final counts: nothing is due and nothing is in flight.
FINISHED = frozenset({"idle", "stopped"})


@dataclass(frozen=True)
class PhaseTotals:
    """A worker's counts for the requests *due* in one phase (see :class:`~pytest_rollout.load.counters.PhaseStats`)."""

    by_class: ClassCounts = ClassCounts()
    late: int = 0  # not sent because the worker was behind (also counted dropped)
    resent: int = 0  # sent a second time after their reused connection closed unanswered
    histogram: tuple[int, ...] = _EMPTY_HISTOGRAM  # latency bucket counts of the requests sent (histogram.BOUNDS)
    latency_sum_s: float = 0.0

    @property
    def requests(self) -> int:
        """Every request due in the phase, sent or not."""
        return self.by_class.total

    @property
    def errors(self) -> int:
        return self.by_class.errors

    def latency(self) -> Histogram:
        return Histogram.from_list(self.histogram, self.latency_sum_s)

    def __add__(self, other: PhaseTotals) -> PhaseTotals:
        """Two workers' counts for the same phase, merged (exactly: counts add).

        Raises ValueError if their latency histograms differ in length: workers of different releases of
        pytest-rollout, whose buckets cannot be added.
        """
        if len(self.histogram) != len(other.histogram):
            raise ValueError(
                f"cannot merge latency histograms of {len(self.histogram)} and {len(other.histogram)} buckets: "
                "are the load workers from different releases of pytest-rollout?"
            )
        return PhaseTotals(
            by_class=self.by_class + other.by_class,
            late=self.late + other.late,
            resent=self.resent + other.resent,
            histogram=tuple(a + b for a, b in zip(self.histogram, other.histogram, strict=True)),
            latency_sum_s=self.latency_sum_s + other.latency_sum_s,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PhaseTotals:
        return cls(
            by_class=ClassCounts.from_json(data.get("by_class") or {}),
            late=int(data.get("late", 0)),
            resent=int(data.get("resent", 0)),
            histogram=tuple(int(c) for c in data.get("histogram") or _EMPTY_HISTOGRAM),
            latency_sum_s=float(data.get("latency_sum_s", 0.0)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_class": self.by_class.to_json(),
            "errors": self.errors,
            "late": self.late,
            "resent": self.resent,
            "histogram": list(self.histogram),
            "latency_sum_s": self.latency_sum_s,
        }


@dataclass(frozen=True)
class WorkerTotals:
    """``GET /totals``: a worker's own counts, per phase in which each request was due, and its state."""

    phases: Mapping[str, PhaseTotals] = field(default_factory=dict)  # in the order the phases started
    #: the same counts per route of the mix: {phase: {route: totals}}; ``phases`` is their sum over routes
    routes: Mapping[str, Mapping[str, PhaseTotals]] = field(default_factory=dict)
    scheduled: int = 0  # requests that fell due (sent or not)
    late: int = 0
    max_lag_s: float = 0.0  # the largest send lag seen (a request over LATE_S behind is late)
    inflight: int = 0
    max_inflight_seen: int = 0
    state: str = "idle"  # idle -> running -> stopping -> stopped
    engine: str | None = None

    @property
    def requests(self) -> int:
        """Every request counted, over all phases (each counts in exactly one)."""
        return sum(phase.requests for phase in self.phases.values())

    @property
    def finished(self) -> bool:
        """The counts are final: the worker is idle, or done with its plan and every request it sent."""
        return self.state in FINISHED

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkerTotals:
        engine = data.get("engine")
        return cls(
            phases={str(name): PhaseTotals.from_json(p) for name, p in (data.get("phases") or {}).items()},
            routes={
                str(phase): {str(route): PhaseTotals.from_json(p) for route, p in per.items()}
                for phase, per in (data.get("routes") or {}).items()
            },
            scheduled=int(data.get("scheduled", 0)),
            late=int(data.get("late", 0)),
            max_lag_s=float(data.get("max_lag_s", 0.0)),
            inflight=int(data.get("inflight", 0)),
            max_inflight_seen=int(data.get("max_inflight_seen", 0)),
            state=str(data.get("state", "idle")),
            engine=None if engine is None else str(engine),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "scheduled": self.scheduled,
            "late": self.late,
            "max_lag_s": self.max_lag_s,
            "inflight": self.inflight,
            "max_inflight_seen": self.max_inflight_seen,
            "phases": {name: phase.to_json() for name, phase in self.phases.items()},
            "routes": {
                phase: {route: totals.to_json() for route, totals in per.items()} for phase, per in self.routes.items()
            },
            "state": self.state,
            "engine": self.engine,
        }


@dataclass(frozen=True)
class WorkerStatus:
    """``GET /status``: what a worker is doing now, cheap to ask (the controller polls it)."""

    state: str
    engine: str | None = None
    inflight: int = 0
    scheduled: int = 0
    requests: int = 0
    max_lag_s: float = 0.0
    pid: int = 0
    time: float | None = None  # the worker's clock when it answered, for the controller's skew estimate

    @property
    def finished(self) -> bool:
        """Idle, or done with its plan and every request it sent (the schedule ended, or it was stopped)."""
        return self.state in FINISHED

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkerStatus:
        engine = data.get("engine")
        when = data.get("time")
        return cls(
            state=str(data.get("state", "")),
            engine=None if engine is None else str(engine),
            inflight=int(data.get("inflight", 0)),
            scheduled=int(data.get("scheduled", 0)),
            requests=int(data.get("requests", 0)),
            max_lag_s=float(data.get("max_lag_s", 0.0)),
            pid=int(data.get("pid", 0)),
            time=float(when) if isinstance(when, (int, float)) else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "engine": self.engine,
            "inflight": self.inflight,
            "scheduled": self.scheduled,
            "requests": self.requests,
            "max_lag_s": self.max_lag_s,
            "pid": self.pid,
            "time": self.time,
        }


@dataclass(frozen=True)
class Started:
    """``POST /start``: the plan is accepted; the engine that runs it."""

    state: str
    engine: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Started:
        engine = data.get("engine")
        return cls(state=str(data["state"]), engine=None if engine is None else str(engine))

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "engine": self.engine}


@dataclass(frozen=True)
class PhaseHeard:
    """``POST /phase``: the phases a worker counts for now, and how late (by its clock) the word of the new one came.

    Requests due in that gap and already answered counted for the phase before (0: the word came ahead).
    """

    phases: tuple[str, ...]
    late_s: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PhaseHeard:
        return cls(phases=tuple(str(p) for p in data.get("phases") or ()), late_s=float(data.get("late_s") or 0.0))

    def to_json(self) -> dict[str, Any]:
        return {"phases": list(self.phases), "late_s": self.late_s}


@dataclass(frozen=True)
class StateReply:
    """``POST /stop`` and ``POST /quit``: the worker's state as it took the word."""

    state: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StateReply:
        return cls(state=str(data["state"]))

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state}


@dataclass(frozen=True)
class Refusal:
    """A call the worker refused (400), and why; it changed nothing."""

    error: str

    @classmethod
    def of(cls, exc: BaseException) -> Refusal:
        return cls(f"{type(exc).__name__}: {exc}")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Refusal:
        return cls(error=str(data["error"]))

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error}
