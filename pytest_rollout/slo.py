"""The SLO a test declares with ``@pytest.mark.slo(...)``: parsing and validation.

Pure logic, but for reading the ``tls_ca`` file. The plugin parses every marker at collection time, so a
bad argument is a usage error before anything starts.
"""

from __future__ import annotations

import math
import operator
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from string import Template
from typing import Any

from pytest_rollout.errors import SLOSpecError
from pytest_rollout.load.mix import ALWAYS_SECRET, METHODS, Request
from pytest_rollout.traffic import parse_traffic

__all__ = ["LATENCY_KEYS", "PHASES", "Check", "SLOSpec", "parse_duration", "parse_risk", "parse_slo", "quantile_name"]

#: The phases of a run, in order.
PHASES: tuple[str, ...] = ("ramp", "baseline", "upgrade", "after")

#: Latency bound keywords and the quantile each one bounds.
LATENCY_KEYS: dict[str, float] = {
    "p50_ms": 0.50,
    "p90_ms": 0.90,
    "p95_ms": 0.95,
    "p99_ms": 0.99,
    "p999_ms": 0.999,
}


def quantile_name(q: float) -> str:
    """``"99"`` for 0.99, ``"999"`` for 0.999: the digits in ``p99`` and in ``p999_ms``."""
    return f"{q * 100:g}".replace(".", "")


