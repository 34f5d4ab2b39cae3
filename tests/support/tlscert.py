"""Test certificates, made with the ``openssl`` command line: a CA, and a server certificate it signs for
``127.0.0.1`` (an IP subject alternative name) and ``localhost``. Nothing here is trusted by the system."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TestPKI", "make_ca", "make_pki"]


@dataclass(frozen=True)
class TestPKI:
    """A CA (certificate and key) and the server certificate and key it signed."""

    __test__ = False  # not a test class, whatever pytest's name rule says

    ca_pem: Path
    ca_key: Path
    server_pem: Path
    server_key: Path

    @property
    def ca_text(self) -> str:
        return self.ca_pem.read_text()


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command line is needed to make test certificates")
    subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A self-signed CA in *directory*: (certificate, key), PEM."""
    directory.mkdir(parents=True, exist_ok=True)
    pem, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(pem), "-days", "2", "-subj", f"/CN=pytest-rollout test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pem, key


def make_pki(directory: Path) -> TestPKI:
    """A CA and a server certificate it signs for 127.0.0.1 and localhost, in *directory*."""
    ca_pem, ca_key = make_ca(directory)
    server_key, csr, server_pem = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "server.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(server_key), "-out", str(csr), "-subj", "/CN=localhost",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(server_pem), "-days", "2", "-extfile", str(extensions),
    )  # fmt: skip
    return TestPKI(ca_pem=ca_pem, ca_key=ca_key, server_pem=server_pem, server_key=server_key)
