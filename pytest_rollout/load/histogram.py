"""The latency histogram every worker keeps, and its bucket layout.

Bucket upper bounds grow geometrically, eight buckets per doubling, from
100 microseconds to a little over 60 seconds (155 buckets plus ``+Inf``).
Adjacent bounds differ by a factor of 2**(1/8), about 9%, so a quantile
interpolated inside one bucket (as Prometheus' ``histogram_quantile`` does)
is off by at most 9% of its value and typically by much less: good enough to
judge a p99 or p99.9 bound to within a few percent.

Histograms from many workers are merged by adding bucket counts, never by
averaging percentiles.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

__all__ = ["BOUNDS", "Histogram", "quantile_from_buckets", "value_at_rank"]

_FIRST = 0.0001
_PER_DOUBLING = 8
_LAST = 60.0


def _bounds() -> tuple[float, ...]:
    out: list[float] = []
    k = 0
    while True:
        bound = _FIRST * 2.0 ** (k / _PER_DOUBLING)
        out.append(float(f"{bound:.6g}"))
        if bound > _LAST:
            return tuple(out)
        k += 1


#: Upper bounds (seconds) of the finite buckets; a last ``+Inf`` bucket follows.
BOUNDS: tuple[float, ...] = _bounds()


class Histogram:
    """Counts of observations per bucket; cheap to update, exact to merge."""

    __slots__ = ("counts", "total", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.total += 1
        self.sum += seconds

    def merge(self, other: Histogram) -> None:
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.total += other.total
        self.sum += other.sum

    def cumulative(self) -> list[int]:
        """Cumulative counts, one per bound and a last one for ``+Inf``."""
        out: list[int] = []
        running = 0
        for c in self.counts:
            running += c
            out.append(running)
        return out

    def quantile(self, q: float) -> float:
        """Quantile *q* in seconds, interpolated the way Prometheus does it."""
        return quantile_from_buckets(q, list(zip(BOUNDS + (float("inf"),), self.cumulative(), strict=False)))

    def to_list(self) -> list[int]:
        return list(self.counts)

    @classmethod
    def from_list(cls, counts: Sequence[int], total_sum: float = 0.0) -> Histogram:
        if len(counts) != len(BOUNDS) + 1:
            raise ValueError(f"expected {len(BOUNDS) + 1} bucket counts, got {len(counts)}")
        hist = cls()
        hist.counts = [int(c) for c in counts]
        hist.total = sum(hist.counts)
        hist.sum = total_sum
        return hist


def quantile_from_buckets(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile`` over ``(upper_bound, cumulative_count)`` pairs.

    Returns NaN when there are no observations. Linear interpolation inside
    the bucket that holds the rank; the lowest bucket interpolates from 0; a
    rank in the ``+Inf`` bucket returns the highest finite bound.
    """
    pairs = sorted(buckets)
    if not pairs or pairs[-1][1] <= 0:
        return float("nan")
    return value_at_rank(pairs, q * pairs[-1][1])


def value_at_rank(pairs: Sequence[tuple[float, float]], rank: float) -> float:
    """The value at *rank* (1-based, may be fractional) in sorted cumulative ``(upper_bound, count)`` pairs."""
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in pairs:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound
