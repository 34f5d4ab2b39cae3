"""A fleet only its own run can command: real worker processes, real HTTP, on loopback.

Each worker obeys only calls that carry its run's token, loads only the origin
it was started with, never follows a redirect, and keeps secret header values
out of its control API, its metrics, its log and its command line.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import run_fleet, schedule_kept

from pytest_rollout.errors import FleetError
from pytest_rollout.load import protocol
from pytest_rollout.load.credentials import read_credentials
from pytest_rollout.load.fleet import LocalFleet
from pytest_rollout.load.mix import Request, Route, Values, check_requests, compile_routes
from pytest_rollout.load.protocol import Aim
from pytest_rollout.load.replies import WorkerStatus, WorkerTotals
from pytest_rollout.procs import ProcessSet

MakeFleet = Callable[..., LocalFleet]


class Target:
    """An HTTP server on loopback that counts what reaches it (and may redirect elsewhere)."""

    def __init__(self, redirect_to: str | None = None) -> None:
        seen: list[dict[str, str]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                seen.append({k.lower(): v for k, v in self.headers.items()} | {":path": self.path})
                if redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def targets() -> Iterator[Callable[..., Target]]:
    made: list[Target] = []

    def make(redirect_to: str | None = None) -> Target:
        made.append(Target(redirect_to))
        return made[-1]

    yield make
    for target in made:
        target.close()


def call(port: int, method: str, path: str, body: object = None, token: str | None = None) -> tuple[int, dict, str]:
    """One control call straight to a worker: ``(status, headers, body)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers[protocol.TOKEN_HEADER] = token
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode(errors="replace")
    finally:
        conn.close()


def plan_for(url: str, rps: float = 100, seconds: float = 1.0, **extra: object) -> dict:
    start = time.time() + 0.2
    plan = {"url": url, "segments": [[None, rps, rps]], "start_at": start, "deadline": start + seconds}
    plan.update(extra)
    return plan


CONTROL_CALLS = [
    ("POST", "/start"),
    ("POST", "/phase"),
    ("POST", "/stop"),
    ("POST", "/quit"),
    ("GET", "/totals"),
    ("GET", "/status"),
]


def test_a_worker_obeys_only_calls_that_carry_its_runs_token(make_fleet: MakeFleet, targets) -> None:  # type: ignore[no-untyped-def]
    target = targets()
    fleet = make_fleet(1, target.url)
    ((proc, port),) = fleet.workers
    bodies = {"/start": plan_for(target.url), "/phase": {"name": "x", "at": time.time()}, "/stop": {}, "/quit": {}}
    for method, path in CONTROL_CALLS:
        status, headers, text = call(port, method, path, bodies.get(path))
        assert status == 401, (path, text)
        assert headers.get("WWW-Authenticate") == protocol.TOKEN_HEADER and "obeys only the run" in text
        status, _, text = call(port, method, path, bodies.get(path), token=fleet.token + "0")
        assert status == 403, (path, text)
    # a worker that took a plan leaves "idle" for good: still idle, with nothing scheduled, it took none of them
    status = WorkerStatus.from_json(fleet._call(fleet.workers[0], "GET", "/status"))
    assert status.state == "idle" and status.scheduled == 0
    assert target.seen == []
    for path in sorted(protocol.OPEN_PATHS):  # Prometheus and probes need no token
        assert call(port, "GET", path)[0] == 200
    # the same plan with the token is obeyed: the check above could have failed
    totals, _ = run_fleet(fleet, target.url, rps=100, seconds=1)
    assert time.time() > bodies["/start"]["deadline"]  # (so the refused plan's requests would all be due by now)
    (phase,) = (w.phases["p"] for w in totals.workers)
    schedule_kept(phase, 100, "ok")  # (a request a busy machine made late is not sent: it is dropped)
    # the target got exactly the obeyed plan's requests: none of the refused one's, whose time has passed
    assert len(target.seen) == phase.by_class.ok > 0
    assert proc.alive()  # the refused /quit changed nothing


