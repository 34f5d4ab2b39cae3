"""examples/kind holds tests for a kind cluster: collect them only with --rollout-platform kubernetes."""

from pathlib import Path

import pytest

KIND = Path(__file__).parent / "kind"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    platform = config.getoption("rollout_platform", default=None) or config.getini("rollout_platform")
    if platform != "kubernetes" and KIND in (collection_path, *collection_path.parents):
        return True
    return None
