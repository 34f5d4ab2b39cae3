"""The slo marker's arguments: parsing and validation."""

from __future__ import annotations

import pytest

from pytest_rollout.errors import SLOSpecError
from pytest_rollout.load.mix import Request, Values
from pytest_rollout.slo import DEFAULT_ERROR_RATE, DEFAULT_MIN_LOAD, parse_duration, parse_slo


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("2h", 7200.0),
        ("12", 12.0),
        (" 10s ", 10.0),
        (0, 0.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "s", "10x", "5 minutes", "-3s", -1, True, None, [1], "1s2", "nan"])
def test_bad_durations_name_the_argument(value: object) -> None:
    with pytest.raises(SLOSpecError) as info:
        parse_duration(value, "hold")
    assert info.value.argument == "hold"
    assert "hold=" in str(info.value)


def test_defaults() -> None:
    spec = parse_slo((2000,), {})
    assert spec.rps == 2000
    assert spec.error_rate == DEFAULT_ERROR_RATE
    assert spec.min_load == DEFAULT_MIN_LOAD
    assert spec.after_s == spec.hold_s
    assert spec.method == "GET" and spec.path == "/"
    assert spec.latency_bounds() == []


def test_full_marker() -> None:
    spec = parse_slo(
        (),
        dict(
            rps=1_000_000,
            error_rate=0.001,
            p99_ms=250,
            p50_ms=20,
            hold="5m",
            ramp="30s",
            after="1m",
            path="/api",
            method="post",
            headers={"Accept": "text/plain"},
            body="{}",
            min_load=0.9,
            timeout="2s",
        ),
    )
    assert spec.hold_s == 300 and spec.ramp_s == 30 and spec.after_s == 60
    assert spec.method == "POST" and spec.body == b"{}"
    assert parse_slo((), {"rps": 1, "headers": {"X-Key": "v"}, "secret_headers": ["x-key"]}).secret_headers == (
        "x-key",
    )
    assert spec.latency_bounds() == [("p50_ms", 0.5, 20.0), ("p99_ms", 0.99, 250.0)]
    assert spec.scaled(0.01).requested_rps == pytest.approx(10_000)


@pytest.mark.parametrize(
    ("args", "kwargs", "argument", "text"),
    [
        ((), {}, "rps", "rps is required"),
        ((), {"rps": -5}, "rps", "greater than 0"),
        ((), {"rps": 0}, "rps", "greater than 0"),
        ((), {"rps": "fast"}, "rps", "must be a number"),
        ((), {"rps": 10, "error_rate": 1.0}, "error_rate", "[0, 1)"),
        ((), {"rps": 10, "error_rate": -0.1}, "error_rate", "[0, 1)"),
        ((), {"rps": 10, "p99_ms": 0}, "p99_ms", "greater than 0"),
        ((), {"rps": 10, "hold": "forever"}, "hold", "not a duration"),
        ((), {"rps": 10, "hold": 0}, "hold", "longer than 0"),
        ((), {"rps": 10, "p98_ms": 5}, "p98_ms", "unknown argument"),
        ((), {"rps": 10, "path": "api"}, "path", "starting with '/'"),
        ((), {"rps": 10, "method": "FETCH"}, "method", "must be one of"),
        ((), {"rps": 10, "headers": {"a": 1}}, "headers", "str to str"),
        ((), {"rps": 10, "body": 5}, "body", "str or bytes"),
        (
            (),
            {"rps": 10, "headers": {"X-Key": "v"}, "secret_headers": "X-Key"},
            "secret_headers",
            "list of header names",
        ),
        ((), {"rps": 10, "headers": {"X-Key": "v"}, "secret_headers": 5}, "secret_headers", "list of header names"),
        ((), {"rps": 10, "headers": {"X-Key": "v"}, "secret_headers": ["X-Other"]}, "secret_headers", "X-Other"),
        ((), {"rps": 10, "min_load": 1.5}, "min_load", "(0, 1]"),
        ((), {"rps": 10, "client": "browser"}, "client", "'retrying' (an idempotent request"),
        ((10,), {"rps": 10}, "rps", "both by position and by keyword"),
        ((10, 20), {}, None, "one positional argument"),
    ],
)
def test_bad_arguments(args: tuple, kwargs: dict, argument: str | None, text: str) -> None:
    with pytest.raises(SLOSpecError) as info:
        parse_slo(args, kwargs)
    assert info.value.argument == argument
    assert text in str(info.value)


