"""The marker's traffic: ``traffic=[Request(...), ...]`` checked, or the single-request arguments as a one-route
mix (sent as written). Pure logic, no I/O; :func:`pytest_rollout.slo.parse_slo` calls it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_rollout.errors import SLOSpecError
from pytest_rollout.load.mix import Request, check_requests

__all__ = ["parse_traffic"]

_SINGLE = ("path", "method", "headers", "body")


def parse_traffic(
    values: Mapping[str, Any],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    secret_names: tuple[str, ...] = (),
) -> tuple[Request, ...]:
    """The mix: ``traffic=`` checked, else one Request made of the single-request arguments. *secret_names*:
    the marker's ``secret_headers`` (their values are never quoted in an error)."""
    if "traffic" not in values:
        # the single request is sent as written: a $ in it is a $, not a placeholder; checked as a mix's are
        one = Request(
            method,
            path.replace("$", "$$"),
            name=f"{method} {path}",
            headers={k: v.replace("$", "$$") for k, v in headers.items()},
            body=None if body is None else body.replace(b"$", b"$$"),
        )
        try:
            return check_requests([one], secret_names)
        except ValueError as exc:
            text = str(exc)
            argument = "path" if "path" in text else "headers" if "header" in text else "method"
            raise SLOSpecError(f"{argument}: {text}", argument) from None
    given = [name for name in _SINGLE if name in values]
    if given:
        raise SLOSpecError(
            f"traffic= and {', '.join(f'{n}=' for n in given)} are exclusive: give every request's "
            f"{'/'.join(_SINGLE)} in its Request(...) within traffic=",
            "traffic",
        )
    try:
        return check_requests(values["traffic"], secret_names)
    except ValueError as exc:
        raise SLOSpecError(f"traffic {exc}", "traffic") from None
