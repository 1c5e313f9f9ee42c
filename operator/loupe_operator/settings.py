"""Operator configuration, from environment variables (LOUPE_*)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from loupe_api.dataset import PodResources, RayMode


class OperatorSettings(BaseSettings):
    """Defaults that Dataset specs may override; credentials are only ever named, never held."""

    model_config = SettingsConfigDict(env_prefix="LOUPE_", extra="ignore")

    default_store: str = Field(default="s3://loupe", description="Storage for Datasets that name none.")
    store_endpoint: str | None = Field(default=None, description="S3 endpoint of the default storage.")
    store_region: str | None = Field(default=None, description="S3 region of the default storage.")
    store_credentials_secret: str | None = Field(
        default=None,
        description="Secret with the default storage's credentials, looked up in each Dataset's namespace "
        "(where its job runs) for Datasets that name no storage.",
    )
    ray_mode: RayMode = Field(default="submit", description="Default way to run jobs.")
    ray_address: str | None = Field(default=None, description="Ray Job Submission address for submit mode.")
    worker_image: str = Field(
        default="ghcr.io/loupe-dev/loupe-worker:0.1.0", description="Image of RayJob pods."
    )
    ray_version: str = Field(default="2.60.0", description="Ray version of the worker image (kuberay).")
    workers: int = Field(default=1, ge=0, description="kuberay: worker pods per RayJob cluster.")
    head_resources: PodResources = Field(
        default_factory=PodResources, description="kuberay: head pod resources (JSON)."
    )
    worker_resources: PodResources = Field(
        default_factory=PodResources, description="kuberay: worker pod resources (JSON)."
    )
    cluster_selector: dict[str, str] = Field(
        default_factory=dict, description="kuberay: labels of an existing RayCluster to run jobs on (JSON)."
    )
    ray_service_account: str | None = Field(default=None, description="kuberay: ServiceAccount of Ray pods.")
    job_ttl_seconds: int = Field(
        default=600, ge=0, description="kuberay: seconds a finished RayJob is kept before KubeRay deletes it."
    )
    submit_passes_credentials: bool = Field(
        default=True,
        description="submit: pass storage credentials to the job in its runtime environment (readable by "
        "anyone with access to that Ray cluster's Job API); false when the cluster has its own.",
    )
    peering: str | None = Field(
        default=None,
        description="kopf peering name: several replicas, one active, the others hot standbys (empty: standalone).",
    )

    @field_validator("peering", mode="before")
    @classmethod
    def _empty_is_standalone(cls, value: object) -> object:
        return value or None

    peering_settle_seconds: float = Field(
        default=10.0,
        ge=0,
        description="With peering: seconds a starting replica waits after announcing itself, so that "
        "replicas started together see each other before either handles an object.",
    )
    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty: all.")
    job_deadline_seconds: int = Field(default=3600, ge=1, description="activeDeadlineSeconds of jobs.")
    max_attempts: int = Field(default=3, ge=1, description="Attempts for one set of inputs before giving up.")
    retry_backoff_seconds: float = Field(
        default=30.0, gt=0, description="First retry delay; doubles each time."
    )
    poll_seconds: float = Field(default=10.0, gt=0, description="How often a running job is checked.")
    log_format: Literal["json", "text"] = Field(default="json", description="Log line format.")
    metrics_port: int = Field(default=9090, description="Port of the Prometheus metrics endpoint (0: off).")
    liveness_port: int = Field(default=8080, description="Port of the liveness endpoint /healthz (0: off).")
    local_state_dir: str = Field(
        default="~/.cache/loupe-operator/jobs", description="Where local-mode jobs keep their state and logs."
    )
    source_poll_seconds: float = Field(
        default=300.0, gt=0, description="Rescan interval of sources without pollInterval."
    )
