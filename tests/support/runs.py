"""Run requests and manifest rows shared by the pipeline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loupe_api.dataset import DatasetSpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore
from loupe_workers.storage import manifest


def request(images: Path, store: str, **dataset: Any) -> RunRequest:
    source = IngestSourceSpec.model_validate(
        {
            "filesystem": {"path": str(images)},
            "labels": {"format": "folder"},
            "video": {"fps": 2, "maxFramesPerVideo": 4},
        }
    )
    spec = DatasetSpec.model_validate({"sources": [{"name": "cams"}], **dataset})
    return RunRequest(dataset="defects", spec=spec, sources={"cams": source}, store_uri=store)


def rows_of(
    store: ObjectStore, record: VersionRecord, which: manifest.Which = "accepted"
) -> list[dict[str, Any]]:
    return manifest.read_version_rows(store, record, which)
