"""Odd file-system entries and sources that look wrong (issue 10, rows 3, 4, 5 and 9).

Every case runs the real CLI on a real folder (``loupe run --executor inline``) and checks that the
run finishes, that nothing outside the source folder is read or stored, and that every entry of the
folder has a row in the version (manifest or rejected Parquet) with its reason. Cases that need a
file root cannot read (permissions) run the CLI with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
dropped (``setpriv``), since the suite runs as root here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from loupe_api.ingest import IngestSourceSpec
from loupe_storage.store import LocalStore
from loupe_storage.versions import list_versions
from loupe_workers.compute.process import ProcessSettings, process_object
from loupe_workers.ingest.sources import FolderSource, list_media
from loupe_workers.storage import manifest
from support.photos import jpeg, photo

LOUPE = [str(Path(sys.executable).with_name("loupe"))]
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "brick")


def write_spec(folder: Path, images: Path, **source: Any) -> Path:
    spec = folder / "loupe.yaml"
    filesystem = {"path": str(images), **source}
    docs = [
        {"apiVersion": "loupe.dev/v1alpha1", "kind": "IngestSource", "metadata": {"name": "cams"},
         "spec": {"filesystem": filesystem}},
        {"apiVersion": "loupe.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "defects"},
         "spec": {"sources": [{"name": "cams"}]}},
    ]  # fmt: skip
    spec.write_text("\n---\n".join(json.dumps(d) for d in docs))
    return spec


def loupe(
    *args: str | Path, drop_dac: bool = False, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    command = [*LOUPE, *map(str, args)]
    if drop_dac:  # root without these capabilities is held to file permissions like anyone else
        command = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                   "--bounding-set=-dac_override,-dac_read_search", *command]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def run(spec: Path, store: Path, *extra: str, drop_dac: bool = False) -> subprocess.CompletedProcess[str]:
    return loupe("run", "-f", spec, "--store", store, "--executor", "inline", *extra, drop_dac=drop_dac)


def version_rows(store: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """The latest version and its rows (accepted and left out) by key."""
    local = LocalStore(store)
    record = list_versions(local, "defects")[-1]
    rows = manifest.read_version_rows(local, record) + manifest.read_version_rows(local, record, "rejected")
    by_key = {r["key"]: r for r in rows}
    assert len(by_key) == len(rows), "one row per listed object"
    return record.version, by_key


def stored_blobs(store: Path) -> set[bytes]:
    return {p.read_bytes() for p in (store / "blobs").rglob("*") if p.is_file()}


def photos(folder: Path, names: tuple[str, ...] = PHOTOS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.jpg").write_bytes(jpeg(photo(name, 160)))


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path, Path]:
    images, store, outside = tmp_path / "images", tmp_path / "store", tmp_path / "outside"
    photos(images)
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(jpeg(photo("moon", 160)))
    return write_spec(tmp_path, images), images, store


def test_links_and_special_files_are_listed_with_reasons_and_never_read(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    spec, images, store = world
    outside_photo = tmp_path / "outside" / "secret.jpg"
    (images / "passwd.jpg").symlink_to("/etc/passwd")
    (images / "zero.jpg").symlink_to("/dev/zero")
    (images / "elsewhere.jpg").symlink_to(outside_photo)
    (images / "inside.jpg").symlink_to(images / "camera.jpg")
    (images / "dangling.jpg").symlink_to(images / "nothing-here.jpg")
    (images / "loop-a.jpg").symlink_to(images / "loop-b.jpg")
    (images / "loop-b.jpg").symlink_to(images / "loop-a.jpg")
    os.mkfifo(images / "fifo.jpg")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(images / "socket.jpg"))
    (images / "linked-folder").symlink_to(tmp_path / "outside", target_is_directory=True)
    (images / "sub").mkdir()
    (images / "sub" / "up").symlink_to(images, target_is_directory=True)  # a loop through a folder link
    try:
        result = run(spec, store)
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    version, rows = version_rows(store)
    assert version == "1.0.0"
    expected = {
        "passwd.jpg": "outside the source folder",
        "zero.jpg": "outside the source folder",
        "elsewhere.jpg": "outside the source folder",
        "dangling.jpg": "dangling",
        "loop-a.jpg": "loop",
        "loop-b.jpg": "loop",
        "fifo.jpg": "FIFO",
        "socket.jpg": "socket",
        "linked-folder": "outside the source folder",
        "sub/up/": "already listed",
    }
    for key, words in expected.items():
        row = rows[key]
        assert row["disposition"] == "rejected" and row["reason"] == "unreadable", row
        assert words in row["detail"], row
    # a link inside the root is followed: the same bytes as its target, so an exact duplicate
    assert rows["inside.jpg"]["disposition"] in ("accepted", "duplicate")
    assert rows["inside.jpg"]["sha256"] == rows["camera.jpg"]["sha256"]
    assert {k for k, r in rows.items() if r["disposition"] == "accepted"} >= {f"{n}.jpg" for n in PHOTOS}
    blobs = stored_blobs(store)
    assert Path("/etc/passwd").read_bytes() not in blobs
    assert outside_photo.read_bytes() not in blobs
    assert all(not b.startswith(b"\0" * 64) for b in blobs)


def test_follow_symlinks_never(world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    spec, images, store = world
    (images / "inside.jpg").symlink_to(images / "camera.jpg")
    spec = write_spec(tmp_path, images, followSymlinks="never")
    assert run(spec, store).returncode == 0
    _, rows = version_rows(store)
    assert (
        rows["inside.jpg"]["reason"] == "unreadable"
        and "followSymlinks: never" in rows["inside.jpg"]["detail"]
    )


def test_odd_names_are_ingested_or_recorded(world: tuple[Path, Path, Path]) -> None:
    spec, images, store = world
    data = jpeg(photo("coins", 160))
    (images / "new\nline.jpg").write_bytes(data)
    (images / ".tmp-upload.jpg").write_bytes(jpeg(photo("horse", 160)))
    bad_name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1, not UTF-8
    (images / bad_name).write_bytes(jpeg(photo("hubble_deep_field", 160)))
    result = run(spec, store)
    assert result.returncode == 0, result.stderr
    _, rows = version_rows(store)
    assert rows["new\nline.jpg"]["disposition"] == "accepted"
    assert rows[".tmp-upload.jpg"]["disposition"] == "accepted"
    assert rows["caf\\xe9.jpg"]["reason"] == "unreadable"
    assert "not valid UTF-8" in rows["caf\\xe9.jpg"]["detail"]
    assert len(rows) == len(PHOTOS) + 3


def test_unreadable_files_and_folders_are_recorded(world: tuple[Path, Path, Path]) -> None:
    spec, images, store = world
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to drop root's permission override")
    (images / "locked.jpg").write_bytes(jpeg(photo("coins", 160)))
    (images / "locked.jpg").chmod(0)
    photos(images / "private", ("grass", "moon"))
    (images / "private").chmod(0)
    try:
        result = run(spec, store, drop_dac=True)
    finally:
        (images / "private").chmod(0o755)
    assert result.returncode == 0, result.stderr
    _, rows = version_rows(store)
    assert (
        rows["locked.jpg"]["reason"] == "unreadable" and "permission denied" in rows["locked.jpg"]["detail"]
    )
    assert rows["private/"]["reason"] == "unreadable" and "cannot read folder" in rows["private/"]["detail"]


def test_missing_source_folder_keeps_the_current_version(world: tuple[Path, Path, Path]) -> None:
    spec, images, store = world
    assert run(spec, store).returncode == 0
    images.rename(images.with_name("images-unmounted"))
    result = run(spec, store)
    assert result.returncode == 2  # refused with the spec, before anything is written
    assert "spec.filesystem.path" in result.stderr and str(images) in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3
    assert [r.version for r in list_versions(LocalStore(store), "defects")] == ["1.0.0"]
    images.with_name("images-unmounted").rename(images)
    assert run(spec, store).returncode == 0  # back: nothing changed, nothing new
    assert [r.version for r in list_versions(LocalStore(store), "defects")] == ["1.0.0"]


def test_a_source_that_shrinks_too_much_is_refused_until_allowed(world: tuple[Path, Path, Path]) -> None:
    spec, images, store = world
    assert run(spec, store).returncode == 0
    (images / "brick.jpg").unlink()  # 1 of 6: an ordinary removal
    assert run(spec, store).returncode == 0
    assert list_versions(LocalStore(store), "defects")[-1].version == "2.0.0"
    for name in ("astronaut", "camera", "coffee", "chelsea"):  # 4 of the 5 left: looks like an outage
        (images / f"{name}.jpg").unlink()
    refused = run(spec, store)
    assert refused.returncode == 1, refused.stdout
    assert "maxRemovedFraction" in refused.stderr and "--allow-shrink" in refused.stderr
    assert list_versions(LocalStore(store), "defects")[-1].version == "2.0.0"
    accepted = run(spec, store, "--allow-shrink")
    assert accepted.returncode == 0, accepted.stderr
    record = list_versions(LocalStore(store), "defects")[-1]
    assert record.version == "3.0.0" and record.samples == 1


def test_an_emptied_folder_never_publishes_an_empty_version(world: tuple[Path, Path, Path]) -> None:
    spec, images, store = world
    assert run(spec, store).returncode == 0
    for child in images.iterdir():
        child.unlink()
    result = run(spec, store)
    assert result.returncode == 1, result.stdout
    assert "100%" in result.stderr
    assert [r.version for r in list_versions(LocalStore(store), "defects")] == ["1.0.0"]


def test_a_file_that_vanishes_after_listing_is_recorded(tmp_path: Path) -> None:
    images = tmp_path / "images"
    photos(images, ("camera", "coffee"))
    spec = IngestSourceSpec.model_validate({"filesystem": {"path": str(images)}})
    source = FolderSource(images)
    listed, _ = list_media("cams", spec, source)
    (images / "coffee.jpg").unlink()
    settings = ProcessSettings(hash_kind="phash", max_pixels=100_000_000)
    blobs = LocalStore(tmp_path / "store")
    [kept] = process_object(listed[0], source, blobs, settings, spec)
    [gone] = process_object(listed[1], source, blobs, settings, spec)
    assert kept["status"] == "ok"
    assert gone["status"] == "failed" and gone["fail_reason"] == "unreadable"
    assert "deleted after it was listed" in gone["fail_detail"]


def test_reads_are_bounded_and_never_follow_a_link_swapped_in_after_listing(tmp_path: Path) -> None:
    images = tmp_path / "images"
    photos(images, ("camera",))
    source = FolderSource(images)
    [info] = list(source.list())
    (images / "camera.jpg").unlink()
    (images / "camera.jpg").symlink_to("/etc/passwd")
    with pytest.raises(Exception, match="outside the source folder"):
        source.get(info.key)
    big = images / "big.jpg"
    big.write_bytes(b"\xff\xd8\xff" + b"\0" * 1000)
    assert len(source.get("big.jpg")) == 1003


def test_files_above_max_file_size_are_rejected_unread(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    spec, images, store = world
    with (images / "sparse.jpg").open("wb") as handle:  # 3 GB on paper, a few bytes on disk
        handle.write(b"\xff\xd8\xff")
        handle.truncate(3 << 30)
    result = run(spec, store)
    assert result.returncode == 0, result.stderr
    _, rows = version_rows(store)
    assert rows["sparse.jpg"]["reason"] == "max_file_size" and rows["sparse.jpg"]["disposition"] == "rejected"
    assert all(p.stat().st_size < 1 << 20 for p in (store / "blobs").rglob("*") if p.is_file())


def test_operator_job_reports_why_it_refused(tmp_path: Path) -> None:
    """The run-job entrypoint the operator launches says SourceUnavailable in a line it can parse."""
    from loupe_api.dataset import DatasetSpec
    from loupe_api.jobs import RunRequest
    from loupe_operator.adapters.launchers import LocalLauncher

    request = RunRequest(
        dataset="defects",
        spec=DatasetSpec.model_validate({"sources": [{"name": "cams"}]}),
        sources={"cams": IngestSourceSpec.model_validate({"filesystem": {"path": str(tmp_path / "gone")}})},
        store_uri=str(tmp_path / "store"),
    )
    launcher = LocalLauncher(tmp_path / "jobs")
    launcher.launch("job-1", request, {"LOUPE_EXECUTOR": "inline"})
    deadline = time.monotonic() + 120
    observed = launcher.observe("job-1")
    while observed is not None and observed.state == "Running" and time.monotonic() < deadline:
        time.sleep(0.2)
        observed = launcher.observe("job-1")
    assert observed is not None and observed.state == "Failed"
    assert observed.reason == "SourceUnavailable"
    assert "does not exist" in observed.message


def test_operator_source_scan_survives_odd_entries(tmp_path: Path) -> None:
    """The operator's cheap listing (which decides when to launch a job) must not fail on them either."""
    from loupe_operator.adapters.storage import scan_source

    images = tmp_path / "images"
    photos(images, ("camera",))
    (images / "dangling.jpg").symlink_to(images / "nothing.jpg")
    (images / "loop.jpg").symlink_to(images / "loop.jpg")
    (images / os.fsdecode(b"caf\xe9.jpg")).write_bytes(b"x")
    os.mkfifo(images / "fifo.jpg")
    spec = IngestSourceSpec.model_validate({"filesystem": {"path": str(images)}})
    scan = scan_source("cams", spec)
    assert scan.objects == 5
    (images / "dangling.jpg").unlink()
    assert scan_source("cams", spec).digest != scan.digest
