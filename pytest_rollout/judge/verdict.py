"""The verdict's words: outcomes, kinds, measurements, entries and the verdict itself. Pure data, no I/O.

Every entry has one of three outcomes (:class:`Outcome`): **held**, **broken** or
**not proven**; how an entry gets one is in :mod:`pytest_rollout.judge.rules`.
A test with any broken entry fails ("SLO broken", exit 1); otherwise one with any
not proven entry is not proven (exit 6, never a pass); otherwise it passes
(:class:`TestResult`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_rollout.numeric import number_or_none

__all__ = [
    "CROSS_CHECK_TOLERANCE",
    "MAX_GAP_INTERVALS",
    "Kind",
    "Outcome",
    "PhaseMeasurement",
    "TestResult",
    "Verdict",
    "VerdictEntry",
    "slo_name",
    "failure_message",
]

#: Largest relative disagreement allowed between Prometheus and the fleet's own count.
CROSS_CHECK_TOLERANCE = 0.01
#: Longest gap between successful scrapes of a worker, in scrape intervals.
MAX_GAP_INTERVALS = 3.0
STEADY_PHASES = ("baseline", "upgrade", "after")
#: Outcome classes that are the release's answer (the rest, ``ok`` aside, are the fleet's: ``dropped``).
RELEASE_ERROR_CLASSES = ("http_4xx", "http_5xx", "timeout", "connection")


class Outcome(enum.StrEnum):
    """What one verdict entry shows."""

    HELD = "held"
    BROKEN = "broken"
    NOT_PROVEN = "not_proven"


class TestResult(enum.StrEnum):
    """What a whole SLO test shows: the JSON report's ``result`` and JUnit's ``rollout_result``."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    PASSED = "passed"
    SLO_BROKEN = "slo_broken"
    NOT_PROVEN = "not_proven"


class Kind(enum.StrEnum):
    """What an entry judges, so reports can show each kind its own way without reading its name."""

    LOAD = "load"
    ERROR_RATE = "error_rate"
    LATENCY = "latency"
    CHECK = "check"
    AVAILABILITY = "availability"
    REGRESSION = "regression"
    EXTRA = "extra"  # added by a pytest_rollout_add_verdicts hook


#: Other processes' share of the machine's CPU during a phase at or above which a latency breach is not proven
#: (see :mod:`pytest_rollout.run.machine`).
BUSY_SHARE = 0.25


