"""Open-loop arrival schedules: when each request is due.

A schedule is a list of :class:`Segment` s, each a linear rate ramp (or a
constant rate) over a duration; the last one may be open-ended. The n-th
request is due when the cumulative expected count first reaches n, solved in
closed form, so long runs do not drift. Pure logic, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["Segment", "arrivals", "expected_count", "rate_at", "split_rate"]


@dataclass(frozen=True)
class Segment:
    """A rate going linearly from ``start_rps`` to ``end_rps`` over ``duration`` seconds.

    ``duration=None`` means "until stopped" (only allowed for the last segment,
    and only at a constant rate).
    """

    duration: float | None
    start_rps: float
    end_rps: float

    def count(self) -> float:
        """Expected number of arrivals in the whole segment."""
        if self.duration is None:
            return math.inf
        return (self.start_rps + self.end_rps) / 2.0 * self.duration

    def time_of(self, n: float) -> float:
        """Offset in the segment at which the cumulative count reaches *n* (``n`` >= 0)."""
        r0 = self.start_rps
        if self.duration is None or self.end_rps == r0:
            return n / r0 if r0 > 0 else math.inf
        k = (self.end_rps - r0) / self.duration
        # r0*t + k*t^2/2 = n
        disc = r0 * r0 + 2.0 * k * n
        if disc < 0:
            return math.inf
        return (math.sqrt(disc) - r0) / k


def _validate(segments: Sequence[Segment]) -> None:
    if not segments:
        raise ValueError("a schedule needs at least one segment")
    for i, seg in enumerate(segments):
        if seg.start_rps < 0 or seg.end_rps < 0:
            raise ValueError(f"segment {i}: rates must be >= 0")
        if seg.duration is None:
            if i != len(segments) - 1:
                raise ValueError(f"segment {i}: only the last segment may be open-ended")
            if seg.start_rps != seg.end_rps or seg.start_rps <= 0:
                raise ValueError(f"segment {i}: an open-ended segment needs a constant rate > 0")
        elif seg.duration < 0:
            raise ValueError(f"segment {i}: duration must be >= 0")


def arrivals(segments: Sequence[Segment], phase: float = 0.0) -> Iterator[float]:
    """Yield the due time (seconds from the schedule's start) of every request.

    *phase* in ``[0, 1)`` shifts which fractional count is due first; workers
    sharing a rate use different phases so their arrivals interleave instead of
    landing together.
    """
    _validate(segments)
    if not 0 <= phase < 1:
        raise ValueError("phase must be in [0, 1)")
    start = 0.0
    base = 0.0  # cumulative count before this segment
    n = phase  # next arrival is due when the cumulative count reaches n
    for seg in segments:
        total = seg.count()
        while n - base < total:
            t = seg.time_of(n - base)
            if not math.isfinite(t):
                break
            yield start + t
            n += 1.0
        if seg.duration is None:
            return
        start += seg.duration
        base += total


def expected_count(segments: Sequence[Segment], t0: float, t1: float) -> float:
    """Expected arrivals between offsets *t0* and *t1* (integral of the rate)."""
    _validate(segments)
    total = 0.0
    start = 0.0
    for seg in segments:
        end = math.inf if seg.duration is None else start + seg.duration
        lo, hi = max(t0, start), min(t1, end)
        if hi > lo:
            duration = seg.duration if seg.duration is not None else 1.0
            slope = 0.0 if seg.duration is None else (seg.end_rps - seg.start_rps) / duration
            r_lo = seg.start_rps + slope * (lo - start)
            r_hi = seg.start_rps + slope * (hi - start)
            total += (r_lo + r_hi) / 2.0 * (hi - lo)
        start = end
        if start >= t1:
            break
    return total


def rate_at(segments: Sequence[Segment], t: float) -> float:
    """The rate asked for at offset *t* (0 before the start and after a finite schedule's end)."""
    if t < 0:
        return 0.0
    start = 0.0
    for seg in segments:
        if seg.duration is None or t < start + seg.duration:
            if seg.duration is None or seg.duration == 0:
                return seg.start_rps
            return seg.start_rps + (seg.end_rps - seg.start_rps) * (t - start) / seg.duration
        start += seg.duration
    return 0.0


def split_rate(rps: float, workers: int) -> list[float]:
    """Each worker's share of *rps*, equal shares."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    return [rps / workers] * workers
