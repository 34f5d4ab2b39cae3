"""Baselines: store runs of a test (``--rollout-save NAME``) and judge a later run against their spread.

**What is stored.** Per test, a list of runs (the newest last, at most
:data:`MAX_RUNS`), each with when it was saved, whether it passed, and per
phase what Prometheus held: the request and error counts and the whole
latency histogram. ``--rollout-save NAME`` appends this run to the list. A
file of the first format (one run per test, its ``phases`` at the top) loads
as one run.

**Why several runs.** The unit that varies is the run as well as the request:
the same release on the same machine is a few percent slower one run than the
next, and much slower while another process shares the CPU. Intervals that
count only the requests' sampling noise called an unchanged release a
"regression (at least 95% sure)" of +29% against itself. So a comparison
(``--rollout-compare NAME``) judges the new run against how much the saved
runs vary, per judged phase (:func:`~pytest_rollout.judge.risk.judged_phases`:
the ramp only with ``judge_ramp``) and per margin of the marker's
``regression``, at risk ``alpha``, the entry's share of the run's risk
(:mod:`pytest_rollout.judge.risk`). The usable saved runs are those that
passed and hold the phase with enough requests; with fewer than
:data:`MIN_RUNS` of them the entry is not proven (never broken) and says how
to save more.

- **A latency quantile**: each run's estimate is read off its histogram as
  ``histogram_quantile`` does. In log space the saved runs' estimates have
  mean ``m`` and sample standard deviation ``s`` (``k`` runs); a regression
  is claimed only when ``log(new) > m + log(1 + margin) + t(k-1, 1-alpha) *
  s * sqrt(1 + 1/k)``: the one-sided prediction bound for one more run of
  the same release (Student's t, ``k - 1`` degrees of freedom), moved up by
  the margin. A run's sampling noise is part of its spread, so it is counted
  once, not twice. A run with too few requests for the quantile is not
  proven, as for the SLOs themselves.
- **The error rate**: ``new - pooled saved rate > margin``, tested one-sided
  at ``alpha``. Sampling noise alone gives the binomial standard error
  ``se``; the spread between runs is a dispersion factor ``phi``, Pearson's
  ``X^2 / (k - 1)`` of the saved runs' error counts around the pooled rate
  (0 when no saved run had an error: nothing to estimate it from). A
  regression needs both the binomial test, ``(diff - margin) / se >
  z(1-alpha)``, and the quasi-binomial one, ``(diff - margin) / (se *
  sqrt(phi)) > t(k-1, 1-alpha)``: the variance is never taken below the
  binomial one (``phi`` floored at 1 in effect), and is inflated with its
  own uncertainty where the runs disagree more than sampling explains. A
  burst of errors rarer than one run in ``k`` cannot show in ``k`` runs.

Both bounds assume roughly normal run-to-run variation (of log p99s, of
error rates). Simulated with no margin at a 5% level (tests/unit/
test_baseline.py), an unchanged release was called a regression in 5.4% of
8,000 trials with 3 saved runs and 4.5% to 5.2% with 5 to 20 (a run's p99 is
a little right-skewed); error rates varying by a log-normal factor of sigma
0.7 between runs, in 6.0% with 3 runs, 5.3% with 5, 4.0% with 10. The
margins (10% on p99, 0.1 points on the error rate) keep real rates lower.

Otherwise the entry holds and says whether the new run was within the margin
or beyond it but within the runs' spread.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist, fmean, stdev
from typing import Any

from pytest_rollout.errors import RolloutUsageError
from pytest_rollout.judge.risk import judged_phases
from pytest_rollout.judge.stats import min_requests_for_quantile, t_cdf, t_quantile
from pytest_rollout.judge.verdict import Kind, Outcome, PhaseMeasurement, VerdictEntry
from pytest_rollout.load.histogram import quantile_from_buckets
from pytest_rollout.slo import LATENCY_KEYS, SLOSpec, quantile_name

__all__ = ["MAX_RUNS", "MIN_RUNS", "Baselines", "compare", "runs_of", "saved_run", "z_confidence"]

#: Fewest usable saved runs for a comparison: two give a spread with one degree of freedom, too wild to use.
MIN_RUNS = 3
#: Runs a baseline keeps per test; the oldest go first.
MAX_RUNS = 20
_FORMAT = 2
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_name(name: str, flag: str) -> str:
    if not _NAME.match(name):
        raise RolloutUsageError(f"{flag}={name!r}: a baseline name is letters, digits, '.', '_' and '-'")
    return name


def z_confidence(z: float) -> float:
    """One-sided confidence for a z score (the standard normal CDF)."""
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def saved_run(phases: Sequence[PhaseMeasurement], passed: bool, saved_at: float | None = None) -> dict[str, Any]:
    """One run as a baseline stores it (JSON): the phases Prometheus measured."""
    return {
        "saved_at": time.time() if saved_at is None else saved_at,
        "passed": passed,
        "phases": {
            m.phase: {
                "requests": m.on_time,  # the release's sample: requests sent on time
                "errors": m.errors,
                "histogram": [["+Inf" if math.isinf(le) else le, c] for le, c in m.histogram],
            }
            for m in phases
            if m.requests is not None
        },
    }


def runs_of(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A test's saved runs, oldest first; an entry of the first format (its ``phases`` at the top) is one run."""
    runs: list[dict[str, Any]] = entry["runs"] if "runs" in entry else [dict(entry)]
    return runs


