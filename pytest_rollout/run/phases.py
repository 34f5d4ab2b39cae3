"""The run's phase clock: which phase is under way since when, the phases that ended, and holding each to its end.

:class:`PhaseClock` owns the timeline of one :class:`~pytest_rollout.run.rollout.Rollout`: it starts and
ends each phase (telling the ``pytest_rollout_phase_start`` / ``_end`` hooks), holds a steady phase while the
live data are checked, and runs the upgrade phase from an edge announced ahead. It decides nothing about
the test's outcome: a dead worker (:class:`~pytest_rollout.errors.FleetError`), a failed upgrade
(:class:`~pytest_rollout.errors.UpgradeFailed`) and a breach the live data prove (:class:`ProvenBreach`)
end the phase under way and go up to the Rollout, which judges, rolls back and fails the test.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from pluggy import HookRelay

from pytest_rollout.errors import FleetError, UpgradeFailed
from pytest_rollout.judge.verdict import VerdictEntry
from pytest_rollout.platforms.base import Platform, TargetSpec, UpgradeEvent
from pytest_rollout.report.progress import Progress
from pytest_rollout.run.live import LiveWatch
from pytest_rollout.run.load import LoadRun
from pytest_rollout.run.target import UpgradeStrategy
from pytest_rollout.slo import SLOSpec

__all__ = ["Phase", "PhaseClock", "ProvenBreach"]


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    end: float


class ProvenBreach(Exception):
    """Live data prove an SLO broken: stop the run. *start* is the start of the phase under way."""

    def __init__(self, entry: VerdictEntry, start: float) -> None:
        super().__init__(entry.reason)
        self.entry = entry
        self.start = start

    def note(self, phases: Sequence[Phase], at: float) -> str:
        """Why the run stopped at *at*, the phases that ended by then given: what the report calls stopped early."""
        entry = self.entry
        current = phases[-1].name if phases else entry.phase
        # the breach may be proven in a phase that has ended (the upgrade, by its last and slowest answers)
        where = "" if entry.phase == current else f" in phase {entry.phase}"
        return (
            f"stopped early: {at - self.start:.1f}s into phase {current}, the live data proved "
            f"{entry.what} broken{where} ({entry.reason}); the load was stopped (abort_on_breach=False runs every "
            "phase)"
        )


class PhaseClock:
    """The timeline of one run: phases begun and ended, and the loop that holds each one."""

    def __init__(
        self,
        spec: SLOSpec,
        live: LiveWatch,
        progress: Progress,
        events: Sequence[UpgradeEvent],
        *,
        hook: HookRelay,
        owner: object,
    ) -> None:
        self.spec = spec
        self.live = live
        self.progress = progress
        self.events = events  # the run's replica events, as they come (for the upgrade's progress)
        self._hook = hook  # pytest's hook relay: the phase hooks are told each edge, with rollout=owner
        self._owner = owner
        self.load: LoadRun | None = None  # the fleet's load, from the start of the first phase
        self.phases: list[Phase] = []  # the phases that ended, in order
        self.ended_early: list[str] = []  # the phases end_when_held ended, and why
        self.current: tuple[str, float] | None = None  # the phase under way, if any, and its start
        self._upgrade: tuple[float, Platform, int] | None = None  # (start, platform, replicas) while upgrading
        # an ended phase whose last requests may still be answered, and until when to keep checking it live
        self._settling: tuple[str, float] | None = None
        self._settled_at = 0.0

    def run(self, name: str, start: float, end: float) -> None:
        """Phase *name* from *start*, held until *end* or until proven held (``end_when_held``)."""
        self._begin(name, start)
        try:
            end = self._hold_until(name, start, end)
        except (FleetError, ProvenBreach):
            self._end(name, start, time.time())
            raise
        self._end(name, start, end)

    def upgrade(self, platform: Platform, target: TargetSpec, strategy: UpgradeStrategy) -> tuple[float, float]:
        """The upgrade phase, in which the ``pytest_rollout_upgrade`` hook rolls *platform* to *target*.

        A phase edge is announced ahead (``edge_lead_s``), so that every worker counts the requests due from
        the edge on for the new phase however long the word took to reach it; nothing moves before the edge.
        Returns the phase's start and end (the ``after`` phase's announced start), which :meth:`after` takes.
        """
        load = self._load()
        lead = load.fleet.edge_lead_s
        start = time.time() + lead
        self._upgrade = (start, platform, target.replicas)
        self._begin("upgrade", start)
        try:
            load.fleet.announce("upgrade", start)
            time.sleep(max(0.0, start - time.time()))
            result = self._hook.pytest_rollout_upgrade(
                rollout=self._owner,
                platform=platform,
                target=target,
                max_surge=strategy.max_surge,
                max_unavailable=strategy.max_unavailable,
            )
            self.check_fleet("upgrade")
        except (UpgradeFailed, FleetError):
            self._end("upgrade", start, time.time())
            raise
        done = time.time() if result is None else max(start, min(result.end, time.time()))
        # the upgrade ended at `done` (its last old replica gone), which is already past: the after phase starts
        # once every worker can know of it, so the upgrade phase runs on to that edge (never shorter)
        end = max(done, time.time() + lead)
        load.fleet.announce("after", end)
        if self.spec.end_when_held is None:  # else announced when the after phase ends (_hold_until)
            load.fleet.announce("tail", end + self.spec.after_s)
        self._end("upgrade", start, end)
        return start, end

    def after(self, upgrade: tuple[float, float]) -> None:
        """The ``after`` phase, from the end of *upgrade* (its start and end, as :meth:`upgrade` returned them).

        The upgrade's data are checked once more at its end, then on through the ``after`` phase until its last
        requests are all in.
        """
        start, end = upgrade
        load = self._load()
        time.sleep(max(0.0, end - time.time()))
        self.live.check_now()
        breach = self.live.breach_so_far("upgrade", start)
        if breach is not None:
            raise ProvenBreach(breach, start)
        # the upgrade's last requests (the slowest, when the new version is slow) are answered and scraped
        # during the next phase: keep checking the upgrade's data until they are all in
        self._settling = ("upgrade", start)
        self._settled_at = time.time() + self.spec.timeout_s + 3 * load.scrape_interval + 1.0
        self.run("after", end, end + self.spec.after_s)

    def tick(self, force: bool = False) -> None:
        """Write the progress line of the phase under way, when one is due."""
        if self.current is None or self.load is None:
            return
        phase, start = self.current
        upgrade = None
        if phase == "upgrade" and self._upgrade is not None:
            began, platform, replicas = self._upgrade
            replicas = platform.desired_replicas or replicas  # manifests say how many
            ready = {e.replica for e in self.events if e.action == "ready" and e.at >= began}
            upgrade = (min(len(ready), replicas), replicas)
        self.live.tick(phase, start, self.load, upgrade, force)

    def check_fleet(self, phase: str) -> None:
        """Raise FleetError if a load worker died."""
        if self.load is not None:
            self.load.check(phase, self.spec.requested_rps)

    def cut_off(self, at: float) -> None:
        """End the phase under way at *at*, told to no hook: the run was cut off (Ctrl-C, SIGTERM, an error)."""
        if self.current is not None:
            self.phases.append(Phase(self.current[0], self.current[1], at))
            self.current = None

    def _load(self) -> LoadRun:
        if self.load is None:
            raise RuntimeError("a phase runs only once the load started")  # the Rollout's order makes it so
        return self.load

    def _begin(self, name: str, start: float) -> None:
        self.current = (name, start)
        self._hook.pytest_rollout_phase_start(rollout=self._owner, phase=name, at=start)

    def _end(self, name: str, start: float, end: float) -> None:
        self.current = None
        if name == "upgrade":
            self._upgrade = None
        self.phases.append(Phase(name, start, end))
        self._hook.pytest_rollout_phase_end(rollout=self._owner, phase=name, start=start, end=end)

    def _hold_until(self, phase: str, start: float, until: float) -> float:
        """Hold *phase* (begun at *start*) until *until*, or until it is proven held (``end_when_held``); its end."""
        load = self._load()
        # with end_when_held a steady phase's end edge is announced here, ahead by the lead, not at its start
        after = {"baseline": "between", "after": "tail"}.get(phase) if self.spec.end_when_held is not None else None
        lead = load.fleet.edge_lead_s if after else 0.0
        while True:
            self.tick()
            self.check_fleet(phase)
            settling = self._settling if time.time() < self._settled_at else None
            breach = self.live.breach_so_far(phase, start, settling)
            if breach is not None:
                raise ProvenBreach(breach, start)
            done = self.live.held_so_far(phase, start) if settling is None else None
            if done is not None:
                self.ended_early.append(done)
                self.progress.note(done)
                until = min(until, time.time() + lead)
                break
            left = until - lead - time.time()
            if left <= 0:
                break
            time.sleep(min(left, 0.25))
        if after:
            until = max(until, time.time() + lead)  # ahead by the lead, even after a slow last look
            load.fleet.announce(after, until)
        time.sleep(max(0.0, until - time.time()))
        return until