def test_a_worker_refuses_a_plan_aimed_anywhere_but_its_target(make_fleet: MakeFleet, targets) -> None:  # type: ignore[no-untyped-def]
    target, elsewhere = targets(), targets()
    fleet = make_fleet(1, target.url)
    ((_, port),) = fleet.workers
    for url in (elsewhere.url, f"http://localhost:{target.port}/", f"https://127.0.0.1:{target.port}/"):
        status, _, text = call(port, "POST", "/start", plan_for(url), token=fleet.token)
        assert status == 400, text
        assert f"this worker may load only http://127.0.0.1:{target.port}" in text
    # the controller refuses before sending, naming both
    with pytest.raises(FleetError, match=f"aims at http://127.0.0.1:{elsewhere.port}, but .* to load"):
        run_fleet(fleet, elsewhere.url, rps=100, seconds=1)
    # a worker that took a plan leaves "idle" for good: still idle, with nothing scheduled, it took none of them
    status = WorkerStatus.from_json(fleet._call(fleet.workers[0], "GET", "/status"))
    assert status.state == "idle" and status.scheduled == 0
    assert elsewhere.seen == [] and target.seen == []
    # any path of the target is fine
    refused_until = time.time() + 1.2  # the refused plans' deadlines were earlier
    totals, _ = run_fleet(fleet, target.url + "any/path?x=1", rps=50, seconds=1)
    assert time.time() > refused_until
    (phase,) = (w.phases["p"] for w in totals.workers)
    schedule_kept(phase, 50, "ok")
    # exactly the obeyed plan's requests reached the target, and none anything else, after the refused plans'
    # requests would all have been due
    assert len(target.seen) == phase.by_class.ok > 0 and elsewhere.seen == []


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_redirects_are_never_followed(make_fleet: MakeFleet, targets, engine: str) -> None:  # type: ignore[no-untyped-def]
    elsewhere = targets()
    target = targets(redirect_to=elsewhere.url)
    totals, (ran,) = run_fleet(make_fleet(1, target.url), target.url, rps=50, seconds=1, engine=engine)
    assert ran == engine
    phase = totals.workers[0].phases["p"]
    schedule_kept(phase, 50, "ok")  # a 3xx is the target's answer
    assert len(target.seen) == phase.by_class.ok > 0 and elsewhere.seen == []


SECRET = "Bearer s3cret-7f1c"
API_KEY = "key-9d2e"