def test_checks_parse_and_render() -> None:
    spec = parse_slo((), {"rps": 10, "checks": {"lb_5xx": ('sum(x{run="$run",phase="$phase"}[$window])', "<=", 0)}})
    (check,) = spec.checks
    assert (check.name, check.op, check.bound) == ("lb_5xx", "<=", 0.0)
    assert check.render("r1", "upgrade", "5000ms") == 'sum(x{run="r1",phase="upgrade"}[5000ms])'
    assert check.holds(0.0) and not check.holds(1.0)


@pytest.mark.parametrize(
    ("checks", "text"),
    [
        ("sum(x)", "checks must map a name to (promql, operator, bound)"),
        ({"a": "sum(x)"}, "must be (promql, operator, bound)"),
        ({"a": ("sum(x)", "~", 1)}, "operator '~' must be one of"),
        ({"a": ("", "<=", 1)}, "non-empty string"),
        ({"a": ("sum(x{run='$runid'})", "<=", 1)}, "unknown placeholder $runid"),
        ({"a": ("sum(x) $", "<=", 1)}, "unknown placeholder syntax"),
        ({"a": ("sum(x)", "<=", "zero")}, "bound='zero' must be a finite number"),
        ({"p99_ms": ("sum(x)", "<=", 1)}, "not a usable check name"),
        ({"bad name": ("sum(x)", "<=", 1)}, "not a usable check name"),
    ],
)
def test_bad_checks(checks: object, text: str) -> None:
    with pytest.raises(SLOSpecError) as info:
        parse_slo((), {"rps": 10, "checks": checks})
    assert info.value.argument == "checks"
    assert text in str(info.value)


def test_availability_and_regression_margins() -> None:
    spec = parse_slo((), {"rps": 10, "availability": 0.999, "regression": {"p99_ms": "15%", "error_rate": 0.002}})
    assert spec.availability == 0.999 and spec.regression == {"p99_ms": 0.15, "error_rate": 0.002}
    assert parse_slo((), {"rps": 10}).regression == {"p99_ms": 0.10, "error_rate": 0.001}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"availability": 1.0}, "availability=1.0 must be in (0, 1)"),
        ({"availability": "high"}, "availability='high' must be a number"),
        ({"regression": {"p42_ms": 0.1}}, "regression['p42_ms']: compare one of p50_ms"),
        ({"regression": {"p99_ms": "lots%"}}, "regression['p99_ms']='lots%' is not a percentage"),
        ({"regression": {"error_rate": -0.1}}, "regression['error_rate']=-0.1 must be a margin >= 0"),
        ({"regression": []}, "regression=[] must map an SLO to its margin"),
    ],
)
def test_bad_availability_and_regression(kwargs: dict, message: str) -> None:
    with pytest.raises(SLOSpecError) as info:
        parse_slo((), {"rps": 10, **kwargs})
    assert message in str(info.value)


def test_the_single_request_arguments_are_a_one_route_mix() -> None:
    from pytest_rollout import Request

    spec = parse_slo((10,), {"path": "/x", "method": "post", "headers": {"A": "b"}, "body": "{}"})
    assert spec.routes == (Request("POST", "/x", name="POST /x", headers={"A": "b"}, body=b"{}"),)
    assert spec.routes[0].route == "POST /x" and spec.seed is None
    assert parse_slo((10,), {}).routes == (Request(name="GET /"),)


def test_traffic_takes_requests_or_dicts_and_a_seed() -> None:
    from pytest_rollout import Request, Values

    spec = parse_slo(
        (10,),
        {
            "traffic": [
                Request("GET", "/", name="home", weight=70),
                {
                    "method": "GET",
                    "path": "/search?q=${term}",
                    "name": "search",
                    "weight": 25,
                    "data": {"term": Values(("a", "b"))},
                    "error_rate": 0.0005,
                },  # fmt: skip
                Request("POST", "/cart", name="cart", headers={"X-Key": "k"}, p99_ms=800),
            ],
            "secret_headers": ["X-Key"],
            "seed": 42,
        },
    )
    assert [r.route for r in spec.routes] == ["home", "search", "cart"]
    assert spec.routes[1].error_rate == 0.0005 and spec.routes[2].latency_ms() == {"p99_ms": 800.0}
    assert spec.seed == 42 and spec.secret_headers == ("X-Key",)


