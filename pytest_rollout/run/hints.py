"""What a broken upgrade's own facts say about its cause: errors that follow the old pods' termination.

The commonest way a rolling update drops requests on Kubernetes (kubernetes/kubernetes#21418, #67592): a
pod gets SIGTERM while kube-proxy still sends it new connections, because its endpoint's removal has not
reached every node yet. When the errors of a broken upgrade all come after termination began, the failure
message says so, with the pods' own preStop and grace period and how long the errors lasted. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pytest_rollout.judge.verdict import Outcome, VerdictEntry
from pytest_rollout.platforms.base import UpgradeEvent

__all__ = ["termination_hint"]

#: how long after a termination began its errors may still show in a rate series (the series' own window,
#: 3 s, plus endpoint propagation on a slow cluster)
FOLLOW_S = 15.0


def termination_hint(
    entries: Sequence[VerdictEntry],
    events: Sequence[UpgradeEvent],
    error_rate: Sequence[Sequence[float]],
    upgrade: tuple[float, float] | None,
    errors_by_class: Mapping[str, float] | None = None,
) -> str | None:
    """A hint when the upgrade is broken and every error in it came after an old pod began terminating.

    *error_rate* is ``[[unix time, rate], ...]`` (the report's series: each point a trailing window);
    *upgrade* the phase's ``(start, end)``; *errors_by_class* the upgrade's errors by class. Only events that
    carry the pods' preStop and grace period (the kubernetes platform's ``out`` events) count, and only
    errors that are mostly failed connections and timeouts: with ``maxUnavailable: 0`` a new version starts
    serving as old pods start terminating, so its own 5xx answers would follow the terminations too.
    """
    if upgrade is None or not any(e.outcome is Outcome.BROKEN and e.phase == "upgrade" for e in entries):
        return None
    if errors_by_class is not None:
        lost = errors_by_class.get("connection", 0) + errors_by_class.get("timeout", 0)
        if lost <= sum(errors_by_class.values()) / 2:
            return None  # mostly answers the release gave (HTTP errors): the release's own doing
    start, end = upgrade
    outs = [
        e
        for e in events
        if e.action == "out" and e.pre_stop_s is not None and start - UpgradeEvent.EARLY_S <= e.at <= end
    ]
    errors = [t for t, rate in error_rate if start <= t <= end + FOLLOW_S and rate > 0]
    if not outs or not errors:
        return None
    first = min(outs, key=lambda e: e.at)
    if min(errors) < first.at:
        return None  # errors before any pod was terminated: something else broke
    # each error belongs to the latest termination that began before it
    since = [t - max(o.at for o in outs if o.at <= t) for t in errors]
    if max(since) > FOLLOW_S:
        return None  # some errors came long after every termination: not this cause alone
    followed = [o for o in outs if any(o.at <= t <= o.at + FOLLOW_S for t in errors)]
    lasted = max(since)
    pre_stop = first.pre_stop_s or 0.0
    grace = first.grace_period_s
    had = f"a preStop sleep of {pre_stop:g}s" if pre_stop else "no preStop sleep"
    suggest = max(math.ceil(lasted), math.ceil(pre_stop) + 1, 2)
    lines = [
        f"hint: the errors in upgrade came after old pods began terminating ({len(followed)} of {len(outs)} "
        f"terminations were followed by errors, the first {min(errors) - first.at:.1f}s after {first.replica} "
        f"began; they lasted up to {lasted:.1f}s after a termination began). Those pods had {had}"
        + (f" and a grace period of {grace:g}s." if grace is not None else "."),
        f"  - a preStop sleep of at least the endpoint propagation time keeps a pod serving until kube-proxy "
        f"stops sending it new connections: here about {suggest}s or more;",
    ]
    if grace is not None:
        lines.append(
            f"  - the grace period must outlast the preStop sleep plus the app's drain: with a {suggest}s preStop, "
            f"more than {suggest}s plus the drain (now {grace:g}s)."
        )
    return "\n".join(lines)
