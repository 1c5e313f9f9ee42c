"""Lineage across runs: a model back to the raw objects it learned from, and a raw object forward to every
version and model that used it. Reads only what the pipeline and the retraining loop wrote to storage."""

from __future__ import annotations

from typing import Any

from loupe_api.keys import DATASETS, MODELS, model_key
from loupe_api.retrain import ModelRecord
from loupe_api.samples import Disposition
from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore
from loupe_workers.storage.rows import read_version_edges
from loupe_workers.versioning.versions import read_version


class TraceError(LookupError):
    """Nothing in the store matches what was asked for."""


def _all_versions(store: ObjectStore) -> list[VersionRecord]:
    records = []
    for info in store.list(DATASETS):
        head, _, name = info.key.rpartition("/")
        if head.endswith("/versions") and name.endswith(".json") and name.count(".") == 3:
            records.append(VersionRecord.model_validate_json(store.get(info.key)))
    return records


def _models(store: ObjectStore) -> list[ModelRecord]:
    return [
        ModelRecord.model_validate_json(store.get(i.key))
        for i in store.list(MODELS)
        if i.key.endswith(".json")
    ]


def trace_model(store: ObjectStore, model_uri: str) -> dict[str, Any]:
    """The run, dataset version and raw objects (sha256 and source URI) behind a model."""
    try:
        model = ModelRecord.model_validate_json(store.get(model_key(model_uri)))
    except KeyError as exc:
        raise TraceError(f"no model {model_uri} is recorded in {store.uri}") from exc
    record = read_version(store, model.dataset, model.dataset_version)
    edges = [e for e in read_version_edges(store, record) if e.get("disposition") == Disposition.ACCEPTED]
    return {
        "modelUri": model.model_uri,
        "policy": model.policy,
        "run": model.run,
        "metrics": model.metrics,
        "promoted": model.promoted,
        "dataset": model.dataset,
        "datasetVersion": model.dataset_version,
        "manifestUri": model.manifest_uri,
        "rawObjects": [
            {"rawSha256": e["raw_sha256"], "uri": e["uri"], "sampleId": e["sample_id"]}
            for e in sorted(edges, key=lambda e: str(e["uri"]))
        ],
    }


def trace_raw(store: ObjectStore, raw_sha256: str) -> dict[str, Any]:
    """Every version whose samples came from this raw object, and every model trained on one of them;
    and the versions that left it out, with the reason their lineage edge records (an access rule names
    its source and rule there)."""
    versions, left_out = [], []
    for record in _all_versions(store):
        edges = [e for e in read_version_edges(store, record) if e.get("raw_sha256") == raw_sha256]
        ref = f"{record.dataset}@{record.version}"
        if any(e.get("disposition") == Disposition.ACCEPTED for e in edges):
            versions.append(ref)
        elif edges:  # every sample of it rejected, quarantined or a duplicate in this version
            edge = edges[0]
            left_out.append({"version": ref, "disposition": edge.get("disposition"), "reason": edge.get("reason"),
                             "detail": edge.get("detail")})  # fmt: skip
    if not versions and not left_out:
        raise TraceError(f"no version in {store.uri} holds a sample of raw object {raw_sha256}")
    used = set(versions)
    models = sorted(m.model_uri for m in _models(store) if f"{m.dataset}@{m.dataset_version}" in used)
    return {"rawSha256": raw_sha256, "versions": sorted(versions), "models": models,
            "leftOut": sorted(left_out, key=lambda e: str(e["version"]))}  # fmt: skip
