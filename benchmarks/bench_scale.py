"""Manifest parts at scale: what a version costs to write when little changed (issue 12, item 1).

Run:  .venv/bin/python benchmarks/bench_scale.py [--rows 100000 1000000 10000000] [--pipeline 2000]

Manifest level (no decoding): synthetic processed rows, in the manifest schema with realistic columns
(sha256 ids, hash variants, metadata and labels JSON, metrics), are written through the real
``manifest.write_parts`` into a throwaway folder store, as the pipeline's commit does:

- first:     the first version (every part new);
- no change: the same rows again on top of it (a pipeline run would commit nothing at all; this shows
             that even a forced version writes only its three part lists);
- +1 %:      1 % new samples added;
- relabel:   one sample's label changed.

Each scale runs in its own process, so peak RSS (``ru_maxrss``, cumulative over the phases of that
process: generation, write, read back) belongs to that scale alone. ``bytes`` counts everything written
(parts and part lists). The old single-file layout rewrote the whole manifest, rejected and lineage files
for every version: the ``+1 % / first`` ratio of the old layout is 1.0 by construction (about 101 %).

``--pipeline N`` adds a real run through ``loupe run`` (inline executor) over N small JPEGs: first,
no-change and +1 % versions, bytes of manifest parts written each time.

Prints figures; asserts nothing. The issue's target is marked MEETS / MISSES: a +1 % version writes at
most 5 % of the first version's bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for folder in ("api", "workers"):
    sys.path.insert(0, str(REPO / folder))

TARGET_RATIO = 0.05


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


def synthetic_table(count: int, seed: int, start: int = 0) -> Any:
    """``count`` accepted rows in the manifest schema, as a processed run would give them."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from loupe_workers.storage import manifest

    rng = np.random.default_rng(seed + 1)
    index = pa.array(np.arange(start, start + count, dtype=np.int64))
    text_index = pc.cast(index, pa.string())
    line = pc.take(pa.array([f"line-{i}" for i in range(8)]), pa.array(rng.integers(0, 8, count)))
    labels = ["scratch", "dent", "ok", "crack", "stain"]
    label_index = pa.array(rng.integers(0, len(labels), count))
    label = pc.take(pa.array(labels), label_index)
    sha = hex_strings(count, 64, seed + 2)
    key = pc.binary_join_element_wise(line, "/img-", text_index, ".jpg", "")
    variants = hex_strings(count * 7, 16, seed + 3)
    columns: dict[str, Any] = {
        "sample_id": hex_strings(count, 64, seed),
        "sha256": sha,
        "disposition": pa.array(["accepted"] * count),
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


def one_scale(rows: int, root: Path) -> dict[str, Any]:
    """The four versions at one scale, in this process."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from loupe_storage.store import LocalStore
    from loupe_workers.storage import manifest

    store = LocalStore(root)
    began = time.perf_counter()
    first_rows = synthetic_table(rows, seed=1)
    rejected = synthetic_table(max(1, rows // 50), seed=99, start=10**9)  # 2 % left out
    rejected = rejected.set_column(
        rejected.schema.get_field_index("disposition"),
        "disposition",
        pa.array(["rejected"] * rejected.num_rows),
    )
    generated = time.perf_counter() - began
    result: dict[str, Any] = {
        "rows": rows,
        "generate_s": round(generated, 2),
        "generate_rss_mib": round(rss_mib()),
    }
    phases = []

    def version(name: str, accepted: Any, parent: manifest.VersionLayout | None) -> manifest.VersionLayout:
        began = time.perf_counter()
        written = manifest.write_parts(
            store, "bench", f"datasets/bench/runs/{name}", "1.0.0", accepted, rejected, parent
        )
        wrote = time.perf_counter() - began
        began = time.perf_counter()
        table, accepted_layout = manifest.read_layout(store, written.manifest_uri)
        _, rejected_layout = manifest.read_layout(store, written.rejected_uri)
        read = time.perf_counter() - began
        assert table.num_rows == accepted.num_rows
        listing = manifest.PartList.model_validate_json(store.get(written.manifest_uri))
        phases.append(
            {
                "version": name,
                "write_s": round(wrote, 2),
                "read_s": round(read, 2),
                "peak_rss_mib": round(rss_mib()),
                "bytes_written": written.stats.bytes_written,
                "parts_written": written.stats.parts_written,
                "parts_reused": written.stats.parts_reused,
                "manifest_parts": len(listing.parts),
                "manifest_bytes": listing.bytes,
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
    result["first_bytes"] = phases[0]["bytes_written"]
    result["ratio_plus_1pct"] = phases[2]["bytes_written"] / phases[0]["bytes_written"]
    result["ratio_no_change"] = phases[1]["bytes_written"] / phases[0]["bytes_written"]
    result["ratio_relabel"] = phases[3]["bytes_written"] / phases[0]["bytes_written"]
    result["single_file_bytes"] = len(
        manifest.table_bytes(first_rows)
    )  # what the old layout rewrote each time
    result["part_rows"] = manifest.PART_ROWS
    return result


def run_scale(rows: int, tmp: Path, timeout: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"scale-{rows}-", dir=tmp))
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(rows), "--tmp", str(root)],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"rows": rows, "error": f"did not finish within {timeout:.0f} s"}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if done.returncode != 0:
        killed = done.returncode in (-9, 137)
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        why = "killed (out of memory?)" if killed else f"exit {done.returncode}: {tail[-300:]}"
        return {"rows": rows, "error": why}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


def print_scale(result: dict[str, Any]) -> None:
    rows = result["rows"]
    print(f"\n== {rows:,} accepted samples (+2 % rejected), parts of {result.get('part_rows', '?')} rows")
    if "error" in result:
        print(f"   not measured: {result['error']}")
        return
    print(f"   synthetic rows generated in {result['generate_s']} s, RSS {result['generate_rss_mib']} MiB")
    print(f"   {'version':<10} {'write s':>8} {'read s':>7} {'peak RSS':>10} {'written':>12} {'parts new':>9} "
          f"{'reused':>7} {'manifest':>22}")  # fmt: skip
    for p in result["phases"]:
        manifest_text = f"{p['manifest_parts']} parts, {mib(p['manifest_bytes'])}"
        print(f"   {p['version']:<10} {p['write_s']:>8} {p['read_s']:>7} {p['peak_rss_mib']:>6} MiB "
              f"{mib(p['bytes_written']):>12} {p['parts_written']:>9} {p['parts_reused']:>7} {manifest_text:>22}")  # fmt: skip
    ratio = result["ratio_plus_1pct"]
    mark = "MEETS" if ratio <= TARGET_RATIO else "MISSES"
    print(f"   +1 % version / first version bytes: {ratio:.2%}  (target <= {TARGET_RATIO:.0%}: {mark}); "
          f"no change {result['ratio_no_change']:.4%}, relabel of one sample {result['ratio_relabel']:.2%}")  # fmt: skip
    print(f"   single-file layout (before parts): every version rewrote all, {mib(result['single_file_bytes'])} "
          "of manifest alone, ratio about 101 %")  # fmt: skip


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


def make_jpegs(folder: Path, count: int, start: int = 0) -> None:
    import numpy as np
    from PIL import Image

    for i in range(start, start + count):
        rng = np.random.default_rng(i)
        base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        pixels = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))  # 96x128 blocks: distinct, decodable
        target = folder / ["scratch", "dent", "ok"][i % 3] / f"img-{i:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target, quality=90)


def part_bytes(store: Path) -> int:
    folder = store / "datasets" / "bench" / "parts"
    return sum(p.stat().st_size for p in folder.glob("*.parquet")) if folder.is_dir() else 0


def pipeline_rows(count: int, tmp: Path) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="scale-pipeline-", dir=tmp))
    try:
        images, store = root / "images", root / "store"
        make_jpegs(images, count)
        (root / "loupe.yaml").write_text(
            SPEC.format(images=json.dumps(str(images)), store=json.dumps(str(store)))
        )
        found = []
        for name in ("first", "no change", "+1 %"):
            if name == "+1 %":
                make_jpegs(images, max(1, count // 100), start=count)
            before = part_bytes(store)
            began = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "loupe_workers.cli.main", "run", "-f", "loupe.yaml", "--executor", "inline",
                 "--json"], cwd=root, capture_output=True, text=True, timeout=1800, check=False,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / f) for f in ("api", "workers"))},
            )  # fmt: skip
            took = time.perf_counter() - began
            if done.returncode != 0:
                found.append({"version": name, "error": done.stderr.strip()[-300:]})
                break
            [result] = json.loads(done.stdout)
            found.append(
                {
                    "version": name,
                    "run_s": round(took, 1),
                    "created": result.get("version") if result.get("created") else None,
                    "part_bytes_written": part_bytes(store) - before,
                }
            )
        return found
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--pipeline", type=int, default=0, help="also a real loupe run over N small JPEGs")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # one scale, in this process
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_scale(args.one, args.tmp)))
        return 0
    from loupe_workers.storage import manifest

    print(f"manifest parts: {manifest.PART_ROWS} rows a full part, small below {manifest.SMALL_PART_ROWS}; "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    results: dict[str, Any] = {"scales": []}
    for rows in args.rows:
        result = run_scale(rows, args.tmp, args.timeout)
        results["scales"].append(result)
        print_scale(result)
    if args.pipeline:
        print(f"\n== real pipeline: loupe run --executor inline over {args.pipeline} small JPEGs (96x128)")
        found = pipeline_rows(args.pipeline, args.tmp)
        results["pipeline"] = found
        first = next(
            (f["part_bytes_written"] for f in found if f["version"] == "first" and "error" not in f), 0
        )
        for f in found:
            if "error" in f:
                print(f"   {f['version']:<10} failed: {f['error']}")
                continue
            share = f" ({f['part_bytes_written'] / first:.1%} of first)" if first else ""
            print(f"   {f['version']:<10} {f['run_s']:>7} s  version {f['created'] or '-':<6} "
                  f"part bytes written {mib(f['part_bytes_written'])}{share}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
