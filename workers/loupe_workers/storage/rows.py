"""Manifest rows typed as ``loupe_api.samples.SampleRow``: the one place a Parquet table becomes typed
rows (pyarrow is untyped; tests/storage/test_sample_rows.py holds SampleRow to ``manifest.SCHEMA``).

Only accepted and rejected rows are sample rows: lineage edges have columns of their own (LineageEdge)."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

from loupe_api.samples import LineageEdge, SampleRow
from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore
from loupe_workers.storage import manifest


def sample_rows(table: pa.Table) -> list[SampleRow]:
    """The rows of a manifest table (any subset of its columns)."""
    rows: list[SampleRow] = table.to_pylist()
    return rows


def edge_rows(table: pa.Table) -> list[LineageEdge]:
    """The edges of a lineage table (any subset of its columns)."""
    edges: list[LineageEdge] = table.to_pylist()
    return edges


def read_version_samples(
    store: ObjectStore, record: VersionRecord, which: Literal["accepted", "rejected"] = "accepted"
) -> list[SampleRow]:
    """A version's accepted rows (sorted by sample id) or rejected rows (by source, key, sample id), typed."""
    return sample_rows(manifest.read_version_table(store, record, which))


def read_version_edges(store: ObjectStore, record: VersionRecord) -> list[LineageEdge]:
    """A version's lineage edges (accepted first), typed."""
    return edge_rows(manifest.read_version_table(store, record, "lineage"))