DEFAULT_ERROR_RATE = 0.001
DEFAULT_MIN_LOAD = 0.95
DEFAULT_RAMP_S = 5.0
DEFAULT_HOLD_S = 10.0
DEFAULT_TIMEOUT_S = 5.0
#: The run's false-fail risk unless the marker or ini ``rollout_risk`` says otherwise (see judge/risk.py).
DEFAULT_RISK = 0.01

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object, name: str = "duration") -> float:
    """Return *value* in seconds.

    Accepts a non-negative number of seconds, or a string made of
    ``<number><unit>`` parts with units ``ms``, ``s``, ``m``, ``h``
    (``"30s"``, ``"5m"``, ``"1m30s"``, ``"250ms"``). A bare numeric string is
    seconds.
    """
    if isinstance(value, bool):
        raise SLOSpecError(f"{name}={value!r} is not a duration: give seconds or a string like '30s'", name)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            pos = 0
            seconds = 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise SLOSpecError(
                    f"{name}={value!r} is not a duration: use seconds (30) or a string like '30s', '5m', '1m30s', '250ms'",
                    name,
                ) from None
    else:
        raise SLOSpecError(
            f"{name}={value!r} is not a duration: give seconds or a string like '30s' (got {type(value).__name__})",
            name,
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise SLOSpecError(f"{name}={value!r} must be a finite, non-negative duration", name)
    return seconds


_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
_PLACEHOLDERS = frozenset({"run", "phase", "window"})
_CHECK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Check:
    """A user's PromQL check, judged per phase: ``expr op bound``.

    ``expr`` may use ``$run`` (this run's ``run`` label, carried by the fleet's
    and the load balancer's series), ``$phase`` (the phase's name) and
    ``$window`` (the phase's length as a PromQL range, e.g. ``12500ms``, but
    never less than four scrape intervals, so that ``rate()`` and
    ``increase()`` always have two samples even over a short upgrade); it is
    evaluated at the phase's end and must give one value.
    """

    name: str
    expr: str
    op: str
    bound: float

    def render(self, run_id: str, phase: str, window: str) -> str:
        return Template(self.expr).substitute(run=run_id, phase=phase, window=window)

    def holds(self, value: float) -> bool:
        return bool(_OPS[self.op](value, self.bound))


def _parse_checks(value: object) -> tuple[Check, ...]:
    if not isinstance(value, Mapping):
        raise SLOSpecError(
            "checks must map a name to (promql, operator, bound), e.g. "
            "checks={'lb_5xx': ('sum(increase(haproxy_backend_http_responses_total{code=\"5xx\",run=\"$run\"}[$window]))', '<=', 0)}",
            "checks",
        )
    out = []
    for name, spec in value.items():
        if not isinstance(name, str) or not _CHECK_NAME.fullmatch(name) or name in _KNOWN or name in ("rps", "load"):
            raise SLOSpecError(
                f"checks: {name!r} is not a usable check name (an identifier not used by the marker)", "checks"
            )
        if not isinstance(spec, (tuple, list)) or len(spec) != 3:
            raise SLOSpecError(f"checks[{name!r}] must be (promql, operator, bound), got {spec!r}", "checks")
        expr, op, bound = spec
        if not isinstance(expr, str) or not expr.strip():
            raise SLOSpecError(f"checks[{name!r}]: the PromQL expression must be a non-empty string", "checks")
        if op not in _OPS:
            raise SLOSpecError(f"checks[{name!r}]: operator {op!r} must be one of {', '.join(_OPS)}", "checks")
        try:
            unknown = sorted(set(Template(expr).get_identifiers()) - _PLACEHOLDERS)
            valid = Template(expr).is_valid()
        except (ValueError, TypeError):
            unknown, valid = [], False
        if not valid or unknown:
            raise SLOSpecError(
                f"checks[{name!r}]: unknown placeholder {('$' + unknown[0]) if unknown else 'syntax'} in {expr!r}; "
                "use $run, $phase, $window (write $$ for a literal $)",
                "checks",
            )
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise SLOSpecError(f"checks[{name!r}]: bound={bound!r} must be a finite number", "checks")
        out.append(Check(name=name, expr=expr, op=op, bound=float(bound)))
    return tuple(out)


@dataclass(frozen=True)
class SLOSpec:
    """A validated ``slo`` marker.

    ``rps`` is the rate the marker declares; the rate actually requested is
    ``rps * rps_scale`` (see :attr:`requested_rps`).
    """

    rps: float
    error_rate: float = DEFAULT_ERROR_RATE
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    ramp_s: float = DEFAULT_RAMP_S
    hold_s: float = DEFAULT_HOLD_S
    after_s: float = DEFAULT_HOLD_S
    path: str = "/"
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    secret_headers: tuple[str, ...] = ()  # names whose values reach workers only at start (Authorization etc. always)
    body: bytes | None = None
    min_load: float = DEFAULT_MIN_LOAD
    timeout_s: float = DEFAULT_TIMEOUT_S
    rps_scale: float = 1.0
    checks: tuple[Check, ...] = ()
    availability: float | None = None  # objective over the whole run: the error budget is 1 - availability
    regression: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_REGRESSION))
    judge_ramp: bool = False  # the ramp is warm-up: its load is checked, its errors and latency judged only if asked
    abort_on_breach: bool = True  # stop the run as soon as live data prove an SLO broken
    risk: float | None = None  # the run's false-fail risk (None: the ini value rollout_risk, else DEFAULT_RISK)
    client: str = "retrying"  # the clients the fleet stands for: "retrying" (as browsers, Go, curl) or "strict"
    end_when_held: float | None = None  # end baseline/after once this long and proven held (judge/early.py)
    #: The traffic mix (issue 23): every route the fleet sends, with its own bounds where it gives them. Empty
    #: until parse_slo fills it in: then one Request made of path/method/headers/body when traffic= is not given.
    routes: tuple[Request, ...] = ()
    seed: int | None = None  # the per-request data's seed (None: the run takes a stable hash of the test's node id)
    #: https:// targets: check the server's certificate (False: a throwaway test certificate, encrypted unchecked)
    tls_verify: bool = True
    tls_ca: str | None = None  # the CA file the fleet trusts instead of the system's, as found
    tls_ca_pem: str | None = None  # its text (PEM certificates: not secret)

    def __repr__(self) -> str:  # the values of secret headers (secret_headers, Authorization, ...) are never printed
        secret = ALWAYS_SECRET | {name.lower() for name in self.secret_headers}
        shown = []
        for f in fields(self):
            value: Any = getattr(self, f.name)
            if f.name == "headers":
                value = {k: "<secret>" if k.lower() in secret else v for k, v in value.items()}
            if f.name == "routes":
                items = [r.shown(secret) for r in value]
                shown.append(f"routes=({', '.join(items)}{',' if len(items) == 1 else ''})")  # as a tuple's repr
                continue
            shown.append(f"{f.name}={value!r}")
        return f"SLOSpec({', '.join(shown)})"

    @property
    def false_fail_risk(self) -> float:
        """The chance, at most, that a release meeting every bound is shown broken in a run."""
        return DEFAULT_RISK if self.risk is None else self.risk

    @property
    def requested_rps(self) -> float:
        """The arrival rate the fleet must hold: ``rps * rps_scale``."""
        return self.rps * self.rps_scale

    def latency_bounds(self) -> list[tuple[str, float, float]]:
        """``(key, quantile, bound_ms)`` for each declared latency bound, lowest quantile first."""
        return sorted(
            ((key, LATENCY_KEYS[key], bound) for key, bound in self.latency_ms.items()),
            key=lambda item: item[1],
        )

    def scaled(self, factor: float) -> SLOSpec:
        """A copy whose requested rate is multiplied by *factor*."""
        return replace(self, rps_scale=factor)


