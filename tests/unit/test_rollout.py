"""The Rollout's phase loop, driven through fakes of the platform, the fleet and Prometheus (tests/support/fakes.py).

No process starts: these check the order of things, who is blamed, and the
public API's guards, in well under a second each. The same paths with real
parts are in tests/e2e.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import FakePlatform, FakeSession, fake_config

from pytest_rollout.errors import RolloutUsageError
from pytest_rollout.judge.verdict import Outcome, TestResult
from pytest_rollout.platforms.base import TargetOptions, TargetSpec
from pytest_rollout.run.rollout import Rollout
from pytest_rollout.slo import parse_slo

FAST = {"rps": 20_000, "ramp": "0.2s", "hold": "0.4s", "after": "0.4s", "p99_ms": 250, "abort_on_breach": False}
COMMAND = [sys.executable, "-c", "pass"]


def make(tmp_path: Path, platform: FakePlatform | None = None, **slo: Any) -> tuple[Rollout, FakePlatform, list[str]]:
    platform = platform or FakePlatform()
    log: list[str] = []
    session = FakeSession(tmp_path, platform, workers=2)
    run = Rollout(session, parse_slo((), {**FAST, **slo}), "t::fake", fake_config(tmp_path, platform, log))  # type: ignore[arg-type]
    return run, platform, log


def test_a_run_goes_through_its_phases_in_order_and_is_held(tmp_path: Path) -> None:
    run, platform, log = make(tmp_path)
    run.deploy(command=COMMAND, replicas=1)
    run.ramp()
    run.upgrade(command=COMMAND)
    verdict = run.verify()
    assert log == [f"{what} {p}" for p in ("ramp", "baseline", "upgrade", "after") for what in ("start", "end")]
    assert [p.name for p in run.phases] == ["ramp", "baseline", "upgrade", "after"]
    assert platform.calls[:2] == ["deploy v1", "upgrade v2"]
    (fleet,) = platform.fleets
    assert fleet.size == 2 and fleet.aim.target == "http://fake.invalid:8080"
    assert fleet.calls == [
        "start",
        "begin",
        "announce upgrade",
        "announce after",
        "announce tail",
        "stop",
        "drain",
        "shutdown",
    ]
    assert verdict.result is TestResult.PASSED
    steady = [e for e in verdict.entries if e.phase in ("baseline", "upgrade", "after")]
    assert steady and all(e.outcome is Outcome.HELD for e in steady)
    baseline = next(m for m in verdict.phases if m.phase == "baseline")
    assert baseline.requests == baseline.fleet_requests == pytest.approx(8000, abs=1)  # 0.4 s at 20,000 rps
    record = run.to_json("passed", result="passed")
    assert record["result"] == "passed" and record["workers"] == 2 and record["engine"] == "fake"
    assert record["passed"] is True
    assert run.close() == [] and "teardown" in platform.calls


def test_a_worker_that_dies_is_the_runs_failure_never_the_releases(tmp_path: Path) -> None:
    run, platform, _ = make(tmp_path)
    run.deploy(command=COMMAND)
    platform_fleets = platform.fleets
    original = platform.make_fleet

    def dying(run_id: str, size: int, aim: Any) -> Any:
        fleet = original(run_id, size, aim)
        fleet.die_at = time.time() + 0.3  # during the baseline
        return fleet

    platform.make_fleet = dying  # type: ignore[method-assign]
    with pytest.raises(pytest.fail.Exception, match="load not reached: 1 of 2 load workers died during phase"):
        run.ramp()
    verdict = run.verdict
    assert verdict is not None and verdict.failure_kind == "run"
    assert verdict.result is TestResult.NOT_PROVEN  # not proven (exit 6), never broken
    assert platform_fleets[0].shut
    run.close()


def test_an_upgrade_that_fails_is_the_releases_failure_and_rolls_back_when_asked(tmp_path: Path) -> None:
    run, platform, _ = make(tmp_path, FakePlatform(fail_upgrade="deployment target: 1 new pod never ready"))
    run.deploy(command=COMMAND)
    run.ramp()
    with pytest.raises(pytest.fail.Exception, match="1 new pod never ready") as info:
        run.upgrade(command=COMMAND, rollback_on_breach=True)
    assert "rollback_on_breach: rolled back (fake)" in str(info.value)
    verdict = run.verdict
    assert verdict is not None and verdict.failure_kind == "release" and not verdict.passed
    assert platform.calls[-1] == "rollback"
    run.close()


@pytest.mark.parametrize(
    "steps, message",
    [
        (["ramp"], "call rollout.deploy(...) before rollout.ramp()"),
        (["upgrade"], "call rollout.deploy(...) and rollout.ramp() before rollout.upgrade()"),
        (["deploy", "deploy"], "rollout.deploy() was already called in this test"),
        (["deploy", "ramp", "ramp"], "rollout.ramp() was already called in this test"),
    ],
)
def test_the_public_api_is_used_in_order(tmp_path: Path, steps: list[str], message: str) -> None:
    run, _, _ = make(tmp_path)
    calls = {
        "deploy": lambda: run.deploy(command=COMMAND),
        "ramp": run.ramp,
        "upgrade": lambda: run.upgrade(command=COMMAND),
    }
    with pytest.raises(RolloutUsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        for step in steps:
            calls[step]()
    run.close()


def test_a_bad_surge_is_refused_before_anything_moves(tmp_path: Path) -> None:
    run, platform, log = make(tmp_path)
    run.deploy(command=COMMAND, replicas=3)
    run.ramp()
    with pytest.raises(RolloutUsageError, match="max_surge"):
        run.upgrade(command=COMMAND, max_surge="lots")
    assert "upgrade v2" not in platform.calls and "start upgrade" not in log
    run.close()


def test_a_new_version_inherits_every_setting_its_call_does_not_give(tmp_path: Path) -> None:
    run, _, _ = make(tmp_path)
    run.deploy(command=COMMAND, replicas=3, env={"MODE": "a"}, grace_period=5, pre_stop="2s")
    run.ramp()
    run.upgrade(command=[*COMMAND, "v2"], env={"MODE": "b"})
    v2 = run.target.deployed
    assert v2 is not None and v2.version == "v2" and v2.command == (*COMMAND, "v2")
    assert (v2.replicas, dict(v2.env), v2.grace_period_s, v2.pre_stop_s) == (3, {"MODE": "b"}, 5.0, 2.0)
    assert v2.ready_timeout_s == FakePlatform.ready_timeout_s and v2.cwd == str(tmp_path)  # the platform's, rootdir
    run.close()


def test_options_are_inherited_in_one_place_and_the_version_never_is() -> None:
    v1 = TargetSpec.build(TargetOptions(command=["app"], replicas=2, port=9000), version="v1", what="deploy")
    assert (v1.replicas, v1.port, v1.ready_path, v1.ready_timeout_s, v1.grace_period_s) == (2, 9000, "/healthz", 30, 10)
    given = TargetOptions(image="shop/app:v2", ready_path="/ready")
    v2 = TargetSpec.build(given.inherit(v1.options), version="v2", what="upgrade")
    assert (v2.form, v2.image, v2.replicas, v2.port, v2.ready_path) == ("image", "shop/app:v2", 2, 9000, "/ready")
    assert v2.command == ()  # the deployed command is not the new version's
    with pytest.raises(TypeError):
        TargetOptions(["app"])  # type: ignore[misc]  # keyword-only: two settings cannot be swapped by position


@pytest.mark.parametrize(
    ("options", "what", "message"),
    [
        (TargetOptions(), "upgrade", "rollout.upgrade() needs the new version: command=[...], image=..."),
        (TargetOptions(), "deploy", "rollout.deploy() needs command=[...] (the argv that starts one replica"),
        (TargetOptions(command=["a"], image="a:1"), "deploy", "takes one of command=, image=, manifests=; got"),
        (TargetOptions(command=["a"], grace_period=0), "upgrade", "rollout.upgrade(grace_period=0) must be a number"),
        (TargetOptions(command=["a"], pre_stop="10s"), "deploy", "pre_stop='10s') must be shorter than grace_period"),
    ],
)
def test_every_setting_is_checked_in_one_place(options: TargetOptions, what: str, message: str) -> None:
    with pytest.raises(RolloutUsageError, match=re.escape(message)):
        TargetSpec.build(options, version="v1", what=what)


def test_a_bad_rollback_flag_is_refused_before_the_version_is_built(tmp_path: Path) -> None:
    run, platform, _ = make(tmp_path)
    run.deploy(command=COMMAND)
    run.ramp()
    with pytest.raises(RolloutUsageError, match=r"rollback_on_breach='yes'\) must be True or False"):
        run.upgrade(rollback_on_breach="yes")  # type: ignore[arg-type]
    assert "upgrade v2" not in platform.calls
    run.close()


def test_a_record_says_passed_only_of_the_result_it_is_given(tmp_path: Path) -> None:
    """``passed`` is said from the one result the plugin decided: a held verdict whose test its own code failed
    is not passed (the JSON once said passed true beside result test_failed)."""
    run, _, _ = make(tmp_path)
    run.deploy(command=COMMAND)
    run.ramp()
    assert run.judge().passed
    record = run.to_json("failed", result="test_failed")
    assert (record["result"], record["passed"]) == ("test_failed", False)
    run.close()


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("replicas", "rollout.deploy(replicas=None) must be an int >= 1"),
        ("port", "rollout.deploy(port=None) must be a TCP port (1-65535)"),
        ("ready_path", "rollout.deploy(ready_path=None) must start with '/'"),
        ("grace_period", "rollout.deploy(grace_period=None) must be a number of seconds > 0"),
        ("pre_stop", "rollout.deploy(pre_stop=None) must be a duration such as '5s' or a number of seconds >= 0"),
    ],
)
def test_deploy_refuses_none_where_its_default_is_a_value(tmp_path: Path, argument: str, message: str) -> None:
    """None given is a value, checked as one, as it always was: never read as "not given" (UNSET is)."""
    run, platform, _ = make(tmp_path)
    with pytest.raises(RolloutUsageError, match=f"^{re.escape(message)}$"):
        run.deploy(command=COMMAND, **{argument: None})
    assert platform.calls == []
    run.close()


def test_deploy_takes_none_as_not_given_where_documented(tmp_path: Path) -> None:
    run, _, _ = make(tmp_path)
    run.deploy(command=COMMAND, env=None, ready_timeout=None, cwd=None)
    v1 = run.target.deployed
    assert v1 is not None and dict(v1.env) == {} and v1.ready_timeout_s == FakePlatform.ready_timeout_s
    assert v1.cwd == str(tmp_path)
    run.close()


def test_upgrade_takes_none_as_the_deployed_setting(tmp_path: Path) -> None:
    run, _, _ = make(tmp_path)
    run.deploy(command=COMMAND, replicas=3, ready_path="/up", grace_period=5, pre_stop=1)
    run.ramp()
    run.upgrade(command=COMMAND, replicas=None, ready_path=None, grace_period=None, pre_stop=None, env=None)
    v2 = run.target.deployed
    assert v2 is not None and (v2.replicas, v2.ready_path, v2.grace_period_s, v2.pre_stop_s) == (3, "/up", 5.0, 1.0)
    run.close()


def test_a_deployed_version_keeps_its_own_settings_whatever_the_caller_does_with_its_values(tmp_path: Path) -> None:
    """The env dict given to deploy() is copied: changing it afterwards changes neither v1 nor what v2 inherits."""
    run, _, _ = make(tmp_path)
    env = {"MODE": "a"}
    run.deploy(command=COMMAND, env=env)
    env["MODE"] = "changed"
    env["EXTRA"] = "1"
    v1 = run.target.deployed
    assert v1 is not None and dict(v1.env) == {"MODE": "a"}
    run.ramp()
    run.upgrade(command=COMMAND)
    v2 = run.target.deployed
    assert v2 is not None and dict(v2.env) == {"MODE": "a"}
    run.close()


def test_the_built_in_env_is_never_shared() -> None:
    one = TargetSpec.build(TargetOptions(command=["a"]), version="v1", what="deploy")
    other = TargetSpec.build(TargetOptions(command=["a"]), version="v1", what="deploy")
    one.env["LEAK"] = "1"  # type: ignore[index]  # a Mapping to readers; a platform might still write to it
    assert (
        dict(other.env) == {}
        and dict(TargetSpec.build(TargetOptions(command=["a"]), version="v2", what="deploy").env) == {}
    )


def test_upgrade_errors_quote_the_deployed_settings_normalised(tmp_path: Path) -> None:
    """What v2 inherits is v1's settings as checked: pre_stop="2s" is quoted as 2.0, as before the refactor."""
    run, _, _ = make(tmp_path)
    run.deploy(command=COMMAND, grace_period=5, pre_stop="2s")
    run.ramp()
    with pytest.raises(RolloutUsageError) as info:
        run.upgrade(command=COMMAND, grace_period=1)
    assert str(info.value).startswith("rollout.upgrade(pre_stop=2.0) must be shorter than grace_period=1: ")
    with pytest.raises(RolloutUsageError) as info:
        run.upgrade(command=COMMAND, pre_stop=6)
    assert str(info.value).startswith("rollout.upgrade(pre_stop=6) must be shorter than grace_period=5.0: ")
    run.close()


