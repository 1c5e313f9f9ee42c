"""Retention expires versions no rule keeps (never the current, a tagged or a trained-on one), leaving a
tombstone; `loupe gc` frees what no remaining version references, across datasets, and never while a
run is in flight."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from loupe_api.dataset import DatasetStats
from loupe_api.jobs import RunRequest
from loupe_api.keys import inputs_seen_key
from loupe_api.retention import RetentionSpec
from loupe_api.versions import VersionChange, VersionRecord
from loupe_storage.store import LocalStore, blob_key
from loupe_storage.versions import list_versions
from loupe_workers.ingest.demo import DemoFile
from loupe_workers.storage import manifest
from loupe_workers.storage.leases import CollectionInProgress, gc_lock, run_lease
from loupe_workers.use.client import open_dataset
from loupe_workers.versioning.retention import collect_garbage, plan_expiry
from support.cli import loupe, quickstart_project
from support.photos import jpeg, photo

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def record(version: str, days_old: float) -> VersionRecord:
    return VersionRecord(dataset="d", version=version, created=NOW - timedelta(days=days_old), run_id="r",
                         spec_digest="s", source_digest="s", content_digest="c", code_version="0",
                         manifest_uri="m", rejected_uri="r", lineage_uri="l", samples=1,
                         stats=DatasetStats(), change=VersionChange(bump="minor"))  # fmt: skip


HISTORY = [record("1.0.0", 40), record("1.1.0", 20), record("1.2.0", 10), record("2.0.0", 1)]


@pytest.mark.parametrize(
    ("spec", "tagged", "trained", "expired"),
    [
        (RetentionSpec(), [], [], []),  # no rule: keep everything
        (RetentionSpec(keep_last=2), [], [], ["1.0.0", "1.1.0"]),
        (RetentionSpec(keep_last=1), ["1.0.0"], ["1.1.0"], ["1.2.0"]),
        (RetentionSpec(keep_for="15d"), [], [], ["1.0.0", "1.1.0"]),
        (RetentionSpec(keep_last=1, keep_for="30d"), [], [], ["1.0.0"]),  # kept when any rule keeps it
        (RetentionSpec(keep_for="1h"), [], [], ["1.0.0", "1.1.0", "1.2.0"]),  # the current always stays
    ],
)
def test_plan_expiry(spec: RetentionSpec, tagged: list[str], trained: list[str], expired: list[str]) -> None:
    plan = plan_expiry(HISTORY, spec, tagged=tagged, trained_on=trained, now=NOW)
    assert [e.version for e in plan] == expired
    assert all("untagged" in e.reason for e in plan)


def with_retention(project: Path, **rule: int) -> None:
    documents = list(yaml.safe_load_all((project / "loupe.yaml").read_text()))
    for document in documents:
        if document["kind"] == "Dataset":
            document["spec"]["retention"] = rule
    (project / "loupe.yaml").write_text(yaml.safe_dump_all(documents))


def run(project: Path) -> dict[str, object]:
    done = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)[0]
    return result


def test_expire_then_collect_keeps_every_remaining_version_whole(
    demo_master: tuple[Path, list[DemoFile]], tmp_path: Path
) -> None:
    project = quickstart_project(tmp_path / "project", demo_master[0])  # 1.0.0
    store = LocalStore(project / ".loupe")
    assert loupe("tag", "defects@1.0.0", "production", cwd=project).returncode == 0
    clock = jpeg(photo("clock", 320))
    (project / "images" / "objects" / "clock.jpg").write_bytes(clock)
    second = run(project)  # 1.1.0: one photo more
    with_retention(project, keepLast=1)
    (project / "images" / "objects" / "clock.jpg").unlink()
    (project / "images" / "textures" / "brick.jpg").unlink()
    third = run(project)  # 2.0.0: two photos fewer; retention lets 1.1.0 go (1.0.0 is tagged)
    assert third["expired"] == [second["version"]], third
    assert [r.version for r in list_versions(store, "defects")] == ["1.0.0", third["version"]]

    gone = loupe("show", f"defects@{second['version']}", cwd=project)
    assert gone.returncode == 1 and "expired on" in gone.stderr and "untagged" in gone.stderr
    chain = json.loads(loupe("lineage", f"defects@{third['version']}", "--json", cwd=project).stdout)
    assert chain["ancestry"][1]["version"] == second["version"] and "expired" in chain["ancestry"][1]

    clock_blob = blob_key(hashlib.sha256(clock).hexdigest())
    assert store.exists(clock_blob)  # only the expired 1.1.0 holds it
    # "inputs seen" marks (pipeline.run._confirm_inputs) go with their version, and only then
    expired_mark, current_mark = (
        inputs_seen_key("defects", str(v), "d" * 64) for v in (second["version"], third["version"])
    )
    for mark in (expired_mark, current_mark):
        store.put(mark, b"{}")
    keys_before = {i.key for i in store.list("")}
    dry = json.loads(loupe("gc", "--dry-run", "--json", cwd=project).stdout)
    assert dry["dryRun"] and clock_blob in dry["deletedKeys"] and dry["freedBytes"] > len(clock)
    assert {i.key for i in store.list("")} == keys_before  # a dry run deletes nothing
    done = loupe("gc", cwd=project)
    assert done.returncode == 0 and "freed" in done.stdout, done.stderr
    assert not store.exists(clock_blob)
    assert not store.exists(expired_mark) and store.exists(current_mark)
    assert store.exists(blob_key(next(r["sha256"] for r in manifest.read_version_rows(
        store, list_versions(store, "defects")[0]) if r["key"] == "textures/brick.jpg")))  # fmt: skip
    for version in ("1.0.0", third["version"]):  # every byte of what remains is still there
        opened = open_dataset("defects", store).version(str(version))
        assert all(s.read_bytes(verify=True) for s in opened.samples())
        for which in ("accepted", "rejected", "lineage"):
            manifest.read_version_rows(store, opened.record, which)  # type: ignore[arg-type]
    again = json.loads(loupe("gc", "--json", cwd=project).stdout)
    assert again["deleted"] == 0  # nothing left to collect


def test_leftovers_of_a_failed_run_are_collected(
    demo_master: tuple[Path, list[DemoFile]], tmp_path: Path
) -> None:
    project = quickstart_project(tmp_path / "project", demo_master[0])
    store = LocalStore(project / ".loupe")
    orphans = ["datasets/defects/parts/" + "0" * 64 + ".parquet", "datasets/defects/runs/crashed/manifest.parts.json",
               blob_key("f" * 64), "datasets/other/parts/" + "1" * 64 + ".parquet"]  # fmt: skip
    for key in orphans:
        store.put(key, b"x")
    kept = {i.key for i in store.list("")} - set(orphans)
    report = collect_garbage(store)
    assert sorted(report.deleted) == sorted(orphans) and report.freed_bytes == len(orphans)
    assert {i.key for i in store.list("")} == kept


def test_no_collection_while_a_run_is_in_flight_and_no_run_during_a_collection(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put(blob_key("e" * 64), b"unreferenced")
    with run_lease(store, "d"):
        report = collect_garbage(store)
        assert report.skipped and not report.deleted and store.exists(blob_key("e" * 64))
    with gc_lock(store) as may_sweep:
        assert may_sweep
        with pytest.raises(CollectionInProgress), run_lease(store, "d", wait=0.2):
            pass
        with pytest.raises(CollectionInProgress), gc_lock(store):
            pass
    assert not list(store.list("leases/")) and not store.exists("gc.lock.json")  # both released
    stale = {"started": 0.0, "holder": "a crashed run"}
    store.put("leases/stale.json", json.dumps(stale).encode())
    assert collect_garbage(store).deleted == [blob_key("e" * 64)]  # a stale lease does not block


def test_a_run_waiting_on_a_collection_fails_with_a_reason(tmp_path: Path) -> None:
    from loupe_api.dataset import DatasetSpec, SourceRef
    from loupe_api.ingest import IngestSourceSpec
    from loupe_workers.pipeline.run import RunError, run_dataset

    store = LocalStore(tmp_path / "store")
    source = IngestSourceSpec.model_validate({"filesystem": {"path": str(tmp_path)}})
    request = RunRequest(dataset="d", spec=DatasetSpec(sources=[SourceRef(name="s")]), sources={"s": source},
                         store_uri=str(tmp_path / "store"))  # fmt: skip
    import loupe_workers.storage.leases as leases

    with gc_lock(store), pytest.MonkeyPatch.context() as patch:
        patch.setattr(leases, "GC_WAIT_SECONDS", 0.2)
        with pytest.raises(RunError) as failed:
            run_dataset(request, store=store)
    assert failed.value.reason == "GarbageCollectionInProgress"
