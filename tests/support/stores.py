"""Stores for tests that check what a run reads and writes, and small manifest parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from loupe_storage.store import LocalStore
from loupe_workers.storage import manifest

SMALL = 16  # PART_ROWS under use_small_parts: a few hundred rows make many parts


def use_small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of SMALL rows (small parts below SMALL // 4), so that a few hundred rows make many."""
    monkeypatch.setattr(manifest, "PART_ROWS", SMALL)
    monkeypatch.setattr(manifest, "SMALL_PART_ROWS", SMALL // 4)


class SpyStore(LocalStore):
    """A folder store that records every key read (``gets``) and written (``puts``)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets: list[str] = []
        self.puts: list[str] = []

    def get(self, key: str) -> bytes:
        self.gets.append(key)
        return super().get(key)

    def put(self, key: str, data: bytes) -> None:
        self.puts.append(key)
        super().put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self.puts.append(key)
        return super().put_if_absent(key, data)

    def part_reads(self) -> list[str]:
        return [k for k in self.gets if "/parts/" in k]

    def parts_written(self) -> list[str]:
        return [k for k in self.puts if "/parts/" in k]

    def manifest_reads(self) -> list[str]:
        """Parts and part lists (and single-file manifests) read."""
        return [k for k in self.gets if k.endswith((".parquet", ".parts.json"))]
