"""Renditions: named derived forms of every accepted sample (resized, re-encoded, sRGB, EXIF stripped).

A rendition is stored by (source content, parameters): computed once per sample and parameter set, then
shared by every version and dataset of the store (see loupe_api.keys.rendition_key)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from loupe_api.common import ApiModel

RenditionFormat = Literal["jpeg", "png", "webp"]
Resample = Literal["lanczos", "bicubic", "bilinear", "box", "nearest"]
# Bump when the same parameters would give other bytes (filter, encoder settings, conversion): stored
# renditions of another version are not reused, new ones are computed under a new digest.
RENDITION_VERSION = 1
NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
EXTENSIONS: dict[str, str] = {"jpeg": "jpg", "png": "png", "webp": "webp"}


class RenditionSpec(ApiModel):
    """One derived form of every accepted sample."""

    # keepAlpha with jpeg is refused by the validator below, not by CEL: rules stay out of maps (the
    # API server runs them per entry and bounds their cost)

    format: RenditionFormat = Field(
        default="jpeg", description="Encoding of the rendition: jpeg, png or webp."
    )
    quality: int = Field(
        default=90, ge=1, le=100, description="Encoder quality (jpeg, webp; ignored by lossless png)."
    )
    max_side: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Longest side in pixels after the EXIF orientation is applied; larger images are "
        "scaled down (never up). Unset: full size.",
    )
    color_space: Literal["sRGB"] = Field(
        default="sRGB",
        description="Colour space of the pixels: embedded ICC profiles (and CMYK) are converted to sRGB "
        "with the perceptual intent.",
    )
    strip_exif: bool = Field(
        default=True,
        description="Write no EXIF, XMP or GPS (privacy); the orientation is applied to the pixels first. "
        "False copies the source's EXIF with the orientation reset to 1.",
    )
    keep_alpha: bool = Field(
        default=False,
        description="Keep transparency (png, webp only); otherwise it is composited over white.",
    )
    resample: Resample = Field(default="lanczos", description="Filter used to scale down.")

    @model_validator(mode="after")
    def _alpha_needs_a_format_with_alpha(self) -> RenditionSpec:
        if self.keep_alpha and self.format == "jpeg":
            raise ValueError("keepAlpha needs format png or webp (jpeg has no alpha)")
        return self

    def digest(self) -> str:
        """Identity of the output bytes: the parameters and RENDITION_VERSION (not the name)."""
        params = self.model_dump(mode="json", by_alias=True)
        if self.format == "png":  # lossless: the quality changes no byte, so it names no other rendition
            params.pop("quality")
        body = json.dumps({"v": RENDITION_VERSION, **params}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:32]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def check_name(name: str) -> str:
    """``name`` when it is a valid rendition name; a one-line ValueError otherwise."""
    if not re.match(NAME_PATTERN, name):
        raise ValueError(
            f"rendition name {name!r}: use lower-case letters, digits, '.', '_' or '-' (at most 63)"
        )
    return name


def _check_names(renditions: dict[str, RenditionSpec]) -> dict[str, RenditionSpec]:
    for name in renditions:
        check_name(name)
    return renditions


# names checked by a validator, not patternProperties: a CRD's structural schema has no equivalent
Renditions = Annotated[dict[str, RenditionSpec], AfterValidator(_check_names)]