_KNOWN = frozenset(
    {"rps", "error_rate", "hold", "ramp", "after", "path", "method", "headers", "body", "min_load", "timeout", "checks"}
    | {"secret_headers", "traffic", "seed", "tls_ca", "tls_verify"}
    | {"availability", "regression", "judge_ramp", "abort_on_breach", "risk", "client", "end_when_held"}
    | set(LATENCY_KEYS)
)

#: Margins a run compared with a baseline (``--rollout-compare``) may worsen by, unless the marker says otherwise:
#: latency quantiles relative (0.10: 10% slower), error_rate absolute (0.001: 0.1 percentage points more).
DEFAULT_REGRESSION: dict[str, float] = {"p99_ms": 0.10, "error_rate": 0.001}


def _parse_regression(value: object) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise SLOSpecError(
            f"regression={value!r} must map an SLO to its margin, e.g. {{'p99_ms': '10%', 'error_rate': 0.001}}",
            "regression",
        )
    out: dict[str, float] = {}
    for key, raw in value.items():
        if key not in LATENCY_KEYS and key != "error_rate":
            raise SLOSpecError(
                f"regression[{key!r}]: compare one of {', '.join([*LATENCY_KEYS, 'error_rate'])}", "regression"
            )
        if isinstance(raw, str) and raw.strip().endswith("%") and key != "error_rate":
            try:
                margin = float(raw.strip()[:-1].lstrip("+")) / 100.0
            except ValueError:
                raise SLOSpecError(
                    f"regression[{key!r}]={raw!r} is not a percentage like '10%'", "regression"
                ) from None
        else:
            margin = _number(f"regression[{key!r}]", raw)
        if margin < 0 or not math.isfinite(margin):
            raise SLOSpecError(f"regression[{key!r}]={raw!r} must be a margin >= 0", "regression")
        out[key] = margin
    return out


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SLOSpecError(f"{name}={value!r} must be a number (got {type(value).__name__})", name)
    number = float(value)
    if not math.isfinite(number):
        raise SLOSpecError(f"{name}={value!r} must be finite", name)
    return number


CLIENTS = ("retrying", "strict")  # client=: how the fleet's clients treat a reused connection closed unanswered


def parse_risk(value: object, name: str) -> float:
    """A false-fail risk: a fraction in (0, 0.5], e.g. 0.01 (one run in a hundred)."""
    risk = _number(name, value)
    if not 0 < risk <= 0.5:
        raise SLOSpecError(
            f"{name}={value!r} must be in (0, 0.5]: the chance, at most, that a release meeting every bound "
            "fails the run, e.g. 0.01",
            name,
        )
    return risk


