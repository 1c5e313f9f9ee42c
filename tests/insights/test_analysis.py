"""Health, drift, the review queue and the HTML report: pure figures, then real photos and a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from skimage import data as skdata

from loupe_api.dataset import DatasetSpec, DriftSpec, HealthSpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_storage.store import LocalStore
from loupe_storage.versions import list_versions
from loupe_workers.ingest.demo import DemoFile
from loupe_workers.insights import analysis
from loupe_workers.insights.report import build_report
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.storage import manifest
from support.cli import loupe

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text", "horse")


def test_psi_ks_and_the_nearest_neighbour_statistic() -> None:
    rng = np.random.default_rng(0)
    same = analysis.psi(list(rng.normal(0, 1, 500)), list(rng.normal(0, 1, 500)))
    shifted = analysis.psi(list(rng.normal(0, 1, 500)), list(rng.normal(1, 1, 500)))
    assert same is not None and shifted is not None and same < 0.1 < 0.25 < shifted
    assert (analysis.ks_statistic(list(rng.normal(0, 1, 300)), list(rng.normal(2, 1, 300))) or 0) > 0.5
    assert analysis.psi_categorical(["a"] * 50 + ["b"] * 50, ["a"] * 48 + ["b"] * 52) < 0.01  # type: ignore[operator]
    mixed = analysis.knn_two_sample(
        rng.normal(0, 1, (200, 16)).astype(np.float32), rng.normal(0, 1, (100, 16)).astype(np.float32)
    )
    apart = analysis.knn_two_sample(
        rng.normal(0, 1, (200, 16)).astype(np.float32) + 4, rng.normal(0, 1, (100, 16)).astype(np.float32) - 4
    )
    assert mixed is not None and apart is not None and mixed < 0.1 and apart > 0.9


def test_health_lists_slice_gaps_in_words_and_balance() -> None:
    rows: list[dict[str, Any]] = []
    for camera in ("1", "2", "3"):
        for hour in (8, 14, 23):
            if camera == "3" and hour == 23:
                continue  # camera 3 never shoots at night
            rows.append({"sample_id": f"{camera}{hour}", "label": "ok" if hour != 8 else "scratch",
                         "metadata": json.dumps({"camera": camera}),
                         "exif": json.dumps({"capture_time": f"2026-11-01T{hour:02d}:00:00"}), "flags": []})  # fmt: skip
    spec = HealthSpec(slices=[["camera", "timeOfDay"]], expected={"camera": ["1", "2", "3", "4"]})
    summary, full = analysis.health(
        rows, [{"disposition": "duplicate", "dup_kind": "near_duplicate"}], [], spec
    )
    assert "no samples for camera 3 timeOfDay night" in summary.gaps
    assert sum("camera 4" in g for g in summary.gaps) == 3  # an expected camera with no samples at all
    assert summary.classes == 2 and summary.imbalance == pytest.approx(5 / 3)  # 5 ok, 3 scratch
    assert abs(summary.duplicate_rate - 1 / 9) < 1e-9 and summary.newest_sample == "2026-11-01T23:00:00"
    assert full["slices"][0]["counts"]["1/morning"] == 1


def test_health_memos_follow_each_rows_own_texts() -> None:
    # capture times and slice fields are memoised by the stored texts: rows sharing one text and
    # differing in the other must each get their own values, and a caller's change to the fields of
    # one row must not reach the next row with the same metadata
    rows = [
        {"metadata": json.dumps({"camera": "1"}), "exif": json.dumps({"capture_time": "2026-11-01T08:00:00"})},
        {"metadata": json.dumps({"camera": "1"}), "exif": json.dumps({"capture_time": "2026-11-01T23:00:00"})},
        {"metadata": json.dumps({"camera": "2"}), "exif": json.dumps({"capture_time": "2026-11-01T23:00:00"})},
        {"metadata": json.dumps({"capture_time": "2026-11-02T14:00:00"}), "exif": None},
        {"metadata": json.dumps({"capture_time": "2026-11-02T14:00:00"}), "exif": json.dumps({})},
    ]  # fmt: skip
    hours = [t.hour if (t := analysis.capture_time(r)) else None for r in rows]
    assert hours == [8, 23, 23, 14, 14]
    first = analysis.slice_fields(rows[0])
    assert first == {"camera": "1", "hourOfDay": "08", "timeOfDay": "morning"}
    first["camera"] = "changed"
    assert analysis.slice_fields(rows[1]) == {"camera": "1", "hourOfDay": "23", "timeOfDay": "night"}
    assert analysis.slice_fields(rows[2])["camera"] == "2"
    assert analysis.coverage(rows, HealthSpec()) == []  # no slices: nothing to cover


def _run(images: Path, store: LocalStore) -> None:
    spec = {
        "sources": [{"name": "cams"}],
        "health": {"slices": [["label", "split"]]},
        "drift": {"minSamples": 10},
        # the incoming photos are reframed crops of the baseline's, which crop detection rightly groups;
        # these tests are about drift and health, so only copies count as duplicates here
        "dedup": {"perceptual": {"crops": False}},
    }
    source = {"filesystem": {"path": str(images)}, "labels": {"format": "folder"}}
    request = RunRequest(
        dataset="cams",
        spec=DatasetSpec.model_validate(spec),
        sources={"cams": IngestSourceSpec.model_validate(source)},
        store_uri=store.uri,
    )
    run_dataset(request, store=store)


def _variants(folder: Path, transform: Any, count: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = Image.fromarray(getattr(skdata, PHOTOS[i % len(PHOTOS)])()).convert("RGB")
        crop = photo.crop((i, i, photo.width - 2 * i, photo.height - i))
        transform(crop.resize((240, 180))).save(folder / f"v{i:02d}.jpg", quality=88)


def test_drift_of_darker_incoming_photos(corpus: tuple[Path, list[DemoFile]], tmp_path: Path) -> None:
    images, _ = corpus
    store = LocalStore(tmp_path / "store")
    _variants(images / "baseline", lambda im: im)
    _run(images, store)

    # reframed (so not near-duplicates of the baseline by hash: a perceptual hash ignores brightness,
    # and finds mirrored copies) and darker
    def reframed_darker(im: Image.Image) -> Image.Image:
        top = im.crop((0, 0, im.width, im.height * 2 // 3)).resize(im.size)
        return ImageEnhance.Brightness(top).enhance(0.35)

    _variants(images / "night-shift", reframed_darker)
    _run(images, store)
    first, second = list_versions(store, "cams")
    before = manifest.read_version_rows(store, first)
    after = manifest.read_version_rows(store, second)
    new = [r for r in after if r["sample_id"] not in {b["sample_id"] for b in before}]
    assert len(new) >= 12  # crops of one photo 10 px apart can still be near-duplicates of each other
    spec = DriftSpec(min_samples=10)
    summary, full = analysis.drift(before, new, first.version, spec)
    assert summary.exceeded and summary.score > 0.25
    assert full["figures"]["quality.brightness_p99"]["psi"] > 0.25
    assert any("brightness" in t for t in summary.top)
    # the same kind of photos as before: far less drift than the darkened ones
    calm, _ = analysis.drift(
        before, [r for r in before if "baseline" in r["key"]], first.version, DriftSpec()
    )
    assert calm.score < summary.score / 2
    # too few new samples are reported, not scored
    few, _ = analysis.drift(before, new[:3], first.version, spec)
    assert few.score == 0.0 and "too few" in few.top[0]
    # the pipeline recorded the same figures with the version, and the full ones in storage
    assert first.drift is None and first.health is not None and first.health.classes >= 8
    assert second.drift is not None and second.drift.exceeded and second.drift.reference == first.version
    assert second.drift.score == pytest.approx(summary.score)
    assert second.health is not None and second.health.report_uri
    figures = json.loads(store.get(second.health.report_uri))
    assert figures["drift"]["newSamples"] == len(new) and figures["health"]["samples"] == second.samples
    # the report shows the figures stored with the version
    page = build_report(store, "cams", second.version)
    assert f'data-drift-score="{second.drift.score:.4f}"' in page and "above the threshold" in page


@pytest.fixture
def versioned(corpus: tuple[Path, list[DemoFile]], tmp_path: Path) -> Path:
    shutil.copy(Path(__file__).resolve().parents[2] / "examples" / "01-quickstart" / "loupe.yaml", tmp_path)
    run = loupe("run", "-f", "loupe.yaml", "--executor", "inline", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    return tmp_path


def test_search_on_the_quickstart_as_a_new_user_runs_it(versioned: Path) -> None:
    found = loupe("search", "defects", "--text", "cat", "--json", cwd=versioned)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert "chelsea" in hits[0]["key"] and hits[0]["score"] >= hits[-1]["score"]
    shown = loupe("search", "defects", "--text", "coffee", "--limit", "3", cwd=versioned)
    assert shown.returncode == 0 and "coffee" in shown.stdout


def test_review_queue_ranks_disagreements_first(versioned: Path) -> None:
    store = LocalStore(versioned / ".loupe")
    rows = manifest.read_version_rows(store, list_versions(store, "defects")[0])
    labelled = [r for r in rows if r.get("label")]
    predictions = [{"sample": r["key"], "label": r["label"], "confidence": 0.97} for r in labelled]
    wrong = labelled[3]
    predictions[3] = {"sample": wrong["uri"], "label": "not-" + wrong["label"], "confidence": 0.55}
    file = versioned / "predictions.jsonl"
    file.write_text("\n".join(json.dumps(p) for p in predictions))
    listed = loupe("queue", "defects", "--import", str(file), "--json", cwd=versioned)
    assert listed.returncode == 0, listed.stderr
    queue = json.loads(listed.stdout)  # the "imported N of M" line goes to stderr
    assert queue[0]["sampleId"] == wrong["sample_id"] and "label is" in queue[0]["reasons"][0]
    assert [q["score"] for q in queue] == sorted((q["score"] for q in queue), reverse=True)
    bad = versioned / "bad.csv"
    bad.write_text("sample,label,confidence\nx.jpg,cat,1.7\n")
    refused = loupe("queue", "defects", "--import", str(bad), cwd=versioned)
    assert refused.returncode == 2 and "outside [0, 1]" in refused.stdout + refused.stderr


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is needed (tests/run.sh installs Debian's chromium)"
    return found


def test_report_renders_in_a_real_browser_and_matches_the_manifest(versioned: Path) -> None:
    made = loupe("report", "defects", "--out", "report.html", "-f", "loupe.yaml", cwd=versioned)
    assert made.returncode == 0, made.stderr
    page = versioned / "report.html"
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # self-contained: nothing to fetch
    store = LocalStore(versioned / ".loupe")
    record = list_versions(store, "defects")[0]
    samples = len(manifest.read_version_rows(store, record))
    env = {**os.environ, "HOME": str(versioned)}
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, env=env
    )
    assert 'data-rendered="yes"' in dom.stdout, dom.stderr[-2000:]
    assert f'data-samples="{samples}"' in dom.stdout
    assert f'<div class="kpi" data-kpi="samples"><b>{samples}</b>' in dom.stdout
    assert "Uncaught" not in dom.stderr
    shot = versioned / "shot.png"
    subprocess.run([*base, "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, env=env, check=True)  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 20  # plots and thumbnails, not a blank page
    thumbnails = html.count("data:image/jpeg;base64,")
    assert thumbnails >= 3 and html.count("<svg") >= 7


@pytest.mark.parametrize("sizes", [(300, 40), (12_000, 150)])  # scipy's exact method, then its asymptotic one
def test_ks_statistic_is_scipys_on_photo_values(sizes: tuple[int, int]) -> None:
    from scipy.stats import ks_2samp

    camera = skdata.camera().astype(float).ravel()[::7]  # real pixel values: many ties
    coffee = skdata.coffee()[..., 0].astype(float).ravel()[::53]
    reference, current = list(camera[: sizes[0]]), list(coffee[: sizes[1]])
    assert analysis.ks_statistic(reference, current) == float(ks_2samp(reference, current).statistic)
    assert analysis.ks_statistic(current, reference) == float(ks_2samp(current, reference).statistic)


def test_drift_statistics_leave_scipy_stats_unimported() -> None:
    # importing scipy.stats took about a second of a small incremental run, for a p-value nobody read
    code = (
        "import sys; from loupe_workers.insights import analysis; "
        "print(analysis.ks_statistic([1.0, 2.0, 3.0], [2.5]), 'scipy.stats' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == [str(2 / 3), "False"]
