"""Operator configuration, from environment variables (LOUPE_*)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from loupe_api.dataset import RayMode


class OperatorSettings(BaseSettings):
    """Defaults that Dataset specs may override; credentials are only ever named, never held."""

    model_config = SettingsConfigDict(env_prefix="LOUPE_", extra="ignore")

    default_store: str = Field(default="s3://loupe", description="Storage for Datasets that name none.")
    store_endpoint: str | None = Field(default=None, description="S3 endpoint of the default storage.")
    store_region: str | None = Field(default=None, description="S3 region of the default storage.")
    store_credentials_secret: str | None = Field(
        default=None,
        description="Secret (in the operator's namespace) with the default storage's credentials.",
    )
    ray_mode: RayMode = Field(default="submit", description="Default way to run jobs.")
    ray_address: str | None = Field(default=None, description="Ray Job Submission address for submit mode.")
    worker_image: str = Field(
        default="ghcr.io/loupe-dev/loupe-worker:0.1.0", description="Image of RayJob pods."
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
