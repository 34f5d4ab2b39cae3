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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["LATENCY_FIELDS", "Request", "Values"]

#: A route's own latency bounds, named as the ``slo`` marker names them.
LATENCY_FIELDS: tuple[str, ...] = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms")


@dataclass(frozen=True)
class Values:
    """Values a placeholder takes, one per request: drawn at random (from the run's seed) or in turn."""

    values: tuple[str, ...]
    order: str = "random"  # "random" or "cycle"
    secret: bool = False  # True: the values reach workers only at start, never in a plan, report, log or label
    source: str = "list"  # where they came from, for messages: "list" or "<path>:<column>"

    @classmethod
    def from_csv(cls, path: str, column: str, *, order: str = "random", secret: bool = False) -> Values:
        """The values of *column* (a header name in the first row) of the CSV file at *path*."""
        raise NotImplementedError  # filled in with the mix (issue 23)

    def __repr__(self) -> str:  # a secret's values are never printed
        shown = "<secret>" if self.secret else f"{len(self.values)} values"
        return f"Values({shown}, order={self.order!r}, source={self.source!r})"


@dataclass(frozen=True)
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

    @property
    def route(self) -> str:
        """The route's name: *name*, else ``"METHOD path"``."""
        return self.name if self.name is not None else f"{self.method.upper()} {self.path}"

    def latency_ms(self) -> dict[str, float]:
        """This route's own latency bounds, by marker keyword (``{"p99_ms": 800.0}``)."""
        return {key: float(value) for key in LATENCY_FIELDS if (value := getattr(self, key)) is not None}