def _parse_tls(values: Mapping[str, Any], base_dir: str | None) -> tuple[bool, str | None, str | None]:
    """``(tls_verify, tls_ca's path, its PEM)``; a relative tls_ca is looked for beside the test file, else in cwd."""
    verify, ca = values.get("tls_verify", True), values.get("tls_ca")
    if not isinstance(verify, bool):
        raise SLOSpecError(f"tls_verify={verify!r} must be True or False", "tls_verify")
    if ca is None:
        return verify, None, None
    if not isinstance(ca, (str, os.PathLike)) or not os.fspath(ca):
        raise SLOSpecError(f"tls_ca={ca!r} must be the path of a CA certificate file (PEM), e.g. 'ca.pem'", "tls_ca")
    if not verify:
        raise SLOSpecError("tls_ca= and tls_verify=False contradict each other: tls_ca trusts a CA to check the "
                           "server's certificate, tls_verify=False checks nothing; give one", "tls_ca")  # fmt: skip
    path = os.fspath(ca)
    if not os.path.isabs(path) and base_dir is not None and os.path.isfile(os.path.join(base_dir, path)):
        path = os.path.join(base_dir, path)
    try:
        with open(path, encoding="ascii") as fh:
            pem = fh.read(1_000_000)
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise ValueError("no -----BEGIN CERTIFICATE----- block")
        ssl.create_default_context(cadata=pem)
    except (ValueError, ssl.SSLError) as exc:  # first: an SSLError is an OSError; UnicodeDecodeError a ValueError
        raise SLOSpecError(f"tls_ca={ca!r}: {path} holds no PEM certificate ({exc}); give the CA's certificate "
                           "in PEM form", "tls_ca") from None  # fmt: skip
    except OSError as exc:
        where = f" (looked beside the test file, in {base_dir}, then in the current directory)" if base_dir else ""
        raise SLOSpecError(f"tls_ca={ca!r}: cannot read {path}: {exc.strerror}{where}", "tls_ca") from None
    return verify, path, pem


