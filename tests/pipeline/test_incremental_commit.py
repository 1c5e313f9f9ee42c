"""A run commits in proportion to what changed (issue 12, data plane v2).

The pipeline writes a version from its parent's part lists and the rows that differ from the parent's
(manifest.write_change): a new image, a relabel or a deleted file serialise and store only the parts
that hold a changed row, and read only those parts beyond reading the parent once. The version must be
the one a full rebuild (manifest.write_parts over the same rows and the parent's layout) gives: the
same part lists, hence the same rows, rejected rows and lineage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loupe_api.dataset import DatasetSpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest, RunResult
from loupe_api.versions import PartList, VersionRecord
from loupe_storage.store import LocalStore
from loupe_storage.versions import latest_version
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.storage import changes, manifest
from loupe_workers.versioning.versions import read_version
from support.photos import jpeg, photo
from support.stores import SpyStore

DATASET = "defects"
NAMES = ("chelsea", "coffee", "rocket", "astronaut", "camera", "coins", "moon", "brick")
PART_ROWS = 4  # 8 photos: two accepted parts, so a change can leave one untouched


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "PART_ROWS", PART_ROWS)
    monkeypatch.setattr(manifest, "SMALL_PART_ROWS", PART_ROWS // 2)


class Serialised:
    """Counts the rows manifest parts are serialised from (what a rebuild spends its CPU on)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows = 0
        original = manifest.table_bytes

        def counting(table: Any) -> bytes:
            self.rows += table.num_rows
            return original(table)

        monkeypatch.setattr(manifest, "table_bytes", counting)


def write_images(folder: Path, names: tuple[str, ...] = NAMES) -> list[str]:
    keys = []
    for name in names:
        key = f"images/{name}.jpg"
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(jpeg(photo(name, 192)))
        keys.append(key)
    return keys


def write_labels(folder: Path, keys: list[str], relabel: str | None = None) -> None:
    lines = ["path,label", *(f"{k},{'dent' if k == relabel else 'scratch'}" for k in keys)]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


def make_request(folder: Path, store: Path) -> RunRequest:
    source = IngestSourceSpec.model_validate(
        {"filesystem": {"path": str(folder)}, "labels": {"format": "csv", "path": "labels.csv"}}
    )
    spec = DatasetSpec.model_validate({"sources": [{"name": "cams"}]})
    return RunRequest(dataset=DATASET, spec=spec, sources={"cams": source}, store_uri=str(store))


def run_on(request: RunRequest, store: LocalStore, base_dir: Path) -> RunResult:
    return run_dataset(request, store=store, base_dir=base_dir)


def part_list(store: LocalStore, key: str) -> PartList:
    return PartList.model_validate_json(store.get(key))


def part_keys(store: LocalStore, record: VersionRecord) -> list[list[str]]:
    uris = (record.manifest_uri, record.rejected_uri, record.lineage_uri)
    return [[p.key for p in part_list(store, uri).parts] for uri in uris]


def assert_same_as_rebuild(store: LocalStore, record: VersionRecord) -> None:
    """The committed version is what write_parts gives for its rows over the parent's layout."""
    assert record.parent is not None
    parent = read_version(store, DATASET, record.parent)
    _, _, layout = manifest.read_parent(store, parent)
    accepted = manifest.read_version_rows(store, record)
    rejected = manifest.read_version_rows(store, record, "rejected")
    rebuilt = manifest.write_parts(
        store, DATASET, f"datasets/{DATASET}/runs/rebuild", record.version, accepted, rejected, layout
    )
    uris: dict[manifest.Which, str] = {
        "accepted": rebuilt.manifest_uri,
        "rejected": rebuilt.rejected_uri,
        "lineage": rebuilt.lineage_uri,
    }
    assert [[p.key for p in part_list(store, uri).parts] for uri in uris.values()] == part_keys(store, record)
    for which, uri in uris.items():  # the same rows, rejected rows and lineage edges, read back
        assert manifest.read_version_rows(store, record, which) == manifest.read_rows(store, uri)


def first_version(tmp_path: Path) -> tuple[Path, list[str], RunRequest, VersionRecord]:
    folder = tmp_path / "src"
    keys = write_images(folder)
    write_labels(folder, keys)
    request = make_request(folder, tmp_path / "store")
    assert run_on(request, LocalStore(tmp_path / "store"), tmp_path).version == "1.0.0"
    record = latest_version(LocalStore(tmp_path / "store"), DATASET)
    assert record is not None and record.samples == len(NAMES)
    assert (
        len(part_list(LocalStore(tmp_path / "store"), record.manifest_uri).parts) == len(NAMES) // PART_ROWS
    )
    return folder, keys, request, record


def add_image(folder: Path, keys: list[str]) -> None:
    keys.extend(write_images(folder, ("horse",)))
    write_labels(folder, keys)


def relabel(folder: Path, keys: list[str]) -> None:
    write_labels(folder, keys, relabel=keys[0])


def delete_file(folder: Path, keys: list[str]) -> None:
    (folder / keys.pop()).unlink()
    write_labels(folder, keys)


