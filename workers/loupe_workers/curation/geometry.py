"""Geometric verification of near-duplicate candidates: ORB keypoints, ratio-test matching and a RANSAC
similarity transform (rotation, uniform scale, translation) between two grey images.

``features``, ``match`` and ``verified`` are pure functions on numpy arrays. Two copies of one photo (a
crop, a small rotation, a re-framing) share many keypoints that one similarity maps onto each other; two
different photos, even of a similar texture, yield few matches and those few agree on no single
transform. ``Verifier`` adds the guarded reduced decode and a per-run cache (dedup.find_duplicates'
``verify``). Thresholds were chosen on half a of benchmarks/bench_near_duplicates.py (no test photo):
cross-photo pairs with a plausible scale reached at most 17 inliers, copies mostly hundreds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from loupe_workers.media import decode as media
from loupe_workers.media import metrics

U8Array = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]

FEATURES = 300  # ORB keypoints per image at most (500 found no more pairs on the tuning half, at 2x the cost)
RATIO = 0.8  # Lowe's ratio test: best match distance under 0.8x the second best
RANSAC_THRESHOLD = 0.015  # reprojection error allowed, as a fraction of the smaller image's long side
MIN_SCALE = 0.5  # the transform's scale, in units of each image's long side: about 1 for a resize, 1 /
MAX_SCALE = 2.0  # (side kept) for a crop; within [0.5, 2] for crops keeping at least 25 % of the area
MIN_INLIERS = 20  # defaults of the accept rule (PerceptualDedup gives them): consistent matches, and
MIN_INLIER_RATIO = 0.3  # their share of the ratio-test matches


@dataclass(frozen=True)
class Features:
    """ORB keypoints (x, y) and their 32-byte descriptors, and the long side of the image they came from."""

    points: F32Array  # (n, 2)
    descriptors: U8Array  # (n, 32)
    side: int


@dataclass(frozen=True)
class Match:
    """Matches that passed the ratio test, those consistent with the RANSAC transform, and its scale
    (in units of each image's long side: above 1 when the second image shows a part of the first)."""

    matches: int
    inliers: int
    scale: float

    @property
    def ratio(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0


def features(grey: U8Array, count: int = FEATURES) -> Features:
    """ORB keypoints and descriptors of a grey (uint8, 2-D) image."""
    image = np.ascontiguousarray(grey, dtype=np.uint8)
    orb = cv2.ORB_create(  # type: ignore[attr-defined]
        nfeatures=count, fastThreshold=10, edgeThreshold=15, patchSize=15
    )
    keypoints, descriptors = orb.detectAndCompute(image, None)
    side = int(max(image.shape)) if image.size else 0
    if descriptors is None or not keypoints:
        return Features(np.empty((0, 2), np.float32), np.empty((0, 32), np.uint8), side)
    points = np.asarray(cv2.KeyPoint.convert(keypoints), dtype=np.float32).reshape(-1, 2)
    return Features(points, np.asarray(descriptors, dtype=np.uint8), side)


def match(a: Features, b: Features) -> Match:
    """Ratio-test matches from a to b and the inliers of a RANSAC similarity fitted to them."""
    good = _ratio_matches(a, b)
    if len(good[0]) < 3:
        return Match(len(good[0]), 0, 0.0)
    return _fit(a, b, good)


Pairs = tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]  # (index into a, index into b) of each match


def _ratio_matches(a: Features, b: Features) -> Pairs:
    """The matches from a to b that pass Lowe's ratio test, by query order; none when either image has
    fewer than 2 keypoints (the test compares each keypoint's two nearest neighbours)."""
    if len(a.points) < 2 or len(b.points) < 2:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    # BFMatcher.knnMatch's own search (batchDistance), as arrays: no DMatch object per keypoint; a tie
    # for the nearest fails the ratio test whichever of the two a search takes first
    distance, nearest = cv2.batchDistance(
        a.descriptors, b.descriptors, cv2.CV_32S, normType=cv2.NORM_HAMMING, K=2
    )
    query = np.flatnonzero(distance[:, 0] < RATIO * distance[:, 1])
    return query, nearest[query, 0].astype(np.intp)


def _fit(a: Features, b: Features, good: Pairs) -> Match:
    """The RANSAC similarity of at least 3 ratio-test matches: its inliers and scale."""
    src = a.points[good[0]]
    dst = b.points[good[1]]
    threshold = max(1.0, RANSAC_THRESHOLD * min(a.side, b.side))
    transform, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=2000, confidence=0.99
    )
    if transform is None or mask is None:
        return Match(len(good[0]), 0, 0.0)
    scale = float(np.hypot(transform[0, 0], transform[1, 0])) * a.side / max(1, b.side)
    return Match(len(good[0]), int(np.count_nonzero(mask)), scale)


