"""Shared helpers for pytest-rollout's own tests."""

from __future__ import annotations

import shutil

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def needs_haproxy() -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (scripts/setup installs it)")


@pytest.fixture
def needs_prometheus() -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (scripts/setup installs it)")
