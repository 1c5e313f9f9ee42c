"""The loupe command as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loupe_workers.ingest.demo import DemoFile
from support.cli import loupe

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "01-quickstart" / "loupe.yaml"


@pytest.fixture
def project(corpus: tuple[Path, list[DemoFile]], tmp_path: Path) -> Path:
    shutil.copy(QUICKSTART, tmp_path / "loupe.yaml")
    return tmp_path


def test_quickstart_run_show_versions_diff_lineage(project: Path) -> None:
    first = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=project)
    assert first.returncode == 0, first.stderr
    [result] = json.loads(first.stdout)
    assert result["created"] and result["version"] == "1.0.0"
    second = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=project)
    assert json.loads(second.stdout)[0]["created"] is False
    assert (project / ".loupe").is_dir()  # the embedded default store

    (project / "images" / "animals" / "chelsea.jpg").rename(
        project / "images" / "animals" / "chelsea-moved.jpg"
    )
    third = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=project)
    assert third.returncode == 0, third.stderr

    versions = json.loads(loupe("versions", "defects", "--json", cwd=project).stdout)
    assert [v["version"] for v in versions] == ["1.0.0", "1.0.1"]  # same bytes, new key: only the URI changed
    assert all(Path(v["manifestUri"]).is_file() for v in versions)
    shown = json.loads(loupe("show", "defects@1.0.0", "--json", cwd=project).stdout)
    assert shown["samples"] == versions[0]["samples"]
    assert shown["stats"]["quarantined"]["corrupt"] == 3
    assert shown["stats"]["exactDuplicates"] >= 2
    diff = json.loads(loupe("diff", "defects@1.0.0", "defects@1.0.1", "--json", cwd=project).stdout)
    assert diff["added"] == diff["removed"] == []
    lineage = json.loads(loupe("lineage", "defects@1.0.1", "--json", cwd=project).stdout)
    assert [a["version"] for a in lineage["ancestry"]] == ["1.0.1", "1.0.0"]
    assert any(e["key"] == "animals/chelsea-moved.jpg" for e in lineage["edges"])
    human = loupe("show", "defects", cwd=project)
    assert "quarantined" in human.stdout and "1.0.1" in human.stdout


def test_invalid_spec_names_file_and_field_and_writes_nothing(project: Path) -> None:
    bad = (project / "loupe.yaml").read_text().replace("train: 0.8", "train: 0.9")
    (project / "bad.yaml").write_text(bad)
    result = loupe("run", "-f", "bad.yaml", cwd=project)
    assert result.returncode == 2
    assert "bad.yaml" in result.stderr and "spec.splits" in result.stderr
    assert not (project / ".loupe").exists()
    wrong_type = (project / "loupe.yaml").read_text().replace("fps: 2", "fps: fast")
    (project / "bad.yaml").write_text(wrong_type)
    result = loupe("run", "-f", "bad.yaml", cwd=project)
    assert result.returncode == 2 and "spec.video.fps" in result.stderr


def test_crds_command_prints_the_generated_crds(tmp_path: Path) -> None:
    import yaml

    result = loupe("crds", cwd=tmp_path)
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout)]
    assert names == ["ingestsources.loupe.dev", "datasets.loupe.dev", "retrainpolicies.loupe.dev"]
