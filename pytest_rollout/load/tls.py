"""The client TLS settings both engines use for ``https://``: one :class:`ssl.SSLContext` per engine, built from the
plan.

By default the server's certificate chain and name are checked against the system's trusted CAs, as curl and
browsers check them; ``Plan.tls_ca_pem`` (PEM text, not a secret: a CA's certificate) trusts those certificates
instead; ``Plan.tls_verify=False`` checks nothing (for a test certificate: the traffic is still encrypted, but
anyone between the fleet and the target could read it). Only HTTP/1.1 is offered (ALPN), the one the engines
speak.
"""

from __future__ import annotations

import ssl
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_rollout.load.protocol import Plan

__all__ = ["client_context", "describe_failure", "report_failure"]


def client_context(plan: Plan) -> ssl.SSLContext:
    """The context for *plan*'s ``https://`` connections; ValueError when ``tls_ca_pem`` holds no certificate."""
    if plan.tls_verify and plan.tls_ca_pem:
        try:
            context = ssl.create_default_context(cadata=plan.tls_ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(
                f"tls_ca_pem: not PEM certificates ({exc}); give the CA's certificate file in PEM form "
                "(-----BEGIN CERTIFICATE-----)"
            ) from None
    else:
        context = ssl.create_default_context()
    if not plan.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def describe_failure(exc: BaseException, origin: str, plan: Plan) -> str | None:
    """One line saying why a TLS connection to *origin* failed and what to do; None when *exc* is no TLS failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        trusted = "the CA in tls_ca_pem" if plan.tls_ca_pem else "the system's trusted CAs"
        return (
            f"{origin}: the server's certificate was refused ({exc.verify_message or exc}; checked against "
            f'{trusted}): every request counts as a connection error. Trust its CA with slo(tls_ca="ca.pem"), '
            "or accept a test certificate with slo(tls_verify=False)"
        )
    if isinstance(exc, ssl.SSLError):
        return f"{origin}: the TLS handshake failed ({exc}): every request counts as a connection error"
    return None


def report_failure(exc: BaseException, origin: str, plan: Plan) -> str | None:
    """:func:`describe_failure`, also written to standard error (a worker's log); None when it is no TLS failure."""
    line = describe_failure(exc, origin, plan)
    if line is not None:
        print(f"pytest-rollout worker: {line}", file=sys.stderr, flush=True)
    return line
