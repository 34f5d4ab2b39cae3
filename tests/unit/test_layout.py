"""The package's layout keeps its rules (README, "Architecture"): who may import whom, how big a module grows.

Read from the source with :mod:`ast`, so a rule broken anywhere fails here
with the module and the import that broke it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import pytest_rollout

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pytest_rollout"
README = (ROOT / "README.md").read_text()

MODULE_LINES, CLASS_LINES = 500, 300


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """The pytest_rollout modules (and ``pytest``) that *path* imports, at any depth of its code.

    Imports only type checkers follow (``if TYPE_CHECKING:``) count as well, and so do those of the
    ``else:`` branch of such a block: a cycle through annotations is still a cycle a reader must untangle.
    """
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("pytest", "_pytest"):
                out.add("pytest")
            elif name in MODULES:
                out.add(name)
    return out - {module_name(path)} if path.is_relative_to(ROOT) else out


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def in_box(module: str, box: str) -> bool:
    return module == f"pytest_rollout.{box}" or module.startswith(f"pytest_rollout.{box}.")


def test_the_load_box_imports_nothing_of_the_run_the_platforms_the_plugin_or_pytest() -> None:
    for name, path in MODULES.items():
        if in_box(name, "load"):
            bad = sorted(
                m
                for m in imports(path)
                if m == "pytest" or any(in_box(m, b) for b in ("run", "platforms", "plugin", "report", "judge"))
            )
            assert bad == [], f"{name} imports {bad}"


def test_the_worker_process_is_a_leaf_of_the_load_box() -> None:
    seen, todo = set(), ["pytest_rollout.load.worker"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(GRAPH[name] - {"pytest"})
    outside = sorted(m for m in seen if not in_box(m, "load") and m != "pytest_rollout")
    assert outside == [], f"python -m pytest_rollout.load.worker loads {outside}"


def test_nothing_imports_the_cli() -> None:
    assert [name for name, deps in GRAPH.items() if "pytest_rollout.cli" in deps] == []


def test_the_run_talks_to_platforms_only_through_the_protocol() -> None:
    allowed = {"pytest_rollout.platforms", "pytest_rollout.platforms.base", "pytest_rollout.platforms.rolling"}
    for name, path in MODULES.items():
        if in_box(name, "run"):
            bad = sorted(m for m in imports(path) if in_box(m, "platforms") and m not in allowed)
            assert bad == [], f"{name} imports {bad}"
            calls = [
                node.lineno
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
            ]
            assert calls == [], f"{name} asks an object for what its protocol should say (getattr at lines {calls})"


def test_there_are_no_import_cycles() -> None:
    cycles: list[list[str]] = []

    def walk(name: str, stack: list[str]) -> None:
        for dep in sorted(GRAPH.get(name, set()) - {"pytest"}):
            if dep in stack:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in done:
                walk(dep, [*stack, dep])
        done.add(name)

    done: set[str] = set()
    for name in sorted(GRAPH):
        if name not in done:
            walk(name, [name])
    assert cycles == []


def test_modules_and_classes_stay_small() -> None:
    big = []
    for path in MODULES.values():
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        lines = len(path.read_text().splitlines())
        if lines > MODULE_LINES:
            big.append(f"{rel} has {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > CLASS_LINES:
                    big.append(f"{rel}: class {node.name} has {size} lines")
    assert big == []


def test_the_graph_sees_imports_made_only_for_type_checkers(tmp_path: Path) -> None:
    """The cycle check would pass a cycle hidden behind ``if TYPE_CHECKING:`` (or its else) if the graph did."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pytest_rollout.run.rollout import Rollout\n"
        "else:\n    from pytest_rollout.judge import verdict\n"
    )
    assert {"pytest_rollout.run.rollout", "pytest_rollout.judge.verdict"} <= imports(source)


def test_every_box_of_the_flow_is_a_package_named_in_the_readme() -> None:
    architecture = README.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    boxes = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert boxes == ["judge", "load", "platforms", "plugin", "report", "run"]
    for box in boxes:
        assert re.search(rf"^\s*{box}/", architecture, re.M), f"the README's architecture does not show {box}/"


def test_the_public_api_is_what_it_was() -> None:
    assert pytest_rollout.__all__ == [
        "Aim",
        "FleetError",
        "InputError",
        "KubernetesError",
        "LoadBalancerError",
        "Phase",
        "PhaseMeasurement",
        "Platform",
        "ProcessStartError",
        "PrometheusError",
        "ReleaseError",
        "ReplicaNotReady",
        "Request",
        "Rollout",
        "RolloutError",
        "RolloutUsageError",
        "RunError",
        "SLOSpec",
        "SLOSpecError",
        "TargetSpec",
        "UpgradeEvent",
        "UpgradeFailed",
        "UpgradeResult",
        "Values",
        "Verdict",
        "VerdictEntry",
        "__version__",
        "parse_duration",
        "parse_slo",
    ]
    for name in pytest_rollout.__all__:
        assert hasattr(pytest_rollout, name), name


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_what_it_exports(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    has_all = any(
        isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
        for n in tree.body
    )
    is_package_marker = MODULES[module].name == "__init__.py" and len(tree.body) <= 1
    assert has_all or is_package_marker, module


def test_every_error_belongs_to_one_category() -> None:
    from pytest_rollout import errors

    categories = (errors.InputError, errors.ReleaseError, errors.RunError)
    for name in errors.__all__:
        cls = getattr(errors, name)
        if cls in (errors.RolloutError, *categories):
            continue
        assert sum(issubclass(cls, c) for c in categories) == 1, name
        assert name in errors.__doc__  # the tree in the docstring shows it