def _checked(entry: object) -> list[dict[str, Any]]:
    """:func:`runs_of` a test's entry as read from a file, every field it needs checked; ValueError says which."""
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    runs = entry.get("runs") if "runs" in entry else [entry]
    if not isinstance(runs, list):
        raise ValueError("'runs' is not a list")
    for run in runs:
        if not isinstance(run, dict) or not isinstance(run.get("phases"), dict):
            raise ValueError("a run without 'phases'")
        for phase, data in run["phases"].items():
            if not isinstance(data, dict) or not all(_number(data.get(k)) for k in ("requests", "errors")):
                raise ValueError(f"phase {phase!r} lacks its request and error counts")
            pairs = data.get("histogram")
            if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and (_number(p[0]) or p[0] == "+Inf") and _number(p[1])
                for p in pairs
            ):
                raise ValueError(f"phase {phase!r} has no histogram of [upper bound, count] pairs")
    return runs


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _histogram(raw: Sequence[Sequence[Any]]) -> list[tuple[float, float]]:
    return [(math.inf if le == "+Inf" else float(le), float(c)) for le, c in raw]


def _entry(slo: str, phase: str, reason: str, outcome: Outcome = Outcome.NOT_PROVEN, **values: Any) -> VerdictEntry:
    return VerdictEntry(slo, phase, values.get("measured"), values.get("bound"), reason=reason, outcome=outcome,
                        kind=Kind.REGRESSION)  # fmt: skip


def compare(
    spec: SLOSpec, phases: Sequence[PhaseMeasurement], base: Mapping[str, Any] | None, name: str, alpha: float = 0.05
) -> list[VerdictEntry]:
    """One entry per judged phase and regression margin: the new run against the saved runs of baseline *name*.

    *base* is the test's entry in the baseline (``None``: it has none). A regression is claimed at risk *alpha*
    (the entry's share of the run's risk, :mod:`pytest_rollout.judge.risk`).
    """
    if base is None:
        return [_entry("regression", "-", f"not proven: baseline {name!r} has no run of this test")]
    runs = runs_of(base)
    entries = []
    for m in phases:
        if m.phase not in judged_phases(spec) or m.requests is None:
            continue  # the ramp is warm-up, judged only when asked; a phase Prometheus lacked is judged elsewhere
        held = [run for run in runs if m.phase in run["phases"]]
        saved = [run["phases"][m.phase] for run in held if run.get("passed") is True]
        failed = len(held) - len(saved)  # saved runs with the phase that did not pass: not the release's spread
        for key, margin in spec.regression.items():
            if key == "error_rate":
                entries.append(_compare_errors(m, saved, failed, margin, name, alpha))
            else:
                entries.append(_compare_quantile(key, LATENCY_KEYS[key], m, saved, failed, margin, name, alpha))
    return entries


