"""The fast engine and the aiohttp engine give the same counts, classes and latencies."""

from __future__ import annotations

import pytest
from helpers import run_fleet, start_app

from pytest_rollout.load.counters import WorkerStats
from pytest_rollout.load.engine import AiohttpEngine, FastEngine, build_request, choose_engine
from pytest_rollout.load.histogram import Histogram
from pytest_rollout.load.protocol import Plan
from pytest_rollout.procs import ProcessSet, free_port


def run_engine(make_fleet, url: str, engine: str, rps: float = 200, seconds: float = 1.5, **plan: object):  # type: ignore[no-untyped-def]
    totals, (ran,) = run_fleet(make_fleet(1, url), url, rps, seconds, engine=engine, **plan)
    assert ran == engine
    phase = totals.workers[0]["phases"]["p"]
    return phase["by_class"], Histogram.from_list(phase["histogram"])


@pytest.mark.parametrize(
    ("flags", "path", "plan", "expected"),
    [
        (("--delay-ms", "20"), "/", {}, "ok"),
        (("--delay-ms", "0", "--error-rate", "1.0"), "/", {}, "http_5xx"),
        (("--delay-ms", "0"), "/no-such-page", {}, "http_4xx"),
        (("--delay-ms", "1000"), "/", {"timeout_s": 0.2}, "timeout"),
        (None, "/", {}, "connection"),
    ],
    ids=["ok", "5xx", "4xx", "timeout", "refused"],
)
def test_engines_agree(
    procs: ProcessSet, make_fleet, flags: tuple[str, ...] | None, path: str, plan: dict, expected: str
) -> None:
    port = start_app(procs, "app", *flags) if flags is not None else free_port()
    url = f"http://127.0.0.1:{port}{path}"
    fast, fast_hist = run_engine(make_fleet, url, "fast", **plan)
    slow, slow_hist = run_engine(make_fleet, url, "aiohttp", **plan)
    assert fast == slow, (fast, slow)
    assert fast[expected] == sum(fast.values()) == 300
    if expected == "ok":
        for q in (0.5, 0.9):
            assert 0.019 < fast_hist.quantile(q) < 0.05 and 0.019 < slow_hist.quantile(q) < 0.05
    if expected == "timeout":
        # a timeout is recorded when it is found (the fast engine sweeps every 50 ms); quantiles are
        # interpolated inside buckets about 9% wide, so a 0.2 s latency may read as 0.18 s
        assert 0.18 <= fast_hist.quantile(0.5) < 0.3 and 0.18 <= slow_hist.quantile(0.5) < 0.3


def test_choose_engine() -> None:
    stats = WorkerStats()

    def plan(url: str, method: str = "GET") -> Plan:
        return Plan(url=url, segments=(), start_at=0, deadline=0, method=method)

    assert isinstance(choose_engine(plan("http://127.0.0.1:1/"), stats), FastEngine)
    assert isinstance(choose_engine(plan("https://127.0.0.1:1/"), stats), AiohttpEngine)
    assert isinstance(choose_engine(plan("http://127.0.0.1:1/", "HEAD"), stats), AiohttpEngine)
    assert isinstance(choose_engine(plan("http://127.0.0.1:1/"), stats, "aiohttp"), AiohttpEngine)
    with pytest.raises(ValueError, match="https:// needs the aiohttp engine"):
        choose_engine(plan("https://127.0.0.1:1/"), stats, "fast")
    with pytest.raises(ValueError, match="unknown engine"):
        choose_engine(plan("http://127.0.0.1:1/"), stats, "turbo")


def test_request_bytes() -> None:
    plan = Plan(
        url="http://127.0.0.1:8080/a?b=1",
        segments=(),
        start_at=0,
        deadline=0,
        method="POST",
        headers={"Authorization": "Bearer x", "Connection": "close", "Host": "evil"},
        body=b"{}",
    )
    request = build_request(plan)
    head, body = request.split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /a?b=1 HTTP/1.1"
    assert "Host: 127.0.0.1:8080" in lines and "Authorization: Bearer x" in lines and "Content-Length: 2" in lines
    assert not any(line.startswith(("Connection", "Host: evil")) for line in lines)
    assert body == b"{}"
