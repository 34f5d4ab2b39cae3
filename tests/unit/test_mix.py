"""The traffic mix: declarations checked, the route order's exact shares, per-request data, the bytes sent."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from fractions import Fraction
from pathlib import Path

import httptools
import pytest

from pytest_rollout.load import protocol
from pytest_rollout.load.credentials import Credentials
from pytest_rollout.load.mix import Request, Route, Values, check_requests, compile_routes, data_json, read_data_json
from pytest_rollout.load.protocol import Aim, Plan
from pytest_rollout.load.render import PERIOD_MAX, CompiledMix, route_order


@pytest.mark.parametrize("seed", range(4))
def test_every_prefix_of_the_route_order_is_within_one_of_its_shares(seed: int) -> None:
    """Tijdeman's bound, for random weight sets (integer, fractional, and sums past the precomputed period)."""
    rng = random.Random(seed)
    for _ in range(60):
        k = rng.randint(1, 20)
        weights = [
            rng.choice([rng.randint(1, 100), round(rng.uniform(0.1, 10), 3), rng.randint(1, 3)]) for _ in range(k)
        ]
        exact = [Fraction(w) for w in weights]
        total = sum(exact)
        counts = [0] * k
        for n, route in enumerate(itertools.islice(route_order(weights), 400), start=1):
            counts[route] += 1
            for i in range(k):
                assert abs(counts[i] - n * exact[i] / total) < 1, (weights, n, i)


def test_integer_weights_repeat_exactly_every_period() -> None:
    order = list(itertools.islice(route_order([70, 25, 5]), 300))
    assert [order[:100].count(r) for r in range(3)] == [70, 25, 5]
    assert order[:100] == order[100:200] == order[200:]
    big = [PERIOD_MAX, 1]  # past the precomputed period: worked out as it goes, same bound
    counts = [0, 0]
    for n, route in enumerate(itertools.islice(route_order(big), 50_000), start=1):
        counts[route] += 1
        assert abs(counts[1] - n / (PERIOD_MAX + 1)) < 1


def test_values_from_csv_reads_a_column_and_names_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("id,name\n7,ann\n9,bob\n\n", encoding="utf-8")
    assert Values.from_csv(str(path), "id").values == ("7", "9")
    assert Values.from_csv(str(path), "name", order="cycle").source == f"{path}:name"
    with pytest.raises(ValueError, match=r"no column 'email'; the first row names 'id', 'name'"):
        Values.from_csv(str(path), "email")
    with pytest.raises(ValueError, match=r"cannot read .*nope.csv"):
        Values.from_csv(str(tmp_path / "nope.csv"), "id")
    (tmp_path / "empty.csv").write_text("id\n", encoding="utf-8")
    with pytest.raises(ValueError, match="the column has no values"):
        Values.from_csv(str(tmp_path / "empty.csv"), "id")
    with pytest.raises(ValueError, match="order='shuffle'"):
        Values(("a",), order="shuffle")


def test_values_from_csv_is_relative_to_the_calling_file() -> None:
    here = Path(__file__).parent / "_mix_users.csv"
    here.write_text("id\nu1\n", encoding="utf-8")
    try:
        assert Values.from_csv("_mix_users.csv", "id").values == ("u1",)
    finally:
        here.unlink()