def _too_few(slo: str, phase: str, k: int, left_out: int, name: str) -> VerdictEntry:
    more = f" ({left_out} more left out: runs that did not pass, or with too few requests)" if left_out else ""
    return _entry(slo, phase, (
        f"not proven: baseline {name!r} holds {k} run(s) of this test with phase {phase}; save at least "
        f"{MIN_RUNS} runs of the unchanged release on this machine (--rollout-save {name}, once per run) "
        f"so the comparison knows how much runs vary{more}"
    ))  # fmt: skip


def _estimate_ms(pairs: Sequence[tuple[float, float]], q: float) -> float:
    """Quantile *q* of a cumulative histogram in ms, as ``histogram_quantile`` reads it (NaN when empty)."""
    return quantile_from_buckets(q, pairs) * 1000.0


def _compare_quantile(
    key: str,
    q: float,
    m: PhaseMeasurement,
    saved: Sequence[Mapping[str, Any]],
    failed: int,
    margin: float,
    name: str,
    alpha: float,
) -> VerdictEntry:
    slo, label = f"regression:{key}", f"p{quantile_name(q)}"
    needed = min_requests_for_quantile(q)
    new = _estimate_ms(m.histogram, q) if m.on_time >= needed else math.nan
    if not new > 0:
        return _entry(slo, m.phase, f"not proven: need {needed} requests in this run to compare {label} "
                      f"(had {m.on_time:.0f})")  # fmt: skip
    estimates = [_estimate_ms(_histogram(s["histogram"]), q) for s in saved if s["requests"] >= needed]
    logs = [math.log(x) for x in estimates if x > 0]
    k = len(logs)
    if k < MIN_RUNS:
        return _too_few(slo, m.phase, k, failed + len(saved) - k, name)
    mean, spread = fmean(logs), stdev(logs)
    bound = math.exp(mean + math.log1p(margin) + t_quantile(1.0 - alpha, k - 1) * spread * math.sqrt(1.0 + 1.0 / k))
    typical = math.exp(mean)
    text = (
        f"{label} {new:.2f} ms vs baseline {name!r} ({k} runs, {label} {typical:.2f} ms, spread "
        f"x{math.exp(spread):.2f}): {new / typical - 1:+.1%}; bound {bound:.2f} ms (margin +{margin:.0%} over what "
        f"one more run of the same release stays below {1 - alpha:.2%} of the time)"
    )
    if new > bound and m.machine is not None and m.machine.busy:
        return _entry(slo, m.phase, f"not proven: the machine was too busy to compare latency: "
                      f"{m.machine.sentence()}; {text}", Outcome.NOT_PROVEN, measured=new, bound=bound)  # fmt: skip
    if new > bound:
        return _entry(slo, m.phase, f"regression (at least {1 - alpha:.2%} sure): {text}", Outcome.BROKEN,
                      measured=new, bound=bound)  # fmt: skip
    verdict = "within the margin" if new <= typical * (1 + margin) else "beyond the margin but within the runs' spread"
    return _entry(slo, m.phase, f"{verdict}: {text}", Outcome.HELD, measured=new, bound=bound)