def parse_slo(args: tuple[Any, ...], kwargs: Mapping[str, Any], *, base_dir: str | None = None) -> SLOSpec:
    """Validate the arguments of one ``slo`` marker and build its :class:`SLOSpec`.

    *base_dir*: the test file's directory, where a relative ``tls_ca`` is looked for first.
    Raises :class:`SLOSpecError` naming the offending argument.
    """
    if len(args) > 1:
        raise SLOSpecError(f"takes one positional argument (rps), got {len(args)}: pass the others by keyword", None)
    values = dict(kwargs)
    if args:
        if "rps" in values:
            raise SLOSpecError("rps given both by position and by keyword", "rps")
        values["rps"] = args[0]
    unknown = sorted(set(values) - _KNOWN)
    if unknown:
        raise SLOSpecError(
            f"unknown argument {unknown[0]!r}; known arguments are: {', '.join(sorted(_KNOWN))}", unknown[0]
        )
    if "rps" not in values:
        raise SLOSpecError("rps is required: the requests per second to hold, e.g. slo(rps=1000)", "rps")

    rps = _number("rps", values["rps"])
    if rps <= 0:
        raise SLOSpecError(f"rps={values['rps']!r} must be greater than 0", "rps")

    error_rate = _number("error_rate", values.get("error_rate", DEFAULT_ERROR_RATE))
    if not 0 <= error_rate < 1:
        why = "must be in [0, 1): a fraction of requests, e.g. 0.001 for 0.1%"
        raise SLOSpecError(f"error_rate={values['error_rate']!r} {why}", "error_rate")

    latency: dict[str, float] = {}
    for key in LATENCY_KEYS:
        if key in values and values[key] is not None:
            bound = _number(key, values[key])
            if bound <= 0:
                raise SLOSpecError(f"{key}={values[key]!r} must be greater than 0 milliseconds", key)
            latency[key] = bound

    ramp_s = parse_duration(values.get("ramp", DEFAULT_RAMP_S), "ramp")
    hold_s = parse_duration(values.get("hold", DEFAULT_HOLD_S), "hold")
    after_s = parse_duration(values["after"], "after") if "after" in values else hold_s
    for name, value, what in (("hold", hold_s, "baseline phase"), ("after", after_s, "phase after the upgrade")):
        if value <= 0:
            raise SLOSpecError(f"{name}={values[name]!r} must be longer than 0: it is the steady {what}", name)
    timeout_s = parse_duration(values.get("timeout", DEFAULT_TIMEOUT_S), "timeout")
    early = values.get("end_when_held")
    early_s = None if early is None else parse_duration(early, "end_when_held")
    for name, longer in (("timeout", timeout_s), ("end_when_held", early_s)):
        if longer is not None and longer <= 0:
            raise SLOSpecError(f"{name}={values[name]!r} must be longer than 0", name)

    path = values.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/"):
        raise SLOSpecError(f"path={path!r} must be a string starting with '/'", "path")

    method = values.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise SLOSpecError(f"method={method!r} must be one of {', '.join(sorted(METHODS))}", "method")

    headers = values.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise SLOSpecError("headers must be a mapping of str to str, e.g. {'Accept': 'text/plain'}", "headers")
    secret_headers = values.get("secret_headers") or ()
    if not isinstance(secret_headers, (list, tuple, set, frozenset)) or not all(
        isinstance(n, str) and n for n in secret_headers
    ):
        raise SLOSpecError(
            f"secret_headers={secret_headers!r} must be a list of header names, e.g. ['X-Api-Key'] "
            "(Authorization, Proxy-Authorization and Cookie are always secret)",
            "secret_headers",
        )

    body = values.get("body")
    if isinstance(body, str):
        body = body.encode()
    if body is not None and not isinstance(body, bytes):
        raise SLOSpecError(f"body must be str or bytes (got {type(body).__name__})", "body")

    min_load = _number("min_load", values.get("min_load", DEFAULT_MIN_LOAD))
    if not 0 < min_load <= 1:
        raise SLOSpecError(
            f"min_load={values['min_load']!r} must be in (0, 1]: the fraction of rps the fleet must hold", "min_load"
        )

    checks = _parse_checks(values["checks"]) if values.get("checks") is not None else ()

    availability = None
    if values.get("availability") is not None:
        availability = _number("availability", values["availability"])
        if not 0 < availability < 1:
            raise SLOSpecError(
                f"availability={values['availability']!r} must be in (0, 1): the fraction of requests that must "
                "succeed over the run, e.g. 0.999",
                "availability",
            )
    regression = (
        _parse_regression(values["regression"]) if values.get("regression") is not None else dict(DEFAULT_REGRESSION)
    )

    flags: dict[str, bool] = {}
    for name, default in (("judge_ramp", False), ("abort_on_breach", True)):
        flag = values.get(name, default)
        if not isinstance(flag, bool):
            raise SLOSpecError(f"{name}={flag!r} must be True or False", name)
        flags[name] = flag

    risk = None
    if values.get("risk") is not None:
        risk = parse_risk(values["risk"], "risk")
    client = values.get("client", "retrying")
    if client not in CLIENTS:
        why = "is sent once more, as browsers, Go, urllib3 and curl do) or 'strict' (never sent twice)"
        raise SLOSpecError(f"client={client!r} must be 'retrying' (an idempotent request whose reused keep-alive "
                           f"connection closed before any byte of the answer {why}", "client")  # fmt: skip

    routes = parse_traffic(values, method.upper(), path, dict(headers), body, tuple(secret_headers))
    named = {k.lower() for route in routes for k in route.headers}
    unknown = [n for n in secret_headers if n.lower() not in named]
    if unknown:
        where = "no Request in traffic= sets" if "traffic" in values else "headers= does not set"
        raise SLOSpecError(
            f"secret_headers names {', '.join(unknown)}, which {where}: name headers that are sent",
            "secret_headers",
        )
    seed = values.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise SLOSpecError(f"seed={seed!r} must be an int: the same seed sends the same per-request data", "seed")
    tls_verify, tls_ca, tls_ca_pem = _parse_tls(values, base_dir)

    return SLOSpec(
        rps=rps,
        routes=routes,
        seed=seed,
        tls_verify=tls_verify,
        tls_ca=tls_ca,
        tls_ca_pem=tls_ca_pem,
        risk=risk,
        client=client,
        end_when_held=early_s,
        judge_ramp=flags["judge_ramp"],
        abort_on_breach=flags["abort_on_breach"],
        checks=checks,
        error_rate=error_rate,
        latency_ms=latency,
        ramp_s=ramp_s,
        hold_s=hold_s,
        after_s=after_s,
        path=path,
        method=method.upper(),
        headers=dict(headers),
        secret_headers=tuple(secret_headers),
        body=body,
        min_load=min_load,
        timeout_s=timeout_s,
        availability=availability,
        regression=regression,
    )
