"""Garbage collection of renditions: a rendition that only expired versions name is collected, one that a
kept version or another dataset names survives, and one an in-flight run just wrote is never touched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from loupe_api.keys import RENDITIONS
from loupe_api.renditions import RenditionSpec
from loupe_storage.store import LocalStore, ObjectStore, S3Store
from loupe_storage.versions import latest_version, list_versions
from loupe_workers.compute.renditions import Limits, key_of, render_one
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.storage.leases import run_lease
from loupe_workers.use.client import open_dataset
from loupe_workers.versioning.retention import collect_garbage
from support.cli import loupe
from support.photos import jpeg, photo
from support.runs import request, rows_of

SPECS = {"train-128": {"format": "jpeg", "quality": 85, "maxSide": 128}}
PHOTOS = {"things/rocket.jpg": "rocket", "things/coffee.jpg": "coffee", "animals/chelsea.jpg": "chelsea"}


def write(root: Path, names: dict[str, str]) -> dict[str, bytes]:
    files = {path: jpeg(photo(name, 200)) for path, name in names.items()}
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return files


def rendition_of(data: bytes) -> str:
    return key_of(RenditionSpec.model_validate(SPECS["train-128"]), hashlib.sha256(data).hexdigest())


def rendition_bytes(store: ObjectStore) -> int:
    return sum(info.size for info in store.list(RENDITIONS))


def history(tmp_path: Path, store_uri: str, **extra: Any) -> dict[str, bytes]:
    """defects 1.0.0 (rocket, coffee, chelsea), then 2.0.0 without rocket and coffee (keepLast 1 expires
    1.0.0); a second dataset of the store, made in between, still holds coffee."""
    images, shared = tmp_path / "images", tmp_path / "shared"
    files = write(images, PHOTOS)
    write(shared, {"things/coffee.jpg": "coffee"})
    dataset = {"renditions": SPECS, "retention": {"keepLast": 1}}
    first = request(images, store_uri, **dataset).model_copy(update=extra)
    assert run_dataset(first).version == "1.0.0"
    other = request(shared, store_uri, renditions=SPECS).model_copy(update={"dataset": "others", **extra})
    assert run_dataset(other).version == "1.0.0"
    (images / "things/rocket.jpg").unlink()
    (images / "things/coffee.jpg").unlink()
    second = run_dataset(first.model_copy(update={"allow_shrink": True}))  # two of three photos go
    assert second.version == "2.0.0" and second.expired == ["1.0.0"], second.message
    return files


def assert_collected(store: ObjectStore, files: dict[str, bytes]) -> None:
    rocket, coffee, chelsea = (rendition_of(files[k]) for k in PHOTOS)
    assert all(store.exists(k) for k in (rocket, coffee, chelsea))  # expiry alone frees nothing
    before = rendition_bytes(store)
    dry = collect_garbage(store, dry_run=True)
    assert rocket in dry.deleted and not {coffee, chelsea} & set(dry.deleted)
    assert store.exists(rocket)  # a dry run only lists
    done = collect_garbage(store)
    assert sorted(done.deleted) == sorted(dry.deleted)
    assert not store.exists(rocket) and store.exists(coffee) and store.exists(chelsea)
    after = rendition_bytes(store)
    assert before - after == store_size_of(files["things/rocket.jpg"]) > 0
    print(f"renditions: {before} bytes before gc, {after} after")  # the figure the issue asks for
    for dataset in ("defects", "others"):  # what remains still reads, rendition bytes verified
        version = open_dataset(dataset, store).version()
        assert all(s.read_bytes(verify=True) for s in version.samples(rendition="train-128"))
    assert not collect_garbage(store).deleted  # nothing left to collect


def store_size_of(raw: bytes) -> int:
    from loupe_workers.media.renditions import render

    return len(render(raw, RenditionSpec.model_validate(SPECS["train-128"])).data)


def test_a_rendition_only_an_expired_version_named_is_collected(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    files = history(tmp_path, str(store_dir))
    store = LocalStore(store_dir)
    assert [r.version for r in list_versions(store, "defects")] == ["2.0.0"]
    current = latest_version(store, "defects")
    assert current is not None
    named = {json.loads(r["renditions"])["train-128"]["key"] for r in rows_of(store, current)}
    assert named == {rendition_of(files["animals/chelsea.jpg"])}
    listed = json.loads(loupe("gc", "--dry-run", "--json", "--store", str(store_dir)).stdout)
    assert rendition_of(files["things/rocket.jpg"]) in listed["deletedKeys"]
    assert not {rendition_of(files[k]) for k in ("things/coffee.jpg", "animals/chelsea.jpg")} & set(
        listed["deletedKeys"]
    )
    assert_collected(store, files)


def test_a_rendition_an_in_flight_run_wrote_is_never_collected(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    raw = jpeg(photo("astronaut", 200))
    sha = hashlib.sha256(raw).hexdigest()
    store.put_if_absent(f"blobs/sha256/{sha[:2]}/{sha}", raw)
    specs = {n: RenditionSpec.model_validate(s) for n, s in SPECS.items()}
    with run_lease(store, "defects"):  # a run rendered it and has not committed its version yet
        made, failed = render_one(sha, specs, store, Limits())
        assert failed is None
        report = collect_garbage(store)
        assert report.skipped and store.exists(made["train-128"]["key"])
    # the run crashed before its commit: nothing names the rendition, so the next collection frees it
    assert made["train-128"]["key"] in collect_garbage(store).deleted
    assert not store.exists(made["train-128"]["key"])


@pytest.mark.s3
def test_on_minio_renditions_are_collected_the_same_way(
    tmp_path: Path, minio: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = minio.make_bucket("rendition-gc")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio.secret_key)
    files = history(tmp_path, f"s3://{bucket}/loupe", store_endpoint=minio.endpoint)
    assert_collected(S3Store(bucket, "loupe", endpoint=minio.endpoint), files)
