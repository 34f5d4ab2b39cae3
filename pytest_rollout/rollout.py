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

import math
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from .control import Aim, split_headers
from .errors import FleetError, PrometheusError, RolloutError, RolloutUsageError, UpgradeFailed
from .fleet import Fleet, FleetTotals, workers_for
from .interrupts import held
from .kube_objects import LABEL_RUN
from .platform import Platform, TargetSpec, UpgradeEvent
from .procs import ProcessSet
from .progress import format_progress
from .prometheus import remove_targets, write_targets
from .promql import inflight, last_scrape, live_queries, phase_queries, window
from .schedule import Segment, expected_count, rate_at
from .slo import SLOSpec, quantile_name
from .verdict import (
    PhaseMeasurement,
    TestResult,
    Verdict,
    VerdictEntry,
    error_budget,
    evaluate,
    largest_gap,
    live_breach,
    provable,
)
from .worker import Plan, inflight_cap

if TYPE_CHECKING:
    from .session import RolloutSession

__all__ = ["Phase", "Rollout", "Verdict"]

#: Rate one worker is given when the aiohttp engine runs (https, HEAD) and --rollout-worker-rps is not set: it holds
#: 3,000 to 7,000 rps on one core where the fast engine holds 20,000 to 30,000 (README, "Measured").
AIOHTTP_WORKER_RPS = 1000.0

#: Quantiles always measured for the report, whatever the marker bounds.
REPORT_QUANTILES = (0.5, 0.9, 0.95, 0.99)


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


