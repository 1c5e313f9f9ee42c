"""Tags name versions: immutable unless moved with --force (the move is kept), usable wherever a version
number is (show, export, the Python API), listed by `loupe versions` and `loupe tags`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loupe_storage.store import LocalStore
from loupe_workers.ingest.demo import DemoFile
from loupe_workers.use.client import open_dataset
from loupe_workers.versioning.tags import TagError, TagExists, set_tag
from loupe_workers.versioning.versions import VersionNotFound, resolve_version
from support.cli import loupe, quickstart_project


@pytest.fixture(scope="module")
def project(demo_master: tuple[Path, list[DemoFile]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart at 1.0.0 and, with one photo fewer, 2.0.0."""
    root = quickstart_project(tmp_path_factory.mktemp("tags") / "project", demo_master[0])
    (root / "images" / "textures" / "brick.jpg").unlink()
    again = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=root)
    assert again.returncode == 0 and json.loads(again.stdout)[0]["created"], again.stderr
    return root


def test_a_tag_is_immutable_unless_forced_and_keeps_its_history(project: Path) -> None:
    assert loupe("tag", "defects@1.0.0", "production", cwd=project).returncode == 0
    same = loupe("tag", "defects@1.0.0", "production", cwd=project)
    assert same.returncode == 0  # setting it again to the same version is not an error
    refused = loupe("tag", "defects@2.0.0", "production", cwd=project)
    assert refused.returncode == 1 and "already names 1.0.0" in refused.stderr and "--force" in refused.stderr
    assert json.loads(loupe("show", "defects@production", "--json", cwd=project).stdout)["version"] == "1.0.0"
    moved = loupe("tag", "defects@2.0.0", "production", "--force", cwd=project)
    assert moved.returncode == 0 and "moved from 1.0.0" in moved.stdout
    listed = json.loads(loupe("tags", "defects", "--json", cwd=project).stdout)
    production = next(t for t in listed if t["name"] == "production")
    assert production["version"] == "2.0.0"
    assert [m["version"] for m in production["history"]] == ["1.0.0"]
    versions = json.loads(loupe("versions", "defects", "--json", cwd=project).stdout)
    assert {v["version"]: v["tags"] for v in versions} == {"1.0.0": [], "2.0.0": ["production"]}


def test_a_tag_works_wherever_a_version_does(project: Path, tmp_path: Path) -> None:
    store = LocalStore(project / ".loupe")
    set_tag(store, "defects", "1.0.0", "first-release")
    assert open_dataset("defects", store).version("first-release").record.version == "1.0.0"
    exported = loupe("export", "defects@first-release", "--out", str(tmp_path / "out"), cwd=project)
    assert exported.returncode == 0 and "defects@1.0.0" in exported.stdout, exported.stderr
    missing = loupe("show", "defects@first-relase", cwd=project)
    assert missing.returncode == 1 and "did you mean first-release?" in missing.stderr
    with pytest.raises(VersionNotFound):
        resolve_version(store, "defects", "nothing-like-it")


@pytest.mark.parametrize("name", ["1.2.3", "Prod", "-x", "a/b", "x" * 64, ""])
def test_bad_tag_names_are_refused(project: Path, name: str) -> None:
    with pytest.raises(TagError):
        set_tag(LocalStore(project / ".loupe"), "defects", "1.0.0", name)


def test_tagging_a_missing_version_or_removing_a_missing_tag_fails(project: Path) -> None:
    store = LocalStore(project / ".loupe")
    with pytest.raises(VersionNotFound):
        set_tag(store, "defects", "9.9.9", "later")
    set_tag(store, "defects", "2.0.0", "candidate")
    with pytest.raises(TagExists):
        set_tag(store, "defects", "1.0.0", "candidate")
    gone = loupe("tag", "defects", "candidate", "--delete", cwd=project)
    assert gone.returncode == 0 and "it named 2.0.0" in gone.stdout
    again = loupe("tag", "defects", "candidate", "--delete", cwd=project)
    assert again.returncode == 1 and "no tag candidate" in again.stderr
    assert loupe("show", "defects@2.0.0", cwd=project).returncode == 0  # the version stays
