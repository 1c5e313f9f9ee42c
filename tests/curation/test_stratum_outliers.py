"""Dataset-relative gates (issue 11 item 2): a sample that is an outlier of its own stratum (camera, site,
any metadata field) is flagged, by a robust z-score against the stratum's median and MAD.

Pure tests of the math (loupe_workers.curation.outliers), then real runs: ``loupe run`` on scikit-image photos from
two cameras, where a photo that passes the absolute blur gate is blurry for its sharp camera while the
same sharpness in the soft camera is not; the statistics in the version record and in ``loupe show``; a
rerun with only a changed relative section decodes nothing; and bad specs refused before anything is
written.
"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter
from pydantic import ValidationError

from loupe_api.dataset import DatasetSpec, DatasetStats, QualityGates
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_storage.store import LocalStore
from loupe_storage.versions import list_versions
from loupe_workers.curation import outliers
from loupe_workers.media import decode as media
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.storage import manifest
from support.cli import loupe

LOUPE = Path(sys.executable).parent / "loupe"
BLUR = outliers.MEASURES["blur"]


def record(
    sharpness: float, camera: str | None = "a", sha: str | None = None, **measures: float
) -> dict[str, Any]:
    metadata = {} if camera is None else {"camera": camera}
    return {
        "sha256": sha or f"{camera}-{sharpness}-{len(measures)}-{sorted(measures.items())}",
        "source": "cams", "label": None, "metadata": json.dumps(metadata), "exif": None,
        "sharpness": sharpness, "noise": 0.5, "brightness_p99": 0.9, "clipped": 0.0, "contrast": 0.7,
        **measures,
    }  # fmt: skip


def relative(gate: str = "blur", **section: Any) -> QualityGates:
    return QualityGates.model_validate({gate: {"relative": {"by": "metadata.camera", **section}}})


# the math ------------------------------------------------------------------------------------------


def test_robust_sigma_is_mad_over_0_6745() -> None:
    median, mad, sigma = outliers.robust_sigma([1.0, 2.0, 3.0, 4.0, 100.0])
    assert median == 3.0 and mad == 1.0
    assert sigma == pytest.approx(1 / 0.6745)
    assert outliers.robust_z(100.0, median, sigma) == pytest.approx(0.6745 * 97)


def test_mad_zero_falls_back_to_the_mean_absolute_deviation() -> None:
    values = [0.0] * 7 + [0.3, 0.6]
    median, mad, sigma = outliers.robust_sigma(values)
    assert median == 0.0 and mad == 0.0
    assert sigma == pytest.approx(1.253314 * 0.1)


def test_no_spread_at_all_flags_nothing_and_the_floor_holds() -> None:
    assert outliers.robust_sigma([2.0] * 5) == (2.0, 0.0, 0.0)
    assert outliers.robust_z(2.0, 2.0, 0.0) == 0.0
    assert outliers.robust_z(1.0, 2.0, 0.0) == -math.inf
    assert outliers.robust_sigma([2.0] * 5, floor=0.05)[2] == 0.05
    # identical sharpness: a 3 % softer photo is within the floor's 3.5 sigma (log units), not an outlier
    rows = [record(1.0, sha=str(i)) for i in range(30)] + [record(0.97)]
    assert not outliers.judge(rows, relative()).verdicts
    with pytest.raises(ValueError):
        outliers.robust_sigma([])


def test_threshold_is_given_in_measure_units_on_the_log_scale() -> None:
    values = [0.5, 1.0, 1.0, 2.0, 4.0]
    limit = outliers.stratum_limit(values, 3.5, BLUR)
    log_sigma = math.log(2) / 0.6745  # the MAD of the logs is log 2
    assert limit.median == 1.0 and limit.centre == 0.0
    assert limit.sigma == pytest.approx(log_sigma)
    assert limit.threshold == pytest.approx(math.exp(-3.5 * log_sigma))
    assert outliers.is_outlier(limit.threshold * 0.99, limit, BLUR)
    assert not outliers.is_outlier(limit.threshold * 1.01, limit, BLUR)


def _camera(centre: float, n: int, name: str, seed: int) -> list[dict[str, Any]]:
    """n shots of one camera, sharpness spread evenly within +-15 % (log) around ``centre``, shuffled."""
    order = np.random.default_rng(seed).permutation(n)
    spread = np.linspace(-0.15, 0.15, n)[order]
    return [record(float(centre * math.exp(d)), name, f"{name}{i}") for i, d in enumerate(spread)]


def test_blurry_for_its_camera_but_not_for_another() -> None:
    rows = _camera(2.0, 30, "sharp", 1) + _camera(0.6, 30, "soft", 2)
    rows += [record(0.8, "sharp", "sharp-defocused"), record(0.8, "soft", "soft-usual")]
    judgement = outliers.judge(rows, relative())
    flagged = {rows[i]["sha256"] for i in judgement.verdicts}
    assert flagged == {"sharp-defocused"}
    (stats,) = judgement.stats
    assert stats.gate == "blur" and stats.by == "metadata.camera" and stats.direction == "below"
    by_value = {s.value: s for s in stats.strata}
    assert by_value["sharp"].outliers == 1 and by_value["soft"].outliers == 0
    assert by_value["sharp"].samples == 31 and by_value["sharp"].judged
    assert by_value["soft"].threshold is not None and by_value["soft"].threshold < 0.6 < 0.8
    assert by_value["sharp"].threshold is not None and 0.8 < by_value["sharp"].threshold < 2.0
    (verdict,) = judgement.verdicts[60]
    assert verdict.action == "flag" and "metadata.camera=sharp" in verdict.detail


def test_direction_follows_the_gate() -> None:
    rows = [record(1.0, sha=str(i), noise=0.5 + 0.01 * i) for i in range(30)]
    rows += [record(1.0, sha="grainy", noise=3.0), record(1.0, sha="clean", noise=0.1)]
    judgement = outliers.judge(rows, relative("noise"))
    assert {rows[i]["sha256"] for i in judgement.verdicts} == {"grainy"}  # too clean is no fault
    assert judgement.stats[0].direction == "above"


def test_small_strata_are_not_judged_and_say_so() -> None:
    rows = [*_camera(2.0, 10, "rare", 3), record(0.1, "rare", "very-soft")]
    judgement = outliers.judge(rows, relative(minSamples=20))
    assert not judgement.verdicts
    (stratum,) = judgement.stats[0].strata
    assert not stratum.judged and stratum.threshold is None and stratum.samples == 11
    assert judgement.stats[0].unjudged_strata == 1


def test_missing_key_is_not_judged_and_counted() -> None:
    rows = [*_camera(2.0, 30, "a", 4), record(0.1, None, "no-camera"), record(0.1, "", "empty-camera")]
    judgement = outliers.judge(rows, relative())
    assert not judgement.verdicts
    assert judgement.stats[0].missing == 2
    assert [s.value for s in judgement.stats[0].strata] == ["a"]


def test_exact_copies_count_once() -> None:
    rows = [record(1.0, sha="same") for _ in range(30)] + _camera(1.0, 10, "a", 5)
    stats = outliers.judge(rows, relative(minSamples=20)).stats[0]
    assert stats.strata[0].samples == 11 and not stats.strata[0].judged


def test_built_in_keys() -> None:
    row = record(1.0, "x") | {"exif": json.dumps({"camera_make": "Canon", "camera_model": "EOS R5"})}
    assert outliers.stratum_key(row, "camera") == "Canon EOS R5"
    assert outliers.stratum_key(record(1.0, "x"), "camera") is None
    assert outliers.stratum_key(row, "source") == "cams"
    assert outliers.stratum_key(row, "label") is None
    assert outliers.stratum_key(row, "metadata.camera") == "x"
    assert outliers.stratum_key(row, "metadata.site") is None


def test_strata_reported_are_capped() -> None:
    rows = [record(1.0 + 0.01 * i, f"cam{i:03d}", f"s{i}") for i in range(130)]
    stats = outliers.judge(rows, relative(minSamples=5)).stats[0]
    assert len(stats.strata) == 100 and stats.other_strata == 30 and stats.other_samples == 30
    assert stats.unjudged_strata == 130


def test_reject_only_drops_new_samples() -> None:
    rows = [*_camera(2.0, 30, "a", 6), record(0.5, "a", "old-soft"), record(0.5, "a", "new-soft")]
    published = [True] * 31 + [False]
    judgement = outliers.judge(rows, relative(action="reject"), published)
    assert [v.action for v in judgement.verdicts[30]] == ["flag"]  # published: never dropped
    assert [v.action for v in judgement.verdicts[31]] == ["reject"]
    stats = DatasetStats()
    for row in rows:
        row.update(flags=[], disposition="accepted")
    staying = outliers.apply(rows, list(range(len(rows))), judgement, stats)
    assert len(staying) == 31 and rows[30]["flags"] == ["relative:blur"]
    assert rows[31]["disposition"] == "rejected" and rows[31]["reason"] == "relative:blur"
    assert stats.rejected == {"relative:blur": 1}
    assert judgement.stats[0].flagged == 1 and judgement.stats[0].dropped == 1


def test_gate_off_turns_its_relative_section_off() -> None:
    gates = QualityGates.model_validate({"blur": {"enabled": False, "relative": {"by": "metadata.camera"}}})
    assert outliers.relative_gates(gates) == []


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"by": "camera_model"}, "by"),
        ({"by": "metadata."}, "by"),
        ({"by": "metadata.camera", "maxZ": -1}, "maxZ"),
        ({"by": "metadata.camera", "maxZ": 0}, "maxZ"),
        ({"by": "metadata.camera", "minSamples": 2}, "minSamples"),
        ({"by": "metadata.camera", "action": "drop"}, "action"),
        ({"maxZ": 3}, "by"),
    ],
)
def test_bad_sections_are_refused_by_the_model(section: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        QualityGates.model_validate({"blur": {"relative": section}})
    assert error.value.errors()[0]["loc"] == ("blur", "relative", field)


# real runs -----------------------------------------------------------------------------------------


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def _scenes() -> list[Image.Image]:
    """24 distinct 480 x 360 scenes: crops of scikit-image photos (RGB)."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.immunohistochemistry(), data.rocket()]
    scenes = []
    for photo in photos:
        image = Image.fromarray(np.ascontiguousarray(photo)).convert("RGB")
        for left in (0.0, 0.5, 1.0):
            for top in (0.0, 1.0):
                w, h = min(480, image.width), min(360, image.height)
                x, y = round((image.width - w) * left), round((image.height - h) * top)
                scenes.append(image.crop((x, y, x + w, y + h)))
    return scenes


