"""Job payloads passed from the operator (or the CLI) to the workers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loupe_api.common import ApiModel, SecretReference
from loupe_api.dataset import DatasetSpec, DatasetStats
from loupe_api.ingest import IngestSourceSpec

# The contract between whoever launches a job and the workers' ``run-job`` command.
PAYLOAD_ENV = "LOUPE_RUN_REQUEST"  # the RunRequest JSON travels in this environment variable
ENTRYPOINT = f"python -m loupe_workers run-job env:{PAYLOAD_ENV}"
RESULT_PREFIX = "LOUPE_RESULT "  # the job prints its RunResult on a line starting with this
FAILURE_PREFIX = "LOUPE_FAILURE "  # a job that refuses to run prints its RunFailure on such a line


class RunRequest(ApiModel):
    """Everything a worker needs to build the next version of one dataset. Never carries credentials."""

    dataset: str = Field(description="Dataset name (namespace/name on Kubernetes).")
    spec: DatasetSpec = Field(description="The dataset spec.")
    sources: dict[str, IngestSourceSpec] = Field(description="The referenced IngestSource specs by name.")
    store_uri: str = Field(description="Resolved storage URI (s3://bucket/prefix or a folder).")
    store_endpoint: str | None = Field(default=None, description="S3 endpoint of the store.")
    store_region: str | None = Field(default=None, description="S3 region of the store.")
    run_id: str | None = Field(default=None, description="Run id; derived from the inputs when empty.")
    commit: bool = Field(default=True, description="Commit the version (false: compute and report only).")
    allow_shrink: bool = Field(
        default=False,
        description="Accept a listing that lost more than versioning.maxRemovedFraction of the current "
        "version's objects (a removal that is intended).",
    )
    kind: Literal["run", "gc"] = Field(
        default="run",
        description="run: build the next version; gc: apply spec.retention (expiry, tiers) and collect "
        "garbage, recording a GcResult in storage.",
    )

    def secrets(self) -> dict[str, SecretReference]:
        """The distinct Secrets the job needs (storage and S3 sources), by name."""
        refs = [s.s3.credentials_secret_ref for s in self.sources.values() if s.s3 is not None]
        refs.append(self.spec.storage.credentials_secret_ref)
        return {ref.name: ref for ref in refs if ref is not None}


class RunResult(ApiModel):
    """What a run produced."""

    dataset: str = Field(description="Dataset name.")
    run_id: str = Field(description="Run id.")
    version: str | None = Field(
        default=None, description="The version committed or adopted; none if nothing changed."
    )
    created: bool = Field(default=False, description="Whether this run committed a new version.")
    current_version: str | None = Field(default=None, description="Latest version after the run.")
    stats: DatasetStats = Field(description="Counts of the run.")
    message: str = Field(default="", description="Summary in words.")
    expired: list[str] = Field(
        default_factory=list, description="Versions that spec.retention expired after this run."
    )


class RunFailure(ApiModel):
    """Why a job refused to build a version (the current version stays); the operator copies the
    reason into the Dataset's Degraded condition."""

    reason: str = Field(description="CamelCase reason, e.g. SourceUnavailable or SuspiciousShrink.")
    message: str = Field(description="What happened and what to do, in one or two lines.")
