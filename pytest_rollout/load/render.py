"""A plan's traffic mix made ready to send: which route each scheduled request takes, and its bytes.

The k-th request a worker schedules (k = 0, 1, ...; dropped ones included) takes route ``order[k]`` and is
filled in from ``(seed, worker index, k)`` alone, so two runs of the same plan send the same route and data for
every scheduled request number, whether or not earlier ones were sent.

The route order is Tijdeman's chairman assignment: after any number n of requests, every route's count is
within 1 of ``n * weight / sum(weights)`` (a greedy "most behind first" order is not: it strays past 1 with
eight routes or more). With integer weights the order repeats every ``sum(weights)`` requests and is worked
out once; otherwise it is worked out as it goes.

A static route (no placeholder) is rendered once; a templated one is a list of literal byte pieces with the
values put in between: one value per placeholder per request (``${user}`` twice in one request is one user).
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from math import lcm
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pytest_rollout.load.mix import DEFAULT_PORTS, SKIPPED_HEADERS, parse_template

if TYPE_CHECKING:
    from pytest_rollout.load.mix import Route

__all__ = ["CompiledMix", "route_order"]

#: Worked out once and repeated when the integer weights sum to at most this; else worked out as it goes.
PERIOD_MAX = 20_000
_M = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _integer_weights(weights: Sequence[float]) -> list[int]:
    exact = [Fraction(repr(w)) for w in weights]  # 0.05 as written (1/20), not as the float 0.05 is stored
    scale = lcm(*(f.denominator for f in exact))
    return [int(f * scale) for f in exact]


def _tijdeman(weights: Sequence[int]) -> Iterator[int]:
    """Tijdeman's chairman assignment over integer *weights*: every prefix within 1 - 1/(2k-2) of its shares."""
    k = len(weights)
    if k == 1:
        yield from itertools.repeat(0)
        return
    total = sum(weights)
    m = 2 * k - 2
    counts = [0] * k
    t = 0
    while True:
        t += 1
        best = -1
        best_num = best_den = 0
        for i, w in enumerate(weights):
            if (t * w - counts[i] * total) * m >= total:  # due: t*p_i - c_i >= 1/(2k-2)
                num = counts[i] * m + m - 1  # the next unit's deadline is num / (m * w) (times total)
                if best < 0 or num * best_den < best_num * w:
                    best, best_num, best_den = i, num, w
        counts[best] += 1
        yield best


def route_order(weights: Sequence[float]) -> Iterator[int]:
    """The route of each scheduled request, in turn (see the module's doc)."""
    ints = _integer_weights(weights)
    if len(ints) == 1:
        return itertools.repeat(0)
    total = sum(ints)
    if total <= PERIOD_MAX:
        return itertools.cycle(bytes(itertools.islice(_tijdeman(ints), total)))
    return _tijdeman(ints)


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a well-mixed 64-bit value from *x*."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M
    return x ^ (x >> 31)


Slot = Callable[[int, int], bytes]  # (k: the worker's request number, j: the route's own) -> value


class _Slots:
    """The value of each placeholder for request number k of worker *index* of *size*, from *seed*."""

    def __init__(self, seed: int, index: int, size: int, route: str) -> None:
        self.seed, self.index, self.size, self.route = seed, index, size, route

    def _base(self, name: str) -> int:
        salt = zlib.crc32(f"{self.route}\0{name}".encode())
        return _mix64((self.seed * 0x100000001B3 + self.index * _GOLDEN + salt) & _M)

    def make(self, name: str, data: Mapping[str, tuple[tuple[str, ...], str]]) -> Slot:
        index, size = self.index, self.size
        if name == "seq":
            return lambda k, j: b"%d" % (k * size + index)
        base = self._base(name)
        if name == "uuid":
            return _uuids(base)
        values, order = data[name]
        encoded = [v.encode() for v in values]
        count = len(encoded)
        # by the route's own count j, not the worker's k: a route sees only the k its share gives it, and those
        # repeat with the route order's period, so values picked by k would skip most of a list
        if order == "cycle":  # in turn over the whole fleet: the route's n-th request in the run takes value n
            return lambda k, j: encoded[(j * size + index) % count]
        # at random: the route's j-th request takes the j-th of a table drawn once from the seed (the table repeats
        # every len(table) requests of this worker and route, at least twice the values: one lookup a request)
        size_ = DRAWS
        while size_ < 2 * count and size_ < MAX_DRAWS:
            size_ *= 2
        table = random.Random(base).choices(encoded, k=size_)
        mask = size_ - 1
        return lambda k, j: table[j & mask]