@pytest.mark.parametrize(
    ("requests", "match"),
    [
        ([], "is empty"),
        ("GET /", "must be a list of Request"),
        ([Request(), Request()], "'GET /' appear twice"),
        ([Request(weight=0)], "weight=0 must be a finite number > 0"),
        ([Request(weight=float("nan"))], "weight=nan"),
        ([Request(method="FETCH")], "method='FETCH'"),
        ([Request(path="x")], "must be a string starting with '/'"),
        ([Request(name="")], "printable text of 1 to 64"),
        ([Request(name="x" * 65)], "printable text of 1 to 64"),
        ([Request(path="/${user}")], "route 'GET /\\$\\{user\\}': no data for placeholder\\(s\\) user"),
        ([Request(name="a", data={"user": ["x"]})], "route 'a': data user fill\\(s\\) no placeholder"),
        ([Request(name="a", path="/${seq", data={})], "is not a placeholder"),
        ([Request(name="a", path="/${u}", data={"u": ["x y"]})], "space or #"),
        ([Request(name="a", body="${u}", data={"u": ["x\r\nHost: evil"]})], "line break"),
        ([Request(name="a", path="/a b")], "has a space"),
        ([Request(name="a", headers={"X": "a\r\nb"})], "line break in its value"),
        ([Request(name="a", path="/${seq}", data={"seq": ["1"]})], "other than seq and uuid"),
        ([Request(name="a", error_rate=1.0)], "error_rate=1.0 must be in \\[0, 1\\)"),
        ([Request(name="a", p99_ms=0)], "p99_ms=0 must be a number of milliseconds > 0"),
        ([Request(name=str(i)) for i in range(21)], "at most 20"),
        ([{"method": "GET", "colour": "red"}], "entry 0: .*colour"),
        ([3], "entry 0 is a int"),
    ],
)
def test_a_bad_mix_is_refused_saying_what_is_wrong(requests: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_requests(requests)


def test_dicts_and_secret_headers_compile_to_public_wire_routes() -> None:
    requests = check_requests(
        [
            {
                "method": "post",
                "path": "/cart",
                "name": "checkout",
                "headers": {"Authorization": "t", "X-Key": "k", "Accept": "a"},
                "body": "{}",
                "weight": 5,
            },  # fmt: skip
            Request("GET", "/"),
        ]
    )
    routes, secrets, _ = compile_routes(requests, ["x-key"])
    assert routes[0] == Route("checkout", "POST", "/cart", {"Accept": "a"}, b"{}", 5.0)
    assert secrets == {"checkout": {"Authorization": "t", "X-Key": "k"}}
    assert routes[1] == Route.of("GET", "/")
    assert all(Route.from_json(r.to_json()) == r for r in routes)


def test_secret_values_and_headers_stay_out_of_the_wire_routes_and_every_repr() -> None:
    """Values(secret=True) and secret headers compile to what reaches workers at start; the plan's routes name
    the secret placeholders and hold no value; no repr prints one."""
    tokens = Values(["tok-AAA", "tok-BBB"], order="cycle", secret=True)
    requests = check_requests(
        [
            Request(
                "GET",
                "/me?u=${user}",
                name="me",
                headers={"Authorization": "Bearer ${token}", "X-Key": "key-CCC"},
                data={"token": tokens, "user": ["u1", "u2"]},
            ),
            Request("GET", "/", name="home"),
        ],
        ["X-Key"],
    )
    compiled = compile_routes(requests, ["X-Key"])
    me = compiled.routes[0]
    assert me.secret_data == ("token",) and set(me.data) == {"user"}
    assert compiled.data == {"me": {"token": (("tok-AAA", "tok-BBB"), "cycle")}}
    assert compiled.headers == {"me": {"Authorization": "Bearer ${token}", "X-Key": "key-CCC"}}
    assert read_data_json(data_json(compiled.data)) == compiled.data
    aim = Aim.of("http://127.0.0.1:1/", compiled)
    assert aim.route_headers == compiled.headers and aim.route_data == compiled.data
    shown = " ".join(
        [
            json.dumps([r.to_json() for r in compiled.routes]),
            repr(requests),
            repr(tokens),
            repr(aim),
            aim.headers_json(),
        ]
    )
    assert "tok-AAA" not in shown and "Bearer ${token}" not in shown.replace(aim.headers_json(), "")
    assert "<secret>" in repr(requests[0]) and "key-CCC" in aim.headers_json()
    env = aim.environment()
    assert json.loads(env[f"{protocol.DATA_ENV}_0"]) == {"me": {"token": [["tok-AAA", "tok-BBB"], "cycle"]}}


def test_secret_data_pass_in_pieces_and_are_capped() -> None:
    """More secret data than one environment string holds go in pieces that read back whole; past the cap, the
    error says how big they are and why there is a cap."""
    many = Values([f"token-{i:05d}-{'x' * 40}" for i in range(3_000)], order="cycle", secret=True)
    compiled = compile_routes(check_requests([Request("GET", "/${t}", name="r", data={"t": many})]))
    env = Aim.of("http://127.0.0.1:1/", compiled).environment()
    pieces = [env[f"{protocol.DATA_ENV}_{i}"] for i in range(int(env[f"{protocol.DATA_ENV}_PIECES"]))]
    assert len(pieces) >= 3 and all(len(p) <= protocol.DATA_PIECE for p in pieces)
    assert read_data_json("".join(pieces)) == compiled.data
    huge = Values([f"{i:06d}{'y' * 100}" for i in range(6_000)], secret=True)
    with pytest.raises(ValueError, match=r"carries secret data .* bytes as JSON, more than 524,288.*Kubernetes Secret"):
        compile_routes(check_requests([Request("GET", "/${t}", name="r", data={"t": huge})]))


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"r": []}',
        '{"r": {"t": [["a"], "sideways"]}}',
        '{"r": {"t": [[], "cycle"]}}',
        '{"r": {"t": [[1], "cycle"]}}',
    ],
)
def test_secret_data_of_a_bad_shape_are_refused_without_being_quoted(text: str) -> None:
    with pytest.raises(ValueError, match=r"must be a JSON object \{route") as caught:
        read_data_json(text)
    assert "sideways" not in str(caught.value)


