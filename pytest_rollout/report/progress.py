"""Live progress of an SLO test in the terminal, while it runs.

One line: the phase and how far into it, the rate held against the rate
asked, the error rate and p99 of the last few seconds (from Prometheus), and
during the upgrade how many new replicas are ready. On a terminal the line is
rewritten in place about once a second; when the output is not a terminal (a
CI log) a full line is written when a phase starts, every ten seconds, and
when the upgrade's count of ready replicas changes, with no carriage returns. ``-q`` turns it off.

Lines are written past pytest's output capture, from the main thread only
(the hold loop and the platform's event callback both run there).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

from pytest_rollout.errors import RolloutError
from pytest_rollout.judge.prometheus import PrometheusAPI
from pytest_rollout.judge.promql import live_queries
from pytest_rollout.numeric import number_or_none

__all__ = ["Progress", "format_progress"]

TTY_INTERVAL_S = 1.0
LOG_INTERVAL_S = 10.0


def format_progress(
    phase: str,
    elapsed_s: float,
    length_s: float | None,
    asked_rps: float,
    live: dict[str, float | None],
    upgrade: tuple[int, int] | None = None,
) -> str:
    """The progress line (pure, for tests)."""
    where = f"{phase} {elapsed_s:.0f}s" + (f"/{length_s:.0f}s" if length_s else "")
    parts = [f"[rollout] {where}"]
    rps = live.get("rps")
    parts.append(f"held {'?' if rps is None else f'{rps:,.0f}'} of {asked_rps:,.0f} rps")
    err = live.get("error_rate")
    parts.append(f"errors {'?' if err is None else f'{err:.3%}'}")
    p99 = live.get("p99_ms")
    parts.append(f"p99 {'?' if p99 is None else f'{p99:.1f} ms'}")
    if upgrade is not None:
        parts.append(f"upgrade {upgrade[0]} of {upgrade[1]} new replicas ready")
    return " | ".join(parts)


class Progress:
    """Writes progress lines for one test, rate-limited, to pytest's terminal."""

    def __init__(self, config: Any) -> None:
        self.reporter = config.pluginmanager.get_plugin("terminalreporter")
        self.capture = config.pluginmanager.get_plugin("capturemanager")
        self.enabled = self.reporter is not None and config.get_verbosity() >= 0
        self.tty = bool(getattr(self.reporter, "isatty", False))
        self.interval_s = TTY_INTERVAL_S if self.tty else LOG_INTERVAL_S
        self._last = -math.inf
        self._open = False  # a rewritten line is on screen, not yet ended
        self._line = ""  # the last line written (an unchanged line is not written again)

    def due(self, force: bool = False) -> bool:
        return self.enabled and (force or time.monotonic() - self._last >= self.interval_s)

    def live(self, client: PrometheusAPI, run_id: str, window_s: float) -> dict[str, float | None]:
        """The last *window_s* seconds, from Prometheus (missing values are None).

        *client* should fail fast (no retries): a progress line never waits on a Prometheus that is down.
        """
        queries = live_queries(run_id, window_s, [0.99])
        out: dict[str, float | None] = dict.fromkeys(queries)
        for name, expr in queries.items():
            try:
                value = client.scalar(expr, time.time())
            except RolloutError:
                return out  # Prometheus is not answering: say so (?), and do not hold up the run
            out[name] = number_or_none(value, finite=True)
        return out

    def write(self, line: str) -> None:
        if not self.enabled or line == self._line:
            return
        self._line = line
        self._last = time.monotonic()
        guard = self.capture.global_and_fixture_disabled() if self.capture is not None else contextlib.nullcontext()
        with guard:
            if self.tty:
                if not self._open:
                    self.reporter.ensure_newline()
                self.reporter.rewrite(line, erase=True)
                self._open = True
            else:
                self.reporter.write_line(line)

    def note(self, line: str, warn: bool = False) -> None:
        """A whole line of its own (not rewritten), e.g. what a run can prove; a warning is shown even with -q."""
        if self.reporter is None or (not self.enabled and not warn):
            return
        self.close()
        guard = self.capture.global_and_fixture_disabled() if self.capture is not None else contextlib.nullcontext()
        with guard:
            self.reporter.ensure_newline()
            self.reporter.write_line(line, yellow=warn)

    def close(self) -> None:
        """End the rewritten line, so pytest's own output starts on a fresh one."""
        if self._open:
            guard = self.capture.global_and_fixture_disabled() if self.capture is not None else contextlib.nullcontext()
            with guard:
                self.reporter.write("\n")
            self._open = False
