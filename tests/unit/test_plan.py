"""The plan and the phase edge as typed values: each worker's share made on the Plan, the wire unchanged, and one
way to build a plan (``load/launch.py``) whose defaults are the Plan's own."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from pytest_rollout.load.launch import PlanOptions, Rate, build_plan, steady
from pytest_rollout.load.mix import Route
from pytest_rollout.load.protocol import PhaseEdge, Plan, inflight_cap
from pytest_rollout.load.schedule import Segment

WHOLE = Plan(
    url="http://127.0.0.1:8080/",
    segments=(Segment(2.0, 0.0, 300.0), Segment(None, 300.0, 300.0)),
    start_at=1_700_000_000.25,
    deadline=1_700_000_060.25,
    routes=(Route("a", "GET", "/a", weight=2.0), Route("b", "POST", "/b", body=b"{}")),
    seed=7,
    phases=(("ramp", 1_700_000_000.25), ("baseline", 1_700_000_002.25)),
    engine="fast",
)


def edited_by_key(template: Plan, i: int, size: int) -> dict[str, Any]:
    """Worker *i*'s plan as the controller used to make it: the whole plan's JSON, edited by key."""
    share = 1.0 / size
    plan = template.to_json()
    plan["segments"] = [[s.duration, s.start_rps * share, s.end_rps * share] for s in template.segments]
    plan["phase"] = i / size
    plan["worker"] = [i, size]
    return plan


@pytest.mark.parametrize("size", [1, 3, 64])
def test_each_workers_share_is_made_on_the_plan_and_goes_on_the_wire_as_before(size: int) -> None:
    for i in range(size):
        share = WHOLE.for_worker(i, size)
        assert json.dumps(share.to_json()) == json.dumps(edited_by_key(WHOLE, i, size))  # byte for byte, in order
        assert Plan.from_json(json.loads(json.dumps(share.to_json()))) == share
        assert share.worker == (i, size) and share.phase == i / size
    assert sum(WHOLE.for_worker(i, size).segments[-1].end_rps for i in range(size)) == pytest.approx(300.0)


def test_only_a_whole_plan_is_split() -> None:
    with pytest.raises(ValueError, match=r"splits a whole plan, not worker \(1, 3\)'s share"):
        WHOLE.for_worker(1, 3).for_worker(0, 2)
    with pytest.raises(ValueError, match="the index must be in"):
        WHOLE.for_worker(3, 3)


def test_a_phase_edge_goes_on_the_wire_as_before_and_reads_back() -> None:
    edge = PhaseEdge("upgrade", 1_700_000_010.5)
    assert json.dumps(edge.to_json()) == json.dumps({"name": "upgrade", "at": 1_700_000_010.5})
    assert PhaseEdge.from_json(json.loads(json.dumps(edge.to_json()))) == edge
    assert PhaseEdge.from_json({"name": "x", "at": 3}) == PhaseEdge("x", 3.0)  # an integer time is a time


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"at": 1.0}, KeyError),
        ({"name": "x"}, KeyError),
        ({"name": "x", "at": "soon"}, ValueError),
        ({"name": "x", "at": None}, TypeError),
        ({"name": "x", "at": math.nan}, ValueError),
        ({"name": "x", "at": math.inf}, ValueError),
        (["x", 1.0], TypeError),
    ],
)
def test_a_bad_phase_edge_is_refused_with_the_errors_the_worker_answers_400_for(body: Any, error: type) -> None:
    with pytest.raises(error):
        PhaseEdge.from_json(body)


def test_a_plan_built_with_no_options_has_the_plans_own_defaults() -> None:
    built = build_plan("http://127.0.0.1:8080/x?y=1", Rate(500.0, 3.0), PlanOptions(), workers=2)
    assert built == Plan(
        url="http://127.0.0.1:8080/x?y=1",
        segments=steady(500.0),
        start_at=0.0,
        deadline=3.0,
        max_inflight=inflight_cap(250.0),  # a quarter second of each worker's peak rate
    )


def test_a_plan_built_with_a_climb_starts_with_phase_ramp_and_carries_every_option() -> None:
    routes = (Route.of("GET", "/"),)
    options = PlanOptions(
        routes=routes,
        seed=3,
        timeout_s=0.5,
        max_inflight=10,
        max_requests=99,
        connections=4,
        engine="aiohttp",
        resend_reused=False,
        tls_verify=False,
        tls_ca_pem="PEM",
    )
    rate = Rate(40_000.0, 12.0, ramp_s=2.0, phases=(("baseline", 2.0), ("between", 7.0)))
    built = build_plan("https://127.0.0.1:8443/", rate, options, workers=4)
    assert built.phases == (("ramp", 0.0), ("baseline", 2.0), ("between", 7.0))
    assert built.segments == (Segment(2.0, 0.0, 40_000.0), Segment(None, 40_000.0, 40_000.0))
    assert (built.start_at, built.deadline) == (0.0, 12.0)
    given = {name: getattr(built, name) for name in PlanOptions.__dataclass_fields__}
    assert given == {name: getattr(options, name) for name in PlanOptions.__dataclass_fields__}
    # without its own cap, a fleet of 4 at 40,000 rps gets a quarter second of 10,000 rps each
    assert build_plan("https://127.0.0.1:8443/", rate, PlanOptions(), workers=4).max_inflight == 2500


def test_plan_options_are_every_plan_field_but_its_target_times_rate_and_place() -> None:
    """A field added to Plan but not to PlanOptions would never be set by start_plan: this fails first."""
    from dataclasses import fields

    made_by_the_builder = {"url", "segments", "start_at", "deadline", "phases", "worker", "phase"}
    assert {f.name for f in fields(PlanOptions)} == {f.name for f in fields(Plan)} - made_by_the_builder


def test_max_inflight_left_out_is_a_quarter_second_of_each_workers_peak_and_given_is_kept() -> None:
    rate = Rate(rps=20_000.0, seconds=2.0)
    assert build_plan("http://127.0.0.1:1/", rate, PlanOptions(), workers=2).max_inflight == inflight_cap(10_000.0)
    assert (
        inflight_cap(10_000.0) != Plan(url="http://x/", segments=(), start_at=0.0, deadline=1.0).max_inflight
    )  # defaults differ
    assert build_plan("http://127.0.0.1:1/", rate, PlanOptions(max_inflight=7), workers=2).max_inflight == 7