def verified(
    a: Features, b: Features, *, min_inliers: int = MIN_INLIERS, min_ratio: float = MIN_INLIER_RATIO
) -> float | None:
    """If b shows the same photo as a up to a similarity transform (crop, rotation, resize), that
    transform's scale (above 1: b shows a part of a, as a crop does); None if it does not."""
    good = _ratio_matches(a, b)
    # inliers are a subset of the ratio-test matches: too few of those fail the rule before RANSAC
    # (most pairs of two different photos), with the result match() would have led to
    if len(good[0]) < max(min_inliers, 3):
        return None
    found = _fit(a, b, good)
    if found.inliers >= min_inliers and found.ratio >= min_ratio and MIN_SCALE <= found.scale <= MAX_SCALE:
        return found.scale
    return None


VERIFY_SIDE = 256  # verification decodes: long side in [256, 512), like every guarded reduced decode


class Verifier:
    """``verify(a, b)`` for dedup.find_duplicates: two records' blobs (by sha256, through ``load``) decoded
    once each per run (media.decode_reduced, guarded) into ORB features, then ``verified`` (the scale,
    or None). A blob that cannot be read or decoded (ImageRejected, or anything a hostile file raises)
    verifies nothing."""

    def __init__(
        self,
        load: Callable[[str], bytes],
        *,
        max_pixels: int,
        memory_limit: int,
        min_inliers: int = MIN_INLIERS,
        min_ratio: float = MIN_INLIER_RATIO,
    ) -> None:
        self.load = load
        self.max_pixels = max_pixels
        self.memory_limit = memory_limit
        self.min_inliers = min_inliers
        self.min_ratio = min_ratio
        self.cache: dict[str, Features | None] = {}
        self.mirrored: set[str] = set()  # blobs whose mirror image will be asked for too
        self.checked = 0

    def expect_mirrored(self, shas: Iterable[str]) -> None:
        """Blobs that will be verified mirrored too (dedup.find_duplicates says so before it verifies):
        their one decode serves both orientations, where each would otherwise decode the blob again."""
        self.mirrored.update(shas)

    def features_of(self, sha256: str, mirror: bool = False) -> Features | None:
        """ORB features of the blob (or of its mirror image: ORB descriptors are not mirror-invariant)."""
        key = f"{sha256}:mirror" if mirror else sha256
        if key not in self.cache:
            both = sha256 in self.mirrored
            keys = (sha256, f"{sha256}:mirror") if both else (key,)
            try:
                decoded = media.decode_reduced(
                    self.load(sha256),
                    side=VERIFY_SIDE,
                    max_pixels=self.max_pixels,
                    memory_limit=self.memory_limit,
                )
                grey = np.asarray(
                    metrics.trim_border(decoded.image.convert("L")), dtype=np.uint8
                )  # as hashed
                for each in keys:
                    if each not in self.cache:
                        turned = each.endswith(":mirror")
                        self.cache[each] = features(np.ascontiguousarray(grey[:, ::-1]) if turned else grey)
            except Exception:  # ImageRejected, a missing blob, whatever a hostile file triggers
                for each in keys:
                    self.cache.setdefault(each, None)
        return self.cache[key]

    def __call__(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
        """The scale if b shows a's photo (or, when b is marked ``mirror``, a's photo mirrored)."""
        first = self.features_of(str(a["sha256"]))
        second = self.features_of(str(b["sha256"]), mirror=bool(b.get("mirror")))
        if first is None or second is None:
            return None
        self.checked += 1
        return verified(first, second, min_inliers=self.min_inliers, min_ratio=self.min_ratio)
