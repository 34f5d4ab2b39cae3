"""The worker control protocol's shared words: who may command a worker, and where it may aim.

Both sides import this module: the worker process (:mod:`pytest_rollout.load.worker`)
and the controllers (:mod:`pytest_rollout.load.fleet`, :mod:`pytest_rollout.platforms.kubernetes.fleet`).
It imports nothing from either.

- Every control call carries the run's token in :data:`TOKEN_HEADER`. (Not
  ``Authorization``: the API server's pod proxy takes that header for itself.)
  A worker answers 401 when it is missing, 403 when it is wrong, and changes
  nothing. ``GET /metrics`` and ``GET /healthz`` need no token and show nothing
  secret.
- The target a worker may load (scheme, host and port: its *origin*) is fixed
  when the worker starts; a plan aimed anywhere else is refused.
- Secret header values (``Authorization``, ``Proxy-Authorization``, ``Cookie``,
  and any the test names) and secret data (``Values(..., secret=True)``) reach
  a worker when it starts, through its environment or a Secret volume, never
  in a plan.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from pytest_rollout.load.mix import ALWAYS_SECRET, DEFAULT_PORTS, Compiled, Route, data_json
from pytest_rollout.load.schedule import Segment

__all__ = [
    "ALWAYS_SECRET",
    "DEFAULT_PORTS",
    "Aim",
    "CLASSES",
    "DATA_ENV",
    "DATA_FILE",
    "EVERY_ROUTE",
    "ERROR_CLASSES",
    "HEADERS_ENV",
    "IDEMPOTENT",
    "IDLE_CLOSE_S",
    "LATE_S",
    "OPEN_PATHS",
    "PhaseEdge",
    "Plan",
    "RESEND_WINDOW_S",
    "TOKEN_ENV",
    "TOKEN_HEADER",
    "classify",
    "inflight_cap",
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
#: The secret data (``Values(..., secret=True)``) come in pieces of at most :data:`DATA_PIECE` characters, in
#: ``PYTEST_ROLLOUT_WORKER_DATA_0``, ``_1``, ... (one environment string holds at most 128 KiB on Linux), as
#: many as ``PYTEST_ROLLOUT_WORKER_DATA_PIECES`` says.
DATA_ENV = "PYTEST_ROLLOUT_WORKER_DATA"
DATA_PIECE = 64 * 1024
#: Files in a worker's ``--secrets`` directory (the Secret volume on Kubernetes).
TOKEN_FILE = "token"
HEADERS_FILE = "headers.json"
DATA_FILE = "data.json"
#: The control API's paths (see pytest_rollout.load.worker for what each does).
START, PHASE, STOP, QUIT, TOTALS, STATUS = "/start", "/phase", "/stop", "/quit", "/totals", "/status"
METRICS, HEALTHZ = "/metrics", "/healthz"
#: Paths any caller may read: they expose counts and health, nothing secret.
OPEN_PATHS = frozenset({METRICS, HEALTHZ})


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
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is not an absolute http:// or https:// URL")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
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


#: In the secret headers' JSON, the key of the headers every route sends (the others are route names).
EVERY_ROUTE = "*"


@dataclass(frozen=True)
class Aim:
    """What a fleet's workers are given when they are created: the one target, and the secret headers.

    ``secret_headers`` go with every route; ``route_headers`` with the route they are keyed by (a mix whose
    routes send different secrets).
    """

    target: str  # an origin (see :func:`origin`)
    secret_headers: Mapping[str, str] = field(default_factory=dict)
    route_headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: route name -> placeholder -> (values, order): the ``Values(..., secret=True)`` of that route
    route_data: Mapping[str, Mapping[str, tuple[tuple[str, ...], str]]] = field(default_factory=dict)

    @classmethod
    def at(
        cls,
        url: str,
        secret_headers: Mapping[str, str] | None = None,
        route_headers: Mapping[str, Mapping[str, str]] | None = None,
        route_data: Mapping[str, Mapping[str, tuple[tuple[str, ...], str]]] | None = None,
    ) -> Aim:
        return cls(
            origin(url),
            dict(secret_headers or {}),
            {k: dict(v) for k, v in (route_headers or {}).items()},
            {k: dict(v) for k, v in (route_data or {}).items()},
        )

    @classmethod
    def of(cls, url: str, compiled: Compiled) -> Aim:
        """The aim of a compiled mix at *url*: a single route's secret headers go to every route, as they always
        did; a mix's go to the route they are keyed by. ValueError for a bad *url*."""
        if len(compiled.routes) == 1:
            return cls.at(url, compiled.headers.get(compiled.routes[0].name), route_data=compiled.data)
        return cls.at(url, route_headers=compiled.headers, route_data=compiled.data)

    def data_json(self) -> str:
        """The secret data as a worker reads them at start (:func:`pytest_rollout.load.mix.data_json`)."""
        return data_json(self.route_data)

    def environment(self) -> dict[str, str]:
        """The secret headers and data as a local worker's environment (:data:`HEADERS_ENV`, :data:`DATA_ENV`)."""
        env = {HEADERS_ENV: self.headers_json()}
        text = self.data_json() if self.route_data else ""
        pieces = [text[i : i + DATA_PIECE] for i in range(0, len(text), DATA_PIECE)]
        env[f"{DATA_ENV}_PIECES"] = str(len(pieces))  # read exactly these: never a stray one inherited
        env.update({f"{DATA_ENV}_{i}": piece for i, piece in enumerate(pieces)})
        return env

    def secret_names(self) -> set[str]:
        """Every secret header's name, lower-cased, whichever route sends it."""
        names = {name.lower() for name in self.secret_headers}
        for headers in self.route_headers.values():
            names |= {name.lower() for name in headers}
        return names

    def headers_json(self) -> str:
        """What a worker reads at start: the headers every route sends, as an object of strings; with routes
        of their own, an object of such objects keyed by route name (:data:`EVERY_ROUTE` for every route)."""
        if not self.route_headers:
            return json.dumps(dict(self.secret_headers), sort_keys=True)
        keyed = {EVERY_ROUTE: dict(self.secret_headers), **{k: dict(v) for k, v in self.route_headers.items()}}
        return json.dumps(keyed, sort_keys=True)

    def __repr__(self) -> str:  # never print the values
        routes = {k: sorted(v) for k, v in self.route_headers.items()}
        data = {k: sorted(v) for k, v in self.route_data.items()}
        return (
            f"Aim(target={self.target!r}, secret_headers={sorted(self.secret_headers)!r}, route_headers={routes!r}, "
            f"route_data={data!r})"
        )


