"""What the CLI prints is the user's data as it is: names are never read as rich markup, and a run says
"created" only when it wrote the version.

Before, a path containing ``[/x]`` crashed the error printer (rich's MarkupError), ``[bold]`` vanished
from file names and labels, and two identical runs started at once both printed "created 1.0.0".
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from loupe_api.versions import VersionRecord
from loupe_storage.store import LocalStore
from loupe_storage.versions import commit_version, list_versions

REPO = Path(__file__).resolve().parents[2]
LOUPE = REPO / ".venv" / "bin" / "loupe"
WIDE = {**os.environ, "COLUMNS": "400"}  # tables keep whole paths on one line

SPEC = """\
apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {{name: cams}}
spec:
  filesystem: {{path: "{path}"}}
  labels: {{format: folder}}
---
apiVersion: loupe.dev/v1alpha1
kind: Dataset
metadata: {{name: parts}}
spec:
  sources: [{{name: cams}}]
  splits: {{train: 1.0, val: 0.0, test: 0.0}}
"""


def _image(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.kron(pixels, np.ones((2, 2, 1), dtype=np.uint8))).save(path, format="PNG")


def loupe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LOUPE), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=WIDE)


def test_names_with_markup_are_printed_as_they_are(tmp_path: Path) -> None:
    source = tmp_path / "cams[" / "x]"  # the source folder ./cams[/x]
    _image(source / "[bold]" / "[bold]x.png", 1)  # label [bold]
    _image(source / "plain" / "a[i].png", 2)
    (tmp_path / "spec.yaml").write_text(SPEC.format(path="./cams[/x]"))
    store = str(tmp_path / "store")
    first = loupe("run", "-f", "spec.yaml", "--store", store, "--executor", "inline", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "parts: created 1.0.0" in first.stdout and "Traceback" not in first.stderr

    shown = loupe("show", "parts", "--store", store, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "[bold] 1, plain 1" in shown.stdout  # the labels, as named

    lineage = loupe("lineage", "parts@1.0.0", "--store", store, cwd=tmp_path)
    assert lineage.returncode == 0, lineage.stderr
    assert str(source / "[bold]" / "[bold]x.png") in lineage.stdout
    assert str(source / "plain" / "a[i].png") in lineage.stdout

    _image(source / "plain" / "[red]new.png", 3)
    second = loupe("run", "-f", "spec.yaml", "--store", store, "--executor", "inline", cwd=tmp_path)
    assert second.returncode == 0 and "created 1.1.0" in second.stdout, second.stderr
    diff = loupe("diff", "parts@1.0.0", "parts@1.1.0", "--store", store, cwd=tmp_path)
    assert diff.returncode == 0, diff.stderr
    assert "+ add cams:plain/[red]new.png" in diff.stdout

    search = loupe("search", "parts", "--where", 'label == "[bold]"', "--store", store, cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    assert "[bold]/[bold]x.png" in search.stdout

    export = tmp_path / "out[" / "x]"
    exported = loupe("export", "parts", "--out", str(export), "--store", store, cwd=tmp_path)
    assert exported.returncode == 0 and f"to {export}" in exported.stdout, exported.stderr


def test_an_error_naming_a_path_with_markup_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC.format(path="./gone[/x]"))
    done = loupe("run", "-f", "spec.yaml", "--store", str(tmp_path / "store"), "--executor", "inline",
                 cwd=tmp_path)  # fmt: skip
    assert done.returncode in (1, 2), done.stderr  # refused with the spec (2) or when listing (1)
    assert "Traceback" not in done.stderr and "MarkupError" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) <= 2 and "gone[/x]" in lines[-1], done.stderr

    wrote = loupe(
        "report", "parts", "--out", str(tmp_path / "[/x]" / "r.html"), "--store", "[/x]", cwd=tmp_path
    )
    assert wrote.returncode == 1 and "[/x]" in wrote.stderr and "Traceback" not in wrote.stderr


def _record(run_id: str) -> VersionRecord:
    return VersionRecord.model_validate(
        {
            "dataset": "parts",
            "version": "1.0.0",
            "created": "2024-01-01T00:00:00Z",
            "runId": run_id,
            "specDigest": "s",
            "sourceDigest": "d",
            "codeVersion": "c",
            "manifestUri": "m",
            "rejectedUri": "r",
            "lineageUri": "l",
            "samples": 0,
            "contentDigest": "c",
            "stats": {},
        }
    )


def test_commit_version_tells_which_of_two_identical_commits_wrote_the_record(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    barrier = threading.Barrier(2)
    outcomes: list[bool] = []

    def commit() -> None:
        barrier.wait()
        record, wrote = commit_version(store, _record("same-run"))
        assert record.run_id == "same-run"
        outcomes.append(wrote)

    threads = [threading.Thread(target=commit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False, True]
    assert [v.version for v in list_versions(store, "parts")] == ["1.0.0"]


def test_two_identical_runs_at_once_one_creates_the_other_adopts(tmp_path: Path) -> None:
    for i in range(24):
        _image(tmp_path / "cams" / f"label{i % 3}" / f"{i}.png", i)
    (tmp_path / "spec.yaml").write_text(SPEC.format(path="./cams"))
    store = str(tmp_path / "store")
    command = [str(LOUPE), "run", "-f", "spec.yaml", "--store", store, "--executor", "inline", "--json"]
    runs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=WIDE) for _ in range(2)]  # fmt: skip
    results = []
    for proc in runs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        [result] = json.loads(stdout)
        results.append(result)
    created = [r for r in results if r["created"]]
    assert len(created) == 1, results
    [other] = [r for r in results if not r["created"]]
    # raced to the commit and adopted it, or (if it started late) found it already there
    assert other["message"].startswith(("adopted 1.0.0", "no change since 1.0.0")), other["message"]
    assert created[0]["message"].startswith("created 1.0.0")
    assert [v.version for v in list_versions(LocalStore(store), "parts")] == ["1.0.0"]


def test_unknown_names_get_a_suggestion_and_the_version_is_printed(tmp_path: Path) -> None:
    _image(tmp_path / "cams" / "a" / "1.png", 1)
    _image(tmp_path / "cams" / "b" / "2.png", 2)
    (tmp_path / "spec.yaml").write_text(SPEC.format(path="./cams"))
    store = str(tmp_path / "store")
    assert (
        loupe("run", "-f", "spec.yaml", "--store", store, "--executor", "inline", cwd=tmp_path).returncode
        == 0
    )

    def one_line_error(*args: str) -> str:
        done = loupe(*args, "--store", store, cwd=tmp_path)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done
        [line] = [line for line in done.stderr.splitlines() if line.strip()]
        return line

    assert one_line_error("show", "prats").endswith("did you mean parts?")
    assert one_line_error("versions", "prats").endswith("did you mean parts?")
    assert one_line_error("show", "zzz").endswith("datasets there: parts")
    near = one_line_error("show", "parts@1.0.1")
    assert "has no version 1.0.1 in " in near and near.endswith("; did you mean 1.0.0?"), near
    assert one_line_error("show", "parts@7.3.9").endswith("versions there: 1.0.0")
    empty = loupe("show", "parts", "--store", str(tmp_path / "empty"), cwd=tmp_path)
    assert empty.returncode == 1 and empty.stderr.strip().endswith("no datasets there yet"), empty

    version = loupe("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("loupe 0."), version
