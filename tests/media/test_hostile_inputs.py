"""Hostile inputs: the real `loupe run` on corrupt, fuzzed and malicious files never stops, loses nothing
and stays within a memory bound.

Corpora: Pillow 13.0.0's own Tests/images folder (about 1,060 files in every format Pillow reads,
including its crash, fuzz, oom, timeout, truncated and decompression-bomb regressions; fetched and
cached by `bash .ci/tools.sh pillow-images`, path in LOUPE_PILLOW_IMAGES), a seeded mutation fuzzer over
every supported image format (tests/support/hostile.py), and hostile videos.

Every run is a real CLI process (`loupe run -f loupe.yaml --store DIR --executor inline`) and each test
asserts: exit code 0; every listed media object is accounted for (each file appears in the version's
manifest or in its rejected/quarantined Parquet, with a reason when it is left out; an image exactly
once); peak RSS of the process under a stated bound; nothing outside the source root read (each row's
bytes are the bytes of its own file, every stored blob is the sha256 of a file under the root or of a
frame of a video there); and it prints a summary line (files, accepted, quarantined and rejected by
reason, peak RSS, seconds) for the issue notes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from loupe_api.listing import media_kind

REPO = Path(__file__).resolve().parents[2]
DATASET = "hostile"
# The whole run must finish well inside the marker's timeout; a file that hangs the decoder fails here.
RUN_TIMEOUT_S = 540
# Peak RSS bound of one corpus run. The CLI with its imports (pyarrow, Pillow, numpy, PyAV) takes about
# 200-250 MB; every decode is refused from its header above qualityGates.maxPixels.memoryLimit (1 GiB
# by default) and converted strip by strip, so one guarded decode plus the working copies (a 128-255 px
# image) and the Parquet tables of ~1,000 rows fit in 1.5 GB. A decompression bomb that slipped through
# (16000x16000 RGB is 768 MB, RGBA16 2 GB per copy) or a decode made more than once at once breaks it.
PEAK_RSS_BOUND = 1536 << 20
# A refused video bomb must not be decoded at all: the CLI's own footprint plus a small margin.
VIDEO_BOMB_RSS_BOUND = 500 << 20

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(600)]

SPEC = """\
apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {{name: {dataset}}}
spec:
  filesystem: {{path: {root}}}
  video: {{fps: 1, maxFramesPerVideo: 10}}
---
apiVersion: loupe.dev/v1alpha1
kind: Dataset
metadata: {{name: {dataset}}}
spec:
  sources: [{{name: {dataset}}}]
