"""Manifest parts: a version's rows as content-addressed Parquet parts that later versions share.

Synthetic rows check the layout itself (what a +1, a no-change and a relabel version write, the reading
order, deterministic bytes, the S3 store); the real pipeline on the demo photos checks that a run writes
only the changed parts, that a crashed run's parts reach no version, and that versions written before
parts (one Parquet file per kind) are still read by ``loupe show``, the client, ``loupe export`` and the
next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from PIL import Image

from loupe_api.keys import version_key_of
from loupe_api.versions import PartList, VersionRecord, is_part_list
from loupe_storage.store import LocalStore, ObjectStore, S3Store, blob_key
from loupe_storage.versions import commit_version, list_versions
from loupe_workers.ingest.demo import DemoFile
from loupe_workers.pipeline import run as pipeline
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.storage import manifest
from loupe_workers.use.client import open_dataset
from support.cli import loupe
from support.runs import request
from support.stores import SMALL, SpyStore, use_small_parts


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    use_small_parts(monkeypatch)


def synthetic(count: int, start: int = 0) -> list[dict[str, Any]]:
    rows = []
    for i in range(start, start + count):
        sha = hashlib.sha256(f"bytes {i}".encode()).hexdigest()
        rows.append(
            {
                "sample_id": hashlib.sha256(f"sample {i}".encode()).hexdigest(),
                "sha256": sha,
                "disposition": "accepted",
                "source": "cams",
                "key": f"line-{i % 7}/img-{i:06d}.jpg",
                "uri": f"/data/line-{i % 7}/img-{i:06d}.jpg",
                "etag": f"{i}-1",
                "size": 1000 + i,
                "blob_uri": blob_key(sha),
                "media": "image",
                "format": "jpeg",
                "width": 640,
                "height": 480,
                "sharpness": i / 7,
                "hash_variants": [f"{i:016x}"],
                "metadata": json.dumps({"line": f"line-{i % 7}"}),
                "label": ["cat", "dog"][i % 2],
                "labels": json.dumps({"label": ["cat", "dog"][i % 2]}),
                "flags": ["dark"] if i % 11 == 0 else [],
                "split": ["train", "val", "test"][i % 3],
                "status": "ok",
            }
        )
    return rows


def rejected_rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    rows = synthetic(count, start + 1_000_000)
    for row in rows:
        row.update(disposition="rejected", reason="too_dark", label=None, labels=None, split=None)
    return rows


def legacy_order(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """What the single-file layout stored: the rows through the schema, in its sort order."""
    order = {
        "accepted": lambda r: r["sample_id"],
        "rejected": lambda r: (r["source"], r["key"], r["sample_id"]),
    }
    return manifest.to_table(sorted(rows, key=order[kind])).to_pylist()


def record_for(store: ObjectStore, written: manifest.Written, version: str, samples: int) -> VersionRecord:
    from loupe_api.dataset import DatasetStats

    return VersionRecord(
        dataset="synthetic", version=version, created="2026-01-01T00:00:00Z", run_id=f"run-{version}",
        spec_digest="s", source_digest="s", content_digest="c", code_version="test",
        manifest_uri=written.manifest_uri, rejected_uri=written.rejected_uri, lineage_uri=written.lineage_uri,
        samples=samples, stats=DatasetStats(),
    )  # fmt: skip


def write(
    store: ObjectStore,
    version: str,
    accepted: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
    parent: VersionRecord | None = None,
) -> tuple[VersionRecord, manifest.Written]:
    layout = manifest.read_parent(store, parent)[2] if parent is not None else None
    written = manifest.write_parts(
        store, "synthetic", f"datasets/synthetic/runs/run-{version}", version, accepted, rejected, layout
    )
    record = record_for(store, written, version, len(accepted))
    commit_version(store, record)
    return record, written


def part_keys(store: ObjectStore, key: str) -> list[str]:
    return [p.key for p in PartList.model_validate_json(store.get(key)).parts]


def check_versions_share_parts(store: ObjectStore) -> None:
    """+1 row, no change, one relabel, one removal: each writes only the parts that changed."""
    accepted, rejected = synthetic(300), rejected_rows(40)
    v1, w1 = write(store, "1.0.0", accepted, rejected)
    parts_v1 = part_keys(store, v1.manifest_uri)
    assert len(parts_v1) >= 300 // SMALL and w1.stats.parts_reused == 0
    assert manifest.read_version_rows(store, v1) == legacy_order(accepted, "accepted")
    assert manifest.read_version_rows(store, v1, "rejected") == legacy_order(rejected, "rejected")

    # +1 new sample: one new manifest part (with its lineage part), every other part referenced again
    grown = [*accepted, *synthetic(1, 300)]
    v2, w2 = write(store, "1.1.0", grown, rejected, parent=v1)
    parts_v2 = part_keys(store, v2.manifest_uri)
    assert len(set(parts_v2) - set(parts_v1)) <= 2, "at most the new rows' part and the small part merged"
    assert len(set(parts_v1) & set(parts_v2)) >= len(parts_v1) - 1
    assert w2.stats.parts_written <= 4 and w2.stats.parts_reused >= 2 * len(parts_v1) - 2
    assert part_keys(store, v2.rejected_uri) == part_keys(store, v1.rejected_uri)
    assert manifest.read_version_rows(store, v2) == legacy_order(grown, "accepted")

    # no change: nothing but the part lists is written, and they name the same parts
    v3, w3 = write(store, "1.1.1", grown, rejected, parent=v2)
    assert w3.stats.parts_written == 0
    assert part_keys(store, v3.manifest_uri) == parts_v2
    assert part_keys(store, v3.lineage_uri) == part_keys(store, v2.lineage_uri)

    # relabel one sample: its part only (lineage edges do not carry labels: none of those changes)
    relabeled = [dict(r) for r in grown]
    target = relabeled[123]
    target.update(label="bird", labels=json.dumps({"label": "bird"}))
    v4, w4 = write(store, "2.0.0", relabeled, rejected, parent=v3)
    assert w4.stats.parts_written == 1
    assert len(set(part_keys(store, v4.manifest_uri)) - set(parts_v2)) == 1
    assert part_keys(store, v4.lineage_uri) == part_keys(store, v3.lineage_uri)
    rows = {r["sample_id"]: r for r in manifest.read_version_rows(store, v4)}
    assert rows[target["sample_id"]]["label"] == "bird"
    assert manifest.read_version_rows(store, v4) == legacy_order(relabeled, "accepted")

    # lineage edges: every row once, accepted first, with the version added back
    edges = manifest.read_version_rows(store, v4, "lineage")
    assert [e["sample_id"] for e in edges] == [
        r["sample_id"] for r in legacy_order(relabeled, "accepted")
    ] + [r["sample_id"] for r in legacy_order(rejected, "rejected")]
    assert {e["version"] for e in edges} == {"2.0.0"}
    first = next(e for e in edges if e["sample_id"] == target["sample_id"])
    assert first["blob"] == blob_key(target["sha256"]) and first["raw_sha256"] == target["sha256"]

    # the old versions read as they were written
    assert manifest.read_version_rows(store, v1) == legacy_order(accepted, "accepted")


def test_versions_write_only_changed_parts(tmp_path: Path, small_parts: None) -> None:
    check_versions_share_parts(LocalStore(tmp_path / "store"))


def test_versions_share_parts_on_s3(minio: Any, monkeypatch: pytest.MonkeyPatch, small_parts: None) -> None:
    minio.make_bucket("parts-store")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio.secret_key)
    store = S3Store("parts-store", "loupe", endpoint=minio.endpoint)
    check_versions_share_parts(store)
    keys = {info.key for info in store.list("datasets/synthetic/parts/")}
    referenced = {
        k
        for record in list_versions(store, "synthetic")
        for uri in (record.manifest_uri, record.rejected_uri, record.lineage_uri)
        for k in part_keys(store, uri)
    }
    assert referenced == keys


def test_same_rows_give_the_same_bytes(tmp_path: Path) -> None:
    rows = synthetic(500)
    table = manifest.to_table(rows).sort_by("sample_id")
    reread = manifest._parquet(manifest.table_bytes(table))  # list items named "element" on reading
    chunked = pa.concat_tables([table.slice(0, 100), table.slice(100)])
    digests = {
        hashlib.sha256(
            manifest.table_bytes(manifest._normalized(t, manifest.SCHEMA).combine_chunks())
        ).hexdigest()
        for t in (table, chunked, reread, manifest.to_table(list(reversed(rows))).sort_by("sample_id"))
    }
    assert len(digests) == 1
    store = LocalStore(tmp_path / "store")
    a = manifest.write_parts(store, "d", "datasets/d/runs/a", "1.0.0", rows, [])
    b = manifest.write_parts(store, "d", "datasets/d/runs/b", "1.0.0", list(reversed(rows)), [])
    assert part_keys(store, a.manifest_uri) == part_keys(store, b.manifest_uri)
    assert b.stats.parts_written == 0


def test_large_growth_keeps_at_most_one_small_part(small_parts: None, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    accepted = synthetic(100)
    record, _ = write(store, "1.0.0", accepted, [])
    for step in range(1, 8):  # many small additions: the small parts are merged, not piled up
        accepted = [*accepted, *synthetic(3, 100 + 3 * step)]
        record, _ = write(store, f"1.{step}.0", accepted, [], parent=record)
        sizes = [p.rows for p in PartList.model_validate_json(store.get(record.manifest_uri)).parts]
        assert sum(1 for s in sizes if s < SMALL // 4) <= 1 and max(sizes) <= SMALL
        assert sum(sizes) == len(accepted)
    assert manifest.read_version_rows(store, record) == legacy_order(accepted, "accepted")


def test_empty_kinds_read_as_empty_tables(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    record, _ = write(store, "1.0.0", synthetic(3), [])
    assert manifest.read_version_rows(store, record, "rejected") == []
    assert manifest.read_version_table(store, record, "rejected").schema.names == list(manifest.COLUMNS)
    assert len(manifest.read_version_rows(store, record, "lineage")) == 3


# --- the pipeline ---------------------------------------------------------------------------------


def add_photo(folder: Path, name: str, seed: int) -> None:
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / name, quality=92)


def test_pipeline_writes_only_changed_parts(
    corpus: tuple[Path, list[DemoFile]], tmp_path: Path, small_parts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, _ = corpus
    store = SpyStore(tmp_path / "store")
    produced: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
    real_write = pipeline._write_rows  # every commit's rows (write_parts or write_change below it)

    def spy_write(*args: Any, **kwargs: Any) -> manifest.Written:
        produced.append(([dict(r) for r in args[4]], [dict(r) for r in args[5]]))
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_write_rows", spy_write)
    first = run_dataset(request(images, store.uri), store=store)
    assert first.created
    [v1] = list_versions(store, "defects")
    assert all(is_part_list(k) for k in (v1.manifest_uri, v1.rejected_uri, v1.lineage_uri))
    parts_v1 = part_keys(store, v1.manifest_uri)
    assert len(parts_v1) >= 2
    # the rows read through the parts are exactly the rows the pipeline produced
    accepted, others = produced[0]
    assert manifest.read_version_rows(store, v1) == legacy_order(accepted, "accepted")
    assert manifest.read_version_rows(store, v1, "rejected") == legacy_order(others, "rejected")

    store.puts.clear()  # no change: no version, nothing written at all
    again = run_dataset(request(images, store.uri), store=store)
    assert not again.created and store.parts_written() == []

    add_photo(images / "objects", "new-photo.jpg", seed=7)
    store.puts.clear()
    second = run_dataset(request(images, store.uri), store=store)
    assert second.created and second.version == "1.1.0", second.message
    v2 = list_versions(store, "defects")[-1]
    parts_v2 = part_keys(store, v2.manifest_uri)
    new = [k for k in store.parts_written() if k in parts_v2]
    assert 1 <= len(new) <= 2, new  # the new sample's part (merged with the one small part, if any)
    assert len(set(parts_v1) & set(parts_v2)) >= len(parts_v1) - 1  # referenced by both records
    assert len(store.parts_written()) <= 4, store.parts_written()  # those and their lineage parts only
    assert part_keys(store, v2.rejected_uri) == part_keys(store, v1.rejected_uri)
    assert manifest.read_version_rows(store, v2) == legacy_order(produced[-1][0], "accepted")
    keys = {r["key"] for r in manifest.read_version_rows(store, v2)}
    assert "objects/new-photo.jpg" in keys


def test_parts_of_a_crashed_run_reach_no_version(
    corpus: tuple[Path, list[DemoFile]], tmp_path: Path, small_parts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, _ = corpus
    store = SpyStore(tmp_path / "store")
    run_dataset(request(images, store.uri), store=store)
    add_photo(images / "objects", "new-photo.jpg", seed=11)

    def crash(*_: Any) -> Any:
        raise RuntimeError("killed before the record")

    monkeypatch.setattr(pipeline, "commit_version", crash)
    store.puts.clear()
    with pytest.raises(RuntimeError, match="killed"):
        run_dataset(request(images, store.uri), store=store)
    orphans = set(store.parts_written())
    assert orphans  # the run got as far as writing its new parts
    assert [v.version for v in list_versions(store, "defects")] == ["1.0.0"]
    referenced = {
        k
        for record in list_versions(store, "defects")
        for uri in (record.manifest_uri, record.rejected_uri, record.lineage_uri)
        for k in part_keys(store, uri)
    }
    assert not orphans & referenced
    assert "objects/new-photo.jpg" not in {
        r["key"] for r in manifest.read_version_rows(store, list_versions(store, "defects")[0])
    }
    monkeypatch.undo()
    done = run_dataset(request(images, store.uri), store=store)  # the next run commits (its parts exist)
    assert done.created and done.version == "1.1.0"


# --- versions written before parts ------------------------------------------------------------------


def write_single_file_version(store: ObjectStore, record: VersionRecord, version: str) -> VersionRecord:
    """A copy of ``record`` as the layout before parts wrote it (the old ``_commit``): one Parquet file
    each for the manifest, the rejected rows and the lineage edges, under the run."""
    accepted = manifest.read_version_rows(store, record)
    others = manifest.read_version_rows(store, record, "rejected")
    prefix = f"datasets/{record.dataset}/runs/single-{version}"
    lineage = [
        {
            "version": version,
            "sample_id": r["sample_id"],
            "disposition": r["disposition"],
            "source": r["source"],
            "key": r["key"],
            "uri": r["uri"],
            "etag": r["etag"],
            "raw_sha256": r["video_sha256"] or r["sha256"],
            "blob": blob_key(r["sha256"]),
            "frame_index": r["frame_index"],
            "reason": r["reason"],  # the lineage columns of today, so that both read the same
            "detail": r["detail"],
        }
        for r in accepted + others
    ]
    store.put(f"{prefix}/manifest.parquet", manifest.to_bytes(accepted))
    store.put(f"{prefix}/rejected.parquet", manifest.to_bytes(others))
    store.put(f"{prefix}/lineage.parquet", manifest.table_bytes(pa.Table.from_pylist(lineage)))
    old = record.model_copy(
        update={
            "version": version,
            "run_id": f"single-{version}",
            "manifest_uri": f"{prefix}/manifest.parquet",
            "rejected_uri": f"{prefix}/rejected.parquet",
            "lineage_uri": f"{prefix}/lineage.parquet",
        }
    )
    store.put(version_key_of(record.dataset, version), json.dumps(old.to_wire(), sort_keys=True).encode())
    return old


def test_single_file_versions_stay_readable(corpus: tuple[Path, list[DemoFile]], tmp_path: Path) -> None:
    images, _ = corpus
    root = tmp_path / "store"
    store = LocalStore(root)
    run_dataset(request(images, store.uri))
    [parts_version] = list_versions(store, "defects")
    # the only version is rewritten the old way, as if an older Loupe had committed it
    store.delete(version_key_of("defects", "1.0.0"))
    old = write_single_file_version(store, parts_version, "1.0.0")
    assert not is_part_list(old.manifest_uri)
    expected = manifest.read_version_rows(store, parts_version)
    assert manifest.read_version_rows(store, old) == expected
    assert manifest.read_version_rows(store, old, "rejected") == manifest.read_version_rows(
        store, parts_version, "rejected"
    )

    # the helper writes edges as before lineage carried why a sample was left out (reason, detail)
    def edges(record: VersionRecord) -> list[dict[str, Any]]:
        rows = manifest.read_version_rows(store, record, "lineage")
        return [{k: v for k, v in edge.items() if k not in ("reason", "detail")} for edge in rows]

    assert edges(old) == edges(parts_version)

    version = open_dataset("defects", root).version()  # the client
    assert version.record.manifest_uri == old.manifest_uri
    assert sorted(version.to_arrow().column("sample_id").to_pylist()) == sorted(
        r["sample_id"] for r in expected
    )

    shown = loupe("show", "defects", "--store", str(root), "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["samples"] == len(expected)
    out = tmp_path / "export"
    exported = loupe("export", "defects", "--store", str(root), "--out", str(out), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert (
        len([p for p in out.rglob("*") if p.is_file() and p.suffix in (".jpg", ".png", ".webp", ".jpeg")]) > 0
    )
    lineage = loupe("lineage", "defects@1.0.0", "--store", str(root), "--json", cwd=tmp_path)
    assert lineage.returncode == 0, lineage.stderr

    # the next run builds on the old-layout parent and writes parts
    add_photo(images / "objects", "new-photo.jpg", seed=5)
    nxt = run_dataset(request(images, store.uri))
    assert nxt.created and nxt.version == "1.1.0", nxt.message
    v2 = list_versions(store, "defects")[-1]
    assert is_part_list(v2.manifest_uri)
    assert {r["sample_id"] for r in expected} < {
        r["sample_id"] for r in manifest.read_version_rows(store, v2)
    }


def test_reading_parts_leaves_pyarrow_dataset_unimported(tmp_path: Path) -> None:
    # pq.read_table imports pyarrow.dataset (with pandas: about half a second of a small incremental run)
    code = (
        "import sys, pyarrow as pa; from loupe_storage.store import LocalStore; "
        "from loupe_workers.storage import manifest; store = LocalStore(sys.argv[1]); "
        "store.put('a.parquet', manifest.table_bytes(pa.table({'sample_id': ['x', 'y'], 'label': ['cat', None]}))); "
        "print(manifest.read_rows(store, 'a.parquet') == [{'sample_id': 'x', 'label': 'cat'}, "
        "{'sample_id': 'y', 'label': None}], 'pyarrow.dataset' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["True", "False"]
