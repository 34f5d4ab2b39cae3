"""How much one worker holds on this machine: recorded by `pytest-rollout calibrate`, read when fleets are sized.

This module alone knows the file's format: ``{"engines": {ENGINE: {"held_rps", "at", "url"}}}``, one entry per
engine, each replaced when that engine is calibrated again."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["CALIBRATION_SHARE", "calibration_path", "measured_worker_rps", "record_calibration"]

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


def record_calibration(engine: str, held_rps: float, url: str) -> Path:
    """Record that one *engine* worker held *held_rps* against *url* here, now; the file's path."""
    path = calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        recorded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        recorded = {}
    recorded.setdefault("engines", {})[engine] = {"held_rps": held_rps, "at": time.time(), "url": url}
    path.write_text(json.dumps(recorded, indent=2))
    return path