def _compare_errors(
    m: PhaseMeasurement, saved: Sequence[Mapping[str, Any]], failed: int, margin: float, name: str, alpha: float
) -> VerdictEntry:
    slo = "regression:error_rate"
    if m.on_time <= 0:
        return _entry(slo, m.phase, "not proven: no requests in this run")
    usable = [s for s in saved if s["requests"] > 0]
    k = len(usable)
    if k < MIN_RUNS:
        return _too_few(slo, m.phase, k, failed + len(saved) - k, name)
    n_old = sum(float(s["requests"]) for s in usable)
    p_old = min(1.0, sum(float(s["errors"]) for s in usable) / n_old)
    p_new = m.errors / m.on_time
    phi = 0.0  # Pearson's X^2 / (k - 1) of the saved runs around the pooled rate; 0: nothing to estimate it from
    if 0.0 < p_old < 1.0:
        phi = sum(
            (s["errors"] - s["requests"] * p_old) ** 2 / (s["requests"] * p_old * (1 - p_old)) for s in usable
        ) / (k - 1)
    diff = p_new - p_old
    se = math.sqrt(p_new * (1 - p_new) / m.on_time + p_old * (1 - p_old) / n_old)
    z, t = NormalDist().inv_cdf(1.0 - alpha), t_quantile(1.0 - alpha, k - 1)
    critical = max(z, t * math.sqrt(phi))
    bound = p_old + margin + critical * se
    if se == 0:
        sure = 1.0 if diff > margin else 0.0
    else:
        sure = z_confidence((diff - margin) / se)
        if phi > 0:
            sure = min(sure, t_cdf((diff - margin) / (se * math.sqrt(phi)), k - 1))
    worse = diff - margin > critical * se if se > 0 else diff > margin
    text = (
        f"error rate {p_new:.5f} ({m.errors:.0f}/{m.on_time:.0f}) vs baseline {name!r} ({k} runs, {p_old:.5f} "
        f"pooled, spread x{math.sqrt(max(1.0, phi)):.2f} the binomial): {diff:+.5f}, margin +{margin:g}; bound "
        f"{bound:.5f}; {sure:.2%} sure it got worse by more than the margin"
    )
    if worse:
        return _entry(slo, m.phase, f"regression (at least {1 - alpha:.2%} sure): {text}", Outcome.BROKEN,
                      measured=p_new, bound=bound)  # fmt: skip
    return _entry(slo, m.phase, text, Outcome.HELD, measured=p_new, bound=bound)


class Baselines:
    """Named baselines stored as JSON files in one directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def _read(self, name: str, flag: str) -> dict[str, Any]:
        """The baseline's contents with every test's runs checked (and the first format read as one run)."""
        path = self.path(name)
        redo = f"restore it, or delete it and save the baseline again (--rollout-save {name}, at least {MIN_RUNS} runs)"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise RolloutUsageError(f"{flag}={name!r}: cannot read {path}: {exc}; {redo}") from None
        try:
            if not isinstance(data, dict) or not isinstance(data.get("tests"), dict):
                raise ValueError("no 'tests'")
            tests = {}
            for nodeid, entry in data["tests"].items():
                try:
                    tests[nodeid] = {"runs": _checked(entry)}
                except ValueError as exc:
                    raise ValueError(f"test {nodeid!r}: {exc}") from None
        except ValueError as exc:
            raise RolloutUsageError(
                f"{flag}={name!r}: {path} is not a pytest-rollout baseline ({exc}); {redo}"
            ) from None
        return {"format": _FORMAT, "tests": tests}

    def load(self, name: str) -> dict[str, Any]:
        """Baseline *name*: ``{"tests": {nodeid: {"runs": [...]}}}``; a missing or broken file is a usage error."""
        try:
            return self._read(name, "--rollout-compare")
        except FileNotFoundError:
            raise RolloutUsageError(
                f"--rollout-compare={name!r}: no baseline at {self.path(name)}; store at least {MIN_RUNS} runs with "
                f"--rollout-save {name}"
            ) from None

    def save(self, name: str, tests: Mapping[str, Sequence[PhaseMeasurement]], passed: Mapping[str, bool]) -> Path:
        """Append this run of *tests* (nodeid -> measurements) to baseline *name*, keeping other tests' entries.

        Each test keeps its newest :data:`MAX_RUNS` runs. Written atomically (a temporary file, then a rename).
        """
        path = self.path(name)
        try:
            data = self._read(name, "--rollout-save")
        except FileNotFoundError:
            data = {"format": _FORMAT, "tests": {}}
        for nodeid, phases in tests.items():
            run = saved_run(phases, passed.get(nodeid, False))
            if not run["phases"]:
                continue  # nothing measured: nothing to compare with later
            runs = data["tests"].setdefault(nodeid, {"runs": []})["runs"]
            runs.append(run)
            del runs[:-MAX_RUNS]
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
        return path
