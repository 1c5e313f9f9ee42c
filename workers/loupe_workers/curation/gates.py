"""Quality gates: pure decisions over stored per-sample metrics (no decoding)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loupe_api.dataset import LowContrastGate, QualityGates
from loupe_api.samples import Disposition, Gate, Status
from loupe_workers.media.decode import extension_matches


@dataclass
class GateOutcome:
    """Which gates fired, and the resulting disposition of the sample."""

    disposition: Disposition  # accepted, rejected or quarantined
    reason: str | None = None  # the gate that decided a rejection or quarantine
    detail: str | None = None
    flags: list[str] = field(default_factory=list)


_LOW_CONTRAST_MAX_CLIPPED = 0.05


def _below(record: Mapping[str, Any], measure: str, threshold: float) -> bool:
    """The stored measure is below the threshold (a row measured before the measure existed: no)."""
    value = record.get(measure)
    return value is not None and bool(value < threshold)


def _above(record: Mapping[str, Any], measure: str, threshold: float) -> bool:
    value = record.get(measure)
    return value is not None and bool(value > threshold)


def low_contrast(record: Mapping[str, Any], gate: LowContrastGate) -> bool:
    """The tones are squeezed: a low contrast ratio, or a narrow tonal range with no true black (a
    squeezed darker scene keeps a fair ratio, but an under-exposed one keeps its blacks). A photo with
    more than 5 % blown out is over-exposed (or nearly), not low-contrast as well: blown-out highlights
    squeeze the tones too."""
    if _above(record, "clipped", _LOW_CONTRAST_MAX_CLIPPED):
        return False
    narrow = gate.max_range > 0 and _below(record, "tonal_range", gate.max_range)
    return _below(record, "contrast", gate.threshold) or (
        narrow and _above(record, "black_level", gate.min_black)
    )


def failed_gates(record: Mapping[str, Any], gates: QualityGates) -> list[tuple[str, str, str]]:
    """(gate, action, detail) for every gate the record fails, in a fixed order."""
    if record["status"] == Status.FAILED:
        reason = record["fail_reason"]
        actions = {
            "corrupt": gates.corrupt.action,
            "format": gates.format.action,
            "max_pixels": gates.max_pixels.action,
            # never read (unsafe or unreadable entries, files above maxFileSize): nothing to quarantine
            "unreadable": "reject",
            "max_file_size": "reject",
            # a source the dataset's access rules exclude (curation.access): never read either
            "use_not_allowed": "reject",
            "classification_above_maximum": "reject",
        }
        action: str = actions.get(reason, gates.corrupt.action)
        if action == "flag":  # a file that was never decoded cannot be a sample
            action = "reject"
        return [(reason, action, record["fail_detail"] or reason)]
    out: list[tuple[str, str, str]] = []
    fmt, width, height = record["format"], int(record["width"]), int(record["height"])
    if fmt not in gates.format.allowed:
        out.append((Gate.FORMAT, gates.format.action, f"format {fmt} is not allowed"))
    if (
        gates.extension.enabled
        and record["media"] == "image"
        and not extension_matches(record["extension"], fmt)
    ):
        out.append(
            (
                Gate.EXTENSION,
                gates.extension.action,
                f"{fmt} data named {record['extension'] or '(no extension)'}",
            )
        )
    res = gates.resolution
    if res.enabled:
        if width < res.min_width or height < res.min_height:
            out.append(
                (Gate.RESOLUTION, res.action, f"{width}x{height} is below {res.min_width}x{res.min_height}")
            )
        elif (res.max_width and width > res.max_width) or (res.max_height and height > res.max_height):
            out.append(
                (Gate.RESOLUTION, res.action, f"{width}x{height} is above {res.max_width}x{res.max_height}")
            )
    flat = gates.low_contrast
    squeezed = low_contrast(record, flat)
    # the detail names the measure that decided: the ratio, else the tonal range
    by_ratio = not squeezed or _below(record, "contrast", flat.threshold)
    flat_label, flat_value = (
        ("contrast", record.get("contrast")) if by_ratio else ("tonal range", record.get("tonal_range"))
    )
    checks = [
        (gates.aspect_ratio.enabled, Gate.ASPECT_RATIO, gates.aspect_ratio.action, record["aspect_ratio"] < gates.aspect_ratio.min_ratio, "aspect ratio", record["aspect_ratio"]),
        (gates.low_information.enabled, Gate.LOW_INFORMATION, gates.low_information.action, record["entropy"] < gates.low_information.threshold, "entropy", record["entropy"]),
        (gates.dark.enabled, Gate.DARK, gates.dark.action, record["brightness_p99"] < gates.dark.threshold, "brightness p99", record["brightness_p99"]),
        (gates.bright.enabled, Gate.BRIGHT, gates.bright.action, _above(record, "clipped", gates.bright.threshold), "blown-out share", record.get("clipped")),
        (gates.low_contrast.enabled, Gate.LOW_CONTRAST, gates.low_contrast.action, squeezed, flat_label, flat_value),
        (gates.blur.enabled, Gate.BLUR, gates.blur.action, _below(record, "sharpness", gates.blur.threshold), "sharpness", record.get("sharpness")),
        (gates.noise.enabled, Gate.NOISE, gates.noise.action, _above(record, "noise", gates.noise.threshold), "noise sigma", record.get("noise")),
    ]  # fmt: skip
    for enabled, name, action, failed, label, value in checks:
        if enabled and failed:
            out.append((name, action, f"{label} {value:.3f}"))
    return out


def evaluate(record: Mapping[str, Any], gates: QualityGates) -> GateOutcome:
    """Quarantine beats reject beats flag; the first failing gate of the strongest action decides."""
    failures = failed_gates(record, gates)
    for action, disposition in (("quarantine", Disposition.QUARANTINED), ("reject", Disposition.REJECTED)):
        for name, gate_action, detail in failures:
            if gate_action == action:
                return GateOutcome(disposition, name, detail, [n for n, a, _ in failures if a == "flag"])
    return GateOutcome(Disposition.ACCEPTED, flags=[name for name, _, _ in failures])
