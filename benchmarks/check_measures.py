"""Guard for speed work on the per-image measures: save every stored measure, hash and keep measure of a
fixed set of real photos, change the code, and compare. Hashes and keep digests must be bit-identical,
every measure within --tolerance (relative; default 1e-4).

Run:  .venv/bin/python benchmarks/check_measures.py save /tmp/measures-before.json
      (edit media/metrics.py or media/decode.py)
      .venv/bin/python benchmarks/check_measures.py compare /tmp/measures-before.json

Photos: the development corpus (benchmarks/corpus.py, camera photos) as stored (JPEG, drafted on decode),
re-encoded at long sides 3000, 1280 and 640 (JPEG), 640 (PNG), 900 (WebP) and as a grey JPEG; plus the
near-duplicate benchmark's 640 px copies (bench_near_duplicates.build: 22 edits of every photo). With the
36 development photos, about 1,500 images. Prints figures; exits 1 when something differs.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from loupe_workers.media import decode as media  # noqa: E402

VARIANTS = ((3000, "JPEG"), (1280, "JPEG"), (640, "JPEG"), (640, "PNG"), (900, "WEBP"))


def images() -> list[tuple[str, bytes]]:
    import bench_near_duplicates
    import corpus

    out: list[tuple[str, bytes]] = []
    for path in corpus.photos():
        name = path.parents[2].name if path.stem[:1].isdigit() else path.stem
        out.append((f"{name}-stored", path.read_bytes()))
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        for side, fmt in VARIANTS:
            scale = side / max(image.size)
            size = (round(image.width * scale), round(image.height * scale))
            buffer = io.BytesIO()
            image.resize(size, Image.Resampling.LANCZOS).save(buffer, fmt, quality=92)
            out.append((f"{name}-{side}-{fmt}", buffer.getvalue()))
        buffer = io.BytesIO()
        image.convert("L").save(buffer, "JPEG", quality=90)
        out.append((f"{name}-grey", buffer.getvalue()))
    with tempfile.TemporaryDirectory() as tmp:
        out += [(item["file"], item["data"]) for item in bench_near_duplicates.build(Path(tmp), 640)]
    return out


def measure(items: list[tuple[str, bytes]]) -> tuple[dict[str, Any], float, float]:
    """Every image's analysis, and every 4th one's keep measures and pixel digest; CPU s of each."""
    out: dict[str, Any] = {}
    analyse_s = keep_s = 0.0
    for index, (name, data) in enumerate(items):
        start = time.process_time()
        try:
            a = media.analyze_image(data, max_pixels=media.DEFAULT_MAX_PIXELS)
            entry: dict[str, Any] = {
                "metrics": a.metrics, "hashes": a.hashes, "variants": a.hash_variants,
                "size": [a.width, a.height], "format": a.format, "exif": a.exif,
            }  # fmt: skip
        except media.ImageRejected as error:
            entry = {"rejected": error.reason}
        analyse_s += time.process_time() - start
        if index % 4 == 0:
            start = time.process_time()
            keep: dict[str, float] = {}
            try:
                entry["digest"] = media.pixel_digest(data, keep=keep)
            except media.ImageRejected as error:
                entry["digest"] = f"rejected: {error.reason}"
            entry["keep"] = keep
            keep_s += time.process_time() - start
        out[name] = entry
    return out, analyse_s, keep_s


def compare(before: dict[str, Any], after: dict[str, Any], tolerance: float) -> int:
    """Prints the worst relative difference of every measure; returns how many things differ."""
    problems = 0
    if before.keys() != after.keys():
        print(f"image sets differ: {len(before)} before, {len(after)} after")
        return 1
    worst: dict[str, tuple[float, str, float, float]] = {}
    for name, old in before.items():
        new = after[name]
        for field in ("hashes", "variants", "size", "format", "exif", "rejected", "digest"):
            if old.get(field) != new.get(field):
                problems += 1
                print(f"  {name}: {field} differs")
        for group in ("metrics", "keep"):
            for key, value in old.get(group, {}).items():
                other = new.get(group, {}).get(key)
                if other is None:
                    problems += 1
                    print(f"  {name}: {group}.{key} missing")
                    continue
                rel = abs(other - value) / max(abs(value), 1e-6)
                if rel >= worst.get(f"{group}.{key}", (-1.0, "", 0.0, 0.0))[0]:
                    worst[f"{group}.{key}"] = (rel, name, value, other)
    for key, (rel, name, value, other) in sorted(worst.items()):
        flag = "  OVER" if rel > tolerance else ""
        problems += rel > tolerance
        print(f"  {key:22s} max relative difference {rel:.2e}  ({name}: {value} -> {other}){flag}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("save", "compare"))
    parser.add_argument("path", type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    items = images()
    measured, analyse_s, keep_s = measure(items)
    keeps = len(range(0, len(items), 4))
    print(
        f"{len(items)} images: analysis {1000 * analyse_s / len(items):.2f} ms/image, keep measures + digest "
        f"{1000 * keep_s / keeps:.2f} ms/image ({keeps} images), CPU"
    )
    if args.action == "save":
        args.path.write_text(json.dumps(measured))
        return 0
    problems = compare(json.loads(args.path.read_text()), measured, args.tolerance)
    print(f"{problems} differences beyond the tolerance" if problems else "identical within the tolerance")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
