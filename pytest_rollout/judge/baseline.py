"""Baselines: store a run's results (``--rollout-save NAME``) and compare later runs with them.

What is stored, per test and phase, is the per-request data Prometheus holds:
the request and error counts and the whole latency histogram (155 buckets),
not a single number. A comparison (``--rollout-compare NAME``) judges each
margin of the marker's ``regression`` (default: p99 no more than 10% slower,
error rate no more than 0.1 percentage points higher) with a statement of
how sure it is:

- a latency quantile's 95% confidence interval comes from the order
  statistics of the histogram (the ranks ``n*q -/+ 1.96*sqrt(n*q*(1-q))``,
  read off the buckets as ``histogram_quantile`` does). A regression is
  declared only when the new run's *lower* bound exceeds the baseline's
  *upper* bound times ``1 + margin``: at least 95% sure;
- the error rate uses a one-sided two-proportion z-test of "new minus
  baseline exceeds the margin"; a regression needs 95% confidence.

Otherwise the entry passes and says whether the difference was within the
margin or only not significant. Too few requests for the quantile is
not proven, as for the SLOs themselves.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_rollout.errors import RolloutUsageError
from pytest_rollout.judge.stats import min_requests_for_quantile
from pytest_rollout.judge.verdict import Kind, Outcome, PhaseMeasurement, VerdictEntry
from pytest_rollout.load.histogram import value_at_rank
from pytest_rollout.slo import LATENCY_KEYS, SLOSpec, quantile_name

__all__ = ["Baselines", "compare", "quantile_interval", "z_confidence"]

Z95 = 1.959964
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_name(name: str, flag: str) -> str:
    if not _NAME.match(name):
        raise RolloutUsageError(f"{flag}={name!r}: a baseline name is letters, digits, '.', '_' and '-'")
    return name


def z_quantile(confidence: float) -> float:
    """The standard normal quantile: ``z`` with ``z_confidence(z) == confidence`` (by bisection)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if z_confidence(mid) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def quantile_interval(histogram: Sequence[tuple[float, float]], q: float, z: float = Z95) -> tuple[float, float, float]:
    """``(low, estimate, high)`` in ms: quantile *q* and its confidence interval (*z*: 95% two-sided)."""
    n = histogram[-1][1] if histogram else 0.0
    if n <= 0:
        return math.nan, math.nan, math.nan
    spread = z * math.sqrt(n * q * (1 - q))
    low = value_at_rank(histogram, max(1.0, n * q - spread))
    mid = value_at_rank(histogram, n * q)
    high = value_at_rank(histogram, min(n, n * q + spread))
    return low * 1000, mid * 1000, high * 1000


def z_confidence(z: float) -> float:
    """One-sided confidence for a z score (the standard normal CDF)."""
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _phase_data(m: PhaseMeasurement) -> dict[str, Any]:
    return {
        "requests": m.on_time,  # the release's sample: requests sent on time
        "errors": m.errors,
        "histogram": [["+Inf" if math.isinf(le) else le, c] for le, c in m.histogram],
    }


def _histogram(raw: Sequence[Sequence[Any]]) -> list[tuple[float, float]]:
    return [(math.inf if le == "+Inf" else float(le), float(c)) for le, c in raw]


def compare(
    spec: SLOSpec, phases: Sequence[PhaseMeasurement], base: Mapping[str, Any] | None, name: str, alpha: float = 0.05
) -> list[VerdictEntry]:
    """One entry per phase and regression margin: the new run against baseline *name*.

    A regression is claimed at risk *alpha* (the entry's share of the run's risk, :mod:`pytest_rollout.judge.risk`).
    """
    if base is None:
        return [
            VerdictEntry(
                "regression",
                "-",
                None,
                None,
                reason=f"not proven: baseline {name!r} has no run of this test",
                outcome=Outcome.NOT_PROVEN,
                kind=Kind.REGRESSION,
            )  # fmt: skip
        ]
    entries = []
    for m in phases:
        old = (base.get("phases") or {}).get(m.phase)
        if old is None or m.requests is None:
            continue
        for key, margin in spec.regression.items():
            if key == "error_rate":
                entries.append(_compare_errors(m, old, margin, name, alpha))
            else:
                entries.append(_compare_quantile(key, LATENCY_KEYS[key], m, old, margin, name, alpha))
    return entries


