"""RetrainPolicy: when a model is retrained on a dataset, and what runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from loupe_api.common import ApiModel, Condition, Duration, ObjectMeta, cel_rules
from loupe_api.constants import KIND_RETRAIN_POLICY


class RetrainTriggers(ApiModel):
    """Conditions that start a run; any one is enough."""

    min_new_samples: int | None = Field(
        default=None, ge=1, description="Samples added since the version the last successful run used."
    )
    min_new_fraction: float | None = Field(
        default=None, gt=0, description="Added samples as a fraction of that version's size."
    )
    on_major_version: bool = Field(default=True, description="Run on every MAJOR dataset version.")
    drift_threshold: float | None = Field(default=None, ge=0, description="Run when drift exceeds this.")
    schedule: str | None = Field(
        default=None,
        pattern=r"^\S+(\s+\S+){4}$",
        description="Cron schedule, five fields (e.g. 0 3 * * 1): run on the latest version at these times.",
    )


class KeyReference(ApiModel):
    """One key of a Secret."""

    name: str = Field(min_length=1, description="Name of the Secret, in the policy's namespace.")
    key: str = Field(default="hmac-key", min_length=1, description="Key in the Secret.")


class WebhookAction(ApiModel):
    """POST a JSON payload signed with HMAC-SHA256 (header X-Loupe-Signature-256: sha256=<hex>)."""

    url: str = Field(min_length=1, pattern=r"^https?://", description="Receiver URL (http or https).")
    secret_ref: KeyReference | None = Field(default=None, description="Secret key holding the HMAC key.")
    max_attempts: int = Field(default=5, ge=1, le=20, description="Deliveries tried before the run fails.")


class RetrainAction(ApiModel):
    """What runs: a Job, a RayJob, a webhook or (embedded mode) a local command."""

    model_config = cel_rules(
        (
            "[has(self.job), has(self.rayJob), has(self.webhook), has(self.command)]"
            ".filter(x, x).size() == 1",
            "set exactly one of job, rayJob, webhook and command",
        )
    )

    job: dict[str, Any] | None = Field(
        default=None,
        description="A batch/v1 Job template (spec only).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    ray_job: dict[str, Any] | None = Field(
        default=None,
        description="A ray.io/v1 RayJob spec.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    webhook: WebhookAction | None = Field(default=None, description="An HTTP webhook.")
    command: list[str] | None = Field(default=None, description="A local command (embedded mode only).")

    @model_validator(mode="after")
    def _exactly_one(self) -> RetrainAction:
        chosen = [x for x in (self.job, self.ray_job, self.webhook, self.command) if x is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of job, rayJob, webhook and command")
        return self


class PromotionSpec(ApiModel):
    """How a new model is compared with the current baseline."""

    metric: str = Field(min_length=1, description="Metric the run reports, e.g. accuracy or val_loss.")
    higher_is_better: bool = Field(default=True, description="False for losses and error rates.")
    min_improvement: float = Field(default=0.0, ge=0, description="Least gain over the baseline to promote.")


class RetrainPolicySpec(ApiModel):
    """When to retrain on a dataset and what to run."""

    dataset_ref: str = Field(min_length=1, description="Name of the Dataset, in the same namespace.")
    triggers: RetrainTriggers = Field(default_factory=RetrainTriggers, description="What starts a run.")
    action: RetrainAction = Field(description="What runs.")
    cooldown: Duration | None = Field(default=None, description="Least time between two runs.")
    concurrency_policy: Literal["Forbid", "Replace", "Allow"] = Field(
        default="Forbid", description="What to do when a run is due while another is active."
    )
    suspend: bool = Field(default=False, description="Start no new runs.")
    history_limit: int = Field(default=10, ge=1, le=100, description="Runs kept in status.")
    promotion: PromotionSpec | None = Field(
        default=None, description="Promote a model that beats the baseline on this metric."
    )
    run_timeout: Duration = Field(
        default="24h", description="A run that has written no result after this long has failed."
    )


class RetrainRun(ApiModel):
    """One training run."""

    name: str = Field(description="Run name.")
    dataset_version: str = Field(description="Dataset version the run trained on.")
    state: Literal["Pending", "Running", "Succeeded", "Failed", "Stopped"] = Field(
        description="Run state (Stopped: replaced by a newer run)."
    )
    start_time: datetime | None = Field(default=None, description="When it started.")
    completion_time: datetime | None = Field(default=None, description="When it finished.")
    model_uri: str | None = Field(default=None, description="Model artifact reported by the run.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Metrics reported by the run.")
    promoted: bool | None = Field(default=None, description="Whether the model beat the baseline.")
    message: str = Field(default="", description="Why it is in this state.")
    trigger: str = Field(default="", description="What started it, in words.")
    result_uri: str = Field(default="", description="Where the run writes its result record.")
    attempts: int = Field(default=0, ge=0, description="Webhook deliveries tried.")
    next_attempt: datetime | None = Field(default=None, description="When the next delivery is due.")


class Baseline(ApiModel):
    """The model currently promoted."""

    run: str = Field(description="Run that produced it.")
    model_uri: str = Field(description="Model artifact.")
    dataset_version: str = Field(description="Dataset version it trained on.")
    metric: float | None = Field(default=None, description="Its value of the promotion metric.")


class RetrainPolicyStatus(ApiModel):
    """Observed state of the policy."""

    observed_generation: int | None = Field(default=None, description="Generation last reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing and Degraded.")
    runs: list[RetrainRun] = Field(default_factory=list, description="Latest runs, newest first.")
    last_trained_version: str | None = Field(
        default=None, description="Dataset version of the last successful run: new data is counted from it."
    )
    last_schedule_time: datetime | None = Field(default=None, description="Latest schedule slot acted on.")
    baseline: Baseline | None = Field(default=None, description="The promoted model.")


class TrainingResult(ApiModel):
    """The record a training run writes to its result URI (JSON)."""

    state: Literal["Succeeded", "Failed"] = Field(default="Succeeded", description="How the run ended.")
    model_uri: str | None = Field(default=None, description="The model artifact it produced.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Evaluation metrics.")
    message: str = Field(default="", description="Anything worth saying.")


class ModelRecord(ApiModel):
    """Lineage edge run -> model, kept in storage next to the dataset's versions."""

    model_uri: str = Field(description="Model artifact.")
    policy: str = Field(description="RetrainPolicy (namespace/name).")
    run: str = Field(description="Run name.")
    dataset: str = Field(description="Dataset (namespace/name).")
    dataset_version: str = Field(description="Version it trained on.")
    manifest_uri: str = Field(description="Manifest of that version.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Reported metrics.")
    promoted: bool | None = Field(default=None, description="Whether it became the baseline.")
    created: datetime = Field(description="When the run finished.")


class RetrainPolicy(ApiModel):
    """When a model is retrained, and on what."""

    api_version: Literal["loupe.dev/v1alpha1"] = Field(
        default="loupe.dev/v1alpha1", description="loupe.dev/v1alpha1"
    )
    kind: Literal["RetrainPolicy"] = Field(default=KIND_RETRAIN_POLICY, description="RetrainPolicy")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: RetrainPolicySpec = Field(description="Triggers and action.")
    status: RetrainPolicyStatus | None = Field(default=None, description="Observed state.")
