"""A traffic mix: the requests a test declares (``slo(traffic=[Request(...), ...])``), each with its weight,
its per-request data and, optionally, bounds of its own.

The user-facing types live here, in the load box, because a worker turns the same declarations into bytes on
the wire: the controller validates them (:mod:`pytest_rollout.slo`), a plan carries their wire form, and every
worker sends them in their proportions.

Placeholders ``${name}`` in a request's path, header values and body are filled in at send time:

- ``${seq}``: the request's number in the run, unique across the fleet (worker *i* of *n* numbers its k-th
  request ``k * n + i``);
- ``${uuid}``: a random UUID (version 4), drawn from the run's seed;
- ``${name}`` for each entry of ``data``: a value drawn from a list (``Values([...])``, or a plain list) or a
  CSV file's column (``Values.from_csv(path, column)``), at random from the run's seed or in turn.

``$$`` is a literal ``$``. Values marked ``secret=True`` reach a worker only when it starts, as secret headers
do, never in a plan, a report, a log or a label.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "LATENCY_FIELDS",
    "MAX_ROUTES",
    "MAX_SECRET_DATA",
    "Compiled",
    "Request",
    "Route",
    "Values",
    "check_requests",
    "compile_routes",
    "data_json",
    "read_data_json",
]

#: At most this many routes in a mix: each is a ``route`` label value on every worker series.
MAX_ROUTES = 20
#: A route's name: at most this many characters.
MAX_NAME = 64
#: A data entry holds at most this many values (a CSV column included).
MAX_VALUES = 100_000
#: The secret data of a whole mix, as JSON, is at most this many bytes: they travel in a worker's environment
#: (locally) or a Kubernetes Secret (at most 1 MiB, with the headers and the token).
MAX_SECRET_DATA = 512 * 1024
#: The built-in placeholders; ``data`` may not use these names.
BUILTINS = ("seq", "uuid")
ORDERS = ("random", "cycle")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Header names whose values are always secret, whatever the test says (re-exported by protocol).
ALWAYS_SECRET = frozenset({"authorization", "proxy-authorization", "cookie"})
#: The port each scheme the fleet speaks defaults to (re-exported by protocol).
DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
#: Headers a worker writes itself: a route's own are ignored (as they always were).
SKIPPED_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})

#: A route's own latency bounds, named as the ``slo`` marker names them.
LATENCY_FIELDS: tuple[str, ...] = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms")


@dataclass(frozen=True)
class Values:
    """Values a placeholder takes, one per request: drawn at random (from the run's seed) or in turn."""

    values: tuple[str, ...]
    order: str = "random"  # "random" or "cycle"
    secret: bool = False  # True: the values reach workers only at start, never in a plan, report, log or label
    source: str = "list"  # where they came from, for messages: "list" or "<path>:<column>"

    def __post_init__(self) -> None:
        if isinstance(self.values, (str, bytes)) or not all(isinstance(v, str) for v in self.values):
            raise ValueError(f"Values({self.source}): give a list of str, e.g. Values(['a', 'b'])")
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values:
            raise ValueError(f"Values({self.source}): no values: give at least one")
        if len(self.values) > MAX_VALUES:
            raise ValueError(f"Values({self.source}): {len(self.values):,} values, more than {MAX_VALUES:,}")
        if self.order not in ORDERS:
            raise ValueError(f"Values(order={self.order!r}) must be 'random' or 'cycle'")

    @classmethod
    def from_csv(cls, path: str, column: str, *, order: str = "random", secret: bool = False) -> Values:
        """The values of *column* (a header name in the first row) of the CSV file at *path*.

        A relative *path* is relative to the directory of the file that calls this (the test module), else to
        the current directory. ValueError names the file and the column when either is missing.
        """
        where = os.fspath(path)
        if not os.path.isabs(where):
            caller = sys._getframe(1).f_globals.get("__file__")
            if isinstance(caller, str) and os.path.isfile(os.path.join(os.path.dirname(caller), where)):
                where = os.path.join(os.path.dirname(caller), where)
        source = f"{path}:{column}"
        try:
            with open(where, encoding="utf-8", newline="") as fh:
                reader = csv.reader(fh)
                header = next(reader, None)
                if header is None:
                    raise ValueError(f"Values.from_csv({path!r}): the file is empty: its first row names the columns")
                if column not in header:
                    raise ValueError(
                        f"Values.from_csv({path!r}, {column!r}): no column {column!r}; the first row names "
                        f"{', '.join(repr(h) for h in header)}"
                    )
                at = header.index(column)
                values: list[str] = []
                for line, row in enumerate(reader, start=2):
                    if not row:
                        continue
                    if at >= len(row):
                        raise ValueError(f"Values.from_csv({path!r}, {column!r}): row {line} has no {column!r} value")
                    values.append(row[at])
                    if len(values) > MAX_VALUES:
                        raise ValueError(
                            f"Values.from_csv({path!r}, {column!r}): more than {MAX_VALUES:,} values: use fewer"
                        )
        except OSError as exc:
            raise ValueError(f"Values.from_csv({path!r}): cannot read {where}: {exc.strerror}") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(f"Values.from_csv({path!r}): not a UTF-8 CSV file: {exc}") from None
        if not values:
            raise ValueError(f"Values.from_csv({path!r}, {column!r}): the column has no values")
        return cls(tuple(values), order=order, secret=secret, source=source)

    def __repr__(self) -> str:  # a secret's values are never printed
        shown = "<secret>" if self.secret else f"{len(self.values)} values"
        return f"Values({shown}, order={self.order!r}, source={self.source!r})"


@dataclass(frozen=True, repr=False)
class Request:
    """One request of a traffic mix.

    ``Request("POST", "/cart", name="checkout", weight=5, body='{"user": "${user}"}',
    data={"user": Values.from_csv("users.csv", "id")}, p99_ms=800)``

    *weight* is relative to the other requests' weights. A bound given here (``error_rate``, ``p99_ms``, ...)
    judges this route's own requests; a bound not given here is the ``slo`` marker's. *name* (default
    ``"METHOD path"``, the path as written, placeholders and all) names the route in the ``route`` label, the
    reports and the verdict; names are unique within a mix.
    """

    method: str = "GET"
    path: str = "/"
    name: str | None = None
    weight: float = 1.0
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str | None = None
    data: Mapping[str, Values | Sequence[str]] = field(default_factory=dict)
    error_rate: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None

    def __repr__(self) -> str:  # Authorization, Proxy-Authorization and Cookie values are never printed
        return self.shown()

    def shown(self, secret: frozenset[str] = ALWAYS_SECRET) -> str:
        """The repr, with the values of the headers named in *secret* (lower case) as ``<secret>``."""
        headers = {k: "<secret>" if k.lower() in secret else v for k, v in self.headers.items()}
        shown = [f"{self.method!r}", f"{self.path!r}"]
        if self.name is not None:
            shown.append(f"name={self.name!r}")
        if self.weight != 1.0:
            shown.append(f"weight={self.weight!r}")
        if headers:
            shown.append(f"headers={headers!r}")
        if self.body is not None:
            shown.append(f"body={self.body!r}")
        if self.data:
            shown.append(f"data={dict(self.data)!r}")
        for key in ("error_rate", *LATENCY_FIELDS):
            if getattr(self, key) is not None:
                shown.append(f"{key}={getattr(self, key)!r}")
        return f"Request({', '.join(shown)})"

    @property
    def route(self) -> str:
        """The route's name: *name*, else ``"METHOD path"``."""
        return self.name if self.name is not None else f"{self.method.upper()} {self.path}"

    def latency_ms(self) -> dict[str, float]:
        """This route's own latency bounds, by marker keyword (``{"p99_ms": 800.0}``)."""
        return {key: float(value) for key in LATENCY_FIELDS if (value := getattr(self, key)) is not None}


def parse_template(text: str, where: str) -> list[str | tuple[str]]:
    """*text* as literal strings and ``(name,)`` placeholders; ``$$`` is a ``$``, a ``$`` before anything but
    ``{`` or ``$`` is itself. ValueError for a ``${`` that is not closed or names no identifier."""
    out: list[str | tuple[str]] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "$" and text.startswith("$$", i):
            literal.append("$")
            i += 2
        elif ch == "$" and text.startswith("${", i):
            end = text.find("}", i + 2)
            name = text[i + 2 : end] if end >= 0 else ""
            if end < 0 or not _NAME.match(name):
                raise ValueError(f"{where}: {text[i : (end + 1 if end >= 0 else len(text))]!r} is not a "
                                 "placeholder: write ${name} (letters, digits, _), or $$ for a $")  # fmt: skip
            if literal:
                out.append("".join(literal))
                literal = []
            out.append((name,))
            i = end + 1
        else:
            literal.append(ch)
            i += 1
    if literal:
        out.append("".join(literal))
    return out


def placeholders(text: str, where: str) -> set[str]:
    return {p[0] for p in parse_template(text, where) if isinstance(p, tuple)}


@dataclass(frozen=True)
class Route:
    """The wire form of one compiled :class:`Request` (what a plan carries): no secret in it."""

    name: str
    method: str = "GET"
    target: str = "/"  # path and query as written, placeholders and all
    headers: Mapping[str, str] = field(default_factory=dict)  # public headers only
    body: bytes | None = None
    weight: float = 1.0
    data: Mapping[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)  # name -> (values, order)
    secret_data: tuple[str, ...] = ()  # names whose values reach the worker only at start

    @classmethod
    def of(
        cls, method: str = "GET", target: str = "/", headers: Mapping[str, str] | None = None, body: bytes | None = None
    ) -> Route:
        """One static request, named as :attr:`Request.route` names it."""
        return cls(f"{method.upper()} {target}", method.upper(), target, dict(headers or {}), body)

    @property
    def templated(self) -> bool:
        """Whether anything in it is filled in per request."""
        texts = [self.target, *self.headers.values(), (self.body or b"").decode("latin-1")]
        return any(placeholders(text, self.name) for text in texts)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Route:
        body = data.get("body")
        return cls(
            name=str(data["name"]),
            method=str(data.get("method", "GET")),
            target=str(data.get("target", "/")),
            headers={str(k): str(v) for k, v in (data.get("headers") or {}).items()},
            body=body.encode("latin-1") if isinstance(body, str) else None,
            weight=float(data.get("weight", 1.0)),
            data={str(k): (tuple(str(x) for x in v[0]), str(v[1])) for k, v in (data.get("data") or {}).items()},
            secret_data=tuple(str(n) for n in data.get("secret_data") or ()),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "target": self.target,
            "headers": dict(self.headers),
            "body": self.body.decode("latin-1") if self.body is not None else None,
            "weight": self.weight,
            "data": {k: [list(values), order] for k, (values, order) in self.data.items()},
            "secret_data": list(self.secret_data),
        }


def _finite(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _values(route: str, key: object, raw: object) -> Values:
    if not isinstance(key, str) or not _NAME.match(key) or key in BUILTINS:
        raise ValueError(
            f"route {route!r}: data key {key!r} must be a placeholder name (letters, digits, _) other than "
            f"{' and '.join(BUILTINS)} (built in)"
        )
    if isinstance(raw, Values):
        return raw
    if isinstance(raw, (list, tuple)) and all(isinstance(v, str) for v in raw):
        return Values(tuple(raw))
    raise ValueError(
        f"route {route!r}: data[{key!r}] must be Values(...), Values.from_csv(path, column) or a list of str"
    )


def _secret_placeholders(text: str, where: str) -> set[str]:
    """The placeholders of a secret header's value; the error, if any, never quotes the value."""
    try:
        return placeholders(text, where)
    except ValueError:
        raise ValueError(
            f"{where} (secret) has a ${{ that is not a placeholder: write ${{name}} (letters, digits, _), or $$ for a $"
        ) from None


def _check_one(request: Request, secret: frozenset[str] = ALWAYS_SECRET) -> None:
    """ValueError naming the route and what is wrong with *request*; *secret*: the secret headers' names,
    lower-cased (their values are never quoted)."""
    if not isinstance(request.method, str) or request.method.upper() not in METHODS:
        raise ValueError(f"Request method={request.method!r} must be one of {', '.join(sorted(METHODS))}")
    if not isinstance(request.path, str) or not request.path.startswith("/"):
        raise ValueError(f"Request path={request.path!r} must be a string starting with '/'")
    name = request.route
    if not isinstance(name, str) or not name or not name.isprintable() or len(name) > MAX_NAME:
        raise ValueError(f"Request name={name!r} must be printable text of 1 to {MAX_NAME} characters")
    if name == "*":
        raise ValueError("Request name='*' is reserved (it stands for every route): give the route another name")
    if not _finite(request.weight) or request.weight <= 0:
        raise ValueError(f"route {name!r}: weight={request.weight!r} must be a finite number > 0")
    headers = request.headers
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValueError(f"route {name!r}: headers must be a mapping of str to str, e.g. {{'Accept': 'text/plain'}}")
    for key, value in headers.items():
        if not _TOKEN.match(key) or "\r" in value or "\n" in value:
            raise ValueError(f"route {name!r}: header {key!r} has a bad name or a line break in its value")
    if request.body is not None and not isinstance(request.body, (str, bytes)):
        raise ValueError(f"route {name!r}: body must be str or bytes (got {type(request.body).__name__})")
    if request.error_rate is not None and (not _finite(request.error_rate) or not 0 <= request.error_rate < 1):
        raise ValueError(f"route {name!r}: error_rate={request.error_rate!r} must be in [0, 1), e.g. 0.001")
    for key in LATENCY_FIELDS:
        bound = getattr(request, key)
        if bound is not None and (not _finite(bound) or bound <= 0):
            raise ValueError(f"route {name!r}: {key}={bound!r} must be a number of milliseconds > 0")
    if not isinstance(request.data, Mapping):
        raise ValueError(f"route {name!r}: data must be a mapping of placeholder name to values")
    data = {key: _values(name, key, raw) for key, raw in request.data.items()}
    in_path = placeholders(request.path, f"route {name!r} path")
    body = request.body.decode("latin-1") if isinstance(request.body, bytes) else request.body or ""
    used = in_path | placeholders(body, f"route {name!r} body")
    for key, value in headers.items():
        read = _secret_placeholders if key.lower() in secret else placeholders
        used |= read(value, f"route {name!r} header {key}")
    missing = sorted(used - set(data) - set(BUILTINS))
    if missing:
        raise ValueError(f"route {name!r}: no data for placeholder(s) {', '.join(missing)}: add data={{...}} for them")
    unused = sorted(set(data) - used)
    if unused:
        raise ValueError(f"route {name!r}: data {', '.join(unused)} fill(s) no placeholder: use them or remove them")
    literal = "".join(p for p in parse_template(request.path, name) if isinstance(p, str))
    if any(c in literal for c in " #\r\n\t"):
        raise ValueError(f"route {name!r}: path={request.path!r} has a space, # or line break: percent-encode it")
    for key, values in data.items():
        bad = " #" if key in in_path else ""
        for value in values.values:
            if any(c in value for c in "\r\n" + bad):
                shown = "<secret>" if values.secret else repr(value)
                raise ValueError(
                    f"route {name!r}: data[{key!r}] ({values.source}) value {shown} has a line break"
                    + (" or a space or # (it is used in the path)" if bad else "")
                    + ": it could split the request"
                )


def check_requests(requests: object, secret_names: Sequence[str] = ()) -> tuple[Request, ...]:
    """*requests* (a list of :class:`Request`, or of dicts of its fields) checked: ValueError says what is wrong.

    *secret_names*: headers, besides Authorization, Proxy-Authorization and Cookie, whose values are secret.
    The secret data of all routes, as JSON, must not pass :data:`MAX_SECRET_DATA`."""
    secret = ALWAYS_SECRET | {n.lower() for n in secret_names if isinstance(n, str)}
    if isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Sequence):
        raise ValueError("must be a list of Request(...), e.g. [Request('GET', '/'), Request('POST', '/cart')]")
    out: list[Request] = []
    for i, item in enumerate(requests):
        if isinstance(item, Mapping):
            try:
                item = Request(**item)
            except TypeError as exc:
                raise ValueError(f"entry {i}: {exc}") from None
        if not isinstance(item, Request):
            raise ValueError(f"entry {i} is a {type(item).__name__}: give Request(...) or a dict of its fields")
        _check_one(item, secret)
        out.append(item)
    if not out:
        raise ValueError("is empty: give at least one Request")
    if len(out) > MAX_ROUTES:
        raise ValueError(f"has {len(out)} requests: at most {MAX_ROUTES} (each is a label value on every series)")
    names = [r.route for r in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"route name(s) {', '.join(map(repr, dupes))} appear twice: give each Request a name=")
    hidden = {r.route: {k: (v.values, v.order) for k, v in r.data.items() if isinstance(v, Values) and v.secret}
              for r in out}  # fmt: skip
    size = len(data_json({route: data for route, data in hidden.items() if data}).encode())  # as workers get them
    if size > MAX_SECRET_DATA:
        raise ValueError(
            f"carries secret data (Values(..., secret=True)) of {size:,} bytes as JSON, more than "
            f"{MAX_SECRET_DATA:,}: they reach each worker at start (a Kubernetes Secret holds at most 1 MiB); "
            "use fewer or shorter values"
        )
    return tuple(out)


class Compiled(NamedTuple):
    """A checked mix in its wire form: the routes a plan carries, and what reaches workers only at start."""

    routes: tuple[Route, ...]
    headers: dict[str, dict[str, str]]  # route name -> its secret headers (routes without any: absent)
    data: dict[str, dict[str, tuple[tuple[str, ...], str]]]  # route name -> placeholder -> (values, order)

    def __repr__(self) -> str:  # the secrets' names, never their values (a traceback's locals show this)
        headers = {k: sorted(v) for k, v in self.headers.items()}
        data = {k: sorted(v) for k, v in self.data.items()}
        return f"Compiled(routes={[r.name for r in self.routes]!r}, headers={headers!r}, data={data!r})"


def compile_routes(requests: Sequence[Request], secret_names: Sequence[str] = ()) -> Compiled:
    """The wire routes of checked *requests*, each route's secret headers and its secret data (by route name).

    A header is secret when it is Authorization, Proxy-Authorization or Cookie, or named in *secret_names*;
    data are secret when given as ``Values(..., secret=True)`` (:func:`check_requests` caps their size).
    """
    secret_set = ALWAYS_SECRET | {n.lower() for n in secret_names}
    routes: list[Route] = []
    headers: dict[str, dict[str, str]] = {}
    secret_data: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {}
    for request in requests:
        public = {k: v for k, v in request.headers.items() if k.lower() not in secret_set}
        secret = {k: v for k, v in request.headers.items() if k.lower() in secret_set}
        if secret:
            headers[request.route] = secret
        body = request.body.encode() if isinstance(request.body, str) else request.body
        data = {k: _values(request.route, k, v) for k, v in request.data.items()}
        hidden = {k: (v.values, v.order) for k, v in data.items() if v.secret}
        if hidden:
            secret_data[request.route] = hidden
        routes.append(
            Route(
                name=request.route,
                method=request.method.upper(),
                target=request.path,
                headers=public,
                body=body,
                weight=float(request.weight),
                data={k: (v.values, v.order) for k, v in data.items() if not v.secret},
                secret_data=tuple(hidden),
            )
        )
    return Compiled(tuple(routes), headers, secret_data)


def data_json(data: Mapping[str, Mapping[str, tuple[Sequence[str], str]]]) -> str:
    """Secret data as a worker reads them at start: ``{route: {name: [[values...], order]}}``."""
    return json.dumps({r: {k: [list(v), o] for k, (v, o) in d.items()} for r, d in data.items()}, sort_keys=True)


def read_data_json(text: str) -> dict[str, dict[str, tuple[tuple[str, ...], str]]]:
    """:func:`data_json`'s text read back; ValueError (never quoting a value) when it is not of that shape."""
    try:
        raw = json.loads(text or "{}")
    except ValueError:
        raw = None
    out: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {}
    bad = ValueError("the secret data must be a JSON object {route: {name: [[values...], order]}} of strings")
    if not isinstance(raw, dict):
        raise bad
    for route, entries in raw.items():
        if not isinstance(entries, dict):
            raise bad
        out[route] = {}
        for name, pair in entries.items():
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or pair[1] not in ORDERS
                or not isinstance(pair[0], list)
                or not pair[0]
                or not all(isinstance(v, str) for v in pair[0])
            ):
                raise bad
            out[route][name] = (tuple(pair[0]), pair[1])
    return out