def test_secret_headers_reach_the_target_and_nothing_else(
    procs: ProcessSet,
    make_fleet: MakeFleet,
    targets,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    target = targets()
    fleet = make_fleet(1, target.url, {"Authorization": SECRET, "X-Api-Key": API_KEY})
    ((proc, port),) = fleet.workers
    totals, _ = run_fleet(
        fleet, target.url, rps=50, seconds=1, routes=(Route.of("GET", "/", {"Accept": "text/plain"}),)
    )
    schedule_kept(totals.workers[0].phases["p"], 50, "ok")
    assert len(target.seen) == totals.workers[0].phases["p"].by_class.ok > 0
    assert all(
        h["authorization"] == SECRET and h["x-api-key"] == API_KEY and h["accept"] == "text/plain" for h in target.seen
    )
    exposed = {
        "/status": call(port, "GET", "/status", token=fleet.token)[2],
        "/totals": call(port, "GET", "/totals", token=fleet.token)[2],
        "/metrics": call(port, "GET", "/metrics")[2],
        "command line": Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace"),
        "log": "".join(p.read_text(errors="replace") for p in procs.run_dir.glob("*.log")),
    }
    for where, text in exposed.items():
        for secret in (SECRET, API_KEY, fleet.token):
            assert secret not in text, where
    # a plan may not carry a secret header itself, even with the token: they travel only at start
    for name in ("Authorization", "cookie", "X-Api-Key"):
        routes = [Route.of("GET", "/", {name: "v"}).to_json()]
        status, _, text = call(port, "POST", "/start", plan_for(target.url, routes=routes), token=fleet.token)
        assert status == 400 and "secret header" in text and "never in a plan" in text
    with pytest.raises(FleetError, match="carries secret header"):
        run_fleet(fleet, target.url, rps=50, seconds=1, routes=(Route.of("GET", "/", {"Cookie": "a=b"}),))


def test_split_headers_and_origin() -> None:
    public, secret = protocol.split_headers(
        {"Accept": "a", "authorization": "b", "Cookie": "c", "X-Api-Key": "d"}, ["x-api-key"]
    )
    assert public == {"Accept": "a"} and secret == {"authorization": "b", "Cookie": "c", "X-Api-Key": "d"}
    assert protocol.origin("HTTP://Svc.NS.svc/path") == "http://svc.ns.svc:80"
    assert protocol.origin("https://h:8443/") == "https://h:8443"
    for bad in ("ftp://h/", "/relative", "http:///nohost"):
        with pytest.raises(ValueError, match="not an absolute"):
            protocol.origin(bad)
    assert protocol.token_matches("abc", "abc") and not protocol.token_matches("abd", "abc")
    assert not protocol.token_matches(None, "abc")
    assert SECRET not in repr(protocol.Aim.at("http://h/", {"Authorization": SECRET}))


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--target", "http://127.0.0.1:1"], {}, "no control token"),
        ([], {protocol.TOKEN_ENV: "t"}, "--target URL is required"),
        (["--target", "gopher://x"], {protocol.TOKEN_ENV: "t"}, "not an absolute http"),
        (["--target", "http://h:1", "--secrets", "/nonexistent"], {}, "cannot read the token"),
        (["--target", "http://h:1"], {protocol.TOKEN_ENV: "t", protocol.HEADERS_ENV: "[1]"}, "JSON object of strings"),
    ],
)
def test_a_worker_will_not_start_without_a_token_and_a_target(argv: list[str], env: dict, message: str) -> None:
    clean = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PYTEST_ROLLOUT_WORKER_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest_rollout.load.worker", "--port", "0", *argv],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_reads_its_token_and_headers_from_a_secrets_folder(procs: ProcessSet, tmp_path: Path, targets) -> None:  # type: ignore[no-untyped-def]
    """As on Kubernetes, where the fleet's Secret is mounted as a folder."""
    target = targets()
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    (folder / protocol.TOKEN_FILE).write_text("tok-from-file\n")
    (folder / protocol.HEADERS_FILE).write_text(json.dumps({"Authorization": SECRET}))
    proc = procs.start(
        "worker-secrets",
        [
            sys.executable,
            "-m",
            "pytest_rollout.load.worker",
            "--port",
            "0",
            "--target",
            target.url,
            "--secrets",
            str(folder),
        ],
        stdout_pipe=True,
        stdin_pipe=True,
    )
    port = LocalFleet._read_ready(proc, time.monotonic() + 20)
    assert call(port, "GET", "/status", token="tok-from-file")[0] == 200
    assert call(port, "POST", "/start", plan_for(target.url, rps=20), token="tok-from-file")[0] == 200
    deadline = time.monotonic() + 30
    while True:  # until the worker says its 1 s plan is done and every request it sent answered
        totals = WorkerTotals.from_json(json.loads(call(port, "GET", "/totals", token="tok-from-file")[2]))
        if totals.finished or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert totals.state == "stopped"
    schedule_kept(totals.phases["-"], 20, "ok")
    assert len(target.seen) == totals.phases["-"].by_class.ok > 0
    assert all(h["authorization"] == SECRET for h in target.seen)
    proc.stop(grace=5.0)


