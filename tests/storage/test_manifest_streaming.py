"""Bounded-memory manifest writers: ``PartWriter`` (a first version fed batch by batch) and
``write_change`` (a version written from its parent's part lists and the changed rows only).

Both must give what ``write_parts`` gives for the same final rows, down to the part keys, while
reading no parent part it does not need; ``write_parts`` is the reference throughout.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from loupe_api.versions import ManifestPart, PartList
from loupe_storage.store import LocalStore
from loupe_workers.storage import manifest
from support.stores import SMALL, SpyStore, use_small_parts


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    use_small_parts(monkeypatch)


def row(i: int, disposition: str = "accepted", label: str | None = None) -> dict[str, Any]:
    sha = hashlib.sha256(f"bytes {i}".encode()).hexdigest()
    label = label if label is not None else ["cat", "dog"][i % 2]
    return {
        "sample_id": hashlib.sha256(f"sample {i}".encode()).hexdigest(),
        "sha256": sha,
        "disposition": disposition,
        "reason": None if disposition == "accepted" else "too_dark",
        "source": "cams",
        "key": f"line-{i % 7}/img-{i:06d}.jpg",
        "uri": f"/data/line-{i % 7}/img-{i:06d}.jpg",
        "etag": f"{i}-1",
        "size": 1000 + i,
        "media": "image",
        "width": 640,
        "sharpness": i / 7,
        "hash_variants": [f"{i:016x}"],
        "label": label,
        "labels": json.dumps({"label": label}),
        "flags": ["dark"] if i % 11 == 0 else [],
        "split": ["train", "val", "test"][i % 3],
    }


ACCEPTED = range(0, 300)
REJECTED = range(10_000, 10_040)


def rows_of(indexes: range | list[int], disposition: str = "accepted") -> list[dict[str, Any]]:
    return [row(i, disposition) for i in indexes]


def run(name: str) -> str:
    return f"datasets/d/runs/{name}"


def listing(store: LocalStore, key: str) -> PartList:
    return PartList.model_validate_json(store.get(key))


def keys(store: LocalStore, written: manifest.Written) -> list[list[str]]:
    uris = (written.manifest_uri, written.rejected_uri, written.lineage_uri)
    return [[p.key for p in listing(store, uri).parts] for uri in uris]


def content(store: LocalStore, written: manifest.Written) -> list[list[dict[str, Any]]]:
    uris = (written.manifest_uri, written.rejected_uri, written.lineage_uri)
    return [manifest.read_rows(store, uri) for uri in uris]


def reference(
    store: LocalStore,
    name: str,
    accepted: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
    parent: manifest.Written | None,
) -> manifest.Written:
    """What ``write_parts`` writes for these final rows on top of ``parent``."""
    layout = None
    if parent is not None:
        layout = manifest.VersionLayout(
            manifest.read_layout(store, parent.manifest_uri)[1],
            manifest.read_layout(store, parent.rejected_uri)[1],
        )
    return manifest.write_parts(store, "d", run(name), "2.0.0", accepted, rejected, layout)


def first_version(store: LocalStore) -> manifest.Written:
    return manifest.write_parts(
        store, "d", run("v1"), "1.0.0", rows_of(ACCEPTED), rows_of(REJECTED, "rejected")
    )


def test_parts_carry_their_id_range(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    written = first_version(store)
    for uri in (written.manifest_uri, written.rejected_uri, written.lineage_uri):
        for part in listing(store, uri).parts:
            ids = manifest._parquet(store.get(part.key), ["sample_id"]).column("sample_id").to_pylist()
            assert (part.first_id, part.last_id) == (min(ids), max(ids))
            assert part.may_hold(ids[-1]) and not part.may_hold("~")  # "~" sorts after every hex id
    assert ManifestPart(key="k", rows=1, bytes=1, sha256="s").may_hold("anything")  # no range: any id


def sorted_rows(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Rows in the order a streamed version takes them (its parts' order)."""
    return sorted(rows, key=lambda r: tuple(r[c] for c in manifest.PART_ORDER[kind]))


