"""Review queue: model predictions imported for a version, samples ranked by what a reviewer should look at
first: the model is unsure, the model disagrees with the label, or the sample is unlike any other; and the
samples whose label sets (sources labelling the same bytes) disagree, reason ``labelDisagreement``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from loupe_api import keys
from loupe_api.label_qa import DISAGREEMENT
from loupe_api.samples import LabelConsensus, SampleRow
from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore
from loupe_workers.curation import label_errors, label_qa
from loupe_workers.storage import manifest
from loupe_workers.storage.rows import read_version_samples
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
    predicted: str | None  # None: no prediction (a label-set disagreement only)
    confidence: float | None
    score: float
    reasons: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # machine-readable reasons, e.g. labelDisagreement


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
    rows = read_version_samples(store, record)
    lookup: dict[str, str] = {}
    for r in rows:
        for value in (r.get("sample_id"), r.get("sha256"), r.get("key"), r.get("uri")):
            if value:
                lookup.setdefault(str(value), r["sample_id"])
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
    rows: Sequence[SampleRow], vectors: dict[str, npt.NDArray[np.float32]] | None
) -> dict[str, float]:
    """1 - similarity to the nearest other sample: embeddings when there are some, else the perceptual hash."""
    if vectors and all(r["sha256"] in vectors for r in rows) and len(rows) > 1:
        # the label-error neighbour search: blocked, not an n x n similarity matrix in memory
        sims, _ = label_errors.nearest(np.stack([vectors[r["sha256"]] for r in rows]), 1)
        return {r["sample_id"]: float(np.clip(1 - sims[i, 0], 0, 1)) for i, r in enumerate(rows)}
    hashes = [int(h, 16) if (h := r.get("hash")) else None for r in rows]
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
    """The version's predicted samples and samples whose label sets disagree, most worth reviewing first."""
    record = read_version(store, dataset, version)
    rows = read_version_samples(store, record)
    disputed = _label_disagreements(rows)
    try:
        predicted = {p["sample_id"]: p for p in manifest.read_rows(store, predictions_key(dataset, version))}
    except KeyError as exc:
        if not disputed and record.stats.label_errors is None:
            raise PredictionError(
                f"no predictions imported for {dataset}@{version} and no label sets disagree: "
                "loupe queue --import FILE"
            ) from exc
        predicted = {}
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
    by_id = {item.sample_id: item for item in items}
    for r in rows:
        found = disputed.get(r["sample_id"])
        if found is None:
            continue
        score, reason = found
        item = by_id.get(r["sample_id"])
        if item is None:
            item = QueueItem(r["sample_id"], str(r.get("key")), r.get("label"), None, None, 0.0)
            items.append(item)
        item.score = max(item.score, score)  # a tie (no consensus) ranks with a confident model disagreement
        item.reasons.insert(0, reason)
        item.kinds.append(DISAGREEMENT)
    by_id = {item.sample_id: item for item in items}
    for r, found_error in _label_error_items(store, record, rows, predicted):
        item = by_id.get(r["sample_id"])
        if item is None:
            item = QueueItem(r["sample_id"], str(r.get("key")), r.get("label"), None, None, 0.0)
            items.append(item)
        item.score = max(item.score, found_error.score)
        item.reasons.append(f"{label_errors.REASON}: {found_error.reason}")
        item.kinds.append(label_errors.REASON)
    return sorted(items, key=lambda item: (-item.score, item.key))


LABEL_ERROR_SCHEMA = pa.schema(
    [("sample_id", pa.string()), ("label", pa.string()), ("suggested", pa.string()),
     ("confidence", pa.float64()), ("score", pa.float64()), ("method", pa.string()), ("reason", pa.string())]
)  # fmt: skip


def label_errors_bytes(candidates: list[label_errors.LabelErrorCandidate]) -> bytes:
    """The Parquet file of a run's label-error candidates (keys.label_errors_key), in rank order."""
    table = pa.Table.from_pylist([c.row() for c in candidates], schema=LABEL_ERROR_SCHEMA)
    return manifest.table_bytes(table)


def read_label_errors(store: ObjectStore, record: VersionRecord) -> list[label_errors.LabelErrorCandidate]:
    """The label-error candidates the run stored with a version, ranked (none when spec.labels.errors
    was off)."""
    found = record.stats.label_errors
    if found is None or not found.uri:
        return []
    try:
        return [label_errors.LabelErrorCandidate.from_row(r) for r in manifest.read_rows(store, found.uri)]
    except KeyError:
        return []


def _label_error_items(
    store: ObjectStore, record: VersionRecord, rows: Sequence[SampleRow], predicted: dict[str, Any]
) -> list[tuple[SampleRow, label_errors.LabelErrorCandidate]]:
    """spec.labels.errors: the run's neighbour candidates, with confident learning over the imported
    predictions when there are some, ranked and cut to maxCandidates."""
    errors = record.stats.label_errors
    if errors is None:
        return []
    confident = []
    if predicted and errors.method != "neighbours":
        top1 = {sid: (str(p["predicted"]), float(p["confidence"])) for sid, p in predicted.items()}
        confident = label_errors.from_predictions(rows, top1, min_score=errors.min_score)
    ranked = label_errors.rank(read_label_errors(store, record), confident, limit=errors.max_candidates)
    by_id = {r["sample_id"]: r for r in rows}
    return [(by_id[c.sample_id], c) for c in ranked if c.sample_id in by_id]


def _label_disagreements(rows: Sequence[SampleRow]) -> dict[str, tuple[float, str]]:
    """Per sample whose label sets disagree (classes or boxes): its score (1 - support, at least 0.5
    when there is no consensus class) and the reason shown."""
    out: dict[str, tuple[float, str]] = {}
    for r in rows:
        text = r.get("label_sets")
        if not text or r.get("label_consensus") == LabelConsensus.GOLDEN:  # golden settled it
            continue
        sets = json.loads(text)
        found = label_qa.consensus(sets, width=r.get("width"), height=r.get("height"))
        if not found.disagree:
            continue
        support = r.get("label_support")
        score = 1 - float(support) if support is not None else 0.5
        if r.get("label") is None:
            score = max(score, 0.5)
        if found.detail and len({s.get("label") for s in sets.values()}) > 1:
            said = found.detail
        else:
            said = "the boxes differ"
        consensus = r.get("label") or "none (a tie)"
        out[r["sample_id"]] = (round(score, 4), f"label sets disagree: {said}; consensus {consensus}")
    return out