def test_each_route_of_a_mix_sends_its_own_secret_headers_and_no_plan_carries_them(
    procs: ProcessSet,
    targets,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Secret header values differ per route: the fleet is given them keyed by route name at start, the plan
    carries none, and each route's requests carry their own route's value."""
    target = targets()
    mix = check_requests(
        [
            Request("GET", "/a", name="a", headers={"Authorization": "Bearer route-a-11", "Accept": "x/a"}),
            Request("GET", "/b", name="b", headers={"Authorization": "Bearer route-b-22"}),
            Request("GET", "/c", name="c"),
        ]
    )
    routes, secrets, _ = compile_routes(mix)
    assert all("Authorization" not in r.headers for r in routes) and set(secrets) == {"a", "b"}
    fleet = LocalFleet(procs, "mixsecret", 1, Aim.at(target.url, route_headers=secrets))
    fleet.start()
    try:
        ((proc, port),) = fleet.workers
        totals, _ = run_fleet(fleet, target.url, rps=60, seconds=1, routes=routes)
        exposed = [call(port, "GET", p, token=fleet.token)[2] for p in ("/status", "/totals")]
        exposed += [call(port, "GET", "/metrics")[2], "".join(p.read_text() for p in procs.run_dir.glob("*.log"))]
        exposed.append(Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace"))
    finally:
        fleet.shutdown()
    schedule_kept(totals.workers[0].phases["p"], 60, "ok")
    routed = totals.workers[0].routes["p"]
    assert [routed[name].requests for name in "abc"] == [20, 20, 20]  # the schedule, sent or dropped late
    by_path = {path: [h for h in target.seen if h[":path"] == path] for path in ("/a", "/b", "/c")}
    assert [len(v) for v in by_path.values()] == [routed[name].by_class.ok for name in "abc"]
    assert all(h["authorization"] == "Bearer route-a-11" and h["accept"] == "x/a" for h in by_path["/a"])
    assert all(h["authorization"] == "Bearer route-b-22" for h in by_path["/b"])
    assert all("authorization" not in h for h in by_path["/c"])
    assert not any(secret in text for text in exposed for secret in ("route-a-11", "route-b-22"))


def test_secret_data_reach_the_target_in_turn_and_nothing_else(
    procs: ProcessSet,
    targets,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Values(secret=True), more than one environment string holds, reach a real worker at start in pieces;
    the route sends them in turn; the plan, the control API, the metrics, the log and the command line show
    none; a plan naming secret data the worker was not given is refused before any request."""
    target = targets()
    tokens = [f"tok-{i:05d}-{'s' * 40}" for i in range(3_000)]  # ~150 KB of JSON: three pieces
    mix = check_requests(
        [
            Request(
                "GET",
                "/a",
                name="a",
                headers={"Authorization": "Bearer ${t}"},
                data={"t": Values(tokens, order="cycle", secret=True)},
            ),  # fmt: skip
            Request("GET", "/b", name="b"),
        ]
    )
    compiled = compile_routes(mix)
    assert len(Aim.of(target.url, compiled).environment()) >= 4  # the headers and three pieces
    fleet = LocalFleet(procs, "secretdata", 1, Aim.of(target.url, compiled))
    fleet.start()
    try:
        ((proc, port),) = fleet.workers
        totals, _ = run_fleet(fleet, target.url, rps=60, seconds=1, routes=compiled.routes)
        exposed = [call(port, "GET", p, token=fleet.token)[2] for p in ("/status", "/totals")]
        exposed += [call(port, "GET", "/metrics")[2], "".join(p.read_text() for p in procs.run_dir.glob("*.log"))]
        exposed.append(Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace"))
        exposed.append(json.dumps([r.to_json() for r in compiled.routes]))
    finally:
        fleet.shutdown()
    schedule_kept(totals.workers[0].phases["p"], 60, "ok")
    routed = totals.workers[0].routes["p"]["a"]
    sent = [h["authorization"] for h in target.seen if h[":path"] == "/a"]
    # in turn, from the first: the route's j-th request due takes token j, sent or dropped late (so a dropped
    # one's token is never sent); each token sent once
    assert len(sent) == len(set(sent)) == routed.by_class.ok > 0
    assert set(sent) <= {f"Bearer {t}" for t in tokens[: routed.requests]} and routed.requests == 30
    assert all("authorization" not in h for h in target.seen if h[":path"] == "/b")
    assert not any("tok-0" in text for text in exposed)

    bare = LocalFleet(procs, "nodata", 1, Aim.at(target.url, route_headers=compiled.headers))
    bare.start()
    try:
        with pytest.raises(FleetError, match="fills t from secret data, and this worker holds none") as caught:
            run_fleet(bare, target.url, rps=20, seconds=0.5, routes=compiled.routes)
        assert "tok-0" not in str(caught.value)
    finally:
        bare.shutdown()

    folder = tmp_path / "secrets"  # as on Kubernetes: the fleet's Secret mounted as a folder
    folder.mkdir(mode=0o700)
    (folder / protocol.TOKEN_FILE).write_text("t")
    (folder / protocol.DATA_FILE).write_text(Aim.of(target.url, compiled).data_json())
    held = read_credentials(target.url, str(folder))
    assert held.route_data == compiled.data and "tok-0" not in repr(held)