"""


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss: int  # bytes, of the CLI process itself (os.wait4's rusage of that one child)


# The CLI runs under this small runner, which reports its child's peak RSS: a child forked from pytest
# itself would inherit pytest's high-water mark across exec (Linux keeps it), so wait4 on it would
# report the test process's size, not the run's.
_RSS_RUNNER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_loupe(project: Path, *args: str, timeout: float = RUN_TIMEOUT_S) -> Run:
    """One CLI process and its own peak RSS, measured by a small runner (see ``_RSS_RUNNER``)."""
    out, err, peak = project / "stdout.txt", project / "stderr.txt", project / "peak-rss.txt"
    start = time.monotonic()
    command = [
        sys.executable,
        "-c",
        _RSS_RUNNER,
        str(peak),
        sys.executable,
        "-m",
        "loupe_workers.cli.main",
        *args,
    ]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(command, cwd=project, stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    seconds = time.monotonic() - start
    assert seconds < timeout, f"loupe {' '.join(args)} ran past {timeout} s"
    return Run(process.returncode, out.read_text(errors="replace"), err.read_text(errors="replace"), seconds,
               int(peak.read_text()) * 1024)  # fmt: skip


def listed_keys(root: Path) -> dict[str, str]:
    """Key -> media kind of every file the source lists (sidecar extensions are not media)."""
    keys = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            key = (Path(folder) / name).relative_to(root).as_posix()
            kind = media_kind(key)
            if kind is not None:
                keys[key] = kind
    return keys


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Outcome:
    run: Run
    shown: dict[str, Any]
    rows: list[dict[str, Any]]  # manifest rows and rejected/quarantined/duplicate rows together
    files: int


def run_corpus(root: Path, project: Path) -> Outcome:
    """Version ``root`` with the real CLI and check everything this module promises about the run."""
    project.mkdir(parents=True, exist_ok=True)
    (project / "loupe.yaml").write_text(SPEC.format(dataset=DATASET, root=json.dumps(str(root))))
    store = project / "store"
    run = run_loupe(
        project, "run", "-f", "loupe.yaml", "--store", str(store), "--executor", "inline", "--json"
    )
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stderr[-6000:]}"
    [result] = json.loads(run.stdout)
    assert result["version"] == "1.0.0", result
    show = run_loupe(project, "show", DATASET, "--store", str(store), "--json", timeout=120)
    assert show.returncode == 0, show.stderr[-3000:]
    shown = json.loads(show.stdout)
    # read by hand: the Parquet files `loupe show` names (manifest parts)
    accepted = [r for f in shown["manifestFiles"] for r in pq.read_table(f, use_threads=False).to_pylist()]
    others = [r for f in shown["rejectedFiles"] for r in pq.read_table(f, use_threads=False).to_pylist()]
    assert {r["disposition"] for r in accepted} <= {"accepted"}
    assert {r["disposition"] for r in others} <= {"rejected", "quarantined", "duplicate"}
    rows = accepted + others

    # every listed media object is accounted for, once for an image, with a reason when left out
    keys = listed_keys(root)
    per_key = Counter(r["key"] for r in rows)
    missing = sorted(set(keys) - set(per_key))
    assert not missing, f"{len(missing)} listed files have no row: {missing[:20]}"
    assert set(per_key) <= set(keys), sorted(set(per_key) - set(keys))[:20]
    twice = sorted(k for k, n in per_key.items() if n > 1 and keys[k] == "image")
    assert not twice, f"images with more than one row: {twice[:20]}"
    unexplained = [r["key"] for r in others if not r["reason"]]
    assert not unexplained, f"left out without a reason: {unexplained[:20]}"
    assert shown["samples"] == len(accepted)
    stats = shown["stats"]
    assert sum(stats["rejected"].values()) == sum(1 for r in others if r["disposition"] == "rejected")
    assert sum(stats["quarantined"].values()) == sum(1 for r in others if r["disposition"] == "quarantined")

    # nothing outside the source root was read: each row's bytes are its own file's, every blob is
    # a file under the root or a frame of a video under it
    digests = {key: sha256_file(root / key) for key in keys}
    frames = set()
    for row in rows:
        if row["media"] == "frame":
            assert row["video_sha256"] == digests[row["key"]], row["key"]
            frames.add(row["sha256"])
        elif row["reason"] not in ("unreadable", "max_file_size"):  # never read: nothing to compare
            assert row["sha256"] == digests[row["key"]], f"{row['key']}: bytes not from its own file"
    blobs = {p.name for p in (store / "blobs" / "sha256").glob("*/*")}
    foreign = blobs - set(digests.values()) - frames
    assert not foreign, (
        f"{len(foreign)} stored blobs are not files under the source root: {sorted(foreign)[:5]}"
    )

    assert run.peak_rss < PEAK_RSS_BOUND, f"peak RSS {run.peak_rss >> 20} MB"
    return Outcome(run, shown, rows, len(keys))


def summary(name: str, outcome: Outcome) -> str:
    stats = outcome.shown["stats"]

    def by_reason(counts: dict[str, int]) -> str:
        return "{" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "}"

    duplicates = sum(1 for r in outcome.rows if r["disposition"] == "duplicate")
    return (
        f"hostile[{name}]: files {outcome.files}, accepted {stats['accepted']}, "
        f"duplicates {duplicates}, quarantined {sum(stats['quarantined'].values())} "
        f"{by_reason(stats['quarantined'])}, rejected {sum(stats['rejected'].values())} "
        f"{by_reason(stats['rejected'])}, peak RSS {outcome.run.peak_rss >> 20} MB, "
        f"{outcome.run.seconds:.1f} s"
    )


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        sys.stdout.write(f"\n{line}\n")


def rows_of(outcome: Outcome, key: str) -> list[dict[str, Any]]:
    return [r for r in outcome.rows if r["key"] == key]


# --- Pillow's Tests/images -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pillow_images() -> Path:
    """Pillow 13.0.0's Tests/images: LOUPE_PILLOW_IMAGES (tests/run.sh sets it) or fetched now."""
    given = os.environ.get("LOUPE_PILLOW_IMAGES")
    if given:
        return Path(given)
    fetched = subprocess.run(
        ["bash", str(REPO / ".ci" / "tools.sh"), "pillow-images"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert fetched.returncode == 0, f"could not fetch Pillow's Tests/images:\n{fetched.stderr[-3000:]}"
    return Path(fetched.stdout.strip().splitlines()[-1])


def test_pillow_test_images(pillow_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole folder: a format Loupe does not read is rejected (format), a broken one quarantined."""
    assert len(listed_keys(pillow_images)) > 1000, pillow_images
    outcome = run_corpus(pillow_images, tmp_path / "project")
    report(capsys, summary("pillow-13.0.0-Tests-images", outcome))
    stats = outcome.shown["stats"]
    # most of its PNG, JPEG, TIFF, BMP, GIF and WebP files decode (many are copies of one test image)
    assert stats["accepted"] + sum(1 for r in outcome.rows if r["disposition"] == "duplicate") > 500
    assert stats["rejected"].get("format", 0) > 100  # FLI, DDS, TGA, PSD, EPS, ... are not supported
    by_key = {r["key"]: r for r in outcome.rows}
    # its decompression bombs are refused from the header, not decoded
    # (decompression_bomb_extents.gif is a bomb only from its second frame on; Loupe reads the first)
    for key in ("decompression_bomb.gif", "bmp/b/reallybig.bmp"):
        row = by_key[key]
        assert (row["disposition"], row["reason"]) == ("quarantined", "max_pixels"), row


# --- the fuzzer ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    from support.hostile import image_corpus, write_corpus

    root = tmp_path_factory.mktemp("fuzzed") / "images"
    return root, write_corpus(image_corpus(seed=0), root)


def test_fuzzed_images(
    fuzzed: tuple[Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, labels = fuzzed
    assert len(labels) > 300
    outcome = run_corpus(root, tmp_path / "project")
    report(capsys, summary("fuzzed-images-seed0", outcome))
    by_key = {r["key"]: r for r in outcome.rows}

    def outcome_of(label: str) -> tuple[str, str | None]:
        [key] = [k for k, v in labels.items() if v == label]
        return by_key[key]["disposition"], by_key[key]["reason"]

    # the seeds themselves are fine images in every format
    originals = [k for k, v in labels.items() if v.endswith("/original")]
    assert len(originals) >= 20
    assert all(by_key[k]["disposition"] in ("accepted", "duplicate") for k in originals), [
        (labels[k], by_key[k]["reason"], by_key[k]["detail"])
        for k in originals
        if by_key[k]["disposition"] not in ("accepted", "duplicate")
    ]
    # bombs declared in the header are refused before decoding
    for label in ("png/blank-20000x20000", "png/ihdr-size=65535x65535", "jpeg/sof-size=65535x65535",
                  "bmp/size=100000x100000", "tiff/size=65535x65535"):  # fmt: skip
        assert outcome_of(label) == ("quarantined", "max_pixels"), label
    # a canvas of 2^48 pixels with no image data: libwebp refuses the header itself
    assert outcome_of("webp/vp8x-only-canvas=2^24x2^24")[0] == "quarantined"
    # a file cut short is corrupt, whatever its format
    for fmt in ("jpeg", "png", "webp-lossy", "bmp", "tiff", "gif", "apng"):
        assert outcome_of(f"{fmt}/truncate@50%") == ("quarantined", "corrupt"), fmt
    # hostile EXIF loses the metadata, never the image; a metadata segment whose length runs past the
    # end of the file swallows the image data itself, so that file is corrupt
    swallowing = ("exif/jpeg-app1-length-past-end", "exif/webp-exif-length-past-end")
    assert [outcome_of(label) for label in swallowing] == [("quarantined", "corrupt")] * 2
    exif = [k for k, v in labels.items() if v.startswith("exif/") and v not in swallowing]
    lost = [(labels[k], by_key[k]["reason"], by_key[k]["detail"]) for k in exif if by_key[k]["disposition"] not in ("accepted", "duplicate")]  # fmt: skip
    assert not lost, lost


# --- videos ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_videos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    from support.hostile import video_corpus, write_corpus

    root = tmp_path_factory.mktemp("videos") / "videos"
    return root, write_corpus(video_corpus(seed=0), root)


def _key(labels: dict[str, str], label: str) -> str:
    [key] = [k for k, v in labels.items() if v == label]
    return key


def test_hostile_videos(
    hostile_videos: tuple[Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, labels = hostile_videos
    outcome = run_corpus(root, tmp_path / "project")
    report(capsys, summary("hostile-videos-seed0", outcome))
    for fmt in ("mp4-h264", "mp4-mpeg4", "mkv-ffv1"):  # the unmutated videos give their frames
        frames = rows_of(outcome, _key(labels, f"{fmt}/original"))
        assert len(frames) == 3 and all(r["media"] == "frame" for r in frames), fmt
    for label in ("crafted/png-frames-16000x16000", "crafted/declares-16000x16000"):
        [row] = rows_of(outcome, _key(labels, label))
        assert (row["disposition"], row["reason"]) == ("quarantined", "max_pixels"), row
        assert "declares" in row["detail"], row["detail"]  # refused from the header, never decoded
    grown = rows_of(outcome, _key(labels, "crafted/frame-grows-to-12000x12000"))
    # frame 0 (t=0) is taken, frame 2 refused
    assert sorted(r["media"] for r in grown) == ["frame", "video"], grown
    [stopped] = [r for r in grown if r["media"] == "video"]
    assert (stopped["reason"], stopped["width"], stopped["height"]) == ("max_pixels", 12000, 12000), stopped
    jumped = rows_of(outcome, _key(labels, "crafted/timestamps-jump-10^14s"))
    assert sorted(r["frame_index"] for r in jumped) == [0, 1, 2, 3], jumped  # each timestamp is a new second


def test_video_bomb_is_refused_before_decoding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Row 6: a small MOV of 16000x16000 frames used 4.3 GB before max_pixels refused it."""
    from support.hostile import bomb_mov, declared_bomb_mkv, encode
    from support.photos import photo

    root = tmp_path / "media"
    root.mkdir()
    (root / "bomb.mov").write_bytes(bomb_mov())  # 16000x16000 RGB PNG frames, 750 KB
    (root / "declares.mkv").write_bytes(declared_bomb_mkv())  # 256x256 frames, header says 16000x16000
    (root / "chelsea.jpg").write_bytes(encode(photo("chelsea", 160), "JPEG"))  # so a version is made
    outcome = run_corpus(root, tmp_path / "project")
    report(capsys, summary("video-bombs", outcome))
    for key in ("bomb.mov", "declares.mkv"):
        [row] = rows_of(outcome, key)
        assert (row["disposition"], row["reason"], row["width"], row["height"]) == (
            "quarantined", "max_pixels", 16000, 16000
        ), row  # fmt: skip
    assert outcome.run.peak_rss < VIDEO_BOMB_RSS_BOUND, f"peak RSS {outcome.run.peak_rss >> 20} MB"


def test_video_frame_budget(tmp_path: Path) -> None:
    """Sampling stops after a bounded number of decoded frames, whatever the stream's timestamps do."""
    from loupe_api.ingest import IngestSourceSpec
    from loupe_storage.store import open_store
    from loupe_workers.compute.process import ProcessSettings, process_video
    from loupe_workers.ingest.sources import ListedObject
    from support.hostile import encode_video

    data = encode_video("matroska", "ffv1", size=(32, 32), frames=60, rate=10)
    spec = IngestSourceSpec.model_validate(
        {"filesystem": {"path": "."}, "video": {"everyNthFrame": 7, "maxFramesPerVideo": 4}}
    )
    blobs = open_store(str(tmp_path / "store"))
    obj = ListedObject("s", "v.mkv", len(data), "e", "video", "v.mkv")
    records = process_video(obj, data, blobs, ProcessSettings(hash_kind="phash", max_pixels=10**8), spec)
    assert [r["frame_index"] for r in records] == [0, 7, 14, 21]
    small = ProcessSettings(hash_kind="phash", max_pixels=32 * 32 - 1)
    [refused] = process_video(obj, data, blobs, small, spec)
    assert (refused["status"], refused["fail_reason"]) == ("failed", "max_pixels")
