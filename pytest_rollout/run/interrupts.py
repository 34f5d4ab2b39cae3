"""Ctrl-C and SIGTERM, held off for the length of a short Prometheus call.

A KeyboardInterrupt raised inside a library's HTTP call can land on an
instruction CPython 3.11 has no line number for, and pytest then fails to
format its own interrupt report (a TypeError instead of "KeyboardInterrupt").
While :func:`held` is active, the plugin's handlers only note the signal; it
is raised as KeyboardInterrupt when the block ends, in the plugin's own code.
Outside such a block they raise at once, as Python's default SIGINT does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["held", "on_signal"]

_depth = 0
_pending: str | None = None


def on_signal(signum: int, frame: Any) -> None:
    """The handler for SIGINT and SIGTERM while SLO tests run."""
    global _pending
    name = "SIGTERM" if signum == 15 else "SIGINT"
    if _depth:
        _pending = _pending or name
        return
    raise KeyboardInterrupt(name)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends (keep it short: one query)."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            name, _pending = _pending, None
            raise KeyboardInterrupt(name)
