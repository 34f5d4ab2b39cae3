"""The real HAProxy behind the local platform: runtime API and kube-proxy-like strictness."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import start_app

from pytest_rollout.errors import ProcessStartError
from pytest_rollout.platforms.local.haproxy import HAProxy, render_config
from pytest_rollout.procs import ProcessSet, free_port, http_get

pytestmark = pytest.mark.usefixtures("needs_haproxy")


def test_config_is_strict() -> None:
    text = render_config(
        socket_path=Path("/tmp/x.sock"), port=1, metrics_port=2, ready_path="/ready", server_timeout_s=5
    )
    assert "retries 0" in text and "no option redispatch" in text
    assert "mode tcp" in text and "option http-keep-alive" not in text  # layer 4, like kube-proxy
    assert "option httpchk GET /ready" in text
    assert "bind 127.0.0.1:1" in text
    assert "stats socket unix@/tmp/x.sock mode 600 level admin" in text


def test_add_take_out_remove(tmp_path: Path) -> None:
    procs = ProcessSet(tmp_path)
    lb = HAProxy(procs, tmp_path, ready_path="/healthz")
    try:
        lb.start()
        with pytest.raises(OSError):  # no server yet: the connection is closed, as kube-proxy rejects it
            http_get("127.0.0.1", lb.port, "/")
        a = start_app(procs, "a", "--version", "A", "--delay-ms", "0")
        b = start_app(procs, "b", "--version", "B", "--delay-ms", "0")
        lb.add_server("a", a)
        lb.add_server("b", b)
        bodies = {http_get("127.0.0.1", lb.port, "/")[1] for _ in range(6)}
        assert bodies == {b"hello from vA\n", b"hello from vB\n"}
        lb.take_out("a")
        assert {http_get("127.0.0.1", lb.port, "/")[1] for _ in range(6)} == {b"hello from vB\n"}
        assert lb.servers()["a"].status == "MAINT"
        assert lb.remove_server("a")
        assert "a" not in lb.servers()
        status, body = http_get("127.0.0.1", lb.metrics_port, "/metrics")
        assert status == 200 and b"haproxy_server_" in body
    finally:
        procs.stop_all()


def test_no_retry_hides_a_dead_server(tmp_path: Path) -> None:
    """A server that dies while in rotation costs errors: HAProxy must not retry elsewhere."""
    procs = ProcessSet(tmp_path)
    lb = HAProxy(procs, tmp_path, ready_path="/healthz")
    try:
        lb.start()
        good = start_app(procs, "good", "--delay-ms", "0")
        lb.add_server("good", good)
        lb.add_server("dead", free_port())  # nothing listens there
        outcomes = []
        for _ in range(10):
            try:
                outcomes.append(http_get("127.0.0.1", lb.port, "/")[0])
            except OSError:
                outcomes.append("refused")
        assert 200 in outcomes and "refused" in outcomes
    finally:
        procs.stop_all()


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    procs = ProcessSet(tmp_path)
    try:
        taken = start_app(procs, "squatter", "--delay-ms", "0")
        lb = HAProxy(procs, tmp_path, ready_path="/healthz")
        with pytest.raises(ProcessStartError, match=f"port {taken} on 127.0.0.1 is already taken"):
            lb.start(port=taken)
    finally:
        procs.stop_all()


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    lb = HAProxy(ProcessSet(tmp_path), tmp_path, ready_path="/healthz", binary="no-such-haproxy")
    with pytest.raises(ProcessStartError, match="apt-get install haproxy"):
        lb.start()


def test_admin_socket_in_a_very_long_directory(tmp_path: Path) -> None:
    """A Unix socket path may not exceed ~100 bytes; a user's TMPDIR can be longer."""
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    procs = ProcessSet(deep)
    lb = HAProxy(procs, deep, ready_path="/healthz")
    try:
        lb.start()
        assert "Name: HAProxy" in lb.command("show info")
    finally:
        lb.stop()
        procs.stop_all()


def test_a_keep_alive_connection_stays_on_its_replica_until_it_closes(tmp_path: Path) -> None:
    """Balanced per connection (layer 4): a connection taken out of rotation goes on being served there."""
    import http.client

    procs = ProcessSet(tmp_path)
    lb = HAProxy(procs, tmp_path, ready_path="/healthz")
    try:
        lb.start()
        lb.add_server("a", start_app(procs, "a", "--version", "A", "--delay-ms", "0"))
        lb.add_server("b", start_app(procs, "b", "--version", "B", "--delay-ms", "0"))
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=2)
        try:
            conn.request("GET", "/")
            first = conn.getresponse().read()
            bodies = set()
            for _ in range(6):  # the same connection: the same replica every time
                conn.request("GET", "/")
                bodies.add(conn.getresponse().read())
            assert bodies == {first}
            pinned = "a" if first == b"hello from vA\n" else "b"
            lb.take_out(pinned)  # out of rotation: new connections go elsewhere, this one stays
            conn.request("GET", "/")
            assert conn.getresponse().read() == first
            assert {http_get("127.0.0.1", lb.port, "/")[1] for _ in range(4)} == {
                b"hello from vA\n",
                b"hello from vB\n",
            } - {first}
        finally:
            conn.close()
    finally:
        procs.stop_all()
