"""State that lives for one pytest session: settings, Prometheus, results.

Kept in ``config.stash`` (see :data:`SESSION_KEY`), never on private config
attributes.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_rollout.procs import ProcessSet

if TYPE_CHECKING:
    from pytest_rollout.judge.prometheus import LocalPrometheus, PrometheusAPI

__all__ = ["RolloutSession", "SESSION_KEY", "Settings"]


@dataclass(frozen=True)
class Settings:
    """Validated command-line / ini settings."""

    platform: str = "local"
    rps_scale: float = 1.0
    risk: float = 0.01  # --rollout-risk: the false-fail risk of markers that do not set risk=
    report: str | None = None
    html: str | None = None
    save: str | None = None  # --rollout-save NAME
    compare: str | None = None  # --rollout-compare NAME
    baseline_dir: str = ".pytest-rollout/baselines"
    prometheus_url: str | None = None
    keep: bool = False
    worker_rps: float = 2500.0
    worker_rps_given: bool = False  # --rollout-worker-rps (or its ini twin) was set: size fleets by it, whatever runs
    workers: int | None = None
    haproxy: str = "haproxy"
    prometheus: str = "prometheus"
    upgrade_timeout_s: float = 300.0
    endpoint_delay_s: float = 1.0  # local platform: termination start -> the endpoint leaves rotation
    sd_dir: str | None = None  # where runs write file_sd target files (default: the session's directory)
    kube: Any = None  # kube.KubeSettings on --rollout-platform kubernetes
    prometheus_service: str | None = None  # NAMESPACE/NAME:PORT to port-forward to


class RolloutSession:
    """The session's Prometheus, run directory and collected results."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.results: list[dict[str, Any]] = []
        self._root: Path | None = None
        self._procs: ProcessSet | None = None
        self._prometheus: LocalPrometheus | None = None
        self._client: PrometheusAPI | None = None  # a PromClient
        self._forward: Any = None  # kube.PortForward to the cluster's Prometheus
        self._lock = threading.Lock()
        self.kept: list[str] = []  # what --rollout-keep left running, for the summary
        self.problems: list[str] = []  # clean-up trouble worth telling the user
        self.reaped: list[str] = []  # what earlier, hard-killed runs left and this one stopped
        self.baseline: dict[str, Any] | None = None  # --rollout-compare: the loaded baseline
        self.measured: dict[str, tuple[Any, bool]] = {}  # nodeid -> (phase measurements, passed), for --rollout-save
        self.notes: list[str] = []  # things worth telling at the end (a baseline saved, say)

    @property
    def root(self) -> Path:
        if self._root is None:
            from pytest_rollout.procs import RUN_PREFIX, reap_stale_runs

            # a run killed hard (SIGKILL) could not clean up: do it for it, by recorded PID only
            self.reaped.extend(reap_stale_runs())
            self._root = Path(tempfile.mkdtemp(prefix=RUN_PREFIX))
            ProcessSet(self._root)._save()  # claim the directory for this live process
        return self._root

    @property
    def procs(self) -> ProcessSet:
        if self._procs is None:
            self._procs = ProcessSet(self.root)
        return self._procs

    def prometheus(self) -> tuple[PrometheusAPI, LocalPrometheus | None]:
        """``(client, local_server_or_None)``, starting a local Prometheus on first use."""
        from pytest_rollout.judge.prometheus import LocalPrometheus, PromClient

        with self._lock:
            if self._client is None:
                if self.settings.prometheus_service:
                    from pytest_rollout.platforms.kubernetes.api import connect
                    from pytest_rollout.platforms.kubernetes.portforward import PortForward

                    forward = PortForward(connect(self.settings.kube), self.settings.prometheus_service)
                    forward.start()
                    self._forward = forward
                    client = PromClient(forward.url)
                    client.check()
                    self._client = client
                elif self.settings.prometheus_url:
                    client = PromClient(self.settings.prometheus_url)
                    client.check()
                    self._client = client
                else:
                    server = LocalPrometheus(
                        self.procs,
                        self.root,
                        binary=self.settings.prometheus,
                        sd_dir=Path(self.settings.sd_dir) if self.settings.sd_dir else None,
                    )
                    server.start()
                    self._prometheus = server
                    self._client = PromClient(server.url)
            return self._client, self._prometheus

    @property
    def sd_dir(self) -> Path:
        """Where runs write their file_sd target files."""
        if self.settings.sd_dir:
            path = Path(self.settings.sd_dir)
        elif self._prometheus is not None:
            return Path(self._prometheus.sd_dir)
        else:
            path = self.root / "sd"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        if self._forward is not None:
            self._forward.close()
            self._forward = None
        if self.settings.keep and self._prometheus is not None:
            self.kept.append(f"Prometheus: {self._prometheus.url} (pid {self._prometheus.pid}), data in {self.root}")
            return
        if self._procs is not None:
            self.problems.extend(self._procs.stop_all())
            self._procs = None
        self._prometheus = None
        self._client = None
        if self._root is not None and not self.settings.keep:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


SESSION_KEY = pytest.StashKey[RolloutSession]()