@pytest.fixture(scope="module")
def cameras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two cameras of 24 scenes each: 'sharp' (the photos' own pixels) and 'soft' (a softer lens, a
    Gaussian blur of 1.2 px). One sharp-camera scene is slightly defocused (blur 0.8 px): it passes the
    absolute blur gate, but sits below every other shot of its camera. Keys: sharp/NAME.jpg, soft/NAME.jpg."""
    folder = tmp_path_factory.mktemp("cams")
    sharpness: dict[str, float] = {}
    for camera, radius in (("sharp", 0.0), ("soft", 1.2)):
        (folder / camera).mkdir()
        for i, scene in enumerate(_scenes()):
            image = scene.filter(ImageFilter.GaussianBlur(radius)) if radius else scene
            name = f"{camera}/shot{i:02d}.jpg"
            if camera == "sharp" and i == 0:
                image, name = scene.filter(ImageFilter.GaussianBlur(0.8)), "sharp/defocused.jpg"
            data = jpeg(image)
            (folder / name).write_bytes(data)
            sharpness[name] = media.analyze_image(data, max_pixels=100_000_000).metrics["sharpness"]
    return {"folder": folder, "sharpness": sharpness}


SOURCE = """apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {{name: cams}}
spec:
  filesystem: {{path: {path}}}
  metadata: {{pathPattern: '{{camera}}/{{name}}.jpg'}}
