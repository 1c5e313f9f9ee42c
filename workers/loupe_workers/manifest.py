"""Parquet manifests: one row per sample, accepted or not, with everything derived about it."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from loupe_workers.store import ObjectStore

SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("sha256", pa.string()),
        ("disposition", pa.string()),  # accepted, rejected, quarantined, duplicate
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("source", pa.string()),
        ("key", pa.string()),
        ("uri", pa.string()),
        ("etag", pa.string()),
        ("size", pa.int64()),
        ("blob_uri", pa.string()),
        ("media", pa.string()),
        ("frame_index", pa.int64()),
        ("frame_time", pa.float64()),
        ("video_sha256", pa.string()),
        ("format", pa.string()),
        ("extension", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("brightness_p99", pa.float64()),
        ("brightness_p5", pa.float64()),
        ("clipped", pa.float64()),  # share of the pixels with a blown-out colour channel
        ("contrast", pa.float64()),  # (p99 - p1) / (p99 + p1) of brightness
        ("sharpness", pa.float64()),
        ("noise", pa.float64()),
        ("entropy", pa.float64()),
        ("aspect_ratio", pa.float64()),
        ("hash_kind", pa.string()),
        ("hash", pa.string()),
        ("hash_variants", pa.list_(pa.string())),  # the hash in the 7 other flips and quarter turns
        ("pixel_sha256", pa.string()),
        ("keep_measures", pa.string()),  # JSON: what the bestOriginal keep policy compared (group members)
        ("exif", pa.string()),
        ("privacy", pa.string()),  # JSON: {"faces": [{box, score}], "plates": [{box, votes}]}
        ("metadata", pa.string()),  # JSON object of string fields
        ("label", pa.string()),
        ("labels", pa.string()),  # JSON: {"label": ..., "boxes": [...]}
        ("flags", pa.list_(pa.string())),
        ("split", pa.string()),
        ("dup_group", pa.string()),
        ("dup_kind", pa.string()),
        ("duplicate_of", pa.string()),
        ("keep_reason", pa.string()),  # the kept copy of a group: why it was the one kept
        ("status", pa.string()),
        ("fail_reason", pa.string()),
        ("fail_detail", pa.string()),
        ("processing_key", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
PROCESSING_COLUMNS = (
    "sample_id", "sha256", "source", "key", "uri", "etag", "size", "media", "frame_index", "frame_time",
    "video_sha256", "format", "extension", "width", "height", "brightness_p99", "brightness_p5", "clipped",
    "contrast", "sharpness", "noise", "entropy", "aspect_ratio", "hash_kind", "hash", "hash_variants", "pixel_sha256", "keep_measures", "exif", "privacy",
    "status", "fail_reason", "fail_detail", "processing_key",
)  # fmt: skip


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{c: row.get(c) for c in COLUMNS} for row in rows], schema=SCHEMA)


def to_bytes(rows: list[dict[str, Any]]) -> bytes:
    """A manifest (or rejected-samples) file in the fixed schema."""
    return table_bytes(to_table(rows))


def table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def read_rows(store: ObjectStore, key: str) -> list[dict[str, Any]]:
    """Rows of any Parquet file in the store (manifest, rejected samples, lineage)."""
    # No reader threads: pyarrow 26's pool can abort the interpreter at exit ("terminate called without
    # an active exception", seen in about half of short CLI runs); these files are small anyway.
    table = pq.read_table(io.BytesIO(store.get(key)), use_threads=False)
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows
