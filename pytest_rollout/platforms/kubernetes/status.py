"""Where a Deployment's rollout stands, read off the object as `kubectl rollout status` reads it (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RolloutStatus", "conditions_text", "rollout_status"]


@dataclass(frozen=True)
class RolloutStatus:
    """Where a Deployment's rollout stands, read like ``kubectl rollout status``."""

    done: bool
    message: str
    stalled: bool = False


def rollout_status(dep: Mapping[str, Any]) -> RolloutStatus:
    """The rollout state of Deployment *dep* (its JSON form, status included)."""
    meta = dep.get("metadata") or {}
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    name = meta.get("name", "?")
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return RolloutStatus(False, f"deployment {name}: waiting for the controller to observe the new spec")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return RolloutStatus(
                False, f"deployment {name} exceeded its progress deadline: {cond.get('message', '')}", stalled=True
            )
    want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < want:
        return RolloutStatus(False, f"deployment {name}: {updated} of {want} new replicas updated")
    if total > updated:
        return RolloutStatus(False, f"deployment {name}: {total - updated} old replicas pending termination")
    if available < updated:
        return RolloutStatus(False, f"deployment {name}: {available} of {updated} updated replicas available")
    return RolloutStatus(True, f"deployment {name} successfully rolled out")


def conditions_text(obj: Mapping[str, Any]) -> str:
    """The conditions of *obj* as one line each (``type=status reason: message``)."""
    lines = []
    for cond in (obj.get("status") or {}).get("conditions") or []:
        lines.append(
            f"  {cond.get('type')}={cond.get('status')} {cond.get('reason') or ''}: {cond.get('message') or ''}".rstrip(
                ": "
            )
        )
    return "\n".join(lines) or "  (no conditions)"
