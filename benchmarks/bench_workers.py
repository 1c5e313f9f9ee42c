"""What more workers buy: one `loupe run` with 1 and 2 local worker processes, per stage (issue 12).

Run:  .venv/bin/python benchmarks/bench_workers.py [--files 400] [--executors pool ray] [--workers 1 2]

Each run is a first version of the same folder of distinct 640x480 JPEGs (non-overlapping tiles of the
development corpus photos, so no two are copies) into a fresh folder store, in this
process, through ``pipeline.run.run_dataset`` with a ``PoolExecutor(workers=k)`` (local processes) or a
``RayExecutor(parallelism=k)`` (a local Ray started once before timing, so its start-up is left out).
The run's own phase callbacks split the wall time into the per-object stage (decode, measures, hashes,
blob writes: what the executor spreads) and everything the driver does (listing, curation, commit).

It prints wall seconds per stage, the speed-up of k workers over 1 in the same session, and what that
implies for N nodes by Amdahl's law, T(N) = driver + per-object / N: the driver share is what a Ray
cluster does not shorten. Prints figures; asserts nothing. On a shared machine the figures swing with
load; the ratio between rows measured back to back is the figure to read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for folder in ("api", "workers"):
    sys.path.insert(0, str(REPO / folder))
sys.path.insert(0, str(REPO / "benchmarks"))  # corpus.py

PROCESSING = "processing "  # the phase that the executor runs (RunEvents.phase text)


def make_photos(folder: Path, count: int) -> int:
    """Up to ``count`` distinct real-photo JPEGs: non-overlapping 640x480 tiles of the development
    corpus photos at their own size (benchmarks/corpus.py), so that no two are copies and curation
    sees what real photos give it (synthetic scenes share sub-window hashes and make crop candidates
    that real photos do not). How many were written."""
    from PIL import Image

    import corpus

    written = 0
    for path in corpus.photos():
        with Image.open(path) as opened:
            photo = opened.convert("RGB")
        for top in range(0, photo.height - 479, 480):
            for left in range(0, photo.width - 639, 640):
                if written == count:
                    return written
                tile = photo.crop((left, top, left + 640, top + 480))
                tile.save(folder / f"{path.stem}-{top}-{left}.jpg", quality=90)
                written += 1
    return written


def one_run(images: Path, store: Path, executor: object) -> dict[str, float]:
    from loupe_api.dataset import DatasetSpec
    from loupe_api.ingest import IngestSourceSpec
    from loupe_api.jobs import RunRequest
    from loupe_workers.pipeline.run import RunEvents, run_dataset

    marks: list[tuple[str, float]] = []
    events = RunEvents(phase=lambda text: marks.append((text, time.perf_counter())))
    request = RunRequest(
        dataset="bench",
        spec=DatasetSpec.model_validate({"sources": [{"name": "cams"}]}),
        sources={"cams": IngestSourceSpec.model_validate({"filesystem": {"path": str(images)}})},
        store_uri=str(store),
    )
    began = time.perf_counter()
    result = run_dataset(request, executor=executor, events=events)  # type: ignore[arg-type]
    ended = time.perf_counter()
    starts = [t for text, t in marks if text.startswith(PROCESSING)]
    after = [t for text, t in marks if starts and t > starts[0]]
    per_object = (after[0] if after else ended) - starts[0] if starts else 0.0
    return {
        "wall_s": ended - began,
        "per_object_s": per_object,
        "driver_s": ended - began - per_object,
        "accepted": float(result.stats.accepted),
    }


def executor_for(kind: str, workers: int) -> object:
    from loupe_workers.compute.executor import PoolExecutor, RayExecutor

    if kind == "pool":
        return PoolExecutor(workers=workers)
    ray_executor = RayExecutor(parallelism=workers)
    ray_executor.ensure_ray()  # started once, outside the timing
    return ray_executor


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--executors", nargs="+", default=["pool", "ray"], choices=["pool", "ray"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-workers-", dir=args.tmp))
    try:
        images = root / "images"
        images.mkdir()
        files = make_photos(images, args.files)
        print(
            f"{files} JPEGs 640x480 (tiles of real photos); {len(os.sched_getaffinity(0))} CPUs visible",
            flush=True,
        )
        header = (
            "| executor | workers | wall s | per-object s | driver s | load (1 min) | per-object speed-up |"
        )
        print(header + "\n|" + " --- |" * 7)
        for kind in args.executors:
            # a first run, not reported, so that no row pays for lazy imports, first-use caches or
            # (Ray) starting its worker processes
            one_run(images, root / f"store-{kind}-warm-up", executor_for(kind, max(args.workers)))
            base: float | None = None
            figures: dict[int, dict[str, float]] = {}
            for workers in args.workers:
                store = root / f"store-{kind}-{workers}"
                got = one_run(images, store, executor_for(kind, workers))
                shutil.rmtree(store, ignore_errors=True)
                figures[workers] = got
                base = base if base is not None else got["per_object_s"] * args.workers[0]
                speedup = base / got["per_object_s"] if got["per_object_s"] else float("nan")
                print(f"| {kind} | {workers} | {got['wall_s']:.1f} | {got['per_object_s']:.1f} | "
                      f"{got['driver_s']:.1f} | {os.getloadavg()[0]:.1f} | {speedup:.2f}x |", flush=True)  # fmt: skip
            first = figures[args.workers[0]]
            one_worker = first["per_object_s"] * args.workers[0]  # the per-object work on one worker
            share = first["driver_s"] / (first["driver_s"] + one_worker)
            projection = ", ".join(
                f"{n} nodes {(first['driver_s'] + one_worker / n):.1f} s" for n in (1, 2, 4, 8, 32)
            )
            print(
                f"{kind}: driver share of a one-worker run {share:.0%}; Amdahl, per node one worker: {projection}"
            )
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
