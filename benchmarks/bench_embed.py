"""Loupe embedding benchmark: the full embedding stage vs model-only inference, and near-duplicate
recall by transform with hashes only vs hashes + embeddings.

Run:  .venv/bin/python benchmarks/bench_embed.py [--images N] [--batch B] [--device cpu|gpu] [--out FILE]

Throughput: N JPEGs (640x480 and 1920x1080 variants of real scikit-image photos) are stored as blobs.
"model only" runs the ONNX model on batches that are already decoded and resized in memory; "stage"
is what a run does (read each blob from the store, decode at reduced scale, batch, infer, with decoding
of later batches overlapping inference), on the same images, in the same process, right after. The
target is stage / model-only >= 0.8.

Recall: every scikit-image photo plus copies made by one transform each, run through the real pipeline
(dedup action flag, so every copy stays and is grouped): a copy counts as found when it shares its
original's duplicate group. False merges count pairs of distinct photos put in one group.
It prints figures and writes JSON; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from loupe_api.dataset import DatasetSpec, DedupSpec, EmbeddingDedup, SourceRef  # noqa: E402
from loupe_api.ingest import IngestSourceSpec  # noqa: E402
from loupe_api.jobs import RunRequest  # noqa: E402
from loupe_storage.store import LocalStore, put_blob  # noqa: E402
from loupe_storage.versions import latest_version  # noqa: E402
from loupe_workers.embedding import embed  # noqa: E402
from loupe_workers.pipeline.run import run_dataset  # noqa: E402
from loupe_workers.storage import manifest  # noqa: E402
from support.photos import TRANSFORMS, jpeg, photo  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "horse", "moon", "page",
          "brick", "grass", "gravel", "retina", "immunohistochemistry", "hubble_deep_field", "clock",
          "motorcycle")  # fmt: skip
SIZES = ((640, 480), (1920, 1080))


def corpus(n: int, seed: int = 0) -> list[bytes]:
    """n distinct JPEG variants: random crop, resize to one of SIZES, random flip, colour gain."""
    rng = np.random.default_rng(seed)
    bases = [photo(name, long_side=2000) for name in PHOTOS]
    out = []
    for i in range(n):
        base = bases[i % len(bases)]
        width, height = SIZES[i % len(SIZES)]
        fraction = rng.uniform(0.6, 1.0)
        cw, ch = int(base.width * fraction), int(base.height * fraction)
        left, top = int(rng.integers(0, base.width - cw + 1)), int(rng.integers(0, base.height - ch + 1))
        image = base.crop((left, top, left + cw, top + ch)).resize((width, height), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.float32) * rng.uniform(0.85, 1.15, size=3)
        out.append(jpeg(Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)), quality=88))
    return out


def throughput(n: int, batch: int, device: str, repeats: int) -> dict[str, Any]:
    files = corpus(n)
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        shas = [put_blob(store, data) for data in files]
        config = embed.EmbedConfig(batch_size=batch, device=device)  # type: ignore[arg-type]
        embedder = embed.Embedder(config)
        decoded = np.stack([embed.decode_for_model(f, embedder.size, max_pixels=10**9) for f in files])
        embedder.infer(shas[:batch], decoded[:batch])  # warm-up: first run allocates
        model_times, stage_times = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(0, n, batch):
                embedder.infer(shas[i : i + batch], decoded[i : i + batch])
            model_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            result = embed.embed_inline(shas, store, config)
            stage_times.append(time.perf_counter() - start)
            assert len(result) == n
        decode_start = time.perf_counter()
        for f in files[: min(n, 64)]:
            embed.decode_for_model(f, embedder.size, max_pixels=10**9)
        decode_each = (time.perf_counter() - decode_start) / min(n, 64)
    model_rate = n / min(model_times)
    stage_rate = n / min(stage_times)
    return {
        "images": n,
        "batch": batch,
        "device": device,
        "providers": embedder.model.providers,
        "model_only_images_per_s": round(model_rate, 1),
        "stage_images_per_s": round(stage_rate, 1),
        "ratio": round(stage_rate / model_rate, 3),
        "decode_ms_per_image": round(decode_each * 1000, 2),
    }


def recall(threshold: float, size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = root / "images"
        images.mkdir()
        for name in PHOTOS:
            base = photo(name, long_side=size)
            (images / f"{name}.jpg").write_bytes(jpeg(base))
            for kind, transform in TRANSFORMS.items():
                (images / f"{name}__{kind}.jpg").write_bytes(jpeg(transform(base)))
        source = IngestSourceSpec.model_validate({"filesystem": {"path": str(images)}})
        results: dict[str, Any] = {}
        for mode, dedup in (
            ("hash", DedupSpec(action="flag")),
            ("hash+embedding", DedupSpec(action="flag", embedding=EmbeddingDedup(threshold=threshold))),
        ):
            spec = DatasetSpec(sources=[SourceRef(name="photos")], dedup=dedup)
            spec.quality_gates.resolution.enabled = False
            for gate in ("blur", "dark", "bright", "noise", "low_information", "aspect_ratio"):
                getattr(spec.quality_gates, gate).enabled = False
            store_uri = str(root / f"store-{mode.replace('+', '-')}")
            request = RunRequest(dataset="recall", spec=spec, sources={"photos": source}, store_uri=store_uri)
            run_dataset(request)
            store = LocalStore(store_uri)
            record = latest_version(store, "recall")
            assert record is not None
            rows = manifest.read_version_rows(store, record)
            group = {r["key"]: r["dup_group"] or r["sample_id"] for r in rows}
            per_kind: dict[str, float] = {}
            for kind in TRANSFORMS:
                found = sum(group[f"{n}__{kind}.jpg"] == group[f"{n}.jpg"] for n in PHOTOS)
                per_kind[kind] = round(found / len(PHOTOS), 3)
            originals = [group[f"{n}.jpg"] for n in PHOTOS]
            merges = sum(
                originals[i] == originals[j] for i in range(len(PHOTOS)) for j in range(i + 1, len(PHOTOS))
            )
            results[mode] = {"recall": per_kind, "false_merges_of_distinct_photos": merges}
        return {"photos": len(PHOTOS), "threshold": threshold, "long_side": size, **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=EmbeddingDedup().threshold)
    parser.add_argument("--recall-size", type=int, default=512, help="long side of the recall photos")
    parser.add_argument("--skip-recall", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report: dict[str, Any] = {"throughput": throughput(args.images, args.batch, args.device, args.repeats)}
    t = report["throughput"]
    print(
        f"embedding throughput ({t['images']} images, batch {t['batch']}, {t['providers'][0]}):\n"
        f"  model only  {t['model_only_images_per_s']:8.1f} images/s\n"
        f"  full stage  {t['stage_images_per_s']:8.1f} images/s  (read + reduced decode {t['decode_ms_per_image']} ms/image)\n"
        f"  ratio       {t['ratio']:8.3f}  target >= 0.8: {'MEETS' if t['ratio'] >= 0.8 else 'MISSES'}"
    )
    if not args.skip_recall:
        report["recall"] = r = recall(args.threshold, args.recall_size)
        print(f"near-duplicate recall by transform ({r['photos']} photos, cosine >= {r['threshold']}):")
        print(f"  {'transform':10s} {'hash':>6s} {'hash+emb':>9s}")
        for kind in TRANSFORMS:
            print(f"  {kind:10s} {r['hash']['recall'][kind]:6.2f} {r['hash+embedding']['recall'][kind]:9.2f}")
        print(
            f"  false merges of distinct photos: hash {r['hash']['false_merges_of_distinct_photos']}, "
            f"hash+emb {r['hash+embedding']['false_merges_of_distinct_photos']}"
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
