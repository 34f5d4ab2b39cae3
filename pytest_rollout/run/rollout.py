"""The ``rollout`` fixture's object: deploy, ramp, upgrade, verify.

One :class:`Rollout` per test. It owns a run directory, the processes it
starts (recorded in a :class:`~pytest_rollout.procs.ProcessSet`), the
platform, the fleet and the phase timeline, and turns Prometheus' answers
into the test's verdict.

Timeline::

    ramp()    : [ramp: fleet climbs 0 -> rps][baseline: hold rps]        returns
    upgrade() : [upgrade: first surge .. last old replica gone][after]  returns
    verify()  : stop the load once Prometheus has scraped past the end,
                query every phase, judge, fail the test on any breach
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from pytest_rollout.errors import FleetError, RolloutError, RolloutUsageError, UpgradeFailed
from pytest_rollout.judge.risk import RiskBudget, budget_for
from pytest_rollout.judge.rules import evaluate
from pytest_rollout.judge.verdict import (
    PhaseMeasurement,
    Verdict,
    VerdictEntry,
)
from pytest_rollout.platforms.base import Platform, TargetSpec, UpgradeEvent
from pytest_rollout.procs import ProcessSet
from pytest_rollout.run.hints import termination_hint
from pytest_rollout.run.live import LiveWatch
from pytest_rollout.run.load import LoadRun, prometheus_or_none, start_load
from pytest_rollout.run.machine import MachineWatch, with_share
from pytest_rollout.run.measure import collect_series, measure_phase
from pytest_rollout.run.prepare import fleet_size, headroom_warning, provable_lines, validate_checks
from pytest_rollout.slo import SLOSpec

if TYPE_CHECKING:
    from pytest_rollout.plugin.session import RolloutSession

__all__ = ["Phase", "Rollout"]


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    end: float


class _ProvenBreach(Exception):
    """Live data prove an SLO broken in the phase under way: stop the run (internal)."""

    def __init__(self, entry: VerdictEntry) -> None:
        super().__init__(entry.reason)
        self.entry = entry


class Rollout:
    """Drives one SLO test. Obtain it through the ``rollout`` fixture."""

    def __init__(self, session: RolloutSession, spec: SLOSpec, nodeid: str, config: pytest.Config) -> None:
        self.session = session
        self.spec = spec
        self.nodeid = nodeid
        self.config = config
        self.run_id = uuid.uuid4().hex[:12]
        self.run_dir = session.root / f"run-{self.run_id}"
        self.run_dir.mkdir(parents=True)
        self.procs = ProcessSet(self.run_dir)
        self.platform: Platform | None = None
        self.phases: list[Phase] = []
        self.events: list[UpgradeEvent] = []
        self.load: LoadRun | None = None  # the fleet, while the load lasts
        self._versions = 0
        self._target: TargetSpec | None = None
        self._upgraded = False
        self._verdict: Verdict | None = None
        self.failure: str | None = None
        self._failure_kind: str | None = None
        self._closed = False
        self._current: tuple[str, float] | None = None  # the phase under way, if any
        self._rollback_on_breach = False
        self.series: dict[str, Any] = {}  # name -> {"query", "points"}: the run over time, for charts
        from pytest_rollout.report.progress import Progress

        self.progress = Progress(config)
        #: how the run's false-fail risk is shared by its broken claims (live looks and the final verdict)
        self.budget: RiskBudget = budget_for(spec, compared=session.baseline is not None)
        self.live = LiveWatch(session, spec, self.budget, self.run_id, self.progress)
        self._upgrade_target: tuple[float, int] | None = None  # (start, replicas) while upgrading
        # an ended phase whose last requests may still be answered, and until when to keep checking it live
        self._settling: tuple[str, float] | None = None
        self._settled_at = 0.0
        self.rollback_note: str | None = None  # what rollback_on_breach did
        self.abort_note: str | None = None  # why the run stopped early (abort_on_breach)
        self.provable: list[str] = []  # what each phase can prove, said before the load starts
        self.machine: MachineWatch | None = None  # the CPU other processes take (local platform), from ramp()
        self.ended_early: list[str] = []  # the phases end_when_held ended, and why

    # -- public API -----------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the target is served (the load balancer), once deployed."""
        if self.platform is None:
            raise RolloutUsageError("rollout.url is known only after rollout.deploy()")
        return self.platform.url

    @property
    def verdict(self) -> Verdict | None:
        """The verdict once :meth:`verify` ran (``None`` before)."""
        return self._verdict

    def deploy(
        self,
        command: Sequence[str | os.PathLike[str]] | None = None,
        replicas: int = 1,
        ready_path: str = "/healthz",
        env: Mapping[str, str] | None = None,
        *,
        image: str | None = None,
        manifests: Sequence[str | os.PathLike[str]] | None = None,
        port: int = 8080,
        ready_timeout: float | None = None,
        grace_period: float = 10.0,
        cwd: str | os.PathLike[str] | None = None,
        pre_stop: float | str = 0.0,
    ) -> None:
        """Deploy version 1 of the target and return once it is ready.

        Local platform: *replicas* processes running *command*, each listening on
        127.0.0.1 at the port in env var ``PORT``, ready when ``GET ready_path``
        answers 200. Kubernetes: ``image=`` (the plugin writes a Deployment and a
        ClusterIP Service on *port*) or ``manifests=[...]`` (one Deployment and the
        Service selecting its pods), available within *ready_timeout* seconds
        (default: 30 locally, ``--rollout-kube-timeout`` on Kubernetes).

        *pre_stop* (seconds, or a duration such as ``"5s"``) mirrors
        ``lifecycle.preStop.sleep``: a replica being replaced keeps serving,
        untouched, that long before it gets SIGTERM, so that its endpoint has
        left every load balancer first. On Kubernetes it is written into the
        generated Deployment (``image=``); manifests carry their own.
        """
        if self.platform is not None:
            raise RolloutUsageError("rollout.deploy() was already called in this test; use rollout.upgrade()")
        self.platform = self._make_platform()
        timeout = ready_timeout if ready_timeout is not None else self.platform.ready_timeout_s
        target = self._target_spec(
            command, replicas, ready_path, env, timeout, grace_period, cwd, "deploy", image, manifests, port, pre_stop
        )
        self.platform.deploy(target, self.note_event)
        self._target = target

    def ramp(self) -> None:
        """Start the fleet, climb to the marker's rps over ``ramp``, hold it for ``hold`` (baseline)."""
        if self.platform is None:
            raise RolloutUsageError("call rollout.deploy(...) before rollout.ramp()")
        if self.load is not None:
            raise RolloutUsageError("rollout.ramp() was already called in this test")
        spec = self.spec
        settings = self.session.settings
        client, _ = self.session.prometheus()
        validate_checks(client, spec, self.run_id)
        for line, ok in provable_lines(spec, self.budget):
            self.provable.append(line)
            self.progress.note(line if ok else f"{line} (warning)", warn=not ok)
        size = fleet_size(self.platform, spec, settings.workers, settings.worker_rps, settings.worker_rps_given)
        warning = headroom_warning(self.platform, spec, size)
        if warning is not None:
            self.progress.note(warning, warn=True)
        # the CPU other processes take, phase by phase: a latency breach on a busy machine is not proven
        self.live.machine = self.machine = MachineWatch.start() if self.platform.name == "local" else None
        self.load = start_load(
            self.platform,
            client,
            spec,
            run_id=self.run_id,
            size=size,
            sd_dir=self.session.sd_dir,
            upgrade_timeout_s=settings.upgrade_timeout_s,
        )
        start_at = self.load.start_at
        baseline_at = start_at + spec.ramp_s
        if spec.ramp_s > 0:
            self._run_phase("ramp", start_at, baseline_at)
        self._run_phase("baseline", baseline_at, baseline_at + spec.hold_s)

    def upgrade(
        self,
        command: Sequence[str | os.PathLike[str]] | None = None,
        *,
        image: str | None = None,
        manifests: Sequence[str | os.PathLike[str]] | None = None,
        replicas: int | None = None,
        ready_path: str | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout: float | None = None,
        grace_period: float | None = None,
        cwd: str | os.PathLike[str] | None = None,
        max_surge: int | str | None = None,
        max_unavailable: int | str | None = None,
        rollback_on_breach: bool = False,
        pre_stop: float | str | None = None,
    ) -> None:
        """Roll the target to a new version under full load, then hold the ``after`` phase.

        Give the new version as *command* (local), *image* or *manifests*
        (Kubernetes); settings left out are taken from the deployed version.
        *max_surge* / *max_unavailable* default to 25% each locally and to the
        Deployment's own strategy on Kubernetes. With *rollback_on_breach*, a
        failed or stalled upgrade, or a verdict that fails, rolls the target
        back to the previous version, and the report says so.
        """
        if self.load is None or self._target is None or self.platform is None:
            raise RolloutUsageError("call rollout.deploy(...) and rollout.ramp() before rollout.upgrade()")
        if self._upgraded:
            raise RolloutUsageError("rollout.upgrade() was already called in this test")
        if not isinstance(rollback_on_breach, bool):
            raise RolloutUsageError(f"rollout.upgrade(rollback_on_breach={rollback_on_breach!r}) must be True or False")
        old = self._target
        if command is None and image is None and manifests is None:
            raise RolloutUsageError(
                "rollout.upgrade() needs the new version: command=[...], image=... or manifests=[...]"
            )
        target = self._target_spec(
            command,
            old.replicas if replicas is None else replicas,
            old.ready_path if ready_path is None else ready_path,
            old.env if env is None else env,
            old.ready_timeout_s if ready_timeout is None else ready_timeout,
            old.grace_period_s if grace_period is None else grace_period,
            old.cwd if cwd is None else cwd,
            "upgrade",
            image,
            manifests,
            old.port,
            old.pre_stop_s if pre_stop is None else pre_stop,
        )
        from pytest_rollout.platforms.rolling import DEFAULT_SURGE, DEFAULT_UNAVAILABLE, resolve_surge

        # bad values fail before anything moves
        resolve_surge(
            DEFAULT_SURGE if max_surge is None else max_surge,
            DEFAULT_UNAVAILABLE if max_unavailable is None else max_unavailable,
            target.replicas,
        )
        self._upgraded = True
        self._rollback_on_breach = rollback_on_breach
        # a phase edge is announced ahead (edge_lead_s), so that every worker counts the requests due from the
        # edge on for the new phase however long the word took to reach it; nothing moves before the edge
        lead = self.load.fleet.edge_lead_s
        start = time.time() + lead
        self._current = ("upgrade", start)
        self._upgrade_target = (start, target.replicas)
        self.config.hook.pytest_rollout_phase_start(rollout=self, phase="upgrade", at=start)
        failure: str | None = None
        try:
            self.load.fleet.announce("upgrade", start)
            time.sleep(max(0.0, start - time.time()))
            result = self.config.hook.pytest_rollout_upgrade(
                rollout=self,
                platform=self.platform,
                target=target,
                max_surge=max_surge,
                max_unavailable=max_unavailable,
            )
            self._check_fleet("upgrade")
        except UpgradeFailed as exc:
            failure, kind = str(exc), "release"
        except FleetError as exc:
            failure, kind = str(exc), "run"
        if failure is not None:
            self._end_phase("upgrade", start, time.time())
            self._fail(failure, kind)
        done = time.time() if result is None else max(start, min(result.end, time.time()))
        # the upgrade ended at `done` (its last old replica gone), which is already past: the after phase starts
        # once every worker can know of it, so the upgrade phase runs on to that edge (never shorter)
        end = max(done, time.time() + lead)
        self.load.fleet.announce("after", end)
        if self.spec.end_when_held is None:  # else announced when the after phase ends (_hold_until)
            self.load.fleet.announce("tail", end + self.spec.after_s)
        self._end_phase("upgrade", start, end)
        self._target = target
        time.sleep(max(0.0, end - time.time()))
        self.live.check_now()
        breach = self.live.breach_so_far("upgrade", start)
        if breach is not None:
            self._abort(breach, start)
        # the upgrade's last requests (the slowest, when the new version is slow) are answered and scraped
        # during the next phase: keep checking the upgrade's data until they are all in
        self._settling = ("upgrade", start)
        self._settled_at = time.time() + self.spec.timeout_s + 3 * self.scrape_interval + 1.0
        self._run_phase("after", end, end + self.spec.after_s)

    def verify(self) -> Verdict:
        """Stop the load, judge every SLO over every phase from Prometheus, and return the verdict.

        Fails the test (``pytest.fail``) when any SLO is broken or the data do
        not suffice to judge it.
        """
        verdict = self.judge()
        if not verdict.passed:
            self._roll_back()
            pytest.fail(self._with_rollback(verdict.message(self.nodeid)), pytrace=False)
        return verdict

    # -- internals ------------------------------------------------------------

    def _target_spec(
        self,
        command: Any,
        replicas: Any,
        ready_path: Any,
        env: Any,
        ready_timeout: Any,
        grace_period: Any,
        cwd: Any,
        what: str,
        image: Any = None,
        manifests: Any = None,
        port: Any = 8080,
        pre_stop: Any = 0.0,
    ) -> TargetSpec:
        self._versions += 1
        return TargetSpec.build(
            command,
            version=f"v{self._versions}",
            replicas=replicas,
            ready_path=ready_path,
            env=env,
            ready_timeout=ready_timeout,
            grace_period=grace_period,
            cwd=cwd if cwd is not None else self.config.rootpath,
            what=what,
            image=image,
            manifests=manifests,
            port=port,
            pre_stop=pre_stop,
        )

    def lifetime_s(self) -> float:
        """The longest this run can last, from now: what a stale-object reaper may assume."""
        spec = self.spec
        settings = self.session.settings
        kube_timeout = settings.kube.timeout_s if settings.kube is not None else 60.0
        return 2 * kube_timeout + spec.ramp_s + spec.hold_s + settings.upgrade_timeout_s + spec.after_s + 600.0

    def _make_platform(self) -> Platform:
        name = self.session.settings.platform
        platform = self.config.hook.pytest_rollout_make_platform(
            config=self.config, name=name, run_dir=self.run_dir, procs=self.procs, rollout=self
        )
        if platform is None:
            raise RolloutUsageError(
                f"no platform called {name!r}: use --rollout-platform local, or install a plugin that provides it"
            )
        return platform  # type: ignore[no-any-return]

    def _run_phase(self, name: str, start: float, end: float) -> None:
        self._current = (name, start)
        self.config.hook.pytest_rollout_phase_start(rollout=self, phase=name, at=start)
        failure: str | None = None
        breach: VerdictEntry | None = None
        try:
            end = self._hold_until(end, name)
        except FleetError as exc:
            failure = str(exc)
        except _ProvenBreach as exc:
            breach = exc.entry
        if failure is not None or breach is not None:
            self._end_phase(name, start, time.time())
            if breach is not None:
                self._abort(breach, start)
            self._fail(failure or "", "run")
        self._end_phase(name, start, end)

    def _abort(self, entry: VerdictEntry, phase_start: float) -> None:
        """Stop at once on a breach the live data prove (``abort_on_breach``): judge, roll back, fail."""
        at = time.time()
        current = self.phases[-1].name if self.phases else entry.phase
        # the breach may be proven in a phase that has ended (the upgrade, by its last and slowest answers)
        where = "" if entry.phase == current else f" in phase {entry.phase}"
        self.abort_note = (
            f"stopped early: {at - phase_start:.1f}s into phase {current}, the live data proved "
            f"{entry.slo} broken{where} ({entry.reason}); the load was stopped (abort_on_breach=False runs every "
            "phase)"
        )
        verdict = self.judge()
        self._roll_back()
        message = f"{self.abort_note}\n{verdict.message(self.nodeid)}"
        pytest.fail(self._with_rollback(message), pytrace=False)

    def _end_phase(self, name: str, start: float, end: float) -> None:
        self._current = None
        if name == "upgrade":
            self._upgrade_target = None
        self.phases.append(Phase(name, start, end))
        self.config.hook.pytest_rollout_phase_end(rollout=self, phase=name, start=start, end=end)

    def note_event(self, event: UpgradeEvent) -> None:
        """Record a replica event (the platforms' ``on_event``) and show it in the progress line."""
        self.events.append(event)
        if self._current is not None:
            self._tick(force=not self.progress.tty)

    def _tick(self, force: bool = False) -> None:
        if self._current is None or self.load is None:
            return
        phase, start = self._current
        upgrade = None
        if phase == "upgrade" and self._upgrade_target is not None:
            began, replicas = self._upgrade_target
            replicas = (self.platform.desired_replicas if self.platform else None) or replicas  # manifests say how many
            ready = {e.replica for e in self.events if e.action == "ready" and e.at >= began}
            upgrade = (min(len(ready), replicas), replicas)
        self.live.tick(phase, start, self.load, upgrade, force)

    def _hold_until(self, until: float, phase: str) -> float:
        """Hold the phase under way until *until*, or until it is proven held (``end_when_held``); its end."""
        assert self._current is not None and self.load is not None
        start = self._current[1]
        # with end_when_held a steady phase's end edge is announced here, ahead by the lead, not at its start
        after = {"baseline": "between", "after": "tail"}.get(phase) if self.spec.end_when_held is not None else None
        lead = self.load.fleet.edge_lead_s if after else 0.0
        while True:
            self._tick()
            self._check_fleet(phase)
            settling = self._settling if time.time() < self._settled_at else None
            breach = self.live.breach_so_far(phase, start, settling)
            if breach is not None:
                raise _ProvenBreach(breach)
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
            self.load.fleet.announce(after, until)
        time.sleep(max(0.0, until - time.time()))
        return until

    def _check_fleet(self, phase: str) -> None:
        if self.load is not None:
            self.load.check(phase, self.spec.requested_rps)

    def _fail(self, message: str, kind: str) -> None:
        """Record a failure of the run itself, judge what was measured, and fail the test."""
        self.failure = message
        self._failure_kind = kind
        verdict = self.judge()
        self._roll_back()
        pytest.fail(self._with_rollback(verdict.message(self.nodeid)), pytrace=False)

    def _roll_back(self) -> None:
        """With ``rollback_on_breach``, return the target to the previous version (once)."""
        if not self._rollback_on_breach or self.rollback_note is not None or self.platform is None:
            return
        try:
            self.rollback_note = self.platform.rollback(self.note_event)
        except RolloutError as exc:
            self.rollback_note = f"rollback failed: {exc}"

    def _with_rollback(self, message: str) -> str:
        """The failure message, with what the run's facts say about a broken upgrade and what was rolled back."""
        if self._verdict is not None:
            upgrade = next(((p.start, p.end) for p in self.phases if p.name == "upgrade"), None)
            points = (self.series.get("error_rate") or {}).get("points") or []
            by_class = next((m.errors_by_class for m in self._verdict.phases if m.phase == "upgrade"), None)
            hint = termination_hint(self._verdict.entries, self.events, points, upgrade, by_class)
            if hint:
                message = f"{message}\n{hint}"
        if self.rollback_note is None:
            return message
        return f"{message}\nrollback_on_breach: {self.rollback_note}"

    def record_failure(self, message: str, kind: str = "run") -> None:
        """Record that the run itself failed (the plugin's word for a crash inside the test); the first one counts."""
        if self.failure is None:
            self.failure, self._failure_kind = message, kind

    def judge(self) -> Verdict:
        """Stop the load (if it runs), measure every phase and judge it; computed once."""
        if self._verdict is not None:
            return self._verdict
        client = prometheus_or_none(self.session)
        if self.load is not None and not self.load.stopped:
            self.progress.close()
            try:
                self.load.finish(client, settle_s=self.spec.timeout_s + 2.0)
            except FleetError as exc:
                self.record_failure(str(exc))
        measured: tuple[PhaseMeasurement, ...] = ()
        if self.machine is not None:
            self.machine.stop()
        if self.load is not None:
            measured = tuple(
                with_share(measure_phase(client, self.spec, self.load, p.name, p.start, p.end), self.machine)
                for p in self.phases
            )
            if self.phases:
                self.series = collect_series(
                    client, self.run_id, self.phases[0].start, self.phases[-1].end, self.load.scrape_interval
                )
        entries = evaluate(self.spec, measured, self.budget)
        if self.session.baseline is not None:
            from pytest_rollout.judge.baseline import compare

            name = self.session.settings.compare or ""
            base = self.session.baseline["tests"].get(self.nodeid)
            entries.extend(compare(self.spec, measured, base, name, self.budget.per_claim))
        for extra in self.config.hook.pytest_rollout_add_verdicts(rollout=self, entries=list(entries)):
            if extra:
                entries.extend(extra)
        self._verdict = Verdict(
            tuple(entries), measured, self.failure, (self._failure_kind or "run") if self.failure else None
        )
        return self._verdict

    @property
    def scrape_interval(self) -> float:
        return self.load.scrape_interval if self.load is not None else 1.0

    def to_json(self, outcome: str) -> dict[str, Any]:
        """This test's entry in the JSON report."""
        from pytest_rollout.report.record import run_record

        return run_record(self, outcome)

    def close(self) -> list[str]:
        """Stop everything this test started (the target stays up with --rollout-keep)."""
        if self._closed:
            return []
        self._closed = True
        self.progress.close()
        if self.machine is not None:
            self.machine.stop()
        problems: list[str] = []
        try:
            if self.load is not None and not self.load.stopped:
                # cut off (Ctrl-C, SIGTERM, an error): keep what the fleet counted for the report
                if self._current is not None:
                    self.phases.append(Phase(self._current[0], self._current[1], time.time()))
                    self._current = None
                self.load.cut_off()
        finally:
            if self.platform is not None:
                if self.session.settings.keep:
                    self.platform.keep()
                    self.session.kept.append(f"{self.nodeid}:\n{self.platform.describe()}")
                else:
                    problems.extend(self.platform.teardown())
            if not self.session.settings.keep:
                problems.extend(self.procs.stop_all())
        return problems
