"""Retention: which versions a dataset keeps, and the records left behind by the ones it expired."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from loupe_api.common import ApiModel, Duration


class RetentionSpec(ApiModel):
    """Which versions to keep. A version is kept when any rule keeps it; the current version, every
    tagged version and every version a model was trained on are always kept. With no rule set,
    every version is kept (the default)."""

    keep_last: int | None = Field(default=None, ge=1, description="Keep the newest N versions.")
    keep_for: Duration | None = Field(
        default=None, description="Keep versions younger than this, e.g. 30d or 12h."
    )

    def active(self) -> bool:
        return self.keep_last is not None or self.keep_for is not None


class ExpiredVersion(ApiModel):
    """datasets/<dataset>/expired/<version>.json: what is left of an expired version, so that asking
    for it says what happened instead of "not found", and lineage shows where the chain was cut."""

    dataset: str = Field(description="Dataset name.")
    version: str = Field(description="The expired version.")
    created: datetime = Field(description="When the version was committed.")
    expired: datetime = Field(description="When retention expired it.")
    reason: str = Field(description="The rule that let it go, in words.")
    samples: int = Field(description="Samples it held.")
    run_id: str = Field(description="The run that produced it.")
    parent: str | None = Field(default=None, description="Its parent version.")