def test_streamed_first_version_is_write_parts(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    accepted = sorted_rows(rows_of(ACCEPTED), "accepted")
    rejected = sorted_rows(rows_of(REJECTED, "rejected"), "rejected")
    writer = manifest.PartWriter(store, "d", run("streamed"), "1.0.0")
    cuts = [0, 7, 8, 60, 61, 150, 220, 300]  # uneven batches, each unsorted inside, both kinds mixed
    for start, end in itertools.pairwise(cuts):
        share = slice(start * len(rejected) // 300, end * len(rejected) // 300)
        writer.add(list(reversed(accepted[start:end])) + rejected[share])
    streamed = writer.finish()
    whole = manifest.write_parts(store, "d", run("whole"), "1.0.0", accepted, rejected)
    assert keys(store, streamed) == keys(store, whole)  # the same parts, so the same bytes
    assert content(store, streamed) == content(store, whole)
    assert len(keys(store, streamed)[0]) == -(-300 // SMALL)
    assert streamed.stats.parts_written == whole.stats.parts_reused  # whole found every part written
    with pytest.raises(ValueError, match="after finish"):
        writer.add(accepted[:1])


def test_batches_out_of_order_are_refused(tmp_path: Path) -> None:
    accepted = sorted_rows(rows_of(ACCEPTED), "accepted")
    writer = manifest.PartWriter(LocalStore(tmp_path), "d", run("x"), "1.0.0")
    writer.add(accepted[100:120])
    with pytest.raises(ValueError, match="out of order"):
        writer.add(accepted[50:60])


def test_relabel_reads_only_the_candidate_parts(tmp_path: Path) -> None:
    store = SpyStore(tmp_path)
    v1 = first_version(store)
    parent = manifest.ParentParts.read(store, v1)
    assert parent is not None
    target = row(123, label="bird")
    candidates = {
        p.key for p in parent.accepted.parts + parent.rejected.parts if p.may_hold(target["sample_id"])
    }
    assert len(candidates) < len(parent.accepted.parts)  # the ranges rule most parts out
    store.gets.clear()
    store.puts.clear()
    changed = manifest.write_change(store, "d", run("v2"), "2.0.0", parent, upserts=[target])
    assert sorted(store.part_reads()) == sorted(candidates)  # each candidate once, nothing else
    assert changed.stats.parts_written == 1  # the relabelled row's part; its edges carry no label
    [new_part] = [k for k in store.puts if "/parts/" in k]
    assert new_part in keys(store, changed)[0]
    assert keys(store, changed)[2] == keys(store, v1)[2]
    final = [target if r["sample_id"] == target["sample_id"] else r for r in rows_of(ACCEPTED)]
    whole = reference(store, "ref", final, rows_of(REJECTED, "rejected"), v1)
    assert keys(store, changed) == keys(store, whole)
    assert content(store, changed) == content(store, whole)
    rows = {r["sample_id"]: r for r in manifest.read_rows(store, changed.manifest_uri)}
    assert rows[target["sample_id"]]["label"] == "bird"


def test_rejected_parts_hold_rows_by_sample_id_and_read_back_by_key(tmp_path: Path) -> None:
    """Rejected rows are stored by sample id, as accepted ones are: the parts' id ranges do not overlap,
    so a rejected row's change reads the one part that may hold it (stored by source and key, every
    part's range would span nearly every id). They still read back by source and key."""
    store = SpyStore(tmp_path)
    v1 = first_version(store)
    parent = manifest.ParentParts.read(store, v1)
    assert parent is not None and len(parent.rejected.parts) == -(-len(REJECTED) // SMALL)
    ranges = sorted((p.first_id or "", p.last_id or "") for p in parent.rejected.parts)
    assert all(low[1] < high[0] for low, high in itertools.pairwise(ranges))
    target = row(10_005, "rejected") | {"detail": "darker than the gate"}
    store.gets.clear()
    changed = manifest.write_change(store, "d", run("v2"), "2.0.0", parent, upserts=[target])
    rejected_parts = {p.key for p in parent.rejected.parts}
    assert len([k for k in store.part_reads() if k in rejected_parts]) == 1
    final = [target if r["sample_id"] == target["sample_id"] else r for r in rows_of(REJECTED, "rejected")]
    whole = reference(store, "ref", rows_of(ACCEPTED), final, v1)
    assert keys(store, changed) == keys(store, whole)
    read = manifest.read_rows(store, changed.rejected_uri)
    assert [(r["source"], r["key"]) for r in read] == sorted((r["source"], r["key"]) for r in final)
    assert [r["detail"] for r in read if r["sample_id"] == target["sample_id"]] == [target["detail"]]
    edges = manifest.read_rows(store, changed.lineage_uri)[len(ACCEPTED) :]
    assert [e["key"] for e in edges] == [r["key"] for r in read]  # lineage: rejected edges by key too


def test_unchanged_change_reads_no_part(tmp_path: Path) -> None:
    store = SpyStore(tmp_path)
    v1 = first_version(store)
    store.gets.clear()
    same = manifest.write_change(store, "d", run("v2"), "1.0.1", v1)
    assert store.part_reads() == []
    assert same.stats.parts_written == 0 and same.stats.parts_reused == 2 * sum(
        len(k) for k in keys(store, v1)[:2]
    )
    assert keys(store, same) == keys(store, v1)


def test_changes_give_the_rows_and_parts_of_write_parts(tmp_path: Path) -> None:
    """Growth, deletions (a part that loses most rows is merged), moves between the kinds, over a
    chain of versions, each checked against write_parts on the same final rows."""
    store = LocalStore(tmp_path)
    accepted = {r["sample_id"]: r for r in rows_of(ACCEPTED)}
    rejected = {r["sample_id"]: r for r in rows_of(REJECTED, "rejected")}
    parent = first_version(store)
    first_part = manifest._parquet(store.get(keys(store, parent)[0][0]), ["sample_id"])
    in_first_part = first_part.column("sample_id").to_pylist()
    by_id = sorted(range(400, 440), key=lambda i: row(i)["sample_id"])
    steps: list[dict[str, Any]] = [
        {"added": rows_of(range(300, 337))},  # +37: two full new parts and a tail
        {"added": rows_of(by_id[-2:])},  # two high ids: a small part of its own
        {"added": rows_of(by_id[:2])},  # two low ids: merged with that small part (read, sorted again)
        {"deletes": pa.array(in_first_part[:-2])},  # the first part keeps two rows: a small piece
        {
            "upserts": [
                row(5, "rejected"),
                row(10_003),
                row(400),
                row(77, label="bird"),
            ],  # moves, new, relabel
            "deletes": [row(10_010)["sample_id"], row(9_999)["sample_id"]],  # one unknown id: ignored
        },
        {},  # nothing
    ]
    for n, step in enumerate(steps):
        changed = manifest.write_change(store, "d", run(f"c{n}"), "2.0.0", parent, **step)
        deleted = step.get("deletes", [])
        for sid in deleted.to_pylist() if isinstance(deleted, pa.Array) else deleted:
            accepted.pop(sid, None)
            rejected.pop(sid, None)
        for r in step.get("upserts", []) + step.get("added", []):
            accepted.pop(r["sample_id"], None)
            rejected.pop(r["sample_id"], None)
            (accepted if r["disposition"] == "accepted" else rejected)[r["sample_id"]] = r
        whole = reference(store, f"r{n}", list(accepted.values()), list(rejected.values()), parent)
        assert keys(store, changed) == keys(store, whole), step.keys()
        assert content(store, changed) == content(store, whole)
        assert listing(store, changed.manifest_uri).rows == len(accepted)
        parent = changed
    assert row(5)["sample_id"] in rejected and row(10_003)["sample_id"] in accepted


def test_new_rows_as_upserts_or_as_added_give_the_same_parts(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    v1 = first_version(store)
    grown = rows_of(range(300, 330))
    as_added = manifest.write_change(store, "d", run("a"), "1.1.0", v1, added=grown)
    as_upserts = manifest.write_change(store, "d", run("b"), "1.1.0", v1, upserts=pa.Table.from_pylist(grown))
    assert keys(store, as_added) == keys(store, as_upserts)


def test_part_lists_without_statistics_still_work(tmp_path: Path) -> None:
    """Lists written before parts carried id ranges: every part is a candidate, decided by its ids."""
    store = SpyStore(tmp_path)
    v1 = first_version(store)
    for uri in (v1.manifest_uri, v1.rejected_uri, v1.lineage_uri):
        old = json.loads(store.get(uri))
        for part in old["parts"]:
            del part["firstId"], part["lastId"]
        store.put(uri, json.dumps(old).encode())
    parent = manifest.ParentParts.read(store, v1)
    assert parent is not None and all(p.first_id is None for p in parent.accepted.parts)
    assert len(manifest.read_rows(store, v1.manifest_uri)) == len(ACCEPTED)
    target = row(42, label="bird")
    store.gets.clear()
    changed = manifest.write_change(
        store, "d", run("v2"), "2.0.0", parent, upserts=[target], deletes=[row(7)["sample_id"]]
    )
    every = {p.key for p in parent.accepted.parts + parent.rejected.parts}
    assert set(store.part_reads()) == every  # no range: each read (its ids) to decide
    final = [
        target if r["sample_id"] == target["sample_id"] else r
        for r in rows_of(ACCEPTED)
        if r["sample_id"] != row(7)["sample_id"]
    ]
    whole = reference(store, "ref", final, rows_of(REJECTED, "rejected"), v1)
    assert content(store, changed) == content(store, whole)
    assert keys(store, changed) == keys(store, whole)


def test_parent_of_single_files_is_rewritten_whole(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("datasets/d/runs/old/manifest.parquet", manifest.to_bytes(rows_of(ACCEPTED)))
    store.put("datasets/d/runs/old/rejected.parquet", manifest.to_bytes(rows_of(REJECTED, "rejected")))
    old = manifest.Written(
        "datasets/d/runs/old/manifest.parquet",
        "datasets/d/runs/old/rejected.parquet",
        "none",
        manifest.WriteStats(),
    )
    changed = manifest.write_change(store, "d", run("v2"), "2.0.0", old, deletes=[row(3)["sample_id"]])
    ids = {r["sample_id"] for r in manifest.read_rows(store, changed.manifest_uri)}
    assert len(ids) == len(ACCEPTED) - 1 and row(3)["sample_id"] not in ids


def test_inconsistent_changes_are_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    v1 = first_version(store)
    with pytest.raises(ValueError, match="own sample id"):
        manifest.write_change(store, "d", run("x"), "2.0.0", v1, upserts=[row(1), row(1, label="bird")])
    with pytest.raises(ValueError, match="both added"):
        manifest.write_change(
            store, "d", run("x"), "2.0.0", v1, added=[row(500)], deletes=[row(500)["sample_id"]]
        )
