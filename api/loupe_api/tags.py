"""Tags: human names for versions (``production``, ``model-2026-11``), stored beside the version records."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import Field

from loupe_api.common import ApiModel

# A DNS-label-like name that cannot be mistaken for a semantic version (those have two dots and digits).
TAG_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


def tag_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a tag, or None when it can."""
    if SEMVER.match(name):
        return f"tag {name!r} looks like a version number; tags name versions, e.g. production"
    if not TAG_NAME.match(name):
        return (
            f"tag {name!r} is not a valid name: lower-case letters, digits, '.', '_' and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return None


class TagMove(ApiModel):
    """A version the tag pointed to before it was moved with --force."""

    version: str = Field(description="The version it pointed to.")
    since: datetime = Field(description="When it started pointing there.")
    until: datetime = Field(description="When it was moved away.")


class TagRecord(ApiModel):
    """datasets/<dataset>/tags/<name>.json: which version a tag names, since when, and where it was."""

    dataset: str = Field(description="Dataset name.")
    name: str = Field(description="Tag name.")
    version: str = Field(description="The version it names.")
    created: datetime = Field(description="When it was set to this version.")
    history: list[TagMove] = Field(default_factory=list, description="Earlier versions, oldest first.")