def _compare_quantile(
    key: str, q: float, m: PhaseMeasurement, old: Mapping[str, Any], margin: float, name: str, alpha: float
) -> VerdictEntry:
    slo = f"regression:{key}"
    needed = min_requests_for_quantile(q)
    base_hist = _histogram(old.get("histogram") or [])
    if m.on_time < needed or (old.get("requests") or 0) < needed or not base_hist or not m.histogram:
        return VerdictEntry(
            slo, m.phase, None, None, reason=f"not proven: need {needed} requests in both runs to compare "
            f"p{quantile_name(q)}", outcome=Outcome.NOT_PROVEN, kind=Kind.REGRESSION,
        )  # fmt: skip
    z = z_quantile(1.0 - alpha / 2.0)  # each run's one-sided bound at alpha / 2: both together at alpha
    b_low, b_mid, b_high = quantile_interval(base_hist, q, z)
    n_low, n_mid, n_high = quantile_interval(list(m.histogram), q, z)
    bound = b_mid * (1 + margin)
    change = n_mid / b_mid - 1 if b_mid else math.inf
    text = (
        f"p{quantile_name(q)} {n_mid:.2f} ms [{n_low:.2f}, {n_high:.2f}] vs baseline {name!r} {b_mid:.2f} ms "
        f"[{b_low:.2f}, {b_high:.2f}] ({1 - alpha:.2%} intervals): {change:+.1%}, margin +{margin:.0%}"
    )
    if n_low > b_high * (1 + margin):
        return VerdictEntry(
            slo, m.phase, n_mid, bound, reason=f"regression (at least {1 - alpha:.2%} sure): {text}",
            outcome=Outcome.BROKEN, low=n_low, high=n_high, kind=Kind.REGRESSION,
        )  # fmt: skip
    verdict = "within the margin" if n_mid <= bound else "beyond the margin but not significant"
    return VerdictEntry(
        slo, m.phase, n_mid, bound, reason=f"{verdict}: {text}",
        outcome=Outcome.HELD, low=n_low, high=n_high, kind=Kind.REGRESSION,
    )  # fmt: skip


def _compare_errors(
    m: PhaseMeasurement, old: Mapping[str, Any], margin: float, name: str, alpha: float
) -> VerdictEntry:
    n_new, n_old = m.on_time, float(old.get("requests") or 0.0)
    if n_new <= 0 or n_old <= 0:
        return VerdictEntry(
            "regression:error_rate", m.phase, None, None, reason="not proven: no requests",
            outcome=Outcome.NOT_PROVEN, kind=Kind.REGRESSION,
        )  # fmt: skip
    p_new, p_old = m.errors / n_new, float(old.get("errors") or 0.0) / n_old
    diff = p_new - p_old
    se = math.sqrt(p_new * (1 - p_new) / n_new + p_old * (1 - p_old) / n_old)
    if se == 0:
        sure = 1.0 if diff > margin else 0.0
    else:
        sure = z_confidence((diff - margin) / se)
    text = (
        f"error rate {p_new:.5f} ({m.errors:.0f}/{n_new:.0f}) vs baseline {name!r} {p_old:.5f}: "
        f"{diff:+.5f}, margin +{margin:g}; {sure:.1%} sure it got worse by more than the margin"
    )
    passed = sure < 1.0 - alpha
    return VerdictEntry(
        "regression:error_rate", m.phase, p_new, p_old + margin, reason=("" if passed else "regression: ") + text,
        outcome=Outcome.HELD if passed else Outcome.BROKEN, kind=Kind.REGRESSION,
    )  # fmt: skip


class Baselines:
    """Named baselines stored as JSON files in one directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def load(self, name: str) -> dict[str, Any]:
        path = self.path(name)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise RolloutUsageError(
                f"--rollout-compare={name!r}: no baseline at {path}; store one with --rollout-save {name}"
            ) from None
        except (OSError, ValueError) as exc:
            raise RolloutUsageError(f"--rollout-compare={name!r}: cannot read {path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("tests"), dict):
            raise RolloutUsageError(f"--rollout-compare={name!r}: {path} is not a pytest-rollout baseline")
        return data

    def save(self, name: str, tests: Mapping[str, Sequence[PhaseMeasurement]], passed: Mapping[str, bool]) -> Path:
        """Store the phases of *tests* (nodeid -> measurements) as baseline *name*, merged into what is there."""
        path = self.path(name)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {"tests": {}}
        for nodeid, phases in tests.items():
            data["tests"][nodeid] = {
                "saved_at": time.time(),
                "passed": passed.get(nodeid, False),
                "phases": {m.phase: _phase_data(m) for m in phases if m.requests is not None},
            }
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
        return path
