"""Building blocks shared by every Loupe resource."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
        use_attribute_docstrings=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it is stored in Kubernetes or JSON: camelCase, no unset defaults."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def camel_keys(row: Mapping[str, Any]) -> dict[str, Any]:
    """A record whose keys are column or field names (lineage edges, queue items) with camelCase keys,
    the one key style of every JSON that Loupe prints and stores. Values are left as they are."""
    return {to_camel(key): value for key, value in row.items()}


_DURATION = re.compile(r"^(\d+(\.\d+)?(ms|s|m|h|d))+$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in a Kubernetes-style duration such as ``90s``, ``5m``, ``1h30m`` or ``30d``."""
    if not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m, 1h30m or 30d")
    return sum(
        float(number) * _DURATION_UNITS[unit]
        for number, _, unit in re.findall(r"(\d+(\.\d+)?)(ms|s|m|h|d)", text)
    )


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


_DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"

# The pattern follows the AfterValidator, so pydantic cannot fold it into the string schema and
# leaves it out of the JSON schema; WithJsonSchema puts it back so the generated CRD checks it too.
Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    Field(pattern=_DURATION_PATTERN),
    WithJsonSchema({"type": "string", "pattern": _DURATION_PATTERN}),
]

GateAction = Literal["reject", "flag", "quarantine"]
ConditionStatus = Literal["True", "False", "Unknown"]


class SecretReference(ApiModel):
    """A Kubernetes Secret that holds object-store credentials (never the credentials themselves)."""

    name: str = Field(min_length=1, description="Name of the Secret, in the namespace of the resource.")
    access_key_id_key: str = Field(
        default="AWS_ACCESS_KEY_ID", description="Key in the Secret that holds the access key id."
    )
    secret_access_key_key: str = Field(
        default="AWS_SECRET_ACCESS_KEY", description="Key in the Secret that holds the secret access key."
    )


def credential_env_names(secret_name: str) -> tuple[str, str]:
    """Environment variables that carry one Secret's S3 keys into a job: (access key id, secret key).

    Each Secret gets its own pair, so a store and its sources may use different credentials; the
    operator fills them (from the Secret, or by ``secretKeyRef`` on Kubernetes) and workers read them.
    """
    stem = re.sub(r"[^A-Z0-9]", "_", secret_name.upper())
    return f"LOUPE_S3_{stem}_ACCESS_KEY_ID", f"LOUPE_S3_{stem}_SECRET_ACCESS_KEY"


class Condition(ApiModel):
    """A Kubernetes-style condition: the latest observation of one aspect of the resource."""

    type: str = Field(description="Condition type: Ready, Progressing or Degraded.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="One CamelCase word saying why the condition is as it is.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: datetime | None = Field(default=None, description="When the status last changed.")
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this condition was computed from."
    )


class ObjectMeta(ApiModel):
    """The part of Kubernetes object metadata that Loupe reads."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Name of the resource (a DNS subdomain).",
    )
    namespace: str | None = Field(default=None, description="Namespace of the resource.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the resource.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations of the resource.")
    generation: int | None = Field(default=None, description="Generation of the spec.")
    uid: str | None = Field(default=None, description="Unique id given by the API server.")


def cel_rules(*rules: tuple[str, str]) -> ConfigDict:
    """Model config carrying CEL validation rules (rule, message) into the generated CRD schema."""
    return ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}
    )
