"""A tiering pass over settled versions reads no manifest: its cost does not grow with the history. A
change a rewarm depends on (here a tag) makes the next pass look at the manifests again."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loupe_api.keys import dataset_prefix, manifest_part_key, run_prefix, version_key_of
from loupe_api.retention import RetentionSpec
from loupe_storage.store import LocalStore, S3Store
from loupe_storage.versions import list_versions
from loupe_workers.ingest.demo import DemoFile
from loupe_workers.versioning.tags import set_tag
from loupe_workers.versioning.tiers import apply_tiers
from support.cli import loupe, quickstart_project
from support.photos import jpeg, photo

SPEC = RetentionSpec.model_validate({"tiers": [{"after": "30d", "storageClass": "REDUCED_REDUNDANCY"}]})


def manifest_reads(store: S3Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every manifest object (part list or part) read from ``store`` from now on."""
    reads: list[str] = []
    real: Callable[[str], bytes] = store.get
    runs, parts = (
        run_prefix("defects", ""),
        manifest_part_key(dataset_prefix("defects"), "")[: -len(".parquet")],
    )

    def spy(key: str) -> bytes:
        if key.startswith((runs, parts)):
            reads.append(key)
        return real(key)

    monkeypatch.setattr(store, "get", spy)
    return reads


@pytest.mark.s3
def test_a_second_pass_over_settled_versions_reads_no_manifest(
    demo_master: tuple[Path, list[DemoFile]], tmp_path: Path, minio: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = quickstart_project(tmp_path / "project", demo_master[0])  # v1
    local = LocalStore(project / ".loupe")
    (project / "images" / "textures" / "brick.jpg").unlink()  # v1 alone holds it: it may move
    (project / "images" / "objects" / "clock.jpg").write_bytes(jpeg(photo("clock", 320)))
    done = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    v1, _ = (r.version for r in list_versions(local, "defects"))
    key = version_key_of("defects", v1)  # backdated: old enough for the tier
    body = json.loads(local.get(key))
    body["created"] = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    local.put(key, json.dumps(body).encode())
    bucket = minio.make_bucket("tier-passes")
    client = minio.client()
    for path in sorted(p for p in local.root.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"team/{path.relative_to(local.root).as_posix()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio.secret_key)
    store = S3Store(bucket, "team", endpoint=minio.endpoint)

    reads = manifest_reads(store, monkeypatch)
    first = apply_tiers(store, "defects", SPEC)
    assert [t.version for t in first.moved] == [v1] and first.moved[0].blobs == 1
    assert reads  # the pass that moves reads the manifests
    reads.clear()
    second = apply_tiers(store, "defects", SPEC)
    assert second.moved == [] and second.rewarmed == 0 and reads == []  # settled: nothing read

    set_tag(store, "defects", v1, "production")  # v1 is hot again: its blobs must come back
    third = apply_tiers(store, "defects", SPEC)
    assert reads and third.rewarmed == first.moved[0].blobs > 0
    reads.clear()
    assert apply_tiers(store, "defects", SPEC).rewarmed == 0 and reads == []  # settled again