def test_slo_spec_repr_never_prints_a_secret_header_value():
    """A spec's repr (pytest's --showlocals, a log) hides the values of the headers secret_headers names and of
    Authorization, in the marker's headers and in every route, and shows everything else."""
    spec = parse_slo(
        (),
        {
            "rps": 10,
            "headers": {"X-Key": "marker-s3cr3t", "Authorization": "Bearer tok3n", "X-Trace": "shown-1"},
            "secret_headers": ["x-key"],
        },
    )
    mixed = parse_slo(
        (),
        {
            "rps": 10,
            "traffic": [Request("POST", "/cart", name="cart", headers={"X-Key": "route-s3cr3t", "X-Trace": "shown-2"})],
            "secret_headers": ["X-Key"],
        },
    )
    text = repr(spec) + repr(mixed)
    for secret in ("marker-s3cr3t", "tok3n", "route-s3cr3t"):
        assert secret not in text
    assert "shown-1" in text and "shown-2" in text and "rps=10" in text and "'cart'" in text
    assert text.count("<secret>") == 5  # X-Key and Authorization in spec's headers and its one route; X-Key in cart


@pytest.mark.parametrize(
    ("kwargs", "argument", "text"),
    [
        ({"traffic": [], "path": "/x"}, "traffic", "traffic= and path= are exclusive"),
        ({"traffic": []}, "traffic", "traffic is empty"),
        ({"traffic": "GET /"}, "traffic", "traffic must be a list of Request"),
        ({"traffic": [{"path": "/a", "weight": -1}]}, "traffic", "weight=-1 must be a finite number > 0"),
        ({"traffic": [{"path": "/a", "error_rate": 1.5}]}, "traffic", "error_rate=1.5 must be in \\[0, 1\\)"),
        ({"traffic": [{"path": "/a/${id}"}]}, "traffic", "route 'GET /a/\\$\\{id\\}': no data for placeholder"),
        ({"traffic": [{"path": "/a"}], "secret_headers": ["X-K"]}, "secret_headers", "no Request in traffic= sets"),
        (
            {
                "traffic": [
                    {"path": "/${t}", "data": {"t": Values([f"{i:07d}" * 20 for i in range(4_000)], secret=True)}}
                ]
            },
            "traffic",
            "traffic carries secret data .* more than 524,288",
        ),
        (
            {"traffic": [{"path": "/", "headers": {"X-K": "s3cr3t${"}}], "secret_headers": ["X-K"]},
            "traffic",
            "header X-K \\(secret\\) has a",
        ),
        ({"seed": "abc"}, "seed", "seed='abc' must be an int"),
        ({"seed": True}, "seed", "must be an int"),
    ],
)
def test_bad_traffic_names_the_argument(kwargs: dict, argument: str, text: str) -> None:
    with pytest.raises(SLOSpecError, match=text) as info:
        parse_slo((10,), kwargs)
    assert info.value.argument == argument


def test_the_single_request_is_sent_as_written_and_checked_as_a_mixs_requests_are() -> None:
    """A $ in path, headers or body is a $ (the single request has no placeholders), and a line break in a
    header or a space in the path is refused as in traffic=, naming the argument."""
    from pytest_rollout.load.mix import compile_routes
    from pytest_rollout.load.render import CompiledMix

    spec = parse_slo((10,), {"path": "/p/$x?a=${y}", "headers": {"X-Price": "$5"}, "body": b"cost: $$1"})
    assert spec.routes[0].route == "GET /p/$x?a=${y}"
    routes, _, _ = compile_routes(spec.routes)
    wire = CompiledMix(routes, "http://127.0.0.1:8080/").wire(0, 0)
    assert wire.startswith(b"GET /p/$x?a=${y} HTTP/1.1\r\n") and b"\r\nX-Price: $5\r\n" in wire
    assert wire.endswith(b"\r\n\r\ncost: $$1")
    with pytest.raises(SLOSpecError, match="headers: .*line break") as info:
        parse_slo((10,), {"headers": {"X": "a\r\nEvil: 1"}})
    assert info.value.argument == "headers"
    with pytest.raises(SLOSpecError, match="path: .*space"):
        parse_slo((10,), {"path": "/a b"})