#: How many random draws a placeholder's table holds at least, and at most (powers of two); the route's j-th
#: request takes draw j mod the table's length.
DRAWS = 1 << 14
MAX_DRAWS = 1 << 18


def _draws(base: int, n: int) -> list[int]:
    """*n* well-spread 64-bit values from *base* (splitmix64), worked out once when the mix is compiled."""
    return [_mix64((base + i * _GOLDEN) & _M) for i in range(n)]


def _uuids(base: int) -> Slot:
    """Version 4 UUIDs, unique for each request number k below 2**48: random bits from *base* (a table of
    1,024 prefixes, varied as k grows), and the last 48 bits a bijection of k, so no two requests share one."""
    draws = _draws(base, 2048)
    prefixes = []
    for a, b in zip(draws[::2], draws[1::2], strict=True):
        h = b"%016x%016x" % (a, b)
        variant = b"89ab"[b & 3 : (b & 3) + 1]  # RFC 9562: the variant's two bits, then the version nibble 4
        prefixes.append(b"%s-%s-4%s-%s%s-" % (h[:8], h[8:12], h[13:16], variant, h[17:20]))
    odd = (_mix64(base) | 1) & _M48
    return lambda k, j: b"%s%012x" % (prefixes[((k >> 10) ^ k) & 1023], (k * odd) & _M48)


_M48 = (1 << 48) - 1


def _pieces(text: str, names: list[str], where: str) -> list[bytes | int]:
    """*text* as literal bytes and indices into *names* (each placeholder once)."""
    out: list[bytes | int] = []
    for part in parse_template(text, where):
        if isinstance(part, tuple):
            if part[0] not in names:
                names.append(part[0])
            out.append(names.index(part[0]))
        elif out and isinstance(out[-1], bytes):
            out[-1] += part.encode("latin-1")
        else:
            out.append(part.encode("latin-1"))
    return out


def _join(pieces: list[bytes | int], vals: list[bytes]) -> bytes:
    return b"".join([vals[p] if p.__class__ is int else p for p in pieces])  # type: ignore[index,misc]


class _Route:
    """One route compiled: its placeholders' slots, and pieces for each engine."""

    def __init__(self, route: Route, host: str, slots: _Slots, extra_headers: Mapping[str, str]) -> None:
        self.route = route
        self.names: list[str] = []
        headers = {**route.headers, **extra_headers}
        self.target = _pieces(route.target, self.names, route.name)
        self.headers = [
            (k, _pieces(v, self.names, route.name)) for k, v in headers.items() if k.lower() not in SKIPPED_HEADERS
        ]
        self.body = _pieces((route.body or b"").decode("latin-1"), self.names, route.name)
        self.slots = [slots.make(name, route.data) for name in self.names]
        # the fast engine's request: head pieces, then Content-Length, then the body
        head: list[bytes | int] = [f"{route.method} ".encode(), *self.target, f" HTTP/1.1\r\nHost: {host}\r\n".encode()]
        for key, value in self.headers:
            head += [f"{key}: ".encode(), *value, b"\r\n"]
        if "user-agent" not in {k.lower() for k in headers}:
            head.append(b"User-Agent: pytest-rollout\r\n")
        self.length = bool(route.body) or route.method in ("POST", "PUT", "PATCH")
        self.head = _merge(head)
        self.static = not self.names
        tail: list[bytes | int] = [b"Content-Length: ", -2, b"\r\n\r\n", -1] if self.length else [b"\r\n", -1]
        self.pieces = [*self.head, *tail]
        self.head_fmt, self.head_idx = _format(self.pieces)
        self.body_fmt, self.body_idx = _format(self.body)
        self.body_static = not self.body_idx

    def values(self, k: int, j: int) -> list[bytes]:
        return [slot(k, j) for slot in self.slots]

    def wire(self, k: int, j: int) -> bytes:
        vals = [slot(k, j) for slot in self.slots]
        body = self.body_fmt if self.body_static else self.body_fmt % tuple([vals[i] for i in self.body_idx])
        vals.append(b"%d" % len(body))  # -2: the body's length, -1: the body
        vals.append(body)
        return self.head_fmt % tuple([vals[i] for i in self.head_idx])

    def fast(self) -> Callable[[int, int], bytes]:
        """:meth:`wire` as a closure specialised for this route, for the hot path: a static body's length and bytes
        are in the format already, and one or two placeholders are read without building a list."""
        if not self.body_static:
            return self._fast_templated_body()
        body = self.body_fmt
        fmt = b""
        slots = []
        for piece in self.pieces:
            if isinstance(piece, bytes):
                fmt += _escape(piece)
            elif piece >= 0:
                fmt += b"%s"
                slots.append(self.slots[piece])
            else:  # -2: the body's length, -1: the body
                fmt += b"%d" % len(body) if piece == -2 else _escape(body)
        if len(slots) == 1:
            (a,) = slots
            return lambda k, j: fmt % a(k, j)
        if len(slots) == 2:
            a, b = slots
            return lambda k, j: fmt % (a(k, j), b(k, j))
        return lambda k, j: fmt % tuple([slot(k, j) for slot in slots])

    def _fast_templated_body(self) -> Callable[[int, int], bytes]:
        """:meth:`fast` for a body with placeholders: each value worked out once, the body formatted, then the
        request around it (the body's length, then the body, its last two arguments)."""
        slots, body_fmt, body_idx = self.slots, self.body_fmt, self.body_idx
        head_fmt = b""
        head_idx: list[int] = []
        for piece in self.pieces:
            if isinstance(piece, bytes):
                head_fmt += _escape(piece)
            else:
                head_fmt += b"%d" if piece == -2 else b"%s"
                head_idx.append(piece)
        if head_idx[-2:] != [-2, -1] or any(i < 0 for i in head_idx[:-2]):
            return self.wire  # not the shape every route with a body is compiled to
        head_only = head_idx[:-2]

        def wire(k: int, j: int) -> bytes:
            vals = [slot(k, j) for slot in slots]
            body = body_fmt % tuple([vals[i] for i in body_idx])
            return head_fmt % (*[vals[i] for i in head_only], len(body), body)

        return wire


