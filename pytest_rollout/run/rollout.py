"""The ``rollout`` fixture's object: deploy, ramp, upgrade, verify.

One :class:`Rollout` per test. It owns a run directory, the processes it
starts (recorded in a :class:`~pytest_rollout.procs.ProcessSet`), the
target (:mod:`pytest_rollout.run.target`: its platform and versions), the
fleet and the phase timeline (:mod:`pytest_rollout.run.phases`), and turns
Prometheus' answers into the test's verdict.

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
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import pytest

from pytest_rollout.errors import FleetError, RolloutUsageError, UpgradeFailed
from pytest_rollout.judge.risk import RiskBudget, budget_for
from pytest_rollout.judge.verdict import Verdict
from pytest_rollout.platforms.base import Platform, TargetOptions, UpgradeEvent, unset_if_none
from pytest_rollout.procs import ProcessSet
from pytest_rollout.report.progress import Progress
from pytest_rollout.report.record import run_record
from pytest_rollout.run.judging import failure_hint, judged_entries, measure_run
from pytest_rollout.run.live import LiveWatch
from pytest_rollout.run.load import LoadRun, prometheus_or_none, start_load
from pytest_rollout.run.machine import MachineWatch
from pytest_rollout.run.phases import Phase, PhaseClock, ProvenBreach
from pytest_rollout.run.prepare import fleet_size, headroom_warning, provable_lines, validate_checks
from pytest_rollout.run.target import Target, UpgradeStrategy
from pytest_rollout.slo import SLOSpec

if TYPE_CHECKING:
    from pytest_rollout.plugin.session import RolloutSession

__all__ = ["Phase", "Rollout"]

_T = TypeVar("_T")


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
        self.target = Target(config.rootpath, self.note_event)
        self.events: list[UpgradeEvent] = []
        self.load: LoadRun | None = None  # the fleet, while the load lasts
        self._verdict: Verdict | None = None
        self.failure: str | None = None
        self._failure_kind: str | None = None
        self.failed_with: BaseException | None = None  # what the plugin raised to fail the test (plugin/fixture.py)
        self._closed = False
        self.series: dict[str, Any] = {}  # name -> {"query", "points"}: the run over time, for charts
        self.progress = Progress(config)
        #: how the run's false-fail risk is shared by its broken claims (live looks and the final verdict)
        self.budget: RiskBudget = budget_for(spec, compared=session.baseline is not None)
        self.live = LiveWatch(session, spec, self.budget, self.run_id, self.progress)
        self.clock = PhaseClock(spec, self.live, self.progress, self.events, hook=config.hook, owner=self)
        self.phases: list[Phase] = self.clock.phases  # the phases that ended, in order (the clock's list)
        self.ended_early: list[str] = self.clock.ended_early  # the phases end_when_held ended, and why
        self.rollback_note: str | None = None  # what rollback_on_breach did
        self.abort_note: str | None = None  # why the run stopped early (abort_on_breach)
        self.provable: list[str] = []  # what each phase can prove, said before the load starts
        self.machine: MachineWatch | None = None  # the CPU other processes take (local platform), from ramp()

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

    @property
    def platform(self) -> Platform | None:
        """Where the target runs, once :meth:`deploy` made it."""
        return self.target.platform

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
        scheme: str = "http",
    ) -> None:
        """Deploy version 1 of the target and return once it is ready.

        Local platform: *replicas* processes running *command*, each listening on 127.0.0.1 at the port in env var
        ``PORT``, ready when ``GET ready_path`` answers 200. Kubernetes: ``image=`` (the plugin writes a Deployment
        and a ClusterIP Service on *port*) or ``manifests=[...]`` (one Deployment and the Service selecting its
        pods), available within *ready_timeout* seconds (default: 30 locally, ``--rollout-kube-timeout`` on
        Kubernetes). *pre_stop* (seconds, or a duration such as ``"5s"``) mirrors ``lifecycle.preStop.sleep``: a
        replica being replaced keeps serving, untouched, that long before it gets SIGTERM, so that its endpoint has
        left every load balancer first. On Kubernetes it is written into the generated Deployment (``image=``);
        manifests carry their own. *scheme* ``"https"``: the replicas serve TLS (the fleet trusts slo(tls_ca=...)).
        """
        if self.platform is not None:
            raise RolloutUsageError("rollout.deploy() was already called in this test; use rollout.upgrade()")
        name = self.session.settings.platform
        platform = self.config.hook.pytest_rollout_make_platform(
            config=self.config, name=name, run_dir=self.run_dir, procs=self.procs, rollout=self
        )
        if platform is None:
            raise RolloutUsageError(
                f"no platform called {name!r}: use --rollout-platform local, or install a plugin that provides it"
            )
        # None is "not given" only where documented (ready_timeout, cwd); replicas=None, say, is refused
        given = TargetOptions(
            command=command,
            image=image,
            manifests=manifests,
            replicas=replicas,
            ready_path=ready_path,
            env=env,
            ready_timeout=unset_if_none(ready_timeout),
            grace_period=grace_period,
            cwd=unset_if_none(cwd),
            port=port,
            pre_stop=pre_stop,
            scheme=scheme,
        )
        self.target.deploy(platform, given)

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
        self.load = self.clock.load = start_load(
            self.platform,
            client,
            spec,
            run_id=self.run_id,
            size=size,
            sd_dir=self.session.sd_dir,
            upgrade_timeout_s=settings.upgrade_timeout_s,
            nodeid=self.nodeid,
        )
        start_at = self.load.start_at
        baseline_at = start_at + spec.ramp_s
        if spec.ramp_s > 0:
            self._step(lambda: self.clock.run("ramp", start_at, baseline_at))
        self._step(lambda: self.clock.run("baseline", baseline_at, baseline_at + spec.hold_s))

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

        Give the new version as *command* (local), *image* or *manifests* (Kubernetes); settings left out (scheme
        included) are taken from the deployed version. *max_surge* / *max_unavailable* default to 25% each locally
        and to the Deployment's own strategy on Kubernetes. With *rollback_on_breach*, a failed or stalled upgrade,
        or a verdict that fails, rolls the target back to the previous version, and the report says so.
        """
        platform = self.platform
        if self.load is None or platform is None or self.target.deployed is None:
            raise RolloutUsageError("call rollout.deploy(...) and rollout.ramp() before rollout.upgrade()")
        if self.target.strategy is not None:
            raise RolloutUsageError("rollout.upgrade() was already called in this test")
        strategy = UpgradeStrategy(
            max_surge=max_surge, max_unavailable=max_unavailable, rollback_on_breach=rollback_on_breach
        )
        # None is "not given" here, as documented: the deployed version's setting
        given = TargetOptions(
            command=command,
            image=image,
            manifests=manifests,
            replicas=unset_if_none(replicas),
            ready_path=unset_if_none(ready_path),
            env=unset_if_none(env),
            ready_timeout=unset_if_none(ready_timeout),
            grace_period=unset_if_none(grace_period),
            cwd=unset_if_none(cwd),
            pre_stop=unset_if_none(pre_stop),
        )
        target = self.target.next_version(given, strategy)
        upgraded = self._step(lambda: self.clock.upgrade(platform, target, strategy))
        self.target.deployed = target  # the platform runs it from the upgrade's end, whatever the after phase shows
        self._step(lambda: self.clock.after(upgraded))

    def verify(self) -> Verdict:
        """Stop the load, judge every SLO over every phase from Prometheus, and return the verdict.

        Fails the test (``pytest.fail``) when any SLO is broken or the data do not suffice to judge it.
        """
        verdict = self.judge()
        if not verdict.passed:
            self._fail_test()
        return verdict

    def note_event(self, event: UpgradeEvent) -> None:
        """Record a replica event (the platforms' ``on_event``) and show it in the progress line."""
        self.events.append(event)
        if self.clock.current is not None:
            self.clock.tick(force=not self.progress.tty)

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
        if self.machine is not None:
            self.machine.stop()
        measured, self.series = measure_run(client, self.spec, self.load, self.phases, self.machine)
        baseline, name = self.session.baseline, self.session.settings.compare or ""
        entries = judged_entries(
            self.spec, measured, self.budget, baseline=baseline, name=name, nodeid=self.nodeid, failure=self.failure
        )
        for extra in self.config.hook.pytest_rollout_add_verdicts(rollout=self, entries=list(entries)):
            if extra:
                entries.extend(extra)
        kind = (self._failure_kind or "run") if self.failure else None
        self._verdict = Verdict(tuple(entries), measured, self.failure, kind)
        return self._verdict

    def lifetime_s(self) -> float:
        """The longest this run can last, from now: what a stale-object reaper may assume."""
        spec = self.spec
        settings = self.session.settings
        kube_timeout = settings.kube.timeout_s if settings.kube is not None else 60.0
        return 2 * kube_timeout + spec.ramp_s + spec.hold_s + settings.upgrade_timeout_s + spec.after_s + 600.0

    @property
    def scrape_interval(self) -> float:
        return self.load.scrape_interval if self.load is not None else 1.0

    def to_json(self, outcome: str, *, result: str) -> dict[str, Any]:
        """This test's entry in the JSON report; *result*: the test's, as the plugin decided it."""
        return run_record(self, outcome, platform=self.session.settings.platform, result=result)

    def close(self) -> list[str]:
        """Stop everything this test started (the target stays up with --rollout-keep)."""
        if self._closed:
            return []
        self._closed = True
        self.progress.close()
        if self.machine is not None:
            self.machine.stop()
        keep = self.session.settings.keep
        try:
            if self.load is not None and not self.load.stopped:
                # cut off (Ctrl-C, SIGTERM, an error): keep what the fleet counted for the report
                self.clock.cut_off(time.time())
                self.load.cut_off()
        finally:
            problems, kept = self.target.close(keep)
            if kept is not None:
                self.session.kept.append(f"{self.nodeid}:\n{kept}")
            if not keep:
                problems.extend(self.procs.stop_all())
        return problems

    def _step(self, step: Callable[[], _T]) -> _T:
        """*step*'s value; a failed upgrade (the release's), a dead worker (the run's) or a proven breach fails the test."""
        stopped: str | None = None
        try:
            return step()
        except UpgradeFailed as exc:
            self.failure, self._failure_kind = str(exc), "release"
        except FleetError as exc:
            self.failure, self._failure_kind = str(exc), "run"
        except ProvenBreach as exc:
            stopped = self.abort_note = exc.note(self.phases, time.time())
        self._fail_test(stopped)

    def _fail_test(self, stopped: str | None = None) -> NoReturn:
        """Judge, roll back if asked (once), and fail the test saying why; *stopped*: why the run stopped early."""
        verdict = self.judge()
        if self.rollback_note is None:  # once
            self.rollback_note = self.target.roll_back()
        message = verdict.message(self.nodeid)
        if stopped is not None:
            message = f"{stopped}\n{message}"
        hint = failure_hint(verdict, self.events, self.phases, self.series)
        if hint is not None:
            message = f"{message}\n{hint}"
        if self.rollback_note is not None:
            message = f"{message}\nrollback_on_breach: {self.rollback_note}"
        self.failed_with = pytest.fail.Exception(message, pytrace=False)
        raise self.failed_with
