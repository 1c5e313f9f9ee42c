"""The examples, run the way their READMEs say (embedded mode), so none of them rots."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image
from skimage import data as skdata

from loupe_workers.ingest.demo import DemoFile

REPO = Path(__file__).resolve().parents[2]
RETRAINING = REPO / "examples" / "05-retraining"


def loupe(*args: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra_env,
    }
    return subprocess.run([sys.executable, "-m", "loupe_workers.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_retraining_loop_ingest_version_trigger_train_promote_trace(
    corpus: tuple[Path, list[DemoFile]], tmp_path: Path
) -> None:
    images, _ = corpus
    for name in ("loupe.yaml", "train.py"):
        shutil.copy(RETRAINING / name, tmp_path / name)
    run = ["run", "-f", "loupe.yaml", "--executor", "inline", "--json"]

    lineage_log = tmp_path / "openlineage.jsonl"
    first = loupe(*run, cwd=tmp_path, OPENLINEAGE__TRANSPORT__TYPE="file", OPENLINEAGE__TRANSPORT__APPEND="true",
                  OPENLINEAGE__TRANSPORT__LOG_FILE_PATH=str(lineage_log))  # fmt: skip
    assert first.returncode == 0, first.stderr
    events = [json.loads(line) for line in lineage_log.read_text().splitlines()]
    assert [(e["job"]["name"], e["eventType"]) for e in events] == [
        ("loupe.dataset/parts", "COMPLETE"),  # the version, from its source folder
        ("loupe.retrain/local/parts-classifier", "START"),  # then the training run on it
        ("loupe.retrain/local/parts-classifier", "COMPLETE"),
    ]
    assert (
        events[0]["inputs"][0]["name"] == "line-a-cameras"
        and events[0]["outputs"][0]["name"] == "parts@1.0.0"
    )
    assert events[2]["inputs"][0]["name"] == "parts@1.0.0" and events[2]["outputs"]
    report = json.loads(first.stdout)
    assert report["datasets"][0]["version"] == "1.0.0"
    (policy,) = report["policies"]
    trained = policy["run"]
    assert (
        trained["state"] == "Succeeded"
        and trained["datasetVersion"] == "1.0.0"
        and trained["promoted"] is True
    )
    assert 0 <= trained["metrics"]["accuracy"] <= 1 and Path(trained["modelUri"]).is_file()

    # nothing new: no version, no run
    again = json.loads(loupe(*run, cwd=tmp_path).stdout)
    assert again["datasets"][0]["created"] is False and again["policies"][0]["run"] is None

    # two new samples: a MINOR version, below the trigger
    for i, photo in enumerate((skdata.chelsea(), skdata.coffee())):
        top = photo[: photo.shape[0] * 2 // 3]  # a new photo (a flipped copy would be a duplicate)
        Image.fromarray(top).save(images / "animals" / f"new-{i}.jpg", quality=90)
    below = json.loads(loupe(*run, cwd=tmp_path).stdout)
    assert below["datasets"][0]["version"] == "1.1.0" and below["policies"][0]["run"] is None
    assert "2 new samples since 1.0.0" in below["policies"][0]["message"]

    # a third: the trigger is met, a second model is trained on 1.2.0
    Image.fromarray(skdata.rocket()[:285]).save(images / "animals" / "new-2.jpg", quality=90)
    met = json.loads(loupe(*run, cwd=tmp_path).stdout)
    second = met["policies"][0]["run"]
    assert met["datasets"][0]["version"] == "1.2.0" and second["datasetVersion"] == "1.2.0"
    assert second["state"] == "Succeeded" and second["promoted"] == (
        second["metrics"]["accuracy"] > trained["metrics"]["accuracy"]
    )

    # trace the model back to the raw bytes, and a raw object forward to the models
    traced = loupe("lineage", "--model", second["modelUri"], "--json", cwd=tmp_path)
    assert traced.returncode == 0, traced.stderr
    trace = json.loads(traced.stdout)
    assert trace["datasetVersion"] == "1.2.0" and trace["policy"] == "parts-classifier"
    new_file = images / "animals" / "new-2.jpg"
    new_sha = hashlib.sha256(new_file.read_bytes()).hexdigest()
    assert new_sha in {o["rawSha256"] for o in trace["rawObjects"]}
    forward = json.loads(loupe("lineage", "--raw", new_sha, "--json", cwd=tmp_path).stdout)
    assert forward["versions"] == ["parts@1.2.0"] and forward["models"] == [second["modelUri"]]
    old_sha = next(o["rawSha256"] for o in trace["rawObjects"] if "new-" not in o["uri"])
    older = json.loads(loupe("lineage", "--raw", old_sha, "--json", cwd=tmp_path).stdout)
    assert set(older["models"]) == {trained["modelUri"], second["modelUri"]}
