"""What a worker is given when it starts, never over its control API: the token, its target, the secret headers
and data.

And the guard that makes every control call show the token (see pytest_rollout.load.protocol)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from pytest_rollout.load import protocol
from pytest_rollout.load.mix import read_data_json
from pytest_rollout.load.protocol import Plan

__all__ = ["Credentials", "guard", "read_credentials"]


@dataclass(frozen=True)
class Credentials:
    """What a worker is given at start and never over its control API: the token, its target, the secret headers."""

    token: str
    target: str  # an origin: see protocol.origin
    secret_headers: dict[str, str] = field(default_factory=dict)  # every route sends these
    route_headers: dict[str, dict[str, str]] = field(default_factory=dict)  # the route they are keyed by sends these
    #: route name -> placeholder -> (values, order): the secret data that route fills its placeholders from
    route_data: dict[str, dict[str, tuple[tuple[str, ...], str]]] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print the token, header values or data
        routes = {k: sorted(v) for k, v in self.route_headers.items()}
        data = {k: sorted(v) for k, v in self.route_data.items()}
        return (
            f"Credentials(target={self.target!r}, secret_headers={sorted(self.secret_headers)!r}, routes={routes!r}, "
            f"data={data!r})"
        )

    def admit(self, plan: Plan) -> Plan:
        """*plan* with the secret headers added to its routes, or ValueError when it aims elsewhere, carries a
        secret, or lacks a route this worker holds secrets for."""
        aimed = protocol.origin(plan.url)
        if aimed != self.target:
            raise ValueError(
                f"the plan aims at {aimed}, but this worker may load only {self.target} "
                "(fixed when it was started: --target)"
            )
        secret = protocol.ALWAYS_SECRET | {name.lower() for name in self.secret_headers}
        for headers in self.route_headers.values():
            secret |= {name.lower() for name in headers}
        carried = sorted({name for route in plan.routes for name in route.headers if name.lower() in secret})
        if carried:
            raise ValueError(
                f"the plan carries secret header(s) {', '.join(carried)}: a worker takes secret headers only when "
                "it starts (environment or --secrets), never in a plan"
            )
        unknown = sorted((set(self.route_headers) | set(self.route_data)) - set(plan.route_names))
        if unknown:
            raise ValueError(
                f"this worker holds secrets for route(s) {', '.join(map(repr, unknown))}, which the plan "
                "does not send: the fleet and the plan must come from the same mix"
            )
        for route in plan.routes:
            held = self.route_data.get(route.name, {})
            if sorted(held) != sorted(route.secret_data) or set(held) & set(route.data):
                raise ValueError(
                    f"route {route.name!r} fills {', '.join(sorted(route.secret_data)) or 'no placeholder'} from "
                    f"secret data, and this worker holds {', '.join(sorted(held)) or 'none'} for it: the fleet and "
                    "the plan must come from the same mix"
                )
        routes = tuple(
            dataclasses.replace(
                route,
                headers={**route.headers, **self.secret_headers, **self.route_headers.get(route.name, {})},
                data={**route.data, **self.route_data.get(route.name, {})},
            )
            for route in plan.routes
        )
        return dataclasses.replace(plan, routes=routes)


def guard(credentials: Credentials) -> Any:
    """aiohttp middleware: every path but the open ones needs the run's token."""
    from aiohttp import web

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path not in protocol.OPEN_PATHS:
            given = request.headers.get(protocol.TOKEN_HEADER)
            if given is None:
                return web.json_response(
                    {"error": f"no {protocol.TOKEN_HEADER} header: this worker obeys only the run that started it"},
                    status=401,
                    headers={"WWW-Authenticate": protocol.TOKEN_HEADER},
                )
            if not protocol.token_matches(given, credentials.token):
                return web.json_response({"error": f"wrong {protocol.TOKEN_HEADER}"}, status=403)
        response: web.StreamResponse = await handler(request)
        return response

    return guard


def _read_json_file(secrets_dir: str, name: str) -> str:
    """The text of *name* in the ``--secrets`` folder, ``{}`` when it is not there."""
    try:
        with open(os.path.join(secrets_dir, name), encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return "{}"
    except OSError as exc:
        raise ValueError(f"--secrets {secrets_dir}: cannot read {name}: {exc.strerror}") from None


def read_credentials(target: str | None, secrets_dir: str | None) -> Credentials:
    """The token, target and secret headers given at start; ValueError naming what is missing or wrong."""
    if not target:
        raise ValueError("--target URL is required: the one origin this worker may load")
    origin = protocol.origin(target)
    if secrets_dir is not None:
        try:
            with open(os.path.join(secrets_dir, protocol.TOKEN_FILE), encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise ValueError(f"--secrets {secrets_dir}: cannot read the token: {exc.strerror}") from None
        raw_headers = _read_json_file(secrets_dir, protocol.HEADERS_FILE)
        raw_data = _read_json_file(secrets_dir, protocol.DATA_FILE)
    else:
        token = os.environ.pop(protocol.TOKEN_ENV, "").strip()  # popped: nothing this process starts inherits it
        raw_headers = os.environ.pop(protocol.HEADERS_ENV, "") or "{}"
        count = os.environ.pop(f"{protocol.DATA_ENV}_PIECES", "0")
        if not count.isdigit():
            raise ValueError(f"${protocol.DATA_ENV}_PIECES={count!r} must be a count of pieces")
        pieces = [os.environ.pop(f"{protocol.DATA_ENV}_{i}", None) for i in range(int(count))]
        if any(piece is None for piece in pieces):
            raise ValueError(f"the secret data come in {count} pieces, and some are missing from the environment")
        raw_data = "".join(p for p in pieces if p is not None) or "{}"
    if not token:
        raise ValueError(
            f"no control token: set ${protocol.TOKEN_ENV} or pass --secrets DIR (a worker never runs without one)"
        )
    try:
        headers = json.loads(raw_headers)
    except ValueError:
        headers = None
    routes: dict[str, dict[str, str]] = {}
    if isinstance(headers, dict) and headers and all(isinstance(v, dict) for v in headers.values()):
        routes = {str(k): v for k, v in headers.items()}  # keyed by route name: see protocol.Aim.headers_json
        headers = routes.pop(protocol.EVERY_ROUTE, {})
    for each in (headers, *routes.values()):
        if not isinstance(each, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in each.items()):
            raise ValueError(  # never echo the value
                "the secret headers must be a JSON object of strings, or an object of such objects keyed by route"
            )
    data = read_data_json(raw_data)
    return Credentials(token=token, target=origin, secret_headers=headers, route_headers=routes, route_data=data)