def _escape(data: bytes) -> bytes:
    """*data* as it must stand in a %-format to come out unchanged."""
    return data.replace(b"%", b"%%")


def _format(pieces: list[bytes | int]) -> tuple[bytes, tuple[int, ...]]:
    """*pieces* as a %-format and the index of the value each %s takes (a literal % doubled)."""
    fmt: list[bytes] = []
    index: list[int] = []
    for piece in pieces:
        if isinstance(piece, int):
            fmt.append(b"%s")
            index.append(piece)
        else:
            fmt.append(piece.replace(b"%", b"%%"))
    if not index:
        return b"".join(fmt).replace(b"%%", b"%"), ()
    return b"".join(fmt), tuple(index)


def _merge(pieces: list[bytes | int]) -> list[bytes | int]:
    out: list[bytes | int] = []
    for piece in pieces:
        if isinstance(piece, bytes) and out and isinstance(out[-1], bytes):
            out[-1] += piece
        else:
            out.append(piece)
    return out


class CompiledMix:
    """A plan's routes ready to send, for worker *index* of *size*."""

    def __init__(
        self,
        routes: Sequence[Route],
        url: str,
        seed: int = 0,
        worker: tuple[int, int] = (0, 1),
        extra_headers: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        port = parts.port or DEFAULT_PORTS.get(scheme, 80)
        self.origin = f"{scheme}://{host}:{port}"
        host_header = host if port == DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
        index, size = worker
        extra = extra_headers or {}
        self.routes = list(routes)
        self.names = [r.name for r in routes]
        self.compiled = [
            _Route(r, host_header, _Slots(seed, index, size, r.name), extra.get(r.name, {})) for r in routes
        ]
        #: the fast engine's bytes of each static route (None: rendered per request by render[i])
        self.static: list[bytes | None] = [c.wire(0, 0) if c.static else None for c in self.compiled]
        self.render: list[Callable[[int, int], bytes]] = [c.fast() for c in self.compiled]
        self.methods = [r.method for r in routes]
        self.weights = [r.weight for r in routes]

    def order(self) -> Iterator[int]:
        return route_order(self.weights)

    def wire(self, route: int, k: int, j: int | None = None) -> bytes:
        """The fast engine's bytes of the worker's request number *k*, the *j*-th on *route* (*j* defaults to
        *k*, as in a one-route mix)."""
        static = self.static[route]
        return static if static is not None else self.render[route](k, k if j is None else j)

    def parts(self, route: int, k: int, j: int | None = None) -> tuple[str, str, dict[str, str], bytes | None]:
        """``(method, url, headers, body)`` of request number *k*, the *j*-th on *route*, for the aiohttp engine."""
        c = self.compiled[route]
        vals = c.values(k, k if j is None else j)
        url = self.origin + _join(c.target, vals).decode()
        headers = {k_: _join(v, vals).decode("latin-1") for k_, v in c.headers}
        body = _join(c.body, vals) if c.route.body is not None else None
        return c.route.method, url, headers, body
