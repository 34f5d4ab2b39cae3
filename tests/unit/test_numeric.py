"""number_or_none: the one test for "no number" that the judge, the reports and the live line share."""

from __future__ import annotations

import math

from pytest_rollout.numeric import number_or_none


def test_nan_and_none_are_no_number_and_everything_else_is_kept_as_it_is() -> None:
    assert number_or_none(None) is None
    assert number_or_none(math.nan) is None
    assert number_or_none(math.inf) == math.inf
    assert number_or_none(-math.inf) == -math.inf
    assert number_or_none(0.25) == 0.25
    count = number_or_none(3)
    assert count == 3 and isinstance(count, int)


def test_finite_drops_infinities_too() -> None:
    assert number_or_none(math.inf, finite=True) is None
    assert number_or_none(-math.inf, finite=True) is None
    assert number_or_none(math.nan, finite=True) is None
    assert number_or_none(0.0, finite=True) == 0.0
