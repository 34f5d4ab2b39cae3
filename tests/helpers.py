"""Helpers shared by pytest-rollout's own tests."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pytest_rollout.procs import ProcessSet, free_port, http_get

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "app.py"


def app_command(*flags: str) -> list[str]:
    """argv of the example app with *flags* (see examples/app.py)."""
    return [sys.executable, str(APP), *flags]


def start_app(procs: ProcessSet, name: str, *flags: str) -> int:
    """Start the example app under *procs*, wait until it is ready, return its port."""
    port = free_port()
    procs.start(name, app_command("--startup-s", "0", *flags), env={"PORT": str(port)})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if http_get("127.0.0.1", port, "/healthz")[0] == 200:
                return port
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"example app {name} did not become ready")
