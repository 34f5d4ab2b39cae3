"""The docs stay true: every option they name exists, and the examples parse."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    ROOT / "README.md",
    ROOT / "examples" / "kind" / "run.sh",
    ROOT / "examples" / "github" / "rollout-gate.yml",
    ROOT / "docker" / "worker.Dockerfile",
]


def test_every_option_the_docs_name_exists(pytester: pytest.Pytester) -> None:
    help_text = pytester.runpytest("--help").stdout.str()
    named = set()
    for path in DOCS:
        named |= set(re.findall(r"--(?:rollout-[a-z-]+[a-z]|prometheus-url)\b", path.read_text()))
    assert named >= {"--rollout-platform", "--rollout-html", "--rollout-compare", "--rollout-prometheus-service"}
    missing = sorted(flag for flag in named if flag not in help_text)
    assert missing == [], f"the docs name options pytest does not know: {missing}"


def test_the_example_workflow_and_script_are_well_formed() -> None:
    workflow = yaml.safe_load((ROOT / "examples" / "github" / "rollout-gate.yml").read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    gate = next(step for step in steps if step.get("id") == "gate")
    assert "--rollout-platform kubernetes" in gate["run"] and '"$status" = 6' in gate["run"]
    subprocess.run(["bash", "-n", str(ROOT / "examples" / "kind" / "run.sh")], check=True)
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "build-control-plane")], check=True)