@dataclass
class _Load:
    fleet: Fleet
    segments: tuple[Segment, ...]
    start_at: float
    engines: list[str]
    totals: FleetTotals | None = None
    stopped: bool = False


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
        self._load: _Load | None = None
        self._versions = 0
        self._target: TargetSpec | None = None
        self._upgraded = False
        self._verdict: Verdict | None = None
        self._failure: str | None = None
        self._failure_kind: str | None = None
        self._closed = False
        self._eval_at = 0.0
        self._scrape_interval = 1.0
        self._current: tuple[str, float] | None = None  # the phase under way, if any
        self._rollback_on_breach = False
        self.series: dict[str, Any] = {}  # name -> {"query", "points"}: the run over time, for charts
        from .progress import Progress

        self.progress = Progress(config)
        self._upgrade_target: tuple[float, int] | None = None  # (start, replicas) while upgrading
        self._shown_phase = ""  # the phase of the last progress line
        self._quick_client: Any = None  # a PromClient without retries, for progress lines
        self.rollback_note: str | None = None  # what rollback_on_breach did
        self.abort_note: str | None = None  # why the run stopped early (abort_on_breach)
        self._breach_checked = -math.inf  # when the live data were last checked for a proven breach
        self.provable: list[str] = []  # what each phase can prove, said before the load starts

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
        timeout = ready_timeout if ready_timeout is not None else float(getattr(self.platform, "ready_timeout_s", 30.0))
        target = self._target_spec(
            command, replicas, ready_path, env, timeout, grace_period, cwd, "deploy", image, manifests, port, pre_stop
        )
        self.platform.deploy(target, self.note_event)
        self._target = target

    def ramp(self) -> None:
        """Start the fleet, climb to the marker's rps over ``ramp``, hold it for ``hold`` (baseline)."""
        if self.platform is None:
            raise RolloutUsageError("call rollout.deploy(...) before rollout.ramp()")
        if self._load is not None:
            raise RolloutUsageError("rollout.ramp() was already called in this test")
        spec = self.spec
        settings = self.session.settings
        client, _ = self.session.prometheus()
        self._validate_checks(client)
        self._say_what_can_be_proven()
        size = settings.workers or workers_for(spec.requested_rps, self._worker_rps())
        self._check_headroom(size)
        public_headers, secret_headers = split_headers(spec.headers, spec.secret_headers)
        fleet = self.platform.make_fleet(self.run_id, size, Aim.at(self.platform.url, secret_headers))
        try:
            fleet.start()
            targets = fleet.scrape_targets()  # local workers are named in files; pods are found by the cluster
            file_sd = bool(targets)
            discovery = 20.0 if file_sd else 60.0  # a cluster's Prometheus finds new pods more slowly
            if file_sd:
                write_targets(self.session.sd_dir, "fleet", self.run_id, targets)
            lb = self.platform.scrape_targets(self.run_id)
            if lb:
                write_targets(self.session.sd_dir, "lb", self.run_id, lb)
            seen = client.wait_for_targets(self.run_id, size, timeout_s=discovery)
        except BaseException:
            fleet.shutdown()
            raise
        self._scrape_interval = client.scrape_interval(self.run_id)
        if seen < size:
            fleet.shutdown()
            if file_sd:
                how = (
                    f"It must discover the file_sd target files in {self.session.sd_dir} (file_sd_configs; "
                    "choose that directory with --rollout-sd-dir)."
                )
            else:
                how = (
                    "It must discover the worker pods by their prometheus.io/scrape annotations and copy the pod "
                    f"label {LABEL_RUN} to the target label 'run' and the pod name to 'worker' "
                    "(see examples/kind/prometheus.yaml)."
                )
            raise PrometheusError(
                f"Prometheus at {client.url} scrapes {seen} of the {size} load workers of this run "
                f"after {discovery:g}s. {how}"
            )
        rps = spec.requested_rps
        segments: list[Segment] = []
        if spec.ramp_s > 0:
            segments.append(Segment(spec.ramp_s, 0.0, rps))
        segments.append(Segment(None, rps, rps))
        start_at = time.time() + fleet.start_lead_s
        baseline_at = start_at + spec.ramp_s
        between_at = baseline_at + spec.hold_s
        phases = [("baseline", baseline_at), ("between", between_at)]
        if spec.ramp_s > 0:
            phases.insert(0, ("ramp", start_at))
        total = spec.ramp_s + spec.hold_s + settings.upgrade_timeout_s + spec.after_s + 30.0
        template = Plan(
            url=self.platform.url + spec.path,
            segments=(),
            start_at=start_at,
            deadline=start_at + total,
            method=spec.method,
            headers=public_headers,
            body=spec.body,
            timeout_s=spec.timeout_s,
            max_requests=math.ceil(rps / size * total * 1.1) + 1000,
            max_inflight=inflight_cap(rps / size),
            phases=tuple(phases),
        )
        try:
            engines = fleet.begin(template, segments)
        except BaseException:
            fleet.shutdown()
            raise
        self._load = _Load(fleet=fleet, segments=tuple(segments), start_at=start_at, engines=engines)
        if spec.ramp_s > 0:
            self._run_phase("ramp", start_at, baseline_at)
        self._run_phase("baseline", baseline_at, between_at)

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
        if self._load is None or self._target is None or self.platform is None:
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
        from .upgrade import resolve_surge

        # bad values fail before anything moves
        resolve_surge(
            "25%" if max_surge is None else max_surge,
            "25%" if max_unavailable is None else max_unavailable,
            target.replicas,
        )
        self._upgraded = True
        self._rollback_on_breach = rollback_on_breach
        start = time.time()
        self._current = ("upgrade", start)
        self._upgrade_target = (start, target.replicas)
        self.config.hook.pytest_rollout_phase_start(rollout=self, phase="upgrade", at=start)
        failure: str | None = None
        try:
            self._load.fleet.announce("upgrade", start)
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
        end = time.time() if result is None else max(start, min(result.end, time.time()))
        self._end_phase("upgrade", start, end)
        self._target = target
        # the phase change first: requests due after `end` count for "after" only once each worker knows of it
        self._load.fleet.announce("after", end)
        self._load.fleet.announce("tail", end + self.spec.after_s)
        self._breach_checked = -math.inf
        breach = self._breach_so_far("upgrade", start)
        if breach is not None:
            self._abort(breach, start)
        self._run_phase("after", end, end + self.spec.after_s)

    def verify(self) -> Verdict:
        """Stop the load, judge every SLO over every phase from Prometheus, and return the verdict.

        Fails the test (``pytest.fail``) when any SLO is broken or the data do
        not suffice to judge it.
        """
        verdict = self._judge()
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

    def _validate_checks(self, client: Any) -> None:
        """Let Prometheus parse every user check before any load starts."""
        for check in self.spec.checks:
            expr = check.render(self.run_id, "baseline", "1s")
            try:
                client.query(expr, time.time())
            except PrometheusError as exc:
                raise RolloutUsageError(
                    f"slo check {check.name!r}: {exc}. Fix the expression in @pytest.mark.slo(checks=...)"
                ) from None

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
            self._hold_until(end, name)
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
        self.abort_note = (
            f"stopped early: {at - phase_start:.1f}s into phase {entry.phase}, the live data proved "
            f"{entry.slo} broken ({entry.reason}); the load was stopped (abort_on_breach=False runs every phase)"
        )
        verdict = self._judge()
        self._roll_back()
        message = f"{self.abort_note}\n{verdict.message(self.nodeid)}"
        pytest.fail(self._with_rollback(message), pytrace=False)

    def _worker_rps(self) -> float:
        """The rate one worker is given: the setting, but sized for the engine that will actually run."""
        from .engine import fast_engine_refusal

        settings = self.session.settings
        assert self.platform is not None
        probe = Plan(
            url=self.platform.url + self.spec.path, segments=(), start_at=0.0, deadline=0.0, method=self.spec.method
        )
        if not settings.worker_rps_given and fast_engine_refusal(probe) is not None:
            return min(settings.worker_rps, AIOHTTP_WORKER_RPS)  # the calibration and default are the fast engine's
        return settings.worker_rps

    def _check_headroom(self, workers: int) -> None:
        """Say before any load when this machine cannot give the fleet a core per worker."""
        cores = getattr(self.platform, "fleet_cpus", None)
        if not cores:
            return  # a cluster schedules its pods; an unpinned machine is the user's to size
        if workers > len(cores):
            self.progress.note(
                f"[rollout] warning: {workers} load workers for {self.spec.requested_rps:,.0f} rps, but this machine "
                f"sets {len(cores)} CPU(s) aside for the fleet: the workers share the machine with the target and "
                "may fall behind, which leaves phases not proven. Lower --rollout-rps-scale, or run on a machine "
                "with more cores.",
                warn=True,
            )

    def _say_what_can_be_proven(self) -> None:
        """Before any load: what each phase can possibly prove held, and a warning for what it never can."""
        spec = self.spec
        lengths = {"ramp": spec.ramp_s, "baseline": spec.hold_s, "upgrade": 0.0, "after": spec.after_s}
        if spec.ramp_s <= 0:
            del lengths["ramp"]
        for phase, text, ok in provable(spec, lengths):
            line = f"[rollout] {phase}: {text}"
            self.provable.append(line)
            self.progress.note(line if ok else f"{line} (warning)", warn=not ok)

    def _live_client(self) -> Any:
        """A Prometheus client that fails fast (no retries), for live lines and checks; None when there is none."""
        try:
            client, _ = self.session.prometheus()
        except RolloutError:
            return None
        if self._quick_client is None or self._quick_client.url != client.url:
            from .prometheus import PromClient

            self._quick_client = PromClient(client.url, timeout_s=2.0, retries=0)
        return self._quick_client

    def _breach_so_far(self, phase: str, start: float) -> VerdictEntry | None:
        """The SLO that the phase under way has already proven broken, from Prometheus, if any (at most once a second)."""
        now = time.monotonic()
        if not self.spec.abort_on_breach or now - self._breach_checked < 1.0:
            return None
        self._breach_checked = now
        client = self._live_client()
        if client is None:
            return None
        queries = phase_queries(self.run_id, phase, max(time.time() - start, 0.001), [])
        with held():
            return self._live_breach(client, queries, phase, start)

    def _live_breach(self, client: Any, queries: Any, phase: str, start: float) -> VerdictEntry | None:
        try:
            at = time.time()
            by_class = {labels.get("class", "?"): v for labels, v in client.query(queries.by_class, at)}
            late = client.scalar(queries.late, at) or 0.0
            # requests still in flight may yet succeed: count them as successes, so that fast failures
            # ending before slow successes can never make a breach look proven (the final verdict waits for all)
            by_class["ok"] = by_class.get("ok", 0.0) + (client.scalar(inflight(self.run_id), at) or 0.0)
            histogram = tuple(
                sorted((float(labels.get("le", "inf")), v) for labels, v in client.query(queries.histogram, at))
            )
        except RolloutError:
            return None  # a live check that cannot be made proves nothing; the final verdict still judges
        measured = PhaseMeasurement(
            phase=phase,
            start=start,
            end=at,
            asked_requests=0.0,
            requests=sum(by_class.values()),
            by_class=by_class,
            late=late,
            histogram=histogram,
        )
        return live_breach(self.spec, measured)

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
        """Write the progress line, when one is due (and at the start of each phase)."""
        if self._current is None or self._load is None or time.time() < self._load.start_at:
            return
        phase, start = self._current
        if phase != self._shown_phase:
            force, self._shown_phase = True, phase
        if not self.progress.due(force):
            return
        length = {"ramp": self.spec.ramp_s, "baseline": self.spec.hold_s, "after": self.spec.after_s}.get(phase)
        quick = self._live_client()
        if quick is None:
            return
        with held():
            live = self.progress.live(quick, self.run_id, max(3 * self._scrape_interval, 3.0))
        upgrade = None
        if phase == "upgrade" and self._upgrade_target is not None:
            began, replicas = self._upgrade_target
            replicas = getattr(self.platform, "desired_replicas", None) or replicas  # manifests say how many
            ready = {e.replica for e in self.events if e.action == "ready" and e.at >= began}
            upgrade = (min(len(ready), replicas), replicas)
        asked = rate_at(self._load.segments, time.time() - self._load.start_at)
        line = format_progress(phase, max(0.0, time.time() - start), length, asked, live, upgrade)
        self.progress.write(line)

    def _hold_until(self, until: float, phase: str) -> None:
        assert self._current is not None
        start = self._current[1]
        while True:
            self._tick()
            self._check_fleet(phase)
            breach = self._breach_so_far(phase, start)
            if breach is not None:
                raise _ProvenBreach(breach)
            left = until - time.time()
            if left <= 0:
                return
            time.sleep(min(left, 0.25))

    def _check_fleet(self, phase: str) -> None:
        if self._load is None:
            return
        dead = self._load.fleet.dead()
        if dead:
            names = ", ".join(dead)
            raise FleetError(
                f"load not reached: {len(dead)} of {self._load.fleet.size} load workers died during phase "
                f"{phase} ({names}); the fleet cannot hold {self.spec.requested_rps:,.0f} rps"
            )

    def _fail(self, message: str, kind: str) -> None:
        """Record a failure of the run itself, judge what was measured, and fail the test."""
        self._failure = message
        self._failure_kind = kind
        verdict = self._judge()
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
        if self.rollback_note is None:
            return message
        return f"{message}\nrollback_on_breach: {self.rollback_note}"

    def _finish_load(self) -> None:
        """Stop the load, let requests in flight end, and wait until Prometheus has scraped the final counts."""
        load = self._load
        if load is None or load.stopped:
            return
        load.stopped = True
        self.progress.close()
        try:
            load.fleet.stop_load()
            load.fleet.drain(settle_s=self.spec.timeout_s + 2.0)
            drained = time.time()
            self._await_scrape_after(drained)
            self._eval_at = time.time()
            if not load.fleet.dead():
                load.totals = load.fleet.totals()
        finally:
            load.fleet.shutdown()
            remove_targets(self.session.sd_dir, self.run_id)

    def _await_scrape_after(self, after: float) -> None:
        """Wait (bounded) until Prometheus holds a sample of every worker newer than *after*."""
        try:
            client, _ = self.session.prometheus()
        except RolloutError:
            return
        deadline = time.monotonic() + 5.0 * self._scrape_interval + 5.0
        while time.monotonic() < deadline:
            try:
                rows = client.query(last_scrape(self.run_id), time.time())
            except PrometheusError:
                return
            if self._load and len(rows) >= self._load.fleet.size and min(v for _, v in rows) > after:
                return
            time.sleep(0.1)

    def _judge(self) -> Verdict:
        if self._verdict is not None:
            return self._verdict
        try:
            self._finish_load()
        except FleetError as exc:
            self._failure = self._failure or str(exc)
        measured = tuple(self._measure(p) for p in self.phases)
        self._collect_series()
        entries = evaluate(self.spec, measured)
        if self.session.baseline is not None:
            from .baseline import compare

            name = self.session.settings.compare or ""
            entries.extend(compare(self.spec, measured, self.session.baseline["tests"].get(self.nodeid), name))
        for extra in self.config.hook.pytest_rollout_add_verdicts(rollout=self, entries=list(entries)):
            if extra:
                entries.extend(extra)
        self._verdict = Verdict(
            tuple(entries), measured, self._failure, (self._failure_kind or "run") if self._failure else None
        )
        return self._verdict

    def _collect_series(self) -> None:
        """The run over time (rate, errors, latency quantiles), for the HTML report's charts."""
        if not self.phases:
            return
        start, end = self.phases[0].start, self.phases[-1].end
        step = self._scrape_interval
        span = max(3 * step, 2.0)
        try:
            client, _ = self.session.prometheus()
            for name, expr in live_queries(self.run_id, span, [0.5, 0.9, 0.99]).items():
                points = client.series(expr, start, end + step, step)
                self.series[name] = {"query": expr, "points": [[round(t, 3), round(v, 6)] for t, v in points]}
        except RolloutError:
            return  # the charts are a courtesy; the verdict stands on the phase queries

    def _measure(self, phase: Phase) -> PhaseMeasurement:
        load = self._load
        assert load is not None
        quantiles = sorted(set(REPORT_QUANTILES) | {q for _, q, _ in self.spec.latency_bounds()})
        queries = phase_queries(self.run_id, phase.name, phase.end - phase.start, quantiles)
        asked = expected_count(load.segments, phase.start - load.start_at, phase.end - load.start_at)
        own = load.totals.phase(phase.name) if load.totals is not None else None
        base = dict(
            phase=phase.name,
            start=phase.start,
            end=phase.end,
            asked_requests=asked,
            workers_expected=load.fleet.size,
            fleet_requests=own[0] if own else None,
            fleet_errors=own[1] if own else None,
            queries=queries.all(),
            scrape_interval_s=self._scrape_interval,
        )
        try:
            client, _ = self.session.prometheus()
            at = self._eval_at or time.time()
            requests = client.scalar(queries.requests, at)
            by_class = {labels.get("class", "?"): value for labels, value in client.query(queries.by_class, at)}
            late = client.scalar(queries.late, at) or 0.0
            # requests still in flight may yet succeed: count them as successes, so that fast failures
            # ending before slow successes can never make a breach look proven (the final verdict waits for all)
            by_class["ok"] = by_class.get("ok", 0.0) + (client.scalar(inflight(self.run_id), at) or 0.0)
            histogram = tuple(
                sorted((float(labels.get("le", "inf")), value) for labels, value in client.query(queries.histogram, at))
            )
            scrapes = client.samples(queries.samples, phase.end)
            quantile_ms = {}
            for q, expr in queries.quantiles.items():
                value = client.scalar(expr, at)
                quantile_ms[q] = math.nan if value is None else value * 1000.0
            checks: dict[str, float | None] = {}
            for check in self.spec.checks:
                # rate()/increase() need two samples in their range: like Grafana's $__rate_interval,
                # $window is the phase's length but never less than four scrape intervals
                span = max(phase.end - phase.start, 4 * self._scrape_interval)
                expr = check.render(self.run_id, phase.name, window(span))
                base["queries"][f"check:{check.name}"] = expr  # type: ignore[index]
                try:
                    checks[check.name] = client.scalar(expr, phase.end)
                except PrometheusError:  # more than one series: no single value to judge
                    checks[check.name] = None
        except RolloutError as exc:
            return PhaseMeasurement(requests=None, problem=str(exc), **base)  # type: ignore[arg-type]
        ok_times = [[t for t, v in values if v == 1.0] for _, values in scrapes]
        ok_times = [times for times in ok_times if times]
        return PhaseMeasurement(
            requests=requests,
            by_class=by_class,
            late=late,
            quantiles_ms=quantile_ms,
            checks=checks,
            workers_seen=len(ok_times),
            histogram=histogram,
            max_gap_s=max((largest_gap(phase.start, phase.end, t) for t in ok_times), default=phase.end - phase.start),
            **base,  # type: ignore[arg-type]
        )

    def to_json(self, outcome: str) -> dict[str, Any]:
        """This test's entry in the JSON report."""
        verdict = self._verdict
        phases: dict[str, Any] = {}
        for m in verdict.phases if verdict else ():

            def num(x: float | None) -> float | None:
                return None if x is None or math.isnan(x) else round(x, 6)

            phases[m.phase] = {
                "start": m.start,
                "end": m.end,
                "achieved_rps": num(m.held_rps) if m.requests is not None else None,
                "asked_rps": num(m.asked_rps),
                "error_rate": num(m.error_rate) if m.requests else None,
                **{f"p{quantile_name(q)}_ms": num(m.quantiles_ms.get(q)) for q in sorted(m.quantiles_ms)},
                "requests": None if m.requests is None else round(m.requests),
                "on_time": None if m.requests is None else round(m.on_time),
                "late": round(m.late),
                "dropped": round(m.dropped),
                "errors": None if m.requests is None else round(m.errors),
                "errors_by_class": {k: round(v) for k, v in m.errors_by_class.items()},
                "fleet_requests": m.fleet_requests,
                "queries": dict(m.queries),
                "histogram": [["+Inf" if math.isinf(le) else le, round(c)] for le, c in m.histogram],
            }
        if verdict is None:
            # never judged (interrupted): the phases seen, with the fleet's own counts where known
            for p in self.phases:
                counted = self._load.totals.phase(p.name) if self._load and self._load.totals else None
                phases[p.name] = {
                    "start": p.start,
                    "end": p.end,
                    "requests": counted[0] if counted else None,
                    "errors": counted[1] if counted else None,
                    "source": "fleet (not judged: the run was interrupted)",
                }
        return {
            "nodeid": self.nodeid,
            "outcome": outcome,
            "requested_rps": self.spec.requested_rps,
            "declared_rps": self.spec.rps,
            "run_id": self.run_id,
            "platform": self.session.settings.platform,
            "scrape_interval_s": self._scrape_interval,
            "workers": self._load.fleet.size if self._load else 0,
            "engine": ",".join(sorted(set(self._load.engines))) if self._load else None,
            "passed": verdict.passed if verdict else False,
            "failure": verdict.failure if verdict else self._failure,
            "result": str(verdict.result) if verdict else str(TestResult.NOT_PROVEN),
            "error_budget": error_budget(self.spec, verdict.phases) if verdict else None,
            "phases": phases,
            "verdicts": [e.to_json() for e in verdict.entries] if verdict else [],
            "events": [e.to_json() for e in self.events],
            "rollback": self.rollback_note,
            "stopped_early": self.abort_note,
            "provable": list(self.provable),
            "series": self.series,
        }

    def close(self) -> list[str]:
        """Stop everything this test started (the target stays up with --rollout-keep)."""
        if self._closed:
            return []
        self._closed = True
        self.progress.close()
        problems: list[str] = []
        try:
            load = self._load
            if load is not None and not load.stopped:
                # cut off (Ctrl-C, SIGTERM, an error): keep what the fleet counted for the report
                if self._current is not None:
                    self.phases.append(Phase(self._current[0], self._current[1], time.time()))
                    self._current = None
                load.stopped = True
                try:
                    load.fleet.stop_load()
                    load.totals = load.fleet.totals(settle_s=1.0)
                except FleetError:
                    pass
                load.fleet.shutdown()
                remove_targets(self.session.sd_dir, self.run_id)
        finally:
            if self.platform is not None:
                if self.session.settings.keep:
                    keep = getattr(self.platform, "keep", None)
                    if callable(keep):
                        keep()
                    self.session.kept.append(f"{self.nodeid}:\n{self.platform.describe()}")
                else:
                    problems.extend(self.platform.teardown())
            if not self.session.settings.keep:
                problems.extend(self.procs.stop_all())
        return problems