def test_a_bad_placeholder_in_a_secret_header_is_refused_without_quoting_the_value() -> None:
    for headers, names in (({"Authorization": "Bearer s3cr3t${oops"}, ()), ({"X-Key": "s3cr3t${1x}"}, ("X-Key",))):
        with pytest.raises(ValueError, match=r"\(secret\) has a \$\{ that is not a placeholder") as caught:
            check_requests([Request("GET", "/", name="r", headers=headers)], names)
        assert "s3cr3t" not in str(caught.value)
    with pytest.raises(ValueError, match=r"'\$\{oops' is not a placeholder"):  # a public one's is quoted
        check_requests([Request("GET", "/", name="r", headers={"X-Public": "s3cr3t${oops"})])


def test_a_worker_fills_secret_placeholders_only_from_what_it_was_given_at_start() -> None:
    """Credentials.admit merges a route's secret data into its data, and refuses a plan whose secret
    placeholders differ from what the worker holds (never quoting a value)."""
    compiled = compile_routes(
        check_requests([Request("GET", "/${t}", name="r", data={"t": Values(["v-1"], secret=True)})])
    )
    plan = Plan(url="http://127.0.0.1:1/", segments=(), start_at=0.0, deadline=1.0, routes=compiled.routes)
    held = Credentials("k", "http://127.0.0.1:1", route_data=compiled.data)
    assert held.admit(plan).routes[0].data == {"t": (("v-1",), "random")}
    assert "v-1" not in repr(held)
    for wrong in ({}, {"r": {"u": (("v-1",), "random")}}, {"other": {"t": (("v-1",), "random")}}):
        with pytest.raises(ValueError, match="the fleet and the plan must come from the same mix") as caught:
            Credentials("k", "http://127.0.0.1:1", route_data=wrong).admit(plan)
        assert "v-1" not in str(caught.value)


def _parse(wire: bytes) -> tuple[str, dict[str, str], bytes]:
    """A real HTTP parser's reading of *wire*: (url, headers, body); it fails if Content-Length is wrong."""
    got: dict[str, object] = {"headers": {}, "body": b"", "done": False}

    class Sink:
        def on_url(self, url: bytes) -> None:
            got["url"] = url.decode()

        def on_header(self, name: bytes, value: bytes) -> None:
            got["headers"][name.decode()] = value.decode()  # type: ignore[index]

        def on_body(self, body: bytes) -> None:
            got["body"] += body  # type: ignore[operator]

        def on_message_complete(self) -> None:
            got["done"] = True

    httptools.HttpRequestParser(Sink()).feed_data(wire)
    assert got["done"], wire
    return str(got["url"]), got["headers"], got["body"]  # type: ignore[return-value]


