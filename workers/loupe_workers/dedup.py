"""Duplicate grouping: exact bytes, exact decoded pixels, perceptual hash distance; keep policy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loupe_api.dataset import DedupSpec
from loupe_workers.hamming import connected_groups, hamming_pairs, hex_to_u64

# Hash distance under which two same-sized images are decoded in full to compare their pixels:
# a lossless re-encode decodes to the same pixels, but its hash may come from another decode path.
PIXEL_CANDIDATE_DISTANCE = 10


@dataclass
class DuplicateInfo:
    """Result for one record: its group id (None if unique), whether it is the kept copy, and why not."""

    group: str | None
    kept: bool
    kind: str | None  # exact_duplicate or near_duplicate, for copies that are not kept
    of: str | None  # sample id of the kept copy


def _keep_order(record: dict[str, Any], policy: str) -> tuple[Any, ...]:
    tie = (record["source"], record["key"], record.get("frame_index") or 0)
    if policy == "highestResolution":
        return (-(int(record["width"]) * int(record["height"])), *tie)
    if policy == "largestFile":
        return (-int(record["size"]), *tie)
    if policy == "earliest":
        captured = record.get("capture_time") or "9999"
        return (captured, *tie)
    return tie


def find_duplicates(
    records: list[dict[str, Any]],
    spec: DedupSpec,
    *,
    is_new: list[bool],
    previously_kept: set[str],
    pixel_digest: Callable[[dict[str, Any]], str],
    extra_pairs: Sequence[tuple[int, int]] = (),
) -> list[DuplicateInfo]:
    """Group the records (all of which passed the gates).

    Only pairs involving a new record are searched; records seen before are joined through the group
    they had in the previous version. Copies already published are kept in preference to newcomers.
    ``extra_pairs`` are near-duplicate pairs found elsewhere (by embedding similarity).
    """
    n = len(records)
    result = [DuplicateInfo(None, True, None, None) for _ in range(n)]
    if n == 0:
        return result
    firsts: list[int] = []
    seconds: list[int] = []
    exact_edges: set[tuple[int, int]] = set()

    def link(a: int, b: int, exact: bool) -> None:
        firsts.append(a)
        seconds.append(b)
        if exact:
            exact_edges.add((min(a, b), max(a, b)))

    by_sha: dict[str, int] = {}
    previous_group: dict[str, int] = {}
    for i, record in enumerate(records):
        if spec.exact.enabled:
            first = by_sha.setdefault(record["sha256"], i)
            if first != i:
                link(first, i, exact=True)
        group = record.get("dup_group")
        if group and not is_new[i]:
            first = previous_group.setdefault(group, i)
            if first != i:
                link(first, i, exact=record.get("dup_kind") == "exact_duplicate")
    near = spec.perceptual.max_distance if spec.perceptual.enabled else -1
    pixels = PIXEL_CANDIDATE_DISTANCE if spec.exact.enabled and spec.exact.pixels else -1
    hashes = hex_to_u64([r["hash"] for r in records])
    pairs_a, pairs_b = hamming_pairs(hashes, max(near, pixels), np.array(is_new, dtype=bool))
    if len(pairs_a):
        distances = np.bitwise_count(hashes[pairs_a] ^ hashes[pairs_b])
        for a, b, d in zip(pairs_a.tolist(), pairs_b.tolist(), distances.tolist(), strict=True):
            ra, rb = records[a], records[b]
            same_pixels = (
                d <= pixels
                and ra["sha256"] != rb["sha256"]
                and (ra["width"], ra["height"]) == (rb["width"], rb["height"])
                and pixel_digest(ra) == pixel_digest(rb)
            )
            if same_pixels or d <= near:
                link(a, b, exact=same_pixels)
    for a, b in extra_pairs:
        link(a, b, exact=False)
    if not firsts:
        return result
    labels = connected_groups(n, np.array(firsts, dtype=np.int64), np.array(seconds, dtype=np.int64))
    members: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        members.setdefault(label, []).append(i)
    exact_neighbours: dict[int, set[int]] = {}
    for a, b in exact_edges:
        exact_neighbours.setdefault(a, set()).add(b)
        exact_neighbours.setdefault(b, set()).add(a)
    for group in members.values():
        if len(group) < 2:
            continue
        keeper = min(
            group,
            key=lambda i: (
                records[i]["sample_id"] not in previously_kept,
                _keep_order(records[i], spec.keep),
            ),
        )
        keeper_id = records[keeper]["sample_id"]
        exact_of_keeper = _reachable(keeper, exact_neighbours)
        for i in group:
            if i == keeper:
                result[i] = DuplicateInfo(keeper_id[:16], True, None, None)
            else:
                kind = "exact_duplicate" if i in exact_of_keeper else "near_duplicate"
                result[i] = DuplicateInfo(keeper_id[:16], spec.action == "flag", kind, keeper_id)
    return result


def _reachable(start: int, edges: dict[int, set[int]]) -> set[int]:
    seen = {start}
    stack = [start]
    while stack:
        for nxt in edges.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen
