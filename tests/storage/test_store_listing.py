"""Listing a key prefix of a folder store walks that prefix's folder only, not every blob: finding a
dataset's versions costs O(versions), not O(store) (issue 12: 1.5-1.9 s at 100,000 blobs before)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loupe_api.dataset import DatasetStats
from loupe_api.keys import version_key_of
from loupe_api.listing import prefix_folder
from loupe_api.versions import VersionRecord
from loupe_operator.adapters.storage import StoreLocation
from loupe_storage.store import LocalStore


@pytest.mark.parametrize(
    ("prefix", "folder"),
    [("datasets/a/versions/", "datasets/a/versions"), ("datasets/a/v", "datasets/a"), ("x", ""), ("", "")],
)
def test_prefix_folder(prefix: str, folder: str) -> None:
    assert prefix_folder(prefix) == folder


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    for i in range(50):
        blob = root / "blobs" / f"{i:02x}" / f"{i:064x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(b"x")
    versions = root / "datasets" / "a" / "versions"
    versions.mkdir(parents=True)
    for v in ("1.0.0", "1.1.0"):
        (versions / f"{v}.json").write_text("{}")
    (root / "datasets" / "ab" / "versions").mkdir(parents=True)
    (root / "datasets" / "ab" / "versions" / "9.0.0.json").write_text("{}")
    return root


@pytest.fixture
def walked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every folder os.walk visits, in every module."""
    visited: list[str] = []
    real = os.walk

    def spy(top: Any, *args: Any, **kwargs: Any) -> Iterator[tuple[str, list[str], list[str]]]:
        for entry in real(top, *args, **kwargs):
            visited.append(entry[0])
            yield entry

    monkeypatch.setattr(os, "walk", spy)
    return visited


def test_local_store_lists_a_prefix_without_walking_the_blobs(store: Path, walked: list[str]) -> None:
    keys = [o.key for o in LocalStore(store).list("datasets/a/versions/")]
    assert keys == ["datasets/a/versions/1.0.0.json", "datasets/a/versions/1.1.0.json"]
    assert walked and not any("blobs" in folder for folder in walked), walked
    assert [o.key for o in LocalStore(store).list("datasets/a")] == [*keys, "datasets/ab/versions/9.0.0.json"]
    assert list(LocalStore(store).list("datasets/none/versions/")) == []
    assert len(list(LocalStore(store).list())) == 53  # no prefix: everything


def test_operator_reads_versions_without_walking_the_blobs(store: Path, walked: list[str]) -> None:
    for v in ("1.0.0", "1.1.0"):
        record = VersionRecord(dataset="a", version=v, created=datetime(2026, 1, 5, tzinfo=UTC), run_id="r",
                               spec_digest="s", source_digest="s", content_digest="c", code_version="0",
                               manifest_uri="m", rejected_uri="r", lineage_uri="l", samples=1,
                               stats=DatasetStats())  # fmt: skip
        (store / version_key_of("a", v)).write_text(record.model_dump_json(by_alias=True))
    versions = StoreLocation(str(store)).read_versions("a")  # the operator's read, through loupe_storage
    assert [r.version for r in versions] == ["1.0.0", "1.1.0"]
    assert walked and not any("blobs" in folder for folder in walked), walked