---
apiVersion: loupe.dev/v1alpha1
kind: Dataset
metadata: {{name: line}}
spec:
  sources: [{{name: cams}}]
  qualityGates:
    blur: {{relative: {{by: {by}, maxZ: {max_z}, minSamples: 20}}}}
  dedup: {{exact: {{enabled: false}}, perceptual: {{enabled: false}}}}
"""


NO_DEDUP = {"exact": {"enabled": False}, "perceptual": {"enabled": False}}  # the two cameras share scenes


def write_spec(project: Path, images: Path, by: str = "metadata.camera", max_z: Any = 3.5) -> Path:
    spec = project / "loupe.yaml"
    spec.write_text(SOURCE.format(path=images, by=by, max_z=max_z))
    return spec


def test_loupe_run_flags_blurry_for_its_camera(cameras: dict[str, Any], tmp_path: Path) -> None:
    sharpness = cameras["sharpness"]
    defocused = sharpness["sharp/defocused.jpg"]
    soft = sorted(v for k, v in sharpness.items() if k.startswith("soft/"))
    # the premise: the defocused shot passes the absolute gate and is as sharp as the soft camera's shots
    assert defocused >= QualityGates().blur.threshold, sharpness
    assert soft[0] <= defocused <= soft[-1], (defocused, soft)
    spec = write_spec(tmp_path, cameras["folder"])
    store = tmp_path / "store"
    done = loupe("run", "-f", str(spec), "--store", str(store), "--executor", "inline", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    local = LocalStore(store)
    (version,) = list_versions(local, "line")
    rows = {r["key"]: r for r in manifest.read_rows(local, version.manifest_uri)}
    assert len(rows) == 48
    flagged = {k for k, r in rows.items() if "relative:blur" in r["flags"]}
    assert flagged == {"sharp/defocused.jpg"}, flagged
    assert "blur" not in rows["sharp/defocused.jpg"]["flags"]  # the absolute gate passes it
    # soft shots at (or below) the defocused shot's sharpness are the soft camera's usual
    assert any(sharpness[k] <= defocused for k in rows if k.startswith("soft/"))
    assert version.stats.flags.get("relative:blur") == 1
    (stats,) = version.outliers
    assert stats.gate == "blur" and stats.by == "metadata.camera" and stats.outliers == 1
    strata = {s.value: s for s in stats.strata}
    assert set(strata) == {"sharp", "soft"} and all(s.judged and s.samples == 24 for s in strata.values())
    assert strata["sharp"].threshold is not None and strata["sharp"].threshold > defocused
    assert strata["soft"].threshold is not None and strata["soft"].threshold < soft[0]
    shown = loupe("show", "line", "--store", str(store), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "relative blur by metadata.camera" in text and "relative:blur 1" in text, shown.stdout
    assert "sharp: n 24" in text and "soft: n 24" in text, shown.stdout
    as_json = json.loads(loupe("show", "line", "--store", str(store), "--json", cwd=tmp_path).stdout)
    assert as_json["outliers"][0]["strata"][0]["samples"] == 24


def test_a_changed_relative_section_decodes_nothing(
    cameras: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    source = IngestSourceSpec.model_validate(
        {"filesystem": {"path": str(cameras["folder"])}, "metadata": {"pathPattern": "{camera}/{name}.jpg"}}
    )

    def request(max_z: float) -> RunRequest:
        spec = DatasetSpec.model_validate(
            {"sources": [{"name": "cams"}], "dedup": NO_DEDUP,
             "qualityGates": {"blur": {"relative": {"by": "metadata.camera", "maxZ": max_z}}}}
        )  # fmt: skip
        return RunRequest(dataset="line", spec=spec, sources={"cams": source}, store_uri=str(store))

    first = run_dataset(request(3.5))
    assert first.created and first.stats.flags.get("relative:blur") == 1
    decodes: list[str] = []
    for name in ("analyze_image", "decode_reduced", "pixel_digest", "keep_measures"):
        original = getattr(media, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            decodes.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(media, name, counted)
    looser = run_dataset(request(50.0))  # re-decided from the stored measures alone
    assert looser.created, looser.message
    assert looser.stats.processed == 0 and not decodes, decodes
    assert "relative:blur" not in looser.stats.flags
    local = LocalStore(store)
    assert list_versions(local, "line")[-1].outliers[0].max_z == 50.0


@pytest.mark.parametrize(
    ("by", "max_z", "field"),
    [
        ("camera_model", 3.5, "spec.qualityGates.blur.relative.by"),
        ("metadata.camera", -1, "spec.qualityGates.blur.relative.maxZ"),
    ],
)
def test_bad_relative_spec_is_refused_before_anything_is_written(
    cameras: dict[str, Any], tmp_path: Path, by: str, max_z: float, field: str
) -> None:
    spec = write_spec(tmp_path, cameras["folder"], by=by, max_z=max_z)
    done = loupe(
        "run", "-f", str(spec), "--store", str(tmp_path / "store"), "--executor", "inline", cwd=tmp_path
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and field in done.stderr, done.stderr
    assert not (tmp_path / "store").exists()


def test_reject_drops_a_new_outlier_but_never_a_published_one(
    cameras: dict[str, Any], tmp_path: Path
) -> None:
    images = tmp_path / "images"
    for path in cameras["folder"].rglob("*.jpg"):
        target = images / path.relative_to(cameras["folder"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    store = tmp_path / "store"
    source = IngestSourceSpec.model_validate(
        {"filesystem": {"path": str(images)}, "metadata": {"pathPattern": "{camera}/{name}.jpg"}}
    )

    def run(action: str) -> dict[str, dict[str, Any]]:
        spec = DatasetSpec.model_validate(
            {"sources": [{"name": "cams"}], "dedup": NO_DEDUP,
             "qualityGates": {"blur": {"relative": {"by": "metadata.camera", "action": action}}}}
        )  # fmt: skip
        assert run_dataset(
            RunRequest(dataset="line", spec=spec, sources={"cams": source}, store_uri=str(store))
        ).created
        version = list_versions(LocalStore(store), "line")[-1]
        found = manifest.read_rows(LocalStore(store), version.manifest_uri)
        found += manifest.read_rows(LocalStore(store), version.rejected_uri)
        return {r["key"]: r for r in found}

    first = run("flag")
    assert first["sharp/defocused.jpg"]["flags"] == ["relative:blur"]
    # a newcomer: another sharp-camera scene, defocused like the published one
    scene = _scenes()[2].filter(ImageFilter.GaussianBlur(0.8))
    (images / "sharp" / "defocused-new.jpg").write_bytes(jpeg(scene))
    second = run("reject")
    assert second["sharp/defocused-new.jpg"]["disposition"] == "rejected"
    assert second["sharp/defocused-new.jpg"]["reason"] == "relative:blur"
    published = second["sharp/defocused.jpg"]
    assert published["disposition"] == "accepted" and published["flags"] == ["relative:blur"]
