"""Manifest parts at scale: what a version costs to write, and the memory it takes (issue 12, items 1-2).

Run:  .venv/bin/python benchmarks/bench_scale.py [--rows 1000000 10000000] [--whole [ROWS ...]] [--pipeline 2000 10000]

Manifest level (no decoding): synthetic processed rows in the manifest schema with realistic columns
(sha256 ids, hash variants, metadata and labels JSON, metrics), written into a throwaway folder store.

Streaming (the default, each scale and each phase in its own process, so that ``ru_maxrss`` is the peak
of that phase alone): rows are generated in sample-id order, ``CHUNK`` rows at a time (the full table is
never built), 2 % of them rejected, and the versions are

- first:     the rows fed chunk by chunk to ``manifest.PartWriter`` (every part new);
- no change: ``manifest.write_change`` with nothing changed (reads the parent's part lists, no part);
- +1 %:      1 % new samples (random ids, as new files give) as ``write_change(added=...)``;
- relabel 1: one sample's label changed, ``write_change(upserts=[row])``.

``--whole`` also runs the whole-table baseline (``write_parts`` on the full tables with the parent's
``Layout``, all four versions in one process, as the pipeline does today) at 1,000,000 rows or the
scales given, and prints its peak RSS beside the streaming one.

``write s`` leaves out the time spent generating synthetic rows (``gen s``); ``bytes`` counts all that
was written (parts and part lists). ``--pipeline N [N ...]`` adds real ``loupe run --executor inline``
runs over N distinct real-photo tiles (128x96 crops of the development corpus, benchmarks/corpus.py):
a first version, a run with nothing changed and one with 1 % more tiles, each in its own process (wall
time includes start-up and imports of cached byte code: an untimed 30-tile run fills the cache first), with its peak RSS, the +1 % run's share of the first run's time
against the 5 % target and the +1 % run's phases. ``--rows`` with no value skips the manifest scales.

Prints figures; asserts nothing. The issue's targets are marked MEETS / MISSES: peak RSS under 1 GiB at
10,000,000 rows, a +1 % version writing at most 5 % of the first version's bytes and taking at most
5 % of its time, a no-change version at 1,000,000 rows in under 30 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for folder in ("api", "workers"):
    sys.path.insert(0, str(REPO / folder))
sys.path.insert(0, str(REPO / "benchmarks"))  # corpus.py

TARGET_RATIO = 0.05
TARGET_RSS_MIB = 1024  # at 10,000,000 rows
TARGET_NO_CHANGE_S = 30.0  # at 1,000,000 rows
CHUNK = 65_536  # rows generated and fed to the writer at a time
REJECTED_SHARE = 50  # one row in 50 rejected
PHASES = ("first", "no change", "+1 %", "relabel 1")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def hex_strings(count: int, width: int, seed: int) -> Any:
    """``count`` random lower-case hex strings of ``width`` characters, built without a Python loop."""
    import numpy as np
    import pyarrow as pa

    raw = np.random.default_rng(seed).bytes(count * width // 2)
    data = raw.hex().encode()
    offsets = np.arange(0, count * width + 1, width, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def sorted_ids(start: int, count: int, total: int, seed: int) -> Any:
    """Sample ids ``start`` .. ``start + count`` of ``total``, in sample-id order across chunks: 64 hex
    digits, the first 16 rising evenly over the id space, the rest random (as sha256 ids look)."""
    import numpy as np
    import pyarrow as pa

    step = np.uint64((2**64 - 1) // total)
    top = (np.arange(start, start + count, dtype=np.uint64) * step).astype(">u8")
    matrix = np.empty((count, 32), np.uint8)
    matrix[:, :8] = top.view(np.uint8).reshape(count, 8)
    matrix[:, 8:] = np.random.default_rng(seed).integers(0, 256, (count, 24), dtype=np.uint8)
    data = matrix.tobytes().hex().encode()
    offsets = np.arange(0, count * 64 + 1, 64, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def written_figures(written: Any, listing: Any) -> dict[str, Any]:
    """What a version wrote and holds (``manifest.Written``, its manifest ``PartList``), and the peak RSS
    so far: the columns every phase of both modes prints."""
    return {
        "peak_rss_mib": round(rss_mib()),
        "bytes_written": written.stats.bytes_written,
        "parts_written": written.stats.parts_written,
        "parts_reused": written.stats.parts_reused,
        "manifest_parts": len(listing.parts),
        "manifest_bytes": listing.bytes,
    }


def synthetic_table(
    count: int, seed: int, start: int = 0, sample_ids: Any = None, disposition: str = "accepted"
) -> Any:
    """``count`` rows in the manifest schema, as a processed run would give them (rejected rows: keys
    rising with ``start``, so that chunks come in the rejected kind's order)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from loupe_workers.storage import manifest

    rng = np.random.default_rng(seed + 1)
    index = pa.array(np.arange(start, start + count, dtype=np.int64))
    text_index = pc.utf8_lpad(pc.cast(index, pa.string()), 10, "0")
    if disposition == "accepted":
        line = pc.take(pa.array([f"line-{i}" for i in range(8)]), pa.array(rng.integers(0, 8, count)))
    else:
        line = pa.array(["rejected"] * count)
    labels = ["scratch", "dent", "ok", "crack", "stain"]
    label_index = pa.array(rng.integers(0, len(labels), count))
    label = pc.take(pa.array(labels), label_index)
    sha = hex_strings(count, 64, seed + 2)
    key = pc.binary_join_element_wise(line, "/img-", text_index, ".jpg", "")
    variants = hex_strings(count * 7, 16, seed + 3)
    columns: dict[str, Any] = {
        "sample_id": sample_ids if sample_ids is not None else hex_strings(count, 64, seed),
        "sha256": sha,
        "disposition": pa.array([disposition] * count),
        "reason": pa.array([None if disposition == "accepted" else "too_dark"] * count, pa.string()),
        "source": pa.array(["cams"] * count),
        "key": key,
        "uri": pc.binary_join_element_wise("s3://raw/cams/", key, ""),
        "etag": hex_strings(count, 32, seed + 4),
        "size": pa.array(rng.integers(20_000, 400_000, count)),
        "blob_uri": pc.binary_join_element_wise("blobs/sha256/", pc.utf8_slice_codeunits(sha, 0, 2), "/", sha, ""),
        "media": pa.array(["image"] * count),
        "format": pa.array(["jpeg"] * count),
        "extension": pa.array([".jpg"] * count),
        "width": pa.array(np.full(count, 1920)),
        "height": pa.array(np.full(count, 1080)),
        "brightness_p99": pa.array(rng.random(count) * 255),
        "brightness_p5": pa.array(rng.random(count) * 40),
        "clipped": pa.array(rng.random(count) / 100),
        "contrast": pa.array(rng.random(count)),
        "sharpness": pa.array(rng.random(count) * 900),
        "noise": pa.array(rng.random(count) * 5),
        "entropy": pa.array(rng.random(count) * 8),
        "aspect_ratio": pa.array(np.full(count, 1920 / 1080)),
        "hash_kind": pa.array(["phash"] * count),
        "hash": hex_strings(count, 16, seed + 5),
        "hash_variants": pa.ListArray.from_arrays(pa.array(np.arange(0, 7 * count + 1, 7, dtype=np.int32)), variants),
        "pixel_sha256": hex_strings(count, 64, seed + 6),
        "metadata": pc.binary_join_element_wise('{"line": "', line, '", "site": "plant-a"}', ""),
        "label": label,
        "labels": pc.binary_join_element_wise('{"label": "', label, '"}', ""),
        "flags": pa.ListArray.from_arrays(pa.array(np.zeros(count + 1, dtype=np.int32)), pa.array([], pa.string())),
        "split": pc.take(pa.array(["train", "val", "test"]), pa.array(rng.choice(3, count, p=[0.8, 0.1, 0.1]))),
        "status": pa.array(["ok"] * count),
        "processing_key": pa.array(["v7"] * count),
    }  # fmt: skip
    for name in manifest.COLUMNS:
        if name not in columns:
            columns[name] = pa.nulls(count, manifest.SCHEMA.field(name).type)
    return pa.table({name: columns[name] for name in manifest.COLUMNS}).cast(manifest.SCHEMA)


# --- streaming: bounded memory -------------------------------------------------------------------------


def accepted_chunk(rows: int, chunk: int) -> Any:
    """Chunk ``chunk`` of the ``rows`` accepted rows (the same rows whenever it is generated again)."""
    start = chunk * CHUNK
    count = min(CHUNK, rows - start)
    ids = sorted_ids(start, count, rows, seed=10_000 + chunk)
    return synthetic_table(count, seed=20_000 + 10 * chunk, start=start, sample_ids=ids)


def rejected_chunks(rows: int) -> Iterator[Any]:
    total = max(1, rows // REJECTED_SHARE)
    size = max(1, CHUNK // REJECTED_SHARE)
    for n, start in enumerate(range(0, total, size)):
        count = min(size, total - start)
        ids = sorted_ids(start, count, total, seed=30_000 + n)  # PartWriter takes each kind by sample id
        yield synthetic_table(
            count, seed=900_000 + 10 * n, start=10**9 + start, sample_ids=ids, disposition="rejected"
        )


def lists_of(name: str) -> Any:
    """The part lists a phase wrote (what the next phase builds on)."""
    from loupe_workers.storage import manifest

    prefix = run_prefix(name)
    names = ("manifest", "rejected", "lineage")
    accepted, rejected, lineage = (f"{prefix}/{n}.parts.json" for n in names)
    return manifest.Written(accepted, rejected, lineage, manifest.WriteStats())


def run_prefix(name: str) -> str:
    return f"datasets/bench/runs/{name.replace(' ', '-').replace('%', 'pct')}"


def stream_phase(rows: int, phase: str, root: Path) -> dict[str, Any]:
    """One phase of the streaming versions, in this process."""
    import pyarrow as pa

    from loupe_api.versions import PartList
    from loupe_storage.store import LocalStore
    from loupe_workers.storage import manifest

    store = LocalStore(root)
    generating = 0.0
    began = time.perf_counter()
    if phase == "first":
        writer = manifest.PartWriter(store, "bench", run_prefix(phase), "1.0.0")
        rejected = rejected_chunks(rows)
        for chunk in range(-(-rows // CHUNK)):
            at = time.perf_counter()
            batch = accepted_chunk(rows, chunk)
            others = next(rejected, None)
            generating += time.perf_counter() - at
            writer.add(batch if others is None else pa.concat_tables([batch, others]))
            del batch, others
        while True:  # rejected rows left over (the two kinds need not run out together)
            at = time.perf_counter()
            others = next(rejected, None)
            generating += time.perf_counter() - at
            if others is None:
                break
            writer.add(others)
        written = writer.finish()
        expected = rows
    else:
        parent_name = PHASES[PHASES.index(phase) - 1]
        parent = manifest.ParentParts.read(store, lists_of(parent_name))
        assert parent is not None
        expected = parent.accepted.rows
        if phase == "no change":
            written = manifest.write_change(store, "bench", run_prefix(phase), "1.0.1", parent)
        elif phase == "+1 %":
            at = time.perf_counter()
            grown = synthetic_table(max(1, rows // 100), seed=7, start=rows)
            generating += time.perf_counter() - at
            written = manifest.write_change(store, "bench", run_prefix(phase), "1.1.0", parent, added=grown)
            expected += grown.num_rows
        else:
            at = time.perf_counter()
            target = accepted_chunk(rows, (rows // 2) // CHUNK).slice((rows // 2) % CHUNK, 1)
            target = target.set_column(
                target.schema.get_field_index("label"), "label", pa.array(["relabeled"])
            )
            generating += time.perf_counter() - at
            written = manifest.write_change(
                store, "bench", run_prefix(phase), "2.0.0", parent, upserts=target
            )
    took = time.perf_counter() - began
    listing = PartList.model_validate_json(store.get(written.manifest_uri))
    assert listing.rows == expected, (listing.rows, expected)
    return {
        "version": phase,
        "total_s": round(took, 2),
        "gen_s": round(generating, 2),
        "write_s": round(took - generating, 2),
        **written_figures(written, listing),
    }


def stream_scale(rows: int, tmp: Path, timeout: float) -> dict[str, Any]:
    """The four streaming versions at one scale, each phase in its own process."""
    from loupe_workers.storage import manifest

    root = Path(tempfile.mkdtemp(prefix=f"scale-stream-{rows}-", dir=tmp))
    result: dict[str, Any] = {"rows": rows, "mode": "stream", "part_rows": manifest.PART_ROWS, "phases": []}
    try:
        for phase in PHASES:
            began = time.perf_counter()
            found = child(["--one", str(rows), "--phase", phase, "--tmp", str(root)], timeout)
            if "error" in found:
                result["error"] = f"{phase}: {found['error']}"
                break
            found["process_s"] = round(time.perf_counter() - began, 2)
            result["phases"].append(found)
        result["store_bytes"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


def child(arguments: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [sys.executable, __file__, *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    if done.returncode != 0:
        killed = done.returncode in (-9, 137)
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        return {"error": "killed (out of memory?)" if killed else f"exit {done.returncode}: {tail[-300:]}"}
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


# --- the whole-table baseline -------------------------------------------------------------------------


def whole_scale(rows: int, root: Path) -> dict[str, Any]:
    """The four versions at one scale through write_parts on whole tables, in this process."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from loupe_api.versions import PartList
    from loupe_storage.store import LocalStore
    from loupe_workers.storage import manifest

    store = LocalStore(root)
    began = time.perf_counter()
    first_rows = synthetic_table(rows, seed=1)
    rejected = synthetic_table(max(1, rows // REJECTED_SHARE), seed=99, start=10**9, disposition="rejected")
    generated = time.perf_counter() - began
    result: dict[str, Any] = {
        "rows": rows,
        "mode": "whole",
        "generate_s": round(generated, 2),
        "generate_rss_mib": round(rss_mib()),
    }
    phases = []

    def version(name: str, accepted: Any, parent: manifest.VersionLayout | None) -> manifest.VersionLayout:
        began = time.perf_counter()
        written = manifest.write_parts(store, "bench", run_prefix(name), "1.0.0", accepted, rejected, parent)
        wrote = time.perf_counter() - began
        began = time.perf_counter()
        table, accepted_layout = manifest.read_layout(store, written.manifest_uri)
        _, rejected_layout = manifest.read_layout(store, written.rejected_uri)
        read = time.perf_counter() - began
        assert table.num_rows == accepted.num_rows
        listing = PartList.model_validate_json(store.get(written.manifest_uri))
        phases.append(
            {
                "version": name,
                "write_s": round(wrote, 2),
                "read_s": round(read, 2),
                **written_figures(written, listing),
            }
        )
        return manifest.VersionLayout(accepted_layout, rejected_layout)

    first = version("first", first_rows, None)
    same = version("no change", first_rows, first)
    grown_rows = pa.concat_tables([first_rows, synthetic_table(max(1, rows // 100), seed=7, start=rows)])
    grown = version("+1 %", grown_rows, same)
    target = grown_rows.column("sample_id")[rows // 2]
    relabeled = grown_rows.set_column(
        grown_rows.schema.get_field_index("label"),
        "label",
        pc.if_else(pc.equal(grown_rows.column("sample_id"), target), "relabeled", grown_rows.column("label")),
    )
    version("relabel 1", relabeled, grown)
    result["phases"] = phases
    result["single_file_bytes"] = len(
        manifest.table_bytes(first_rows)
    )  # what the old layout rewrote each time
    result["part_rows"] = manifest.PART_ROWS
    return result


def whole_run(rows: int, tmp: Path, timeout: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"scale-whole-{rows}-", dir=tmp))
    try:
        found = child(["--one", str(rows), "--whole-one", "--tmp", str(root)], timeout)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"rows": rows, "mode": "whole", **found}


# --- printing -----------------------------------------------------------------------------------------


def mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


def mark(ok: bool) -> str:
    return "MEETS" if ok else "MISSES"


def ratios(phases: list[dict[str, Any]]) -> dict[str, float]:
    by = {p["version"]: p for p in phases}
    first = by["first"]
    return {
        f"{name} {what}": by[name][key] / first[key] if first[key] else float("nan")
        for name in ("no change", "+1 %", "relabel 1")
        if name in by
        for what, key in (("bytes", "bytes_written"), ("time", "write_s"))
    }


def print_scale(result: dict[str, Any]) -> None:
    rows = result["rows"]
    mode = "streaming" if result["mode"] == "stream" else "whole-table baseline (write_parts)"
    print(
        f"\n== {rows:,} accepted samples (+2 % rejected), {mode}, parts of {result.get('part_rows', '?')} rows"
    )
    if "error" in result:
        print(f"   not measured: {result['error']}")
    phases = result.get("phases", [])
    if not phases:
        return
    if result["mode"] == "stream":
        print(f"   {'version':<10} {'write s':>8} {'gen s':>6} {'process s':>9} {'peak RSS':>10} {'written':>12} "
              f"{'parts new':>9} {'reused':>7} {'manifest':>24}")  # fmt: skip
        for p in phases:
            text = f"{p['manifest_parts']} parts, {mib(p['manifest_bytes'])}"
            print(f"   {p['version']:<10} {p['write_s']:>8} {p['gen_s']:>6} {p['process_s']:>9} "
                  f"{p['peak_rss_mib']:>6} MiB {mib(p['bytes_written']):>12} {p['parts_written']:>9} "
                  f"{p['parts_reused']:>7} {text:>24}")  # fmt: skip
    else:
        print(
            f"   synthetic rows generated in {result['generate_s']} s, RSS {result['generate_rss_mib']} MiB"
        )
        print(f"   {'version':<10} {'write s':>8} {'read s':>7} {'peak RSS':>10} {'written':>12} {'parts new':>9} "
              f"{'reused':>7} {'manifest':>24}")  # fmt: skip
        for p in phases:
            text = f"{p['manifest_parts']} parts, {mib(p['manifest_bytes'])}"
            print(f"   {p['version']:<10} {p['write_s']:>8} {p['read_s']:>7} {p['peak_rss_mib']:>6} MiB "
                  f"{mib(p['bytes_written']):>12} {p['parts_written']:>9} {p['parts_reused']:>7} {text:>24}")  # fmt: skip
    found = ratios(phases)
    if found:
        print("   of the first version: " + ", ".join(f"{k} {v:.3%}" for k, v in found.items()))


def print_targets(streams: list[dict[str, Any]], wholes: list[dict[str, Any]]) -> None:
    print("\n== targets (issue 12)")

    def peak(result: dict[str, Any]) -> int:
        return int(max(p["peak_rss_mib"] for p in result["phases"]))

    for result in streams:
        if "error" in result or len(result.get("phases", [])) < len(PHASES):
            print(f"   {result['rows']:,} rows: not measured ({result.get('error', 'incomplete')})")
            continue
        rows, found = result["rows"], ratios(result["phases"])
        by = {p["version"]: p for p in result["phases"]}
        beside = [w for w in wholes if w["rows"] == rows and w.get("phases")]
        whole_text = f" (whole-table write_parts: {peak(beside[0])} MiB)" if beside else ""
        rss_text = f"peak RSS {peak(result)} MiB{whole_text}"
        if rows >= 10_000_000:
            rss_text += f": < {TARGET_RSS_MIB} MiB at 10M {mark(peak(result) < TARGET_RSS_MIB)}"
        print(f"   {rows:,} rows: {rss_text}")
        print(f"      +1 % bytes {found['+1 % bytes']:.2%} of first (<= {TARGET_RATIO:.0%}): "
              f"{mark(found['+1 % bytes'] <= TARGET_RATIO)}; +1 % time {found['+1 % time']:.2%} of first "
              f"(<= {TARGET_RATIO:.0%}): {mark(found['+1 % time'] <= TARGET_RATIO)}")  # fmt: skip
        no_change = by["no change"]["total_s"]
        text = f"      no change {no_change} s ({by['no change']['process_s']} s with the process start)"
        if rows == 1_000_000:
            text += f": < {TARGET_NO_CHANGE_S:.0f} s at 1M {mark(no_change < TARGET_NO_CHANGE_S)}"
        print(text)
    if not any(r["rows"] >= 10_000_000 for r in streams):
        print("   peak RSS < 1 GiB at 10M: not measured (add --rows 10000000)")


# --- a real pipeline ---------------------------------------------------------------------------------

SPEC = """\
apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {{name: cams}}
spec:
  filesystem: {{path: {images}}}
  labels: {{format: folder}}
---
apiVersion: loupe.dev/v1alpha1
kind: Dataset
metadata: {{name: bench}}
spec:
  sources: [{{name: cams}}]
  storage: {{uri: {store}}}
"""


TILE = (128, 96)  # small JPEGs (width, height): the per-object stage stays short, curation sees real content
# Passes over the photos: the non-overlapping grid first (about 16,300 tiles), then the photos rotated by
# these angles (degrees), each with a grid shifted by half a tile: rotated crops are distinct content (no
# hash variant matches a 15-degree turn, no tile is an axis-aligned crop of another), so 50,000 and
# 100,000 tiles stay real photo content.
ANGLES = (0, 15, 30, 45, 60, 75, 20, 40, 70, 10, 50, 80)


def tile_places(size: tuple[int, int], angle: int) -> list[tuple[int, int]]:
    """Tile corners of one pass over a photo of ``size``: with a turn, the half-tile-shifted grid cells
    whose corners stay 2 px inside the photo under the turn either way (no fill colour, no blurred edge)."""
    import math

    width, height = size
    if angle == 0:
        return [(left, top) for top in range(0, height - TILE[1] + 1, TILE[1])
                for left in range(0, width - TILE[0] + 1, TILE[0])]  # fmt: skip
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    cx, cy = width / 2, height / 2

    def inside(x: float, y: float) -> bool:
        dx, dy = x - cx, y - cy
        return all(2 <= cx + dx * cos - s * dy * sin <= width - 2 and 2 <= cy + s * dx * sin + dy * cos <= height - 2
                   for s in (1, -1))  # fmt: skip

    half = (TILE[0] // 2, TILE[1] // 2)
    return [(left, top) for top in range(half[1], height - TILE[1] + 1, TILE[1])
            for left in range(half[0], width - TILE[0] + 1, TILE[0])
            if all(inside(x, y) for x in (left, left + TILE[0]) for y in (top, top + TILE[1]))]  # fmt: skip


def make_photo_tiles(folder: Path, count: int, start: int = 0) -> None:
    """Tiles ``start`` to ``start + count`` of the development corpus photos (benchmarks/corpus.py), each
    a distinct 128x96 crop saved as JPEG in one of three label folders. Tiles are taken round-robin across
    the photos, pass by pass (``ANGLES``), so any prefix (and the +1 % that follows it) mixes every photo.
    Real content matters: the synthetic blocky scenes of earlier runs share sub-window hashes and gave far
    more crop candidates than photos do. The 36 photos hold about 16,300 tiles in the first pass and
    about 120,000 in all."""
    from PIL import Image

    import corpus

    photos = corpus.photos()
    sizes: list[tuple[int, int]] = []
    for path in photos:
        with Image.open(path) as opened:
            sizes.append(opened.size)
    order: list[tuple[int, int, tuple[int, int]]] = []
    for angle in ANGLES:
        places = [tile_places(size, angle) for size in sizes]
        order += [
            (k, angle, spots[i])
            for i in range(max(map(len, places)))
            for k, spots in enumerate(places)
            if i < len(spots)
        ]
        if len(order) >= start + count:
            break
    if len(order) < start + count:
        raise SystemExit(f"the corpus holds {len(order)} tiles of {TILE[0]}x{TILE[1]}, not {start + count}")
    wanted: dict[tuple[int, int], list[tuple[int, tuple[int, int]]]] = {}
    for n in range(start, start + count):
        k, angle, spot = order[n]
        wanted.setdefault((k, angle), []).append((n, spot))
    for (k, angle), tiles in sorted(wanted.items()):
        with Image.open(photos[k]) as opened:
            photo = opened.convert("RGB")
        if angle:
            photo = photo.rotate(angle, resample=Image.Resampling.BICUBIC)
        for n, (left, top) in tiles:
            target = folder / ["scratch", "dent", "ok"][n % 3] / f"tile-{n:06d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            photo.crop((left, top, left + TILE[0], top + TILE[1])).save(target, quality=90)


def part_bytes(store: Path) -> int:
    folder = store / "datasets" / "bench" / "parts"
    return sum(p.stat().st_size for p in folder.glob("*.parquet")) if folder.is_dir() else 0


def own_peak_mib() -> float:
    """This process's peak RSS since it started (VmHWM): ru_maxrss of a child starts from the RSS of the
    parent it was forked from (here the driver, which decoded the corpus photos to cut the tiles)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return rss_mib()


def pipeline_one(root: Path) -> dict[str, Any]:
    """One ``loupe run -f loupe.yaml --executor inline --json`` in this process (a child of the benchmark),
    with the run's phases timed: the CLI is called as its console script calls it, with its
    ``run_dataset`` wrapped to pass the phase callback that the CLI's --json mode leaves out."""
    began = time.perf_counter()
    import io
    import itertools

    from loupe_workers.cli import main as cli
    from loupe_workers.pipeline import run as pipeline

    imported = time.perf_counter()
    marks: list[tuple[str, float]] = []

    def timed_run(request: Any, **options: Any) -> Any:
        options["events"] = pipeline.RunEvents(phase=lambda text: marks.append((text, time.perf_counter())))
        marks.append(("start", time.perf_counter()))
        try:
            return pipeline.run_dataset(request, **options)
        finally:
            marks.append(("end", time.perf_counter()))

    cli.run_dataset = timed_run  # type: ignore[assignment]
    os.chdir(root)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.app(["run", "-f", "loupe.yaml", "--executor", "inline", "--json"], standalone_mode=False)
    phases = [[text.split(" ")[0], round(t2 - t1, 3)] for (text, t1), (_, t2) in itertools.pairwise(marks)]
    return {"result": json.loads(out.getvalue()), "phases": phases, "import_s": round(imported - began, 3),
            "rss_mib": round(own_peak_mib())}  # fmt: skip


def compiled_env(tmp: Path) -> dict[str, str]:
    """The children's environment: byte code cached (under ``tmp``), as an installed package has it, even
    where PYTHONDONTWRITEBYTECODE is set; otherwise each run compiles every module it imports (seconds)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(tmp / "loupe-bench-pycache")}


def pipeline_rows(count: int, tmp: Path, timeout: float) -> list[dict[str, Any]]:
    """A first version of ``count`` photo tiles, a run with nothing changed, and one with 1 % more tiles,
    each a fresh process (wall time includes interpreter start-up and imports; peak RSS is the run's)."""
    root = Path(tempfile.mkdtemp(prefix="scale-pipeline-", dir=tmp))
    try:
        images, store = root / "images", root / "store"
        make_photo_tiles(images, count)
        (root / "loupe.yaml").write_text(
            SPEC.format(images=json.dumps(str(images)), store=json.dumps(str(store)))
        )
        found: list[dict[str, Any]] = []
        for name in ("first", "no change", "+1 %"):
            if name == "+1 %":
                make_photo_tiles(images, max(1, count // 100), start=count)
            before = part_bytes(store)
            began = time.perf_counter()
            one = child(["--pipeline-one", str(root)], timeout, compiled_env(tmp))
            took = time.perf_counter() - began
            if "error" in one:
                found.append({"version": name, "error": one["error"]})
                break
            [result] = one["result"]
            found.append(
                {
                    "version": name,
                    "run_s": round(took, 2),
                    "rss_mib": one["rss_mib"],
                    "phases": one["phases"],
                    "import_s": one["import_s"],
                    "created": result.get("version") if result.get("created") else None,
                    "part_bytes_written": part_bytes(store) - before,
                }
            )
        return found
    finally:
        shutil.rmtree(root, ignore_errors=True)


def print_pipeline(count: int, found: list[dict[str, Any]]) -> None:
    first = next((f for f in found if f["version"] == "first" and "error" not in f), None)
    for f in found:
        if "error" in f:
            print(f"   {f['version']:<10} failed: {f['error']}")
            continue
        share = f" ({f['part_bytes_written'] / first['part_bytes_written']:.1%} of first)" if first else ""
        print(f"   {f['version']:<10} {f['run_s']:>7} s  peak RSS {f['rss_mib']:>5} MiB  version "
              f"{f['created'] or '-':<6} part bytes written {mib(f['part_bytes_written'])}{share}")  # fmt: skip
    plus = next((f for f in found if f["version"] == "+1 %" and "error" not in f), None)
    if first is None or plus is None:
        return
    ratio = plus["run_s"] / first["run_s"]
    print(
        f"   +1 % run {ratio:.1%} of the first run's time at {count:,} images "
        f"(target <= {TARGET_RATIO:.0%}): {mark(ratio <= TARGET_RATIO)}"
    )
    inside = sum(seconds for _, seconds in plus["phases"])
    split = ", ".join(f"{phase} {seconds:.2f}" for phase, seconds in plus["phases"])
    print(
        f"   +1 % phases (s): {split}; outside the run (start-up, imports {plus['import_s']:.2f}, exit) "
        f"{plus['run_s'] - inside:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, nargs="*", default=[1_000_000, 10_000_000], help="none: no manifest scale"
    )
    parser.add_argument(
        "--whole", type=int, nargs="*", help="also the whole-table baseline (default at 1,000,000 rows)"
    )
    parser.add_argument(
        "--pipeline", type=int, nargs="*", default=[], help="also real loupe runs over N photo tiles (each N)"
    )
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # one scale (or phase), in this process
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--whole-one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline-one", type=Path, help=argparse.SUPPRESS)  # one loupe run, in this process
    args = parser.parse_args()
    if args.pipeline_one is not None:
        print(json.dumps(pipeline_one(args.pipeline_one)))
        return 0
    if args.one is not None:
        if args.whole_one:
            print(json.dumps(whole_scale(args.one, args.tmp)))
        else:
            print(json.dumps(stream_phase(args.one, args.phase, args.tmp)))
        return 0
    from loupe_workers.storage import manifest

    print(f"manifest parts: {manifest.PART_ROWS} rows a full part, small below {manifest.SMALL_PART_ROWS}; "
          f"{os.cpu_count()} CPUs; rows generated {CHUNK:,} at a time")  # fmt: skip
    results: dict[str, Any] = {"scales": [], "whole": []}
    whole_rows = [] if args.whole is None else (args.whole or [1_000_000])
    for rows in whole_rows:
        result = whole_run(rows, args.tmp, args.timeout)
        results["whole"].append(result)
        print_scale(result)
    for rows in args.rows:
        result = stream_scale(rows, args.tmp, args.timeout)
        results["scales"].append(result)
        print_scale(result)
    if results["scales"] or results["whole"]:
        print_targets(results["scales"], results["whole"])
    if args.pipeline:  # untimed: fills the byte-code cache of every module a run imports
        pipeline_rows(30, args.tmp, args.timeout)
    for count in args.pipeline:
        print(f"\n== real pipeline: loupe run --executor inline over {count:,} distinct photo tiles "
              f"({TILE[0]}x{TILE[1]}), then no change, then 1 % more")  # fmt: skip
        found = pipeline_rows(count, args.tmp, args.timeout)
        results.setdefault("pipeline", {})[count] = found
        print_pipeline(count, found)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