#: Outcome classes of a request. ``ok`` is any status below 400.
CLASSES: tuple[str, ...] = ("ok", "http_4xx", "http_5xx", "timeout", "connection", "dropped")


ERROR_CLASSES: tuple[str, ...] = CLASSES[1:]


#: The same classes as indices (the hot path counts into lists).
OK, HTTP_4XX, HTTP_5XX, TIMEOUT, CONNECTION, DROPPED = range(len(CLASSES))


def classify(status: int) -> int:
    """The outcome class of an answer with HTTP *status*."""
    if status < 400:
        return OK
    if status < 500:
        return HTTP_4XX
    return HTTP_5XX


#: The engines close a connection idle this long, below any common server's keep-alive timeout (gunicorn's 2 s).
IDLE_CLOSE_S = 0.5
#: A reused connection that closed unanswered this soon after a request went out: the request is resent.
RESEND_WINDOW_S = 0.01

#: Methods a client may send twice (RFC 9110, 9.2.2): the only ones resent after a reused connection closed.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


#: A request sent more than this many seconds after it was due is late: not "held".
LATE_S = 0.05


def inflight_cap(peak_rps: float) -> int:
    """Default cap on one worker's requests in flight: a quarter second of its peak rate.

    Enough to ride out a 250 ms stall of the target without dropping anything,
    bounded so a hung target cannot pile up sockets without end (1,024 to 32,768).
    """
    return int(min(32768, max(1024, math.ceil(peak_rps * 0.25))))


