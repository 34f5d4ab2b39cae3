"""While the load lasts: the progress line, and the check for a breach the live data already prove.

Both ask Prometheus through a client that fails fast (no retries), inside
:func:`~pytest_rollout.run.interrupts.held` so that Ctrl-C waits for the end
of a short call; a live question Prometheus cannot answer proves nothing (the
final verdict still judges).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from pytest_rollout.judge.early import held_so_far
from pytest_rollout.judge.prometheus import PromClient, PrometheusAPI
from pytest_rollout.judge.risk import RiskBudget
from pytest_rollout.judge.rules import live_breach
from pytest_rollout.judge.verdict import VerdictEntry
from pytest_rollout.load.schedule import rate_at
from pytest_rollout.report.progress import Progress, format_progress
from pytest_rollout.run.interrupts import held
from pytest_rollout.run.load import LoadRun, prometheus_or_none
from pytest_rollout.run.machine import MachineWatch, with_share
from pytest_rollout.run.measure import measure_so_far
from pytest_rollout.slo import SLOSpec

if TYPE_CHECKING:
    from pytest_rollout.plugin.session import RolloutSession

__all__ = ["LiveWatch"]


class LiveWatch:
    """The progress line and the live breach check of one run."""

    def __init__(
        self, session: RolloutSession, spec: SLOSpec, budget: RiskBudget, run_id: str, progress: Progress
    ) -> None:
        self.session = session
        self.spec = spec
        self.budget = budget
        self.run_id = run_id
        self.progress = progress
        self._client: PromClient | None = None
        self._breach_checked = -math.inf  # when the live data were last checked for a proven breach
        self._held_checked = -math.inf  # ... and for every entry proven held (end_when_held)
        self._shown_phase = ""  # the phase of the last progress line
        self.machine: MachineWatch | None = None  # the CPU other processes take (local platform)
        self.routes = tuple(r.route for r in spec.routes)  # a mix of several: each judged on its own live too

    def client(self) -> PrometheusAPI | None:
        """A Prometheus client that fails fast, or None when there is none."""
        client = prometheus_or_none(self.session)
        if client is None:
            return None
        if self._client is None or self._client.url != client.url:
            self._client = PromClient(client.url, timeout_s=2.0, retries=0)
        return self._client

    def check_now(self) -> None:
        """Make the next :meth:`breach_so_far` ask Prometheus whenever it is called (at a phase's end)."""
        self._breach_checked = -math.inf

    def breach_so_far(self, phase: str, start: float, settling: tuple[str, float] | None = None) -> VerdictEntry | None:
        """The SLO that the phase under way has already proven broken, if any (asked at most once a second).

        Proven by the same time-uniform test as the final verdict's, so the looks cost no more than the run's
        budget (:mod:`pytest_rollout.judge.risk`) however many there are.

        *settling* names a phase that has ended but whose last requests may still be in flight or not yet
        scraped (``(name, start)``): the upgrade, whose slowest answers come in during the next phase. Its
        data are checked too, so a breach that only its last requests prove still stops the run.
        """
        now = time.monotonic()
        if not self.spec.abort_on_breach or now - self._breach_checked < 1.0:
            return None
        self._breach_checked = now
        client = self.client()
        if client is None:
            return None
        for name, since in [(phase, start), *([settling] if settling else [])]:
            with held():
                measured = measure_so_far(client, self.run_id, name, since, self.routes)
            if measured is not None:
                measured = with_share(measured, self.machine)
            entry = None if measured is None else live_breach(self.spec, measured, self.budget)
            if entry is not None:
                return entry
        return None

    def held_so_far(self, phase: str, start: float) -> str | None:
        """Why the phase under way may end now (``end_when_held``: every entry proven held), or None."""
        now = time.monotonic()
        elapsed = time.time() - start
        if self.spec.end_when_held is None or elapsed < self.spec.end_when_held or now - self._held_checked < 1.0:
            return None
        self._held_checked = now
        client = self.client()
        if client is None:
            return None
        with held():
            measured = measure_so_far(client, self.run_id, phase, start, self.routes)
        return None if measured is None else held_so_far(self.spec, measured, elapsed)

    def tick(
        self, phase: str, start: float, load: LoadRun, upgrade: tuple[int, int] | None, force: bool = False
    ) -> None:
        """Write the progress line, when one is due (and at the start of each phase)."""
        if time.time() < load.start_at:
            return
        if phase != self._shown_phase:
            force, self._shown_phase = True, phase
        if not self.progress.due(force):
            return
        quick = self.client()
        if quick is None:
            return
        with held():
            live = self.progress.live(quick, self.run_id, max(3 * load.scrape_interval, 3.0))
        length = {"ramp": self.spec.ramp_s, "baseline": self.spec.hold_s, "after": self.spec.after_s}.get(phase)
        asked = rate_at(load.segments, time.time() - load.start_at)
        self.progress.write(format_progress(phase, max(0.0, time.time() - start), length, asked, live, upgrade))
