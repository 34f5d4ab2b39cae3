"""A plain WSGI app for gunicorn, the real third-party server the local Service tests roll.

``GET /healthz`` answers 200; ``GET /`` answers after ``DELAY_MS`` (env, default 2) of simulated work.
gunicorn's own SIGTERM handling is what is under test: it stops accepting at once and lets workers
finish what they have (``--graceful-timeout``), as most servers do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

DELAY_S = float(os.environ.get("DELAY_MS", "2")) / 1000.0


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"ok\n"]
    time.sleep(DELAY_S)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return [b"hello\n"]
