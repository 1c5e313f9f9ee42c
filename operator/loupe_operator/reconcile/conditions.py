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
    previous = get_condition(conditions, type_)
    kept = previous is not None and previous.status == status and previous.last_transition_time is not None
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=previous.last_transition_time if kept and previous else now,
        observed_generation=generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
