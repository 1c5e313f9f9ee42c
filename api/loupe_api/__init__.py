"""Loupe API contract: resource models, job payloads and storage records. Depends on pydantic only."""

from loupe_api.common import ApiModel, Condition, ObjectMeta, SecretReference, parse_duration
from loupe_api.constants import API_VERSION, GROUP, VERSION
from loupe_api.dataset import Dataset, DatasetSpec, DatasetStats, DatasetStatus, VersionSummary
from loupe_api.ingest import IngestSource, IngestSourceSpec, IngestSourceStatus
from loupe_api.jobs import RunRequest, RunResult
from loupe_api.resources import Resource, SpecError, parse_resource
from loupe_api.retrain import RetrainPolicy, RetrainPolicySpec, RetrainPolicyStatus
from loupe_api.versions import VersionChange, VersionRecord

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "ApiModel",
    "Condition",
    "Dataset",
    "DatasetSpec",
    "DatasetStats",
    "DatasetStatus",
    "IngestSource",
    "IngestSourceSpec",
    "IngestSourceStatus",
    "ObjectMeta",
    "Resource",
    "RetrainPolicy",
    "RetrainPolicySpec",
    "RetrainPolicyStatus",
    "RunRequest",
    "RunResult",
    "SecretReference",
    "SpecError",
    "VersionChange",
    "VersionRecord",
    "VersionSummary",
    "parse_duration",
    "parse_resource",
]
