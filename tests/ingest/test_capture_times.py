"""Capture times are input too: EXIF and metadata times with and without offsets, and impossible ones.

A folder whose JPEGs mix naive and offset-aware capture times used to stop the whole run after
processing (``can't compare offset-naive and offset-aware datetimes`` in the health stage).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from loupe_api.dataset import HealthSpec
from loupe_workers.insights import analysis

REPO = Path(__file__).resolve().parents[2]
LOUPE = REPO / ".venv" / "bin" / "loupe"

DATE_TIME_ORIGINAL = 36867
OFFSET_TIME_ORIGINAL = 36881
EXIF_IFD = 0x8769
IMPOSSIBLE = ["2023:13:45 25:61:00", "0000:00:00 00:00:00", "99999:01:01 00:00:00", "\x00\xff\xfe\x01garbage"]


def _row(sample: str, *, exif: str | None = None, metadata: str | None = None) -> dict[str, Any]:
    return {"sample_id": sample, "label": "ok", "flags": [],
            "exif": json.dumps({"capture_time": exif} if exif is not None else {}),
            "metadata": json.dumps({"capture_time": metadata} if metadata is not None else {})}  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["2023:13:45 25:61:00", "2023-13-45T25:61:00", "0000:00:00 00:00:00", "0000-00-00T00:00:00",
     "99999-01-01T00:00:00", "\x00\xff\xfe garbage", "b'\\xff\\xd8'", "", "0001-01-01T00:00:00+02:00"],
)  # fmt: skip
def test_impossible_capture_times_are_no_capture_time(text: str) -> None:
    assert analysis.parse_capture_time(text) is None
    assert analysis.capture_time(_row("a", exif=text)) is None


def test_exif_and_iso_capture_times_parse_as_recorded() -> None:
    assert analysis.parse_capture_time("2024:03:05 07:08:09").isoformat() == "2024-03-05T07:08:09"  # type: ignore[union-attr]
    aware = analysis.parse_capture_time("2024-03-05T07:08:09+02:00")
    assert aware is not None and aware.isoformat() == "2024-03-05T07:08:09+02:00"
    # an impossible EXIF time falls back to the metadata's
    row = _row("a", exif="2023:13:45 25:61:00", metadata="2024-01-02T03:04:05-05:00")
    assert str(analysis.capture_time(row)) == "2024-01-02 03:04:05-05:00"


def test_health_mixes_naive_and_aware_times_and_ignores_impossible_ones() -> None:
    rows = [
        _row("naive", exif="2024-03-05T07:08:09"),  # taken as 07:08:09 UTC
        _row("plus2", exif="2024-03-05T08:00:00+02:00"),  # 06:00 UTC
        _row("meta", metadata="2024-03-05T06:00:00-10:00"),  # 16:00 UTC: the newest instant
        _row("old", metadata="2024-01-01T23:30:00-01:00"),  # 2024-01-02 00:30 UTC
        _row("older", exif="2024-01-02T00:10:00"),  # 00:10 UTC: the oldest
        *(_row(f"bad{i}", exif=text) for i, text in enumerate(IMPOSSIBLE)),
        _row("none"),
    ]
    spec = HealthSpec(slices=[["timeOfDay"], ["hourOfDay"]])
    summary, full = analysis.health(rows, [], [], spec)
    assert full["freshness"] == {"newest": "2024-03-05T06:00:00-10:00", "oldest": "2024-01-02T00:10:00",
                                 "withCaptureTime": 5}  # fmt: skip
    assert summary.newest_sample == "2024-03-05T06:00:00-10:00"
    assert full["samples"] == len(rows)
    # slices read the wall-clock hour as recorded (a photo at 08:00 local is a morning photo)
    hours = full["slices"][1]["counts"]
    assert hours == {"00": 1, "06": 1, "07": 1, "08": 1, "23": 1}
    assert full["slices"][0]["counts"] == {"morning": 3, "night": 2}


def _jpeg(path: Path, seed: int, *, when: str | None = None, offset: str | None = None, raw: bytes | None = None) -> None:  # fmt: skip
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    image = Image.fromarray(np.kron(pixels, np.ones((2, 2, 1), dtype=np.uint8)))  # 96x96, distinct per seed
    exif = Image.Exif()
    sub = exif.get_ifd(EXIF_IFD)
    if when is not None:
        sub[DATE_TIME_ORIGINAL] = when
    if raw is not None:
        sub[DATE_TIME_ORIGINAL] = raw
    if offset is not None:
        sub[OFFSET_TIME_ORIGINAL] = offset
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=90, exif=exif.tobytes())


SPEC = """\
apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {name: cameras}
spec:
  filesystem: {path: ./cameras}
---
apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {name: by-time}
spec:
  filesystem: {path: ./by-time}
  metadata: {pathPattern: "{capture_time}/*"}
---
apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {name: fixed}
spec:
  filesystem: {path: ./fixed}
  metadata: {static: {capture_time: "2024-02-01T12:00:00+05:30"}}
---
apiVersion: loupe.dev/v1alpha1
kind: Dataset
metadata: {name: mixed}
spec:
  sources: [{name: cameras}, {name: by-time}, {name: fixed}]
  dedup: {perceptual: {maxDistance: 0}}
  health: {slices: [[timeOfDay]]}
"""


def test_a_run_over_mixed_and_impossible_capture_times_completes(tmp_path: Path) -> None:
    cameras = tmp_path / "cameras"
    _jpeg(cameras / "naive.jpg", 1, when="2024:03:05 07:08:09")
    _jpeg(cameras / "offset.jpg", 2, when="2024:01:02 00:10:00", offset="+02:00")
    _jpeg(cameras / "month13.jpg", 3, when="2023:13:45 25:61:00", offset="+01:00")
    _jpeg(cameras / "zeros.jpg", 4, when="0000:00:00 00:00:00")
    _jpeg(cameras / "year99999.jpg", 5, when="99999:01:01 00:00:00")
    _jpeg(cameras / "garbage.jpg", 6, raw=b"\xff\xfe\x00\x81garbage\x00")
    _jpeg(tmp_path / "by-time" / "2024-03-05T06:00:00-10:00" / "a.jpg", 7)  # 16:00 UTC: the newest
    _jpeg(tmp_path / "by-time" / "2024-03-05T25:00:00+01:00" / "b.jpg", 8)  # impossible: ignored
    _jpeg(tmp_path / "fixed" / "c.jpg", 9)
    (tmp_path / "spec.yaml").write_text(SPEC)
    store = tmp_path / "store"
    done = subprocess.run(
        [str(LOUPE), "run", "-f", "spec.yaml", "--store", str(store), "--executor", "inline", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    [result] = json.loads(done.stdout)
    assert result["created"] and result["version"] == "1.0.0"
    assert result["stats"]["samples"] == 9  # every image is a sample: a bad date loses nothing
    record = json.loads((store / "datasets" / "mixed" / "versions" / "1.0.0.json").read_text())
    assert record["health"]["newestSample"] == "2024-03-05T06:00:00-10:00"
    figures = json.loads((store / record["health"]["reportUri"]).read_text())
    freshness = figures["health"]["freshness"]
    # naive, offset (EXIF), the path's time and the static one; four impossible ones count as none
    assert freshness["withCaptureTime"] == 4
    assert freshness["oldest"].startswith("2024-01-02T00:10:00")
    shown = subprocess.run([str(LOUPE), "show", "mixed", "--store", str(store)], capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert shown.returncode == 0 and "mixed@1.0.0" in shown.stdout, shown.stderr