MIX = [
    Request("GET", "/search?q=${term}&n=${seq}", name="search", data={"term": ["shoes", "hats", "socks"]}),
    Request(
        "POST",
        "/cart",
        name="cart",
        body='{"user": "${user}", "id": "${uuid}", "again": "${user}", "p": "5%"}',
        headers={"X-Order": "${seq}"},
        data={"user": Values(("ann", "bob", "cy"), order="cycle")},
    ),  # fmt: skip
    Request("GET", "/static", name="static"),
]


def _mix(seed: int = 1, worker: tuple[int, int] = (0, 1)) -> CompiledMix:
    routes, _, _ = compile_routes(check_requests(MIX))
    return CompiledMix(routes, "http://127.0.0.1:8080/", seed=seed, worker=worker)


def test_requests_are_filled_in_per_request_with_the_right_length() -> None:
    mix = _mix(worker=(1, 3))
    seen = set()
    for k in range(30):
        url, headers, _ = _parse(mix.wire(0, k))
        term, n = url.split("q=")[1].split("&n=")
        assert term in ("shoes", "hats", "socks") and int(n) == k * 3 + 1  # ${seq}: worker 1 of 3
        seen.add(term)
        url, headers, body = _parse(mix.wire(1, k))
        user = ("ann", "bob", "cy")[(k * 3 + 1) % 3]  # cycle: in turn over the fleet's numbering
        assert body.startswith(b'{"user": "%s", "id": "' % user.encode()) and b'"again": "%s"' % user.encode() in body
        assert headers["X-Order"] == str(k * 3 + 1) and headers["Host"] == "127.0.0.1:8080"
        assert int(headers["Content-Length"]) == len(body) and body.endswith(b'"p": "5%"}')
    assert seen == {"shoes", "hats", "socks"}
    assert mix.static[2] is not None and mix.wire(2, 5) is mix.static[2]  # rendered once
    method, url, headers, body = mix.parts(1, 4)
    assert (method, url, headers["X-Order"]) == ("POST", "http://127.0.0.1:8080/cart", "13")
    assert body is not None and body == _parse(mix.wire(1, 4))[2]


def test_the_same_seed_sends_the_same_data_and_another_seed_other_data() -> None:
    def sent(seed: int, worker: tuple[int, int] = (0, 2)) -> list[bytes]:
        return _as_the_worker_sends(_mix(seed, worker), 300)

    assert sent(7) == sent(7)
    assert sent(7) != sent(8)
    assert sent(7) != sent(7, (1, 2))
    uuids = {_parse(w)[2].split(b'"id": "')[1][:36] for w in sent(7) if w.startswith(b"POST")}
    assert len(uuids) == 100 and all(u[14:15] == b"4" for u in uuids)  # version 4, never repeated