@dataclass(frozen=True)
class Plan:
    """What a worker is told to do.

    Its times are Unix seconds as a worker gets it. A caller builds it counted from 0 (``start_at`` 0, the
    deadline and each phase's start as offsets) and hands it to :func:`pytest_rollout.load.launch.launch`,
    which shifts every time to a start a lead ahead of now.
    """

    url: str
    segments: tuple[Segment, ...]
    start_at: float  # when the first request is due: 0 before launch(), Unix seconds once launched
    deadline: float  # no request is due at or after it: an offset from start_at before launch(), then Unix seconds
    #: The traffic mix: each route's request and weight (none given: GET the url's path and query).
    routes: tuple[Route, ...] = ()
    seed: int = 0  # per-request data are drawn from (seed, worker index, request number)
    worker: tuple[int, int] = (0, 1)  # (index, size) of the worker in its fleet: ${seq} is k * size + index
    timeout_s: float = 5.0
    phase: float = 0.0
    max_requests: int = 10_000_000
    max_inflight: int = 1024  # requests in flight at most; more are counted as dropped
    connections: int = 0  # keep-alive connections at most; 0: as many as max_inflight (open loop)
    phases: tuple[tuple[str, float], ...] = ()  # (name, start), in order: offsets before launch(), then Unix
    engine: str = "auto"  # auto (fast where it can), fast or aiohttp
    resend_reused: bool = True  # resend an idempotent request once when its reused connection closed unanswered
    tls_verify: bool = True  # https://: check the server's certificate and name (False: a test certificate)
    tls_ca_pem: str | None = None  # https://: trust these PEM certificates (not secret) instead of the system's

    def __post_init__(self) -> None:
        if not self.routes:
            parts = urlsplit(self.url)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            object.__setattr__(self, "routes", (Route.of("GET", target),))
        index, size = self.worker
        if not 0 <= index < size:
            raise ValueError(f"worker={self.worker!r}: the index must be in [0, size)")
        if len(set(self.route_names)) != len(self.routes):
            raise ValueError(f"the plan's route names repeat: {', '.join(self.route_names)}")

    @property
    def route_names(self) -> tuple[str, ...]:
        return tuple(route.name for route in self.routes)

    def for_worker(self, index: int, size: int) -> Plan:
        """Worker *index*'s share of this whole plan among *size* workers: ``1/size`` of every segment's rate,
        its arrivals offset by ``index/size`` of a request (so the workers' requests interleave), and its place
        in the fleet (``${seq}`` and the per-request data go by it). ValueError for a plan already one worker's."""
        if self.worker != (0, 1):
            raise ValueError(f"for_worker() splits a whole plan, not worker {self.worker!r}'s share")
        share = 1.0 / size
        return replace(
            self,
            segments=tuple(Segment(s.duration, s.start_rps * share, s.end_rps * share) for s in self.segments),
            phase=index / size,
            worker=(index, size),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        worker = data.get("worker") or (0, 1)
        return cls(
            url=str(data["url"]),
            segments=tuple(Segment(s[0], float(s[1]), float(s[2])) for s in data["segments"]),
            start_at=float(data["start_at"]),
            deadline=float(data["deadline"]),
            routes=tuple(Route.from_json(r) for r in data.get("routes") or ()),
            seed=int(data.get("seed", 0)),
            worker=(int(worker[0]), int(worker[1])),
            timeout_s=float(data.get("timeout_s", 5.0)),
            phase=float(data.get("phase", 0.0)),
            max_requests=int(data.get("max_requests", 10_000_000)),
            max_inflight=int(data.get("max_inflight", 1024)),
            connections=int(data.get("connections", 0)),
            phases=tuple((str(n), float(t)) for n, t in data.get("phases", ())),
            engine=str(data.get("engine", "auto")),
            resend_reused=bool(data.get("resend_reused", True)),
            tls_verify=bool(data.get("tls_verify", True)),
            tls_ca_pem=None if data.get("tls_ca_pem") is None else str(data["tls_ca_pem"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "segments": [[s.duration, s.start_rps, s.end_rps] for s in self.segments],
            "start_at": self.start_at,
            "deadline": self.deadline,
            "routes": [route.to_json() for route in self.routes],
            "seed": self.seed,
            "worker": list(self.worker),
            "timeout_s": self.timeout_s,
            "phase": self.phase,
            "max_requests": self.max_requests,
            "max_inflight": self.max_inflight,
            "connections": self.connections,
            "phases": [[n, t] for n, t in self.phases],
            "engine": self.engine,
            "resend_reused": self.resend_reused,
            "tls_verify": self.tls_verify,
            "tls_ca_pem": self.tls_ca_pem,
        }


@dataclass(frozen=True)
class PhaseEdge:
    """``POST /phase``: requests due from Unix time ``at`` on count for phase ``name`` (see ``Fleet.announce``)."""

    name: str
    at: float  # Unix seconds, by the worker's own clock

    def __post_init__(self) -> None:
        if not math.isfinite(self.at):
            raise ValueError(f"at={self.at!r}: a phase edge is a finite Unix time")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PhaseEdge:
        return cls(name=str(data["name"]), at=float(data["at"]))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "at": self.at}
