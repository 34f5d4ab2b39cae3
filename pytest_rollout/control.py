"""The worker control protocol's shared words: who may command a worker, and where it may aim.

Both sides import this module: the worker process (:mod:`pytest_rollout.worker`)
and the controllers (:mod:`pytest_rollout.fleet`, :mod:`pytest_rollout.kube`).
It imports nothing from either.

- Every control call carries the run's token in :data:`TOKEN_HEADER`. (Not
  ``Authorization``: the API server's pod proxy takes that header for itself.)
  A worker answers 401 when it is missing, 403 when it is wrong, and changes
  nothing. ``GET /metrics`` and ``GET /healthz`` need no token and show nothing
  secret.
- The target a worker may load (scheme, host and port: its *origin*) is fixed
  when the worker starts; a plan aimed anywhere else is refused.
- Secret header values (``Authorization``, ``Proxy-Authorization``, ``Cookie``,
  and any the test names) reach a worker when it starts, through its
  environment or a Secret volume, never in a plan.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "ALWAYS_SECRET",
    "HEADERS_ENV",
    "OPEN_PATHS",
    "TOKEN_ENV",
    "TOKEN_HEADER",
    "Aim",
    "new_token",
    "origin",
    "split_headers",
    "token_matches",
]

#: The request header that carries the run's token on every control call.
TOKEN_HEADER = "X-Rollout-Token"
#: Environment variables a local worker reads its token and secret headers from (never its command line).
TOKEN_ENV = "PYTEST_ROLLOUT_WORKER_TOKEN"
HEADERS_ENV = "PYTEST_ROLLOUT_WORKER_HEADERS"
#: Files in a worker's ``--secrets`` directory (the Secret volume on Kubernetes).
TOKEN_FILE = "token"
HEADERS_FILE = "headers.json"
#: Paths any caller may read: they expose counts and health, nothing secret.
OPEN_PATHS = frozenset({"/metrics", "/healthz"})
#: Header names whose values are always secret, whatever the test says.
ALWAYS_SECRET = frozenset({"authorization", "proxy-authorization", "cookie"})

_DEFAULT_PORTS = {"http": 80, "https": 443}


def new_token() -> str:
    """A fresh random token for one run's fleet (256 bits)."""
    return secrets.token_urlsafe(32)


def token_matches(given: str | None, expected: str) -> bool:
    """Whether *given* is *expected*, compared in constant time."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


def origin(url: str) -> str:
    """``scheme://host:port`` of *url*, lower-cased, the port always written.

    Raises ValueError for a URL that is not absolute http(s).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is not an absolute http:// or https:// URL")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ValueError(f"{url!r} has a bad port: {exc}") from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def split_headers(
    headers: Mapping[str, str], secret_names: Iterable[str] = ()
) -> tuple[dict[str, str], dict[str, str]]:
    """``(public, secret)``: *headers* split by name (case-insensitive) into those a plan may carry and the rest."""
    secret_set = ALWAYS_SECRET | {name.lower() for name in secret_names}
    public: dict[str, str] = {}
    secret: dict[str, str] = {}
    for name, value in headers.items():
        (secret if name.lower() in secret_set else public)[name] = value
    return public, secret


@dataclass(frozen=True)
class Aim:
    """What a fleet's workers are given when they are created: the one target, and the secret headers."""

    target: str  # an origin (see :func:`origin`)
    secret_headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def at(cls, url: str, secret_headers: Mapping[str, str] | None = None) -> Aim:
        return cls(origin(url), dict(secret_headers or {}))

    def headers_json(self) -> str:
        return json.dumps(dict(self.secret_headers), sort_keys=True)

    def __repr__(self) -> str:  # never print the values
        return f"Aim(target={self.target!r}, secret_headers={sorted(self.secret_headers)!r})"
