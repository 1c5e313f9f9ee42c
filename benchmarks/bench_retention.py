"""Bytes before and after retention and garbage collection, for a realistic history of versions.

Run:  .venv/bin/python benchmarks/bench_retention.py [--versions 10] [--start 12] [--churn 2] [--keep-last 3]
      [--tiers] [--out results.json]

The photos are the development corpus (benchmarks/corpus.py: real camera photographs from Debian's
wallpaper packages, kept apart from the test fixtures). The first version holds ``--start`` photos; each
next one drops the ``--churn`` oldest and adds ``--churn`` new ones, as a camera line's folder does. Every
version is built with the real CLI (`loupe run --executor inline`) on a folder store; then
`loupe gc -f` applies ``keepLast`` (one version is tagged, as production would be) and collects. It
prints the store's bytes (all, and blobs alone) before and after, what gc reports it freed, and how
long gc took; it asserts nothing. With ``--tiers`` it also copies the store to a local MinIO and times
tiering passes (spec.retention.tiers), counting the manifest objects each reads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "01-quickstart" / "loupe.yaml"
sys.path.insert(0, str(REPO / "benchmarks"))


def loupe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "loupe_workers.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"loupe {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def store_bytes(root: Path) -> tuple[int, int, int]:
    """(all bytes, blob bytes, objects) of a folder store."""
    files = [p for p in root.rglob("*") if p.is_file()]
    blobs = sum(p.stat().st_size for p in files if p.relative_to(root).parts[0] == "blobs")
    return sum(p.stat().st_size for p in files), blobs, len(files)


def measure_tiers(root: Path, keep_last: int) -> dict[str, tuple[int, float]]:
    """Tiering passes over a copy of the store on MinIO, every version but the newest ``keep_last``
    backdated past the tier: (manifest objects read, seconds) of the pass that moves, of a settled pass,
    and of a settled pass without the record of the last one (what every pass cost before it existed)."""
    from datetime import UTC, datetime, timedelta

    sys.path.insert(0, str(REPO / "tests"))
    from loupe_api.keys import dataset_prefix, manifest_part_key, run_prefix, tiers_pass_key, version_key_of
    from loupe_api.retention import RetentionSpec
    from loupe_storage.store import LocalStore, S3Store
    from loupe_storage.versions import version_names
    from loupe_workers.versioning.tiers import apply_tiers
    from support.minio_server import MinioServer

    local = LocalStore(root)
    old = datetime.now(UTC) - timedelta(days=40)
    for version in version_names(local, "defects")[:-keep_last]:
        body = json.loads(local.get(version_key_of("defects", version)))
        body["created"] = old.isoformat()
        local.put(version_key_of("defects", version), json.dumps(body).encode())
    spec = RetentionSpec.model_validate({"keepLast": keep_last,
                                         "tiers": [{"after": "30d", "storageClass": "REDUCED_REDUNDANCY"}]})  # fmt: skip
    found: dict[str, tuple[int, float]] = {}
    with MinioServer() as server:
        os.environ.update(AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key)
        bucket = server.make_bucket("bench-tiers")
        client = server.client()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            client.upload_file(str(path), bucket, f"loupe/{path.relative_to(root).as_posix()}")
        store = S3Store(bucket, "loupe", endpoint=server.endpoint)
        real = store.get
        reads = [0]
        manifests = (
            run_prefix("defects", ""),
            manifest_part_key(dataset_prefix("defects"), "")[: -len(".parquet")],
        )

        def counted(key: str) -> bytes:
            reads[0] += key.startswith(manifests)
            return real(key)

        store.get = counted  # type: ignore[method-assign]
        for name in ("first (moves)", "settled", "settled, no record of the last pass (before)"):
            if name.startswith("settled, no record"):
                store.delete(tiers_pass_key("defects"))
            reads[0] = 0
            started = time.perf_counter()
            apply_tiers(store, "defects", spec)
            found[name] = (reads[0], round(time.perf_counter() - started, 3))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--start", type=int, default=12, help="photos in the first version")
    parser.add_argument("--churn", type=int, default=2, help="photos dropped and added per version")
    parser.add_argument("--keep-last", type=int, default=3)
    parser.add_argument("--tag", type=int, default=-4,
                        help="index of the version tagged production (-4: just before the keepLast window)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--tiers", action="store_true",
                        help="also time tiering passes on a local MinIO (tests/support/minio_server.py)")  # fmt: skip
    args = parser.parse_args(argv)

    from corpus import photos

    pool = photos()
    needed = args.start + args.churn * (args.versions - 1)
    if len(pool) < needed:
        raise SystemExit(f"the corpus has {len(pool)} photos; {needed} are needed: lower --churn or --start")
    work = Path(tempfile.mkdtemp(prefix="loupe-bench-retention-"))
    try:
        project = work / "project"
        images = project / "images" / "camera"
        images.mkdir(parents=True)
        documents = list(yaml.safe_load_all(QUICKSTART.read_text()))
        (project / "loupe.yaml").write_text(yaml.safe_dump_all(documents))
        live: list[Path] = []
        versions: list[str] = []
        build_seconds = 0.0
        for step in range(args.versions):
            if step == 0:
                incoming = pool[: args.start]
            else:
                for gone in live[: args.churn]:
                    (images / gone.name).unlink()
                live = live[args.churn :]
                first = args.start + args.churn * (step - 1)
                incoming = pool[first : first + args.churn]
            for path in incoming:
                shutil.copy(path, images / f"{path.parent.name}-{path.name}")
                live.append(images / f"{path.parent.name}-{path.name}")
            started = time.perf_counter()
            done = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=project)
            build_seconds += time.perf_counter() - started
            versions.append(str(json.loads(done.stdout)[0]["version"]))
        loupe("tag", f"defects@{versions[args.tag]}", "production", cwd=project)  # a tagged version stays
        store = project / ".loupe"
        before = store_bytes(store)
        tier_passes = measure_tiers(store, args.keep_last) if args.tiers else None

        for document in documents:
            if document["kind"] == "Dataset":
                document["spec"]["retention"] = {"keepLast": args.keep_last}
        (project / "loupe.yaml").write_text(yaml.safe_dump_all(documents))
        started = time.perf_counter()
        report = json.loads(loupe("gc", "-f", "loupe.yaml", "--json", cwd=project).stdout)
        gc_seconds = time.perf_counter() - started
        after = store_bytes(store)
        figures: dict[str, Any] = {
            "corpus": f"benchmarks/corpus.py dev corpus, {needed} of {len(pool)} photos",
            "versions": args.versions, "photosPerVersion": args.start, "churnPerVersion": args.churn,
            "keepLast": args.keep_last, "tagged": versions[args.tag],
            "expired": report["expired"].get("defects", []),
            "bytesBefore": before[0], "blobBytesBefore": before[1], "objectsBefore": before[2],
            "bytesAfter": after[0], "blobBytesAfter": after[1], "objectsAfter": after[2],
            "freedBytesReported": report["freedBytes"], "deletedObjects": report["deleted"],
            "gcSeconds": round(gc_seconds, 2), "buildSecondsPerVersion": round(build_seconds / args.versions, 2),
        }  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = 1e6
    print(f"corpus: {figures['corpus']}; {args.versions} versions of {args.start} photos, "
          f"{args.churn} out and {args.churn} in per version")  # fmt: skip
    print(f"before gc: {before[0] / mb:.1f} MB in {before[2]} objects ({before[1] / mb:.1f} MB of blobs)")
    print(f"after gc (keepLast {args.keep_last}, {versions[args.tag]} tagged): {after[0] / mb:.1f} MB in "
          f"{after[2]} objects ({after[1] / mb:.1f} MB of blobs); expired {', '.join(figures['expired'])}")  # fmt: skip
    print(f"gc reported {report['freedBytes'] / mb:.1f} MB freed in {report['deleted']} objects, "
          f"in {gc_seconds:.1f} s; building took {figures['buildSecondsPerVersion']} s per version")  # fmt: skip
    if tier_passes is not None:
        figures["tierPasses"] = tier_passes
        for name, (reads, seconds) in tier_passes.items():
            print(f"tiering pass on MinIO, {name}: {reads} manifest objects read, {seconds:.2f} s")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
