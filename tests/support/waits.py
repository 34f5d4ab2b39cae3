"""Waiting for an event, bounded, instead of for a fixed time (issue 22, point 8).

A fixed sleep is either too short on a busy machine (the test then tests nothing, or fails) or longer than it
need be on a quiet one. These wait until a condition that proves the thing holds, polling, and fail saying
what never came when a generous deadline passes: a busy machine only makes them wait longer.
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["connections_lost", "idle_past_check", "readable", "settle", "sockets_to", "wait_for"]


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 10.0, poll_s: float = 0.001) -> None:
    """Block (the thread, and so an event loop running on it) until *condition()* is true; fail naming *what*."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g}s")
        time.sleep(poll_s)


async def settle(condition: Callable[[], object], what: str, timeout_s: float = 10.0, poll_s: float = 0.001) -> None:
    """As :func:`wait_for`, letting the running event loop work meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g}s")
        await asyncio.sleep(poll_s)


def readable(fd: int) -> bool:
    """Whether the socket *fd* has something unread: bytes, or the peer's close (asked of the kernel, without
    reading it, so the event loop that owns the socket has not seen it either)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(0))


def sockets_to(port: int) -> int:
    """How many sockets this process holds connected to loopback *port* (from ``/proc/self/fd`` and
    ``/proc/net/tcp``, tcp6: what the kernel says, whatever an event loop thinks)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    count += 1
    return count


async def connections_lost(engine: object, port: int) -> None:
    """After the engine's ``close()``: until every connection it had open to *port* has told it it was lost
    (the fast engine keeps them in ``conns`` until then: the callbacks in which it could still fail have all
    run) and this process holds no socket to *port* any more (a TLS connection's shutdown goes on after its
    close; aiohttp's ``close()`` does not wait for a connection it opened to be closed after one request). The
    event loop may then be closed with nothing of the engine's left open."""
    await settle(
        lambda: not getattr(engine, "conns", ()) and sockets_to(port) == 0,
        f"the engine's connections to port {port} closed and reported lost",
        timeout_s=30.0,
    )


def idle_past_check(conn: Any) -> None:
    """Block until the fast engine's connection *conn* has been idle longer than ``STALE_CHECK_S`` by the
    engine's clock: only such a connection is checked before it is reused (as the tests that close one under the
    engine, or send it healthy bytes unasked, need)."""
    from pytest_rollout.load.engine import STALE_CHECK_S

    loop = asyncio.get_running_loop()
    wait_for(lambda: loop.time() - conn.idle_at > 2 * STALE_CHECK_S, "the connection idle past the stale check")
