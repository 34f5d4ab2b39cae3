"""How much one worker holds on this machine: recorded by `pytest-rollout calibrate`, read when fleets are sized."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["CALIBRATION_SHARE", "calibration_path", "measured_worker_rps"]

#: Fraction of the calibrated capacity the plugin gives each worker.
CALIBRATION_SHARE = 0.7


def calibration_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-rollout" / "calibration.json"


def measured_worker_rps(engine: str = "fast") -> float | None:
    """The rate to give one worker, from ``pytest-rollout calibrate`` (None if never run here)."""
    try:
        data = json.loads(calibration_path().read_text())
        return float(data["engines"][engine]["held_rps"]) * CALIBRATION_SHARE
    except (OSError, ValueError, KeyError, TypeError):
        return None