# change -> (version, rows serialised: part rows + their edge rows, parts stored, parent parts read again)
CASES: dict[str, tuple[Callable[[Path, list[str]], None], str, int, int, int]] = {
    "new image": (add_image, "1.1.0", 1 + 1, 2, 0),  # a part of the new row (none read: ids are new)
    # the part holding the relabelled row, rewritten; its edges hold no label: the same lineage part
    "relabel": (relabel, "2.0.0", PART_ROWS * 2, 1, 1),
    "deleted file": (delete_file, "2.0.0", (PART_ROWS - 1) * 2, 2, 1),  # the part that held it
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_change_writes_only_the_parts_it_touches(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    change, version, rows_serialised, stored, reread = CASES[case]
    folder, keys, request, parent = first_version(tmp_path)
    parent_parts = [k for kind in part_keys(LocalStore(tmp_path / "store"), parent)[:2] for k in kind]
    change(folder, keys)
    request = request.model_copy(update={"allow_shrink": True})

    spy = SpyStore(tmp_path / "store")
    serialised = Serialised(monkeypatch)
    result = run_on(request, spy, tmp_path)
    assert result.created and result.version == version, result.message
    record = latest_version(LocalStore(tmp_path / "store"), DATASET)
    assert record is not None and record.version == version
    # a rebuild serialises every row (2 parts of 4 rows and their edges: 16), stores the same parts
    assert serialised.rows == rows_serialised
    assert len(spy.parts_written()) == stored
    before = set(part_keys(LocalStore(tmp_path / "store"), parent)[0])
    after = part_keys(LocalStore(tmp_path / "store"), record)
    assert len(set(after[0]) & before) == len(before) - (0 if case == "new image" else 1)  # the rest: reused
    # the parent is read once for curation; write_change reads again only the parts it rewrites
    reads = spy.part_reads()
    assert sorted(set(reads)) == sorted(parent_parts)
    assert len(reads) == len(parent_parts) + reread
    assert_same_as_rebuild(LocalStore(tmp_path / "store"), record)


def test_an_accepted_row_and_its_dropped_copy_change_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte-identical copy is a duplicate row with the kept row's sample id (two kinds, one id):
    relabelling the kept file upserts both rows."""
    folder, keys, request, _ = first_version(tmp_path)
    upserted: list[set[str]] = []
    real_change = manifest.write_change

    def spy_change(*args: Any, **kwargs: Any) -> manifest.Written:
        upserted.append({r["disposition"] for r in kwargs["upserts"]})
        return real_change(*args, **kwargs)

    monkeypatch.setattr(manifest, "write_change", spy_change)
    copy = "images/zz-copy.jpg"
    (folder / copy).write_bytes((folder / keys[0]).read_bytes())
    write_labels(folder, [*keys, copy])
    assert run_on(request, LocalStore(tmp_path / "store"), tmp_path).created
    store = LocalStore(tmp_path / "store")
    with_copy = latest_version(store, DATASET)
    assert with_copy is not None
    [duplicate] = manifest.read_version_rows(store, with_copy, "rejected")
    assert duplicate["disposition"] == "duplicate"

    write_labels(folder, [*keys, copy], relabel=keys[0])
    result = run_on(request, store, tmp_path)
    assert result.created, result.message
    record = latest_version(store, DATASET)
    assert record is not None
    [kept] = [r for r in manifest.read_version_rows(store, record) if r["key"] == keys[0]]
    assert kept["label"] == "dent" and kept["sample_id"] == duplicate["sample_id"]
    assert upserted == [{"accepted", "duplicate"}] * 2  # both commits: one id, a row of each kind
    assert_same_as_rebuild(store, record)


def test_the_diff_compares_rows_as_stored() -> None:
    row = {"sample_id": "a", "disposition": "accepted", "key": "k", "width": 3}
    same_as_stored = row | {"width": 3.0}  # a float where the schema stores an integer: the same bytes
    assert changes.diff_rows([row], [same_as_stored]) == changes.RowChange()
    moved = row | {"disposition": "rejected", "reason": "blurry"}  # to the rejected kind
    found = changes.diff_rows([row], [moved, {**row, "sample_id": "b"}])
    assert found is not None and found.upserts == [moved] and found.deletes == []
    assert [r["sample_id"] for r in found.added] == ["b"]
    assert changes.diff_rows([row], []) == changes.RowChange(deletes=["a"])
    assert changes.diff_rows([row, row | {"disposition": "accepted"}], [row]) is None  # two rows, one kind
    assert changes.diff_rows([row], [row | {"sample_id": None}]) is None
    assert changes.rebuild_is_cheaper(changes.RowChange(deletes=["a", "b", "c"]), parent_parts=2)
    assert not changes.rebuild_is_cheaper(changes.RowChange(deletes=["a", "b"]), parent_parts=2)


def test_a_commit_reads_each_of_the_parents_part_lists_once(tmp_path: Path) -> None:
    """The part lists read with the parent's rows are the ones the commit starts from (write_change):
    a +1 image version reads each of the parent's three lists once."""
    folder, keys, request, parent = first_version(tmp_path)
    add_image(folder, keys)
    spy = SpyStore(tmp_path / "store")
    result = run_on(request, spy, tmp_path)
    assert result.created and result.version == "1.1.0", result.message
    lists = [parent.manifest_uri, parent.rejected_uri, parent.lineage_uri]
    assert all(uri.endswith(".parts.json") for uri in lists)
    assert sorted(k for k in spy.gets if k in lists) == sorted(lists)


def test_a_run_leaves_nothing_frozen_from_the_cyclic_collector(tmp_path: Path) -> None:
    """A run freezes its parent's rows out of the collector's full passes (gc.freeze) and unfreezes them
    when it ends: in a long-lived worker, frozen rows would otherwise stay out of reach of it for good."""
    import gc

    folder, keys, request, _ = first_version(tmp_path)
    add_image(folder, keys)
    result = run_on(request, LocalStore(tmp_path / "store"), tmp_path)
    assert result.created and result.version == "1.1.0", result.message
    assert gc.get_freeze_count() == 0