def test_the_hot_path_renders_exactly_what_the_plain_renderer_does() -> None:
    """Each route's specialised closure (static body folded in, one or two values, a templated body) gives the
    same bytes as the plain renderer, for every shape of route; a literal % stays a %."""
    mix = [
        Request("GET", "/a%20b?q=${term}", name="one", data={"term": ["x%y", "z"]}),
        Request("GET", "/u/${user}/${seq}", name="two", data={"user": Values(("a", "b", "c"), order="cycle")}),
        Request("PUT", "/p/${user}", name="three", headers={"X-Id": "${uuid}", "X-N": "${seq}"},
                body='{"pct": "100%"}', data={"user": ["a", "b"]}),
        Request("POST", "/c", name="four", headers={"X-U": "${user}"}, body='{"u": "${user}", "n": ${seq}, "p": "5%"}',
                data={"user": ["a", "b"]}),
        Request("HEAD", "/h", name="five"),
    ]  # fmt: skip
    routes, _, _ = compile_routes(check_requests(mix))
    compiled = CompiledMix(routes, "http://127.0.0.1:8080/", seed=3, worker=(1, 4))
    for route, plain in enumerate(compiled.compiled):
        for k in range(0, 20_000, 37):
            assert compiled.wire(route, k, k // 3) == plain.wire(k, k // 3)
    assert b"%20b" in compiled.wire(0, 1) and b'"5%"' in compiled.wire(3, 1)


def test_uuids_are_version_4_and_never_repeat_within_a_worker() -> None:
    routes, _, _ = compile_routes(check_requests([Request("GET", "/", headers={"X-Id": "${uuid}"})]))
    compiled = CompiledMix(routes, "http://127.0.0.1:8080/", seed=9, worker=(0, 1))
    ids = [compiled.wire(0, k).split(b"X-Id: ")[1][:36].decode() for k in range(200_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:2000:7]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
    assert len({text[:8] for text in ids[:5000]}) > 500  # the leading bits vary from request to request


def _as_the_worker_sends(mix: CompiledMix, n: int) -> list[bytes]:
    """The first *n* requests as a worker renders them: each route's own count j beside the worker's k."""
    seen = [0] * len(mix.routes)
    out = []
    for k, route in zip(range(n), mix.order(), strict=False):
        out.append(mix.wire(route, k, seen[route]))
        seen[route] += 1
    return out


def test_each_route_goes_through_its_own_values_whatever_its_place_in_the_mix() -> None:
    """Values go by the route's own count. By the worker's count they would repeat with the route order's
    period: in three equal routes, one route's three values in turn would be one value forever; a route of 1 in
    1,024 would see a few dozen of a table's random draws."""
    users = Values(("ann", "bob", "cy"), order="cycle")
    skus = [f"sku-{i}" for i in range(5000)]

    def paths(mix: list[Request], n: int) -> list[tuple[str, str]]:
        routes, _, _ = compile_routes(check_requests(mix))
        compiled = CompiledMix(routes, "http://127.0.0.1:8080/", seed=1, worker=(0, 1))
        names = list(itertools.islice(route_order([r.weight for r in routes]), n))
        sent = _as_the_worker_sends(compiled, n)
        return [(routes[r].name, w.split(b" ")[1].decode()) for r, w in zip(names, sent, strict=True)]

    equal = [Request("GET", "/a", name="a"), Request("GET", "/u/${user}", name="b", data={"user": users}),
             Request("GET", "/c", name="c")]  # fmt: skip
    by_user = [path for name, path in paths(equal, 900) if name == "b"]
    assert {u: by_user.count(f"/u/{u}") for u in ("ann", "bob", "cy")} == {"ann": 100, "bob": 100, "cy": 100}
    uneven = [Request("GET", "/i/${sku}", name="common", weight=1023, data={"sku": skus}),
              Request("GET", "/i/${sku}", name="rare", weight=1, data={"sku": skus})]  # fmt: skip
    rare = [path for name, path in paths(uneven, 1024 * 300) if name == "rare"]
    assert len(rare) == 300 and len(set(rare)) > 250  # 300 draws from 5,000: about 291 distinct


def test_decimal_weights_repeat_with_the_period_they_are_written_with() -> None:
    order = route_order([0.7, 0.25, 0.05])
    first = list(itertools.islice(order, 20))
    assert list(itertools.islice(order, 20)) == first  # a period of 20: 0.7, 0.25, 0.05 as written (14, 5, 1)
    assert sorted(first.count(i) for i in range(3)) == [1, 5, 14]


def test_the_every_route_name_is_reserved() -> None:
    with pytest.raises(ValueError, match="'\\*' is reserved"):
        check_requests([Request("GET", "/", name="*")])