def test_the_new_version_is_the_deployed_one_from_the_upgrades_end(tmp_path: Path) -> None:
    """As before the refactor: a failure in the after phase leaves the target at v2, the version the platform
    runs; an upgrade that fails leaves it at v1."""
    run, platform, _ = make(tmp_path)
    run.deploy(command=COMMAND)
    run.ramp()
    fleet = platform.fleets[-1]
    announce = fleet.announce

    def dies_from_the_after_phase(phase: str, at: float) -> None:  # an event, not a time: a busy machine can stall
        announce(phase, at)
        if phase == "after":
            fleet.die_at = at

    fleet.announce = dies_from_the_after_phase  # type: ignore[method-assign]
    with pytest.raises(pytest.fail.Exception, match="died during phase after"):
        run.upgrade(command=[*COMMAND, "v2"])
    assert [p.name for p in run.phases][-2:] == ["upgrade", "after"]
    deployed = run.target.deployed
    assert deployed is not None and deployed.version == "v2"
    run.close()

    failing, platform, _ = make(tmp_path / "failing", FakePlatform(fail_upgrade="1 new pod never ready"))
    failing.deploy(command=COMMAND)
    failing.ramp()
    with pytest.raises(pytest.fail.Exception, match="never ready"):
        failing.upgrade(command=[*COMMAND, "v2"])
    deployed = failing.target.deployed
    assert deployed is not None and deployed.version == "v1"
    failing.close()
