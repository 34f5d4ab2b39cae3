"""Where the plugin keeps its per-item and per-session state (pytest stash keys), and its exit status."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_rollout.slo import SLOSpec

__all__ = ["EXIT_NOT_JUDGED", "FAILED_KEY", "OUTCOME_KEY", "ROLLOUT_KEY", "SIGTERM_KEY", "SPEC_KEY"]

SPEC_KEY = pytest.StashKey[SLOSpec]()


ROLLOUT_KEY = pytest.StashKey[Any]()


OUTCOME_KEY = pytest.StashKey[str]()


SIGTERM_KEY = pytest.StashKey[list[tuple[int, Any]]]()


FAILED_KEY = pytest.StashKey[set[str]]()


#: Exit status when no test failed but SLO tests were not proven (too little evidence, the fleet did not hold the
#: load, Prometheus unreachable, a cluster error): nothing was shown broken, and nothing held. Never a pass.
#: Any broken SLO, a test's own error or misuse of the fixture, or any other failing test keeps pytest's own
#: status 1 (decided in plugin/outcome.py).
EXIT_NOT_JUDGED = 6
