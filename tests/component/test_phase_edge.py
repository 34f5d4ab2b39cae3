"""``POST /phase`` on a real worker process: a typed :class:`PhaseEdge` on both sides, bad ones refused with 400."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable

from pytest_rollout.load import protocol
from pytest_rollout.load.fleet import LocalFleet
from pytest_rollout.load.replies import PhaseHeard, Refusal
from pytest_rollout.procs import free_port

MakeFleet = Callable[[int, str], LocalFleet]


def post_phase(port: int, token: str, text: str) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(
            "POST",
            protocol.PHASE,
            body=text,
            headers={"Content-Type": "application/json", protocol.TOKEN_HEADER: token},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_a_worker_refuses_a_bad_phase_edge_with_400_and_changes_nothing(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(1, f"http://127.0.0.1:{free_port()}/")  # no plan is sent: nothing is loaded
    ((_, port),) = fleet.workers
    bad = {
        '{"at": 1.0}': "KeyError",
        '{"name": "x"}': "KeyError",
        '{"name": "x", "at": "soon"}': "ValueError",
        '{"name": "x", "at": NaN}': "ValueError",  # Python's JSON reads NaN: it would have broken the phase order
        '{"name": "x", "at": Infinity}': "ValueError",
        '["x", 1.0]': "TypeError",
        "not json": "JSONDecodeError",
    }
    for text, error in bad.items():
        status, answer = post_phase(port, fleet.token, text)
        assert status == 400, (text, answer)
        assert Refusal.from_json(answer).error.startswith(f"{error}: "), (text, answer)
    # a good edge is heard, and it is the only phase the worker learnt of: the refused ones changed nothing
    fleet.announce("upgrade", time.time() + 60.0)
    status, answer = post_phase(port, fleet.token, json.dumps(protocol.PhaseEdge("after", time.time() + 90).to_json()))
    assert status == 200, answer
    assert PhaseHeard.from_json(answer) == PhaseHeard(phases=("-", "upgrade", "after"), late_s=0.0)
    assert fleet.edges == {"upgrade": 0.0}
