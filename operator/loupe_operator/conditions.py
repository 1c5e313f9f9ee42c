"""Kubernetes-style conditions: set one, keeping its transition time when its status is unchanged."""

from __future__ import annotations

from datetime import datetime

from loupe_api.common import Condition, ConditionStatus


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """A new list with the condition of ``type_`` replaced (order kept, new types appended)."""
    out: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.type != type_:
            out.append(condition)
            continue
        found = True
        changed = condition.status != status
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now
                if changed or condition.last_transition_time is None
                else condition.last_transition_time,
                observed_generation=generation,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return out


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
