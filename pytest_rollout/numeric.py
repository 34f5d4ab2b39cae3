"""When a measured value is no number: the one test every box uses (shared, no dependencies).

A rate over no requests, a quantile of an empty histogram or an empty
Prometheus answer is NaN; the judge calls it not proven, the reports ``n/a``
or ``null``. JSON holds no infinity either, so what is written to it, and the
live line, drop infinities too (``finite=True``).
"""

from __future__ import annotations

import math

__all__ = ["number_or_none"]


def number_or_none(x: float | None, *, finite: bool = False) -> float | None:
    """*x*, or None when it is no number: None or NaN; with *finite*, an infinity too.

    Only a float is tested: an int (a count) is returned as it is.
    """
    if x is None or (isinstance(x, float) and (math.isnan(x) or (finite and math.isinf(x)))):
        return None
    return x