@dataclass(frozen=True)
class MachineShare:
    """Shares of the machine's CPU capacity (``cpus`` x ``seconds``) over one phase."""

    others: float  # other processes on this machine, and steal
    run: float  # the run: this process and its descendants
    steal: float  # the hypervisor's other guests (part of ``others``)
    cpus: int
    seconds: float

    @property
    def busy(self) -> bool:
        """Whether other processes took enough of the machine that a latency breach is not the release's alone."""
        return self.others >= BUSY_SHARE

    def sentence(self) -> str:
        return (
            f"other processes took {self.others:.0%} of this machine's {self.cpus} CPUs over {self.seconds:.1f}s "
            f"(steal {self.steal:.0%}; the run itself {self.run:.0%})"
        )

    def to_json(self) -> dict[str, float]:
        return {
            "others": round(self.others, 4),
            "run": round(self.run, 4),
            "steal": round(self.steal, 4),
            "cpus": self.cpus,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class PhaseMeasurement:
    """What was measured over one phase. ``None`` means Prometheus had nothing."""

    phase: str
    start: float
    end: float
    asked_requests: float  # what the schedule asked for in this window (all workers)
    requests: float | None  # Prometheus: requests due in the phase, all outcome classes
    by_class: Mapping[str, float] = field(default_factory=dict)
    late: float = 0.0  # Prometheus: requests not sent because the worker fell behind (also in "dropped")
    resent: float = 0.0  # Prometheus: requests sent a second time after their reused connection closed unanswered
    in_flight: float = 0.0  # live looks: the run's requests still in flight (counted ok in by_class)
    quantiles_ms: Mapping[float, float] = field(default_factory=dict)
    workers_expected: int = 0
    workers_seen: int = 0
    max_gap_s: float = 0.0  # longest time without a successful scrape of some worker
    fleet_requests: int | None = None  # the fleet's own count over the same window
    fleet_errors: int | None = None
    scrape_interval_s: float = 1.0
    queries: Mapping[str, str] = field(default_factory=dict)
    problem: str | None = None  # set when measuring failed (Prometheus unreachable, say)
    checks: Mapping[str, float | None] = field(default_factory=dict)  # user checks' values (None: no data)
    histogram: tuple[tuple[float, float], ...] = ()  # requests sent: (upper bound in seconds, cumulative count)
    machine: MachineShare | None = None  # the CPU other processes took during the phase (local platform only)
    #: A mix of more than one route: each route's own measurement over the phase (its ``route`` set), by name.
    #: Empty for a one-route mix, whose phase is its route.
    routes: Mapping[str, PhaseMeasurement] = field(default_factory=dict)
    route: str | None = None  # the route this measurement counts alone; None: every route (the whole phase)

    @property
    def duration(self) -> float:
        return max(self.end - self.start, 1e-9)

    @property
    def dropped(self) -> float:
        return self.by_class.get("dropped", 0.0)

    @property
    def on_time(self) -> float:
        """Requests sent (all on time): all but the dropped. The release's sample."""
        return max(0.0, (self.requests or 0.0) - self.dropped)

    @property
    def errors_by_class(self) -> dict[str, float]:
        """The release's errors by class: failures of requests sent on time."""
        return {k: self.by_class.get(k, 0.0) for k in RELEASE_ERROR_CLASSES}

    @property
    def errors(self) -> float:
        """The release's errors: failures of requests sent on time."""
        return sum(self.errors_by_class.values())

    @property
    def held_rps(self) -> float:
        return self.on_time / self.duration

    @property
    def asked_rps(self) -> float:
        return self.asked_requests / self.duration

    @property
    def error_rate(self) -> float:
        return self.errors / self.on_time if self.on_time else math.nan


def slo_name(slo: str, route: str | None = None) -> str:
    """An SLO as messages and reports name it: ``error_rate``, or ``error_rate of route checkout`` (an entry's
    :attr:`VerdictEntry.what`, and a report's from the entry's JSON)."""
    return slo if route is None else f"{slo} of route {route}"


@dataclass(frozen=True)
class VerdictEntry:
    """One SLO judged over one phase.

    ``outcome`` is what the entry shows; ``passed`` is ``outcome is HELD``.
    Hooks may build an entry the short way, ``VerdictEntry(slo, phase,
    measured, bound, passed, reason)``: a failing one is then broken (a veto).
    ``low`` and ``high`` are the 95% interval of ``measured`` where one exists.
    ``route`` names the route judged alone, in a mix of more than one route; None: the whole (every route).
    """

    slo: str
    phase: str
    measured: float | None
    bound: float | None
    passed: bool = False
    reason: str = ""
    op: str = ""  # how measured is compared to bound; "" means the SLO's usual (>= for rps, else <=)
    outcome: Outcome | None = None
    low: float | None = None
    high: float | None = None
    kind: Kind = Kind.EXTRA
    route: str | None = None

    def __post_init__(self) -> None:
        outcome = self.outcome
        if outcome is None:
            outcome = Outcome.HELD if self.passed else Outcome.BROKEN
        object.__setattr__(self, "outcome", Outcome(outcome))
        object.__setattr__(self, "passed", outcome is Outcome.HELD)
        object.__setattr__(self, "kind", Kind(self.kind))

    @property
    def judged(self) -> bool:
        """True when the data decided the entry: held or broken."""
        return self.outcome is not Outcome.NOT_PROVEN

    @property
    def comparison(self) -> str:
        return self.op or (">=" if self.kind in (Kind.LOAD, Kind.AVAILABILITY) else "<=")

    @property
    def what(self) -> str:
        """The SLO as a message names it: ``error_rate``, or ``error_rate of route checkout``."""
        return slo_name(self.slo, self.route)

    def to_json(self) -> dict[str, Any]:
        route = {} if self.route is None else {"route": self.route}
        return route | {
            "slo": self.slo,
            "phase": self.phase,
            "kind": str(self.kind),
            "measured": number_or_none(self.measured, finite=True),
            "bound": number_or_none(self.bound, finite=True),
            "passed": self.passed,
            "outcome": str(self.outcome),
            "interval": None
            if self.low is None and self.high is None
            else [number_or_none(self.low, finite=True), number_or_none(self.high, finite=True)],
            "reason": self.reason,
            "op": self.comparison,
        }


def make_entry(
    kind: Kind,
    slo: str,
    phase: str,
    measured: float | None,
    bound: float | None,
    outcome: Outcome,
    reason: str = "",
    op: str = "",
    interval: tuple[float, float] | None = None,
    route: str | None = None,
) -> VerdictEntry:
    low, high = interval if interval is not None else (None, None)
    return VerdictEntry(
        slo, phase, measured, bound, reason=reason, op=op, outcome=outcome, low=low, high=high, kind=kind, route=route
    )


@dataclass(frozen=True)
class Verdict:
    """Every SLO judged over every phase, with what each judgement stands on."""

    entries: tuple[VerdictEntry, ...]
    phases: tuple[PhaseMeasurement, ...]
    failure: str | None = None  # an upgrade or fleet failure, besides the SLO entries
    failure_kind: str | None = None  # "release" (the new version's fault) or "run" (could not run or judge)

    @property
    def result(self) -> TestResult:
        """Broken when any entry is (or the upgrade itself failed); else not proven when anything is; else passed."""
        if self.failure_kind == "release" or any(e.outcome is Outcome.BROKEN for e in self.entries):
            return TestResult.SLO_BROKEN
        if self.failure is not None or not self.entries or any(not e.passed for e in self.entries):
            return TestResult.NOT_PROVEN
        return TestResult.PASSED

    @property
    def passed(self) -> bool:
        return self.result is TestResult.PASSED

    @property
    def failures(self) -> list[VerdictEntry]:
        return [e for e in self.entries if not e.passed]

    def message(self, title: str) -> str:
        parts = []
        if self.failure:
            parts.append(self.failure)
        broken = [e for e in self.entries if e.outcome is Outcome.BROKEN]
        unproven = [e for e in self.entries if e.outcome is Outcome.NOT_PROVEN]
        if broken:
            parts.append(f"SLO broken for {title}:\n{failure_message(broken)}")
        if unproven:
            if broken or self.result is TestResult.SLO_BROKEN:
                head = "also not proven"
            else:
                head = f"SLO not proven for {title} (nothing shown broken; exit 6)"
            parts.append(f"{head}:\n{failure_message(unproven)}")
        return "\n".join(parts)


def failure_message(entries: Sequence[VerdictEntry]) -> str:
    """One line per entry: the SLO, the phase, the measured value, its interval and the bound."""
    lines = []
    for e in entries:
        value = number_or_none(e.measured)
        measured = "n/a" if value is None else _fmt(e, value)
        if e.low is not None and e.high is not None:
            measured += f" [{_fmt(e, e.low)}, {_fmt(e, e.high)}]"
        bound = "n/a" if e.bound is None else _fmt(e, e.bound)
        lines.append(f"  {e.what} in phase {e.phase}: measured {measured}, bound {e.comparison} {bound}: {e.reason}")
    return "\n".join(lines)


def _fmt(e: VerdictEntry, value: float) -> str:
    if math.isinf(value):
        return "inf"
    if e.kind in (Kind.ERROR_RATE, Kind.AVAILABILITY):
        return f"{value:.5f}"
    if e.kind is Kind.LOAD:
        return f"{value:,.0f}"
    if e.kind is Kind.LATENCY:
        return f"{value:.2f} ms"
    return f"{value:g}"
