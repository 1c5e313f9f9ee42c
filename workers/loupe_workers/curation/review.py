"""Review queue: model predictions imported for a version, samples ranked by what a reviewer should look at
first: the model is unsure, the model disagrees with the label, or the sample is unlike any other."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from loupe_api import keys
from loupe_workers.storage import manifest
from loupe_workers.storage.store import ObjectStore
from loupe_workers.versioning.versions import read_version

WEIGHTS = {"uncertainty": 0.4, "disagreement": 0.4, "uniqueness": 0.2}


class PredictionError(ValueError):
    """A predictions file that cannot be read or matched to the version."""


@dataclass(frozen=True)
class Prediction:
    sample: str  # sample id, sha256, key or URI, as the file gave it
    label: str
    confidence: float


@dataclass
class QueueItem:
    sample_id: str
    key: str
    label: str | None
    predicted: str
    confidence: float
    score: float
    reasons: list[str] = field(default_factory=list)


predictions_key = keys.predictions_key


def parse_predictions(text: str, name: str) -> list[Prediction]:
    """JSONL (one object per line) or CSV with columns sample, label, confidence."""
    rows: list[dict[str, Any]]
    try:
        if name.endswith((".jsonl", ".json", ".ndjson")):
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = list(csv.DictReader(io.StringIO(text)))
    except (json.JSONDecodeError, csv.Error) as exc:
        raise PredictionError(f"{name}: {exc}") from exc
    out = []
    for number, row in enumerate(rows, start=1):
        missing = [c for c in ("sample", "label", "confidence") if row.get(c) in (None, "")]
        if missing:
            raise PredictionError(f"{name} row {number}: missing {', '.join(missing)}")
        try:
            confidence = float(row["confidence"])
        except ValueError as exc:
            raise PredictionError(
                f"{name} row {number}: confidence {row['confidence']!r} is not a number"
            ) from exc
        if not 0.0 <= confidence <= 1.0:
            raise PredictionError(f"{name} row {number}: confidence {confidence} is outside [0, 1]")
        out.append(Prediction(str(row["sample"]), str(row["label"]), confidence))
    return out


def import_predictions(store: ObjectStore, dataset: str, version: str, predictions: list[Prediction]) -> int:
    """Match predictions to the version's samples (by id, sha256, key or URI) and store them; returns matches."""
    record = read_version(store, dataset, version)
    rows = manifest.read_version_rows(store, record)
    lookup: dict[str, str] = {}
    for r in rows:
        for name in ("sample_id", "sha256", "key", "uri"):
            if r.get(name):
                lookup.setdefault(str(r[name]), r["sample_id"])
    matched = [(lookup[p.sample], p) for p in predictions if p.sample in lookup]
    if not matched:
        raise PredictionError(
            f"none of the {len(predictions)} predictions names a sample of {dataset}@{version}"
        )
    table = pa.Table.from_pylist(
        [{"sample_id": sid, "predicted": p.label, "confidence": p.confidence} for sid, p in matched]
    )
    store.put(predictions_key(dataset, version), manifest.table_bytes(table))
    return len(matched)


def _uniqueness(
    rows: list[dict[str, Any]], vectors: dict[str, npt.NDArray[np.float32]] | None
) -> dict[str, float]:
    """1 - similarity to the nearest other sample: embeddings when there are some, else the perceptual hash."""
    if vectors and all(r["sha256"] in vectors for r in rows) and len(rows) > 1:
        matrix = np.stack([vectors[r["sha256"]] for r in rows]).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True) + 1e-12
        similarity = matrix @ matrix.T
        np.fill_diagonal(similarity, -1.0)
        nearest = similarity.max(axis=1)
        return {r["sample_id"]: float(np.clip(1 - nearest[i], 0, 1)) for i, r in enumerate(rows)}
    hashes = [int(r["hash"], 16) if r.get("hash") else None for r in rows]
    out = {}
    for i, r in enumerate(rows):
        mine = hashes[i]
        distances = [
            bin(mine ^ h).count("1")
            for j, h in enumerate(hashes)
            if j != i and h is not None and mine is not None
        ]
        out[r["sample_id"]] = min(distances) / 32 if distances else 0.5
    return {k: min(v, 1.0) for k, v in out.items()}


def review_queue(
    store: ObjectStore, dataset: str, version: str, vectors: dict[str, npt.NDArray[np.float32]] | None = None
) -> list[QueueItem]:
    """The version's predicted samples, most worth reviewing first."""
    record = read_version(store, dataset, version)
    try:
        predicted = {p["sample_id"]: p for p in manifest.read_rows(store, predictions_key(dataset, version))}
    except KeyError as exc:
        raise PredictionError(
            f"no predictions imported for {dataset}@{version}: loupe queue --import FILE"
        ) from exc
    rows = manifest.read_version_rows(store, record)
    unique = _uniqueness(rows, vectors)
    items = []
    for r in rows:
        p = predicted.get(r["sample_id"])
        if p is None:
            continue
        parts = {
            "uncertainty": 1 - float(p["confidence"]),
            "disagreement": 1.0 if r.get("label") and r["label"] != p["predicted"] else 0.0,
            "uniqueness": unique.get(r["sample_id"], 0.0),
        }
        reasons = []
        if parts["disagreement"]:
            reasons.append(f"model says {p['predicted']}, label is {r['label']}")
        if parts["uncertainty"] >= 0.5:
            reasons.append(f"low confidence {p['confidence']:.2f}")
        if parts["uniqueness"] >= 0.5:
            reasons.append("unlike any other sample")
        score = sum(WEIGHTS[k] * v for k, v in parts.items())
        items.append(QueueItem(r["sample_id"], str(r.get("key")), r.get("label"), str(p["predicted"]),
                               float(p["confidence"]), score, reasons))  # fmt: skip
    return sorted(items, key=lambda item: (-item.score, item.key))
