"""HTTPS targets: the marker's trust (slo(tls_ca=, tls_verify=)), the target's scheme (deploy(scheme=)), what
HAProxy checks, how big an https fleet is, and the handshake tried before any load."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tlscert import TestPKI, make_pki

from pytest_rollout.errors import RolloutUsageError, SLOSpecError
from pytest_rollout.platforms.base import TargetOptions, TargetSpec
from pytest_rollout.platforms.local.haproxy import server_check
from pytest_rollout.run.prepare import TLS_WORKER_SHARE, check_trust, fleet_size
from pytest_rollout.slo import parse_slo


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- slo(tls_ca=, tls_verify=) ----------------------------------------------------------------------------------


def test_tls_defaults_verify_against_the_system_trust() -> None:
    spec = parse_slo((100,), {})
    assert spec.tls_verify is True and spec.tls_ca is None and spec.tls_ca_pem is None


def test_tls_ca_is_read_beside_the_test_file_first(
    pki: TestPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "ca.pem").write_text(pki.ca_text)
    monkeypatch.chdir(tmp_path)  # no ca.pem in the current directory
    spec = parse_slo((100,), {"tls_ca": "ca.pem"}, base_dir=str(tests))
    assert spec.tls_ca == str(tests / "ca.pem") and spec.tls_ca_pem == pki.ca_text and spec.tls_verify


def test_tls_ca_falls_back_to_the_current_directory(
    pki: TestPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.pem").write_text(pki.ca_text)
    monkeypatch.chdir(tmp_path)
    spec = parse_slo((100,), {"tls_ca": "ca.pem"}, base_dir=str(tmp_path / "elsewhere"))
    assert spec.tls_ca_pem == pki.ca_text
    assert parse_slo((100,), {"tls_ca": str(pki.ca_pem)}).tls_ca_pem == pki.ca_text  # absolute


def test_a_missing_tls_ca_says_where_it_was_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SLOSpecError, match=r"tls_ca='nope.pem': cannot read nope.pem: No such file.*beside the test"):
        parse_slo((100,), {"tls_ca": "nope.pem"}, base_dir=str(tmp_path / "tests"))


def test_a_tls_ca_that_is_no_pem_certificate_is_refused(pki: TestPKI, tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text(pki.server_key.read_text())  # a key, not a certificate
    (tmp_path / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    (tmp_path / "binary.der").write_bytes(b"\x30\x82\xff\xfe")
    for name in ("key.pem", "junk.pem", "binary.der"):
        with pytest.raises(SLOSpecError, match=r"tls_ca=.*holds no PEM certificate") as info:
            parse_slo((100,), {"tls_ca": str(tmp_path / name)})
        assert info.value.argument == "tls_ca"


@pytest.mark.parametrize("value", ["no", 0, 1, None])
def test_tls_verify_is_a_bool(value: object) -> None:
    with pytest.raises(SLOSpecError, match="tls_verify=.* must be True or False"):
        parse_slo((100,), {"tls_verify": value})


def test_tls_verify_false_is_kept_and_contradicts_a_ca(pki: TestPKI) -> None:
    assert parse_slo((100,), {"tls_verify": False}).tls_verify is False
    with pytest.raises(SLOSpecError, match="tls_ca= and tls_verify=False contradict each other"):
        parse_slo((100,), {"tls_ca": str(pki.ca_pem), "tls_verify": False})
    with pytest.raises(SLOSpecError, match="tls_ca=3 must be the path"):
        parse_slo((100,), {"tls_ca": 3})


# -- deploy(scheme=) --------------------------------------------------------------------------------------------


def build(what: str = "deploy", **given: object) -> TargetSpec:
    return TargetSpec.build(TargetOptions(command=["app"], **given), version="v1", what=what)  # type: ignore[arg-type]


def test_scheme_defaults_to_http_and_upgrade_inherits_it() -> None:
    assert build().scheme == "http"
    deployed = build(scheme="https")
    assert deployed.scheme == "https"
    upgrade = TargetSpec.build(TargetOptions(command=["app2"]).inherit(deployed.options), version="v2", what="upgrade")
    assert upgrade.scheme == "https"


@pytest.mark.parametrize("scheme", ["HTTPS", "tls", "", None, 443])
def test_a_bad_scheme_is_named(scheme: object) -> None:
    with pytest.raises(RolloutUsageError, match=r"rollout\.upgrade\(scheme=.*\) must be 'http' or 'https'"):
        build("upgrade", scheme=scheme)


def test_haproxy_checks_an_https_replica_over_tls_without_trusting_it() -> None:
    assert server_check("http") == "check inter 500ms fall 2 rise 1"
    assert server_check("https") == "check check-ssl verify none inter 500ms fall 2 rise 1"


# -- the fleet's size over TLS --------------------------------------------------------------------------------


class Stub:
    def __init__(self, url: str) -> None:
        self.url = url


def test_an_https_fleet_is_sized_for_the_rate_a_worker_holds_over_tls() -> None:
    spec = parse_slo((20_000,), {})
    http, https = Stub("http://127.0.0.1:1"), Stub("https://127.0.0.1:1")
    assert fleet_size(http, spec, None, 10_000.0, False) == 2  # type: ignore[arg-type]
    assert fleet_size(https, spec, None, 10_000.0, False) == 10  # type: ignore[arg-type]
    assert TLS_WORKER_SHARE == 0.2
    assert fleet_size(https, spec, None, 10_000.0, True) == 2  # type: ignore[arg-type]  # the user's rate stands
    assert fleet_size(https, spec, 3, 10_000.0, False) == 3  # type: ignore[arg-type]


# -- the handshake before any load ----------------------------------------------------------------------------


@pytest.fixture
def tls_server(pki: TestPKI) -> Iterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_pem, pki.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()


def test_a_certificate_the_fleet_would_refuse_is_a_usage_error_before_any_load(pki: TestPKI, tls_server: str) -> None:
    with pytest.raises(RolloutUsageError, match=r"certificate verify failed.*slo\(tls_ca=.*slo\(tls_verify=False\)"):
        check_trust(tls_server, parse_slo((100,), {}))
    check_trust(tls_server, parse_slo((100,), {"tls_ca": str(pki.ca_pem)}))
    check_trust(tls_server, parse_slo((100,), {"tls_verify": False}))


def test_the_handshake_is_skipped_for_http_and_for_what_this_machine_cannot_reach() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
    check_trust(f"https://127.0.0.1:{port}", parse_slo((100,), {}))
    check_trust(f"http://127.0.0.1:{port}", parse_slo((100,), {}))


# -- pytest-rollout attack --cacert / --insecure --------------------------------------------------------------


def test_attack_takes_curls_cacert_and_insecure_and_refuses_both(pki: TestPKI, tmp_path: Path) -> None:
    from pytest_rollout.cli import main

    url = ["attack", "--url", "https://127.0.0.1:1/", "--rps", "1"]
    with pytest.raises(SystemExit, match="--cacert and --insecure contradict each other"):
        main([*url, "--cacert", str(pki.ca_pem), "--insecure"])
    (tmp_path / "key.pem").write_text(pki.server_key.read_text())
    with pytest.raises(SystemExit, match="not PEM certificates"):
        main([*url, "--cacert", str(tmp_path / "key.pem")])
    with pytest.raises(SystemExit, match="cannot read it"):
        main([*url, "--cacert", str(tmp_path / "absent.pem")])
