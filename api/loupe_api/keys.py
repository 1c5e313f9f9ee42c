"""Every key of the object store, in one place (pure: no I/O). Workers write and read these keys, and so
does the operator; `tests/storage/test_storage_keys.py` checks that no other module builds them.

    blobs/sha256/<2>/<sha256>                                  raw bytes, content-addressed, shared
    renditions/<params digest>/<2>/<source sha256>.<ext>       derived forms, by source and params, shared
    datasets/<dataset>/versions/<X.Y.Z>.json                   version records (the commit point)
    datasets/<dataset>/tags/<name>.json                        tags
    datasets/<dataset>/expired/<X.Y.Z>.json                    tombstones of expired versions
    datasets/<dataset>/tiers/<X.Y.Z>.json                      the storage tier of a version's bytes
    datasets/<dataset>/tiers.pass.json                         what the last tiering pass settled
    datasets/<dataset>/gc/<job id>.json                        what a gc job did (read by the operator)
    datasets/<dataset>/parts/<sha256>.parquet                  manifest parts, content-addressed
    datasets/<dataset>/inputs/<X.Y.Z>/<inputs digest>.json     inputs a run confirmed to give a version
    datasets/<dataset>/runs/<run id>/...                       a run's part lists, analysis, ANN index,
                                                               label-error candidates
    datasets/<dataset>/reviews/<X.Y.Z>/predictions.parquet     imported predictions (review queue)
    embeddings/<model id>/parts/<digest>.parquet               embeddings by sha256, shared
    models/<2>/<sha256 of the model URI>.json                  model -> run -> version lineage
    retrain/<namespace>/<policy>/...                           retraining state and run results
    leases/<id>.json, gc.lock.json                             runs in flight, the collector's lock
"""

from __future__ import annotations

import hashlib
import re

BLOBS = "blobs/"
RENDITIONS = "renditions/"
DATASETS = "datasets/"
EMBEDDINGS = "embeddings/"
MODELS = "models/"
RETRAIN = "retrain/"
LEASES = "leases/"
GC_LOCK = "gc.lock.json"

VERSION_RECORD = re.compile(r"datasets/(?P<dataset>.+)/versions/\d+\.\d+\.\d+\.json")


def blob_key(sha256: str) -> str:
    """Content address of raw bytes."""
    return f"{BLOBS}sha256/{sha256[:2]}/{sha256}"


def rendition_key(params_digest: str, source_sha256: str, extension: str) -> str:
    """A rendition of raw bytes under one parameter set (RenditionSpec.digest): deterministic bytes, so
    the key alone says whether it was computed, by any version or dataset of the store."""
    return f"{RENDITIONS}{params_digest}/{source_sha256[:2]}/{source_sha256}.{extension}"


def blob_prefix() -> str:
    """What precedes the sha256 in a blob key, minus its two-character folder (for vectorised joins)."""
    return f"{BLOBS}sha256/"


def dataset_prefix(dataset: str) -> str:
    return f"{DATASETS}{dataset}"


def versions_prefix(dataset: str) -> str:
    return f"{dataset_prefix(dataset)}/versions/"


def version_key_of(dataset: str, version: str) -> str:
    return f"{versions_prefix(dataset)}{version}.json"


def run_prefix(dataset: str, run_id: str) -> str:
    return f"{dataset_prefix(dataset)}/runs/{run_id}"


def inputs_seen_prefix(dataset: str, version: str) -> str:
    """The marks of ``version`` (inputs_seen_key); collected with the version when it expires."""
    return f"{dataset_prefix(dataset)}/inputs/{version}/"


def inputs_seen_key(dataset: str, version: str, inputs_digest: str) -> str:
    """Marks that a run over inputs ``inputs_digest`` found nothing to change in ``version``: while that
    version is the latest, a run over the same inputs may answer "no change" without reading it."""
    return f"{inputs_seen_prefix(dataset, version)}{inputs_digest}.json"


def manifest_part_key(dataset_folder: str, sha256: str) -> str:
    """A manifest part, by content, under its dataset's folder (``dataset_prefix``)."""
    return f"{dataset_folder}/parts/{sha256}.parquet"


def tags_prefix(dataset: str) -> str:
    return f"{dataset_prefix(dataset)}/tags/"


def tag_key(dataset: str, name: str) -> str:
    return f"{tags_prefix(dataset)}{name}.json"


def expired_prefix(dataset: str) -> str:
    return f"{dataset_prefix(dataset)}/expired/"


def expired_key(dataset: str, version: str) -> str:
    """The tombstone of a version that retention expired."""
    return f"{expired_prefix(dataset)}{version}.json"


def tiers_prefix(dataset: str) -> str:
    return f"{dataset_prefix(dataset)}/tiers/"


def tiers_pass_key(dataset: str) -> str:
    """What the last tiering pass settled (a fingerprint of its inputs), so that the next one can skip."""
    return f"{dataset_prefix(dataset)}/tiers.pass.json"


def tier_key(dataset: str, version: str) -> str:
    """Where a version's sample bytes were moved (a storage class), when they were."""
    return f"{tiers_prefix(dataset)}{version}.json"


def gc_result_key(dataset: str, job_id: str) -> str:
    """The result record of one gc job."""
    return f"{dataset_prefix(dataset)}/gc/{job_id}.json"


def reviews_prefix(dataset: str, version: str) -> str:
    return f"{dataset_prefix(dataset)}/reviews/{version}/"


def predictions_key(dataset: str, version: str) -> str:
    return f"{reviews_prefix(dataset, version)}predictions.parquet"


def index_keys(dataset: str, run_id: str, model: str) -> tuple[str, str]:
    """The embedding ANN index of a run: the serialised faiss graph and the sha256 of each row."""
    base = f"{run_prefix(dataset, run_id)}/embedding-index/{model}"
    return f"{base}.faiss", f"{base}.ids"


def label_errors_key(dataset: str, run_id: str) -> str:
    """The label-error candidates of a run (spec.labels.errors), ranked, one row per candidate."""
    return f"{run_prefix(dataset, run_id)}/label-errors.parquet"


def embedding_parts_prefix(model: str) -> str:
    """Prefix of the stored embedding parts of one model id."""
    return f"{EMBEDDINGS}{model}/parts/"


def embedding_models(keys: list[str]) -> list[str]:
    """The model ids that have stored embeddings, from keys listed under EMBEDDINGS."""
    return sorted({key.split("/")[1] for key in keys if key.startswith(EMBEDDINGS) and key.count("/") >= 2})


def model_key(model_uri: str) -> str:
    """Model records are found by the model's URI alone: ``loupe lineage --model URI``."""
    digest = hashlib.sha256(model_uri.encode()).hexdigest()
    return f"{MODELS}{digest[:2]}/{digest}.json"


def result_key(namespace: str, policy: str, run: str) -> str:
    return f"{RETRAIN}{namespace}/{policy}/runs/{run}/result.json"


def retrain_status_key(namespace: str, policy: str) -> str:
    return f"{RETRAIN}{namespace}/{policy}/status.json"


def lease_key(lease_id: str) -> str:
    return f"{LEASES}{lease_id}.json"
