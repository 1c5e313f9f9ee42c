"""Duplicate grouping on long chains of similar images (dedup.find_duplicates): CPU and peak memory as N grows.

Run:  .venv/bin/python benchmarks/bench_grouping.py [--sizes 2000 4000 8000 16000] [--code DIR]

The records: N new images whose 64-bit hashes walk 3 random bits at a time (each within the near
threshold of its next two neighbours: one connected set of N, as tiles of one large photo or frames of
one scene give), each with 7 random orientation hashes and 27 window hashes 7 bits from its own (so crop
candidates are many), a verifier that confirms pairs up to 4 apart at an even distance, and shape
measures that letterbox every fourth image. Per N, each in its own process (``ru_maxrss`` is that run's
peak), it prints CPU seconds, peak RSS, verifications, groups and the largest group for

- ``default``: find_duplicates as it is (a connected set over dedup.LARGEST_COMPARED is grouped around
  its best-connected members);
- ``whole``: the same code with no limit (every star's kept copy chosen among the whole connected set
  that is left, the rule for sets up to the limit): the baseline, with the ratio of its CPU to default's;
- ``--code DIR``: also find_duplicates from the ``workers/`` and ``api/`` in DIR (e.g. an earlier commit,
  ``git archive COMMIT api workers | tar -x -C DIR``), with its ratio.

A run longer than ``--limit`` seconds is stopped and shown as such. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    value = int(rng.integers(0, 1 << 63))

    def flipped(x: int, bits: int) -> str:
        for bit in rng.choice(64, size=bits, replace=False).tolist():
            x ^= 1 << bit
        return f"{x:016x}"

    out = []
    for k in range(n):
        value = int(flipped(value, 3), 16)
        turned = [f"{int(rng.integers(0, 1 << 63)):016x}" for _ in range(7)]
        windows = [flipped(value, 7) for _ in range(27)]
        out.append({
            "sample_id": f"{(k * 2654435761) % (1 << 64):016x}{k:048x}", "sha256": f"{k:064x}",
            "source": "bench", "key": f"k{k:07d}", "hash": f"{value:016x}", "hash_variants": turned + windows,
            "width": 640, "height": 480 if k % 3 else 400, "size": 1000 + k, "format": "jpeg", "status": "ok",
        })  # fmt: skip
    return out


def one(n: int, mode: str) -> dict[str, Any]:
    """One grouping in this process (``mode`` whole: no limit on the connected sets judged at once)."""
    from loupe_api.dataset import DedupSpec
    from loupe_workers.curation import dedup

    if mode == "whole":
        dedup.LARGEST_COMPARED = sys.maxsize
    made = records(n)
    checked = [0]

    class Verify:
        def __call__(self, a: dict[str, Any], b: dict[str, Any]) -> float | None:
            checked[0] += 1
            apart = abs(int(a["key"][1:]) - int(b["key"][1:]))
            return 1.1 if apart <= 4 and apart % 2 == 0 else None

        def expect_mirrored(self, shas: Any) -> None:
            pass

    def shape(r: dict[str, Any]) -> dict[str, float]:
        k = int(r["key"][1:])
        return {"padded": 0.05 if k % 4 == 0 else 0.0, "content_aspect": 1.33 if k % 8 == 0 else 1.6}

    start = time.process_time()
    result = dedup.find_duplicates(
        made, DedupSpec(), is_new=[True] * n, previously_kept=set(), pixel_digest=lambda r: r["sha256"],
        keep_measures=shape, verify=Verify(), shape_measures=shape,
    )  # fmt: skip
    cpu = time.process_time() - start
    sizes: dict[str, int] = {}
    for info in result:
        if info.group:
            sizes[info.group] = sizes.get(info.group, 0) + 1
    return {"cpu": cpu, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "verified": checked[0], "groups": len(sizes), "largest": max(sizes.values(), default=0)}  # fmt: skip


def measure(n: int, mode: str, code: Path, limit: float) -> dict[str, Any] | None:
    paths = [str(code / "api"), str(code / "workers")]
    program = (
        f"import sys; sys.path[:0] = {paths!r}; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); "
        f"import json, bench_grouping; print(json.dumps(bench_grouping.one({n}, {mode!r})))"
    )
    try:
        done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000, 8000, 16000])
    parser.add_argument("--code", type=Path, help="also the find_duplicates of api/ and workers/ in DIR")
    parser.add_argument("--limit", type=float, default=900, help="seconds a grouping may take")
    args = parser.parse_args()
    modes = [("default", REPO, "default"), ("whole", REPO, "whole")]
    if args.code is not None:
        modes.append((f"code {args.code}", args.code, "default"))
    print(f"{'N':>7}  {'run':<28} {'CPU s':>8} {'x default':>9} {'peak MiB':>9} {'verified':>9} "
          f"{'groups':>7} {'largest':>7}")  # fmt: skip
    for n in args.sizes:
        base: float | None = None
        for label, code, mode in modes:
            found = measure(n, mode, code, args.limit)
            if found is None:
                print(f"{n:>7,}  {label:<28} {'> ' + str(int(args.limit)):>8} (stopped)")
                continue
            base = found["cpu"] if base is None else base
            print(f"{n:>7,}  {label:<28} {found['cpu']:>8.2f} {found['cpu'] / max(base, 1e-9):>9.2f} "
                  f"{found['rss_mib']:>9.0f} {found['verified']:>9,} {found['groups']:>7,} {found['largest']:>7}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
