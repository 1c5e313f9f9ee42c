"""spec.retention.tiers: the sample bytes of old versions move to a colder S3 storage class (or, where
the store has no such class, carry the tag loupe-tier=<class>), only when no younger or kept version
shares them; an archived version says so and refuses export until `loupe restore`."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from loupe_api.dataset import DatasetStats
from loupe_api.keys import version_key_of
from loupe_api.retention import RetentionSpec, TierRecord, TierRule
from loupe_api.versions import VersionChange, VersionRecord
from loupe_storage.store import LocalStore, blob_key
from loupe_storage.versions import list_versions
from loupe_workers.ingest.demo import DemoFile
from loupe_workers.use.client import open_dataset
from loupe_workers.versioning.tiers import (
    VersionArchived,
    apply_tiers,
    blob_levels,
    describe,
    plan_levels,
)
from support.cli import loupe, quickstart_project
from support.photos import jpeg, photo

NOW = datetime(2026, 12, 1, tzinfo=UTC)
TIERS = RetentionSpec(tiers=[TierRule(after="30d", storage_class="STANDARD_IA"),
                             TierRule(after="180d", storage_class="GLACIER")])  # fmt: skip


def record(version: str, days_old: float) -> VersionRecord:
    return VersionRecord(dataset="d", version=version, created=NOW - timedelta(days=days_old), run_id="r",
                         spec_digest="s", source_digest="s", content_digest="c", code_version="0",
                         manifest_uri="m", rejected_uri="r", lineage_uri="l", samples=1,
                         stats=DatasetStats(), change=VersionChange(bump="minor"))  # fmt: skip


# the current version (2.0.0) is old too: it stays all the same
HISTORY = [record("1.0.0", 400), record("1.1.0", 200), record("1.2.0", 40), record("1.3.0", 10),
           record("2.0.0", 300)]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "tagged", "levels"),
    [
        (RetentionSpec(), [], [0, 0, 0, 0, 0]),  # no tiers: nothing moves
        (TIERS, [], [2, 2, 1, 0, 0]),  # by age; the current stays whatever its age
        (TIERS, ["1.0.0"], [0, 2, 1, 0, 0]),  # a tagged version stays
        (TIERS.model_copy(update={"keep_last": 3}), [], [2, 2, 0, 0, 0]),  # so do the newest keepLast
    ],
)
def test_plan_levels(spec: RetentionSpec, tagged: list[str], levels: list[int]) -> None:
    got = plan_levels(HISTORY, spec, tagged=tagged, now=NOW)
    assert [got[r.version] for r in HISTORY] == levels


def test_a_restored_version_ages_again_from_its_restore() -> None:
    back = TierRecord(dataset="d", version="1.0.0", storage_class="STANDARD", applied="restored",
                      since=NOW - timedelta(days=40))  # fmt: skip
    got = plan_levels(HISTORY, TIERS, tiers={"1.0.0": back}, now=NOW)
    assert got["1.0.0"] == 1 and got["1.1.0"] == 2


def test_a_blob_goes_only_as_cold_as_its_youngest_reader() -> None:
    levels = {"1.0.0": 2, "1.1.0": 1, "2.0.0": 0}
    refs = {"1.0.0": {"a", "b", "c"}, "1.1.0": {"b", "c"}, "2.0.0": {"c"}}
    assert blob_levels(refs, levels) == {"a": 2, "b": 1, "c": 0}


def test_tier_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="youngest first"):
        RetentionSpec.model_validate({"tiers": [{"after": "180d", "storageClass": "GLACIER_IR"},
                                                {"after": "30d", "storageClass": "STANDARD_IA"}]})  # fmt: skip
    with pytest.raises(ValueError, match="storageClass or tags"):
        RetentionSpec.model_validate({"tiers": [{"after": "30d"}]})
    with pytest.raises(ValueError, match="storageClass"):
        RetentionSpec.model_validate({"tiers": [{"after": "30d", "storageClass": "COLD"}]})


@pytest.mark.parametrize(
    ("storage_class", "applied", "shown"),
    [
        ("STANDARD_IA", "storageClass", "tier (STANDARD_IA) since 2026-12-01"),
        ("GLACIER_IR", "storageClass", "tier (GLACIER_IR) since 2026-12-01"),  # reads at once: not archived
        ("GLACIER", "storageClass", "archived (GLACIER) since 2026-12-01"),
        ("DEEP_ARCHIVE", "tags", "archived (DEEP_ARCHIVE, as tag loupe-tier: the store has no such class)"),
        ("team=vision", "tags", "tagged (team=vision) since 2026-12-01"),  # a rule with tags only
        ("STANDARD", "restored", ""),
    ],
)
def test_how_a_tier_is_shown(storage_class: str, applied: Any, shown: str) -> None:
    tier = TierRecord(dataset="d", version="1.0.0", storage_class=storage_class, applied=applied, since=NOW)
    assert describe(tier).startswith(shown) and bool(shown) == bool(describe(tier))
    assert tier.archived() == (storage_class in ("GLACIER", "DEEP_ARCHIVE"))


def test_a_folder_store_has_no_tiers(tmp_path: Path) -> None:
    report = apply_tiers(LocalStore(tmp_path), "d", TIERS)
    assert report.moved == [] and "S3 stores only" in report.skipped


# --- on a real S3 server (MinIO) -------------------------------------------------------------------


def set_retention(project: Path, retention: dict[str, Any]) -> None:
    documents = list(yaml.safe_load_all((project / "loupe.yaml").read_text()))
    for document in documents:
        if document["kind"] == "Dataset":
            document["spec"]["retention"] = retention
    (project / "loupe.yaml").write_text(yaml.safe_dump_all(documents))


def run(project: Path) -> str:
    done = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)[0]["version"])


def age(store: LocalStore, version: str, days: int) -> None:
    """Backdate a version record (the only way to have old versions without waiting months)."""
    key = version_key_of("defects", version)
    body = json.loads(store.get(key))
    body["created"] = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    store.put(key, json.dumps(body).encode())


def test_tiers_on_minio_move_only_unshared_blobs_and_archived_versions_refuse_export(
    demo_master: tuple[Path, list[DemoFile]], tmp_path: Path, minio: Any
) -> None:
    project = quickstart_project(tmp_path / "project", demo_master[0])  # v1: the demo photos
    local = LocalStore(project / ".loupe")
    brick_file = project / "images" / "textures" / "brick.jpg"
    brick = blob_key(hashlib.sha256(brick_file.read_bytes()).hexdigest())
    brick_file.unlink()
    clock = jpeg(photo("clock", 320))
    (project / "images" / "objects" / "clock.jpg").write_bytes(clock)
    v2 = run(project)  # brick gone, clock in
    (project / "images" / "objects" / "clock.jpg").unlink()
    v3 = run(project)  # clock gone: brick is only in v1, clock only in v2
    v1 = list_versions(local, "defects")[0].version
    age(local, v1, 200)
    age(local, v2, 40)

    bucket = minio.make_bucket("tiers")
    s3 = minio.client()
    for path in sorted(p for p in local.root.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"team/{path.relative_to(local.root).as_posix()}")
    env = {"AWS_ACCESS_KEY_ID": minio.access_key, "AWS_SECRET_ACCESS_KEY": minio.secret_key,
           "AWS_ENDPOINT_URL": minio.endpoint, "AWS_REGION": minio.region}  # fmt: skip
    uri = f"s3://{bucket}/team"
    # MinIO stores REDUCED_REDUNDANCY and refuses GLACIER (no remote tier configured): tags instead
    set_retention(project, {"tiers": [{"after": "30d", "storageClass": "REDUCED_REDUNDANCY"},
                                      {"after": "180d", "storageClass": "GLACIER",
                                       "tags": {"team": "vision"}}]})  # fmt: skip
    done = loupe("gc", "-f", "loupe.yaml", "--store", uri, "--json", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    moved = json.loads(done.stdout)["tiered"]["defects"]
    assert moved == [f"{v1} to GLACIER (tags)", f"{v2} to REDUCED_REDUNDANCY (storageClass)"], moved

    def state(key: str) -> tuple[str, dict[str, str]]:
        head = s3.head_object(Bucket=bucket, Key=f"team/{key}")
        tags = s3.get_object_tagging(Bucket=bucket, Key=f"team/{key}")["TagSet"]
        return head.get("StorageClass") or "STANDARD", {t["Key"]: t["Value"] for t in tags}

    clock_blob = blob_key(hashlib.sha256(clock).hexdigest())
    assert state(clock_blob) == ("REDUCED_REDUNDANCY", {"loupe-tier": "REDUCED_REDUNDANCY"})
    assert state(brick) == ("STANDARD", {"loupe-tier": "GLACIER", "team": "vision"})
    current = open_dataset("defects", local).version(v3)
    shared = [s.blob_key for s in current.samples()]
    assert shared and all(state(key) == ("STANDARD", {}) for key in shared)  # v3 reads them: they stay

    listed = {r["version"]: r.get("storage") for r in json.loads(
        loupe("versions", "defects", "--store", uri, "--json", env=env).stdout)}  # fmt: skip
    assert listed[v1].startswith("archived (GLACIER, as tag loupe-tier")
    assert listed[v2].startswith("tier (REDUCED_REDUNDANCY) since") and listed[v3] is None
    table = loupe("versions", "defects", "--store", uri, env=env).stdout
    assert "archived" in table and "storage" in table

    refused = loupe("export", f"defects@{v1}", "--out", str(tmp_path / "out1"), "--store", uri, env=env)
    assert refused.returncode == 1 and not (tmp_path / "out1").exists()
    assert f"version {v1} of defects is archived in GLACIER since" in refused.stdout + refused.stderr
    assert f"loupe restore defects@{v1}" in refused.stdout + refused.stderr
    readable = loupe("export", f"defects@{v2}", "--out", str(tmp_path / "out2"), "--store", uri, env=env)
    assert readable.returncode == 0, readable.stderr  # REDUCED_REDUNDANCY reads at once
    assert clock in {p.read_bytes() for p in (tmp_path / "out2").rglob("*.jpg")}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        remote = open_dataset("defects", uri, endpoint=minio.endpoint, region=minio.region)
        with pytest.raises(VersionArchived, match="loupe restore"):
            remote.version(v1)

    back = loupe("restore", f"defects@{v1}", "--store", uri, env=env)
    assert back.returncode == 0 and "is in STANDARD" in back.stdout, back.stdout + back.stderr
    assert state(brick) == ("STANDARD", {"team": "vision"})  # the tier tag is gone, the user's stays
    again = loupe("export", f"defects@{v1}", "--out", str(tmp_path / "out3"), "--store", uri, env=env)
    assert again.returncode == 0, again.stderr
    # a restored version ages again from its restore: the next gc leaves it where it is
    rerun = json.loads(loupe("gc", "-f", "loupe.yaml", "--store", uri, "--json", cwd=project, env=env).stdout)
    assert rerun["tiered"]["defects"] == [] and state(brick)[1] == {"team": "vision"}

    # a tiered version made hot again (tagged) gets its bytes back in STANDARD at the next pass
    assert loupe("tag", f"defects@{v2}", "production", "--store", uri, env=env).returncode == 0
    warmed = loupe("gc", "-f", "loupe.yaml", "--store", uri, "--json", cwd=project, env=env)
    assert warmed.returncode == 0, warmed.stderr
    assert state(clock_blob) == ("STANDARD", {})
    listed = {r["version"]: r.get("storage") for r in json.loads(
        loupe("versions", "defects", "--store", uri, "--json", env=env).stdout)}  # fmt: skip
    assert listed[v2] is None and listed[v1] is None
