"""The rendition stage: every rendition of the spec for every accepted sample, computed where missing.

A rendition lives at ``keys.rendition_key(params digest, source sha256, ext)``: its bytes depend on the
source content and the parameters only (media.renditions is deterministic), so the key alone tells
whether any earlier run, version or dataset of the store computed it. The stage

- takes an entry from a previous manifest row (same sha256, same key) without touching the store;
- else finds the object in the store (another dataset made it) and reads it back for its size and
  digest, writing nothing;
- else renders it, in this process, a local pool or as Ray Data tasks (the run's executor decides), and
  writes it with a create-if-absent put (two runs at once write the same bytes).

A sample whose rendition the guard refuses (or that fails to convert) is quarantined, and the run goes on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loupe_api.dataset import DatasetStats
from loupe_api.keys import blob_key, rendition_key
from loupe_api.renditions import RenditionSpec
from loupe_api.samples import Disposition, SampleRow
from loupe_storage.store import ObjectStore
from loupe_workers.compute.executor import (
    POOL_MIN_CPUS,
    POOL_MIN_OBJECTS,
    AutoExecutor,
    Executor,
    PoolExecutor,
    RayExecutor,
    pool_workers,
    ray_task_memory,
)
from loupe_workers.media import decode
from loupe_workers.media.renditions import render
from loupe_workers.versioning.semver import SampleState

Entry = dict[str, Any]  # {key, sha256, format, width, height, bytes}
QUARANTINE_REASON = "rendition"
BATCH = 8


@dataclass(frozen=True)
class Limits:
    """The decode guard's limits (spec.qualityGates.maxPixels)."""

    max_pixels: int = decode.DEFAULT_MAX_PIXELS
    memory_limit: int = decode.DEFAULT_MEMORY_LIMIT


@dataclass
class RenditionResult:
    """The entries of each sample (by source sha256), what failed, and what the stage cost."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # source sha256 -> why (one line)
    computed: int = 0  # renditions rendered and written by this run
    found: int = 0  # present in the store already (another dataset or run made them)
    carried: int = 0  # taken from the previous version's rows


def key_of(spec: RenditionSpec, sha256: str) -> str:
    return rendition_key(spec.digest(), sha256, spec.extension)


def _entry(key: str, data: bytes, fmt: str, width: int, height: int) -> Entry:
    return {
        "key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": fmt,
        "width": width,
        "height": height,
        "bytes": len(data),
    }


def _found(store: ObjectStore, key: str, fmt: str) -> Entry | None:
    """The entry of a rendition already in the store (its size read from the header), or None."""
    from PIL import Image

    try:
        data = store.get(key)
    except KeyError:
        return None
    with Image.open(io.BytesIO(data)) as image:  # our own output: a small, well-formed file
        width, height = image.size
    return _entry(key, data, fmt, width, height)


def render_one(
    sha256: str, specs: Mapping[str, RenditionSpec], blobs: ObjectStore, limits: Limits
) -> tuple[dict[str, Entry], str | None]:
    """Render and store the renditions ``specs`` of one blob: its entries, or why it failed."""
    data = blobs.get(blob_key(sha256))
    out: dict[str, Entry] = {}
    for name, spec in sorted(specs.items()):
        key = key_of(spec, sha256)
        try:
            made = render(data, spec, max_pixels=limits.max_pixels, memory_limit=limits.memory_limit)
        except decode.ImageRejected as error:
            return out, f"rendition {name}: {error.detail}"
        blobs.put_if_absent(key, made.data)
        out[name] = _entry(key, made.data, made.format, made.width, made.height)
    return out, None


Task = tuple[str, dict[str, RenditionSpec]]  # a source sha256 and the renditions it lacks


def _run_tasks(tasks: list[Task], blobs: ObjectStore, limits: Limits) -> list[str]:
    return [json.dumps(render_one(sha, specs, blobs, limits)) for sha, specs in tasks]


def _ray_batch(batch: dict[str, Any], blobs: ObjectStore, limits: Limits) -> dict[str, list[str]]:
    tasks = [(str(sha), {n: RenditionSpec.model_validate_json(s) for n, s in json.loads(specs).items()})
             for sha, specs in zip(batch["sha256"], batch["specs"], strict=True)]  # fmt: skip
    return {"sha256": [t[0] for t in tasks], "result": _run_tasks(tasks, blobs, limits)}


def _on_ray(tasks: list[Task], blobs: ObjectStore, limits: Limits, ray_executor: RayExecutor) -> list[str]:
    import ray

    ray_executor.ensure_ray()
    items = [
        {"sha256": sha, "specs": json.dumps({n: s.model_dump_json() for n, s in specs.items()})}
        for sha, specs in tasks
    ]
    blocks = max(1, min(len(items) // BATCH, 200))
    dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        _ray_batch,  # type: ignore[arg-type]  # ray's stub does not model fn_kwargs
        fn_kwargs={"blobs": blobs, "limits": limits},
        batch_size=BATCH,
        batch_format="numpy",
        num_cpus=1,
        memory=ray_task_memory(limits.memory_limit, BATCH << 20),
    )
    by_sha = {str(row["sha256"]): str(row["result"]) for row in dataset.iter_rows()}
    return [by_sha[sha] for sha, _ in tasks]


def _in_pool(tasks: list[Task], blobs: ObjectStore, limits: Limits, workers: int | None) -> list[str]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunks = [tasks[i : i + BATCH] for i in range(0, len(tasks), BATCH)]
    context = multiprocessing.get_context("forkserver")  # as the object pool: no inherited threads
    with ProcessPoolExecutor(workers or pool_workers(limits.memory_limit), mp_context=context) as pool:
        parts = pool.map(_run_tasks, chunks, [blobs] * len(chunks), [limits] * len(chunks))
        return [result for part in parts for result in part]


def execute(tasks: list[Task], blobs: ObjectStore, limits: Limits, executor: Executor) -> list[str]:
    """Each task's JSON result, in order, where the run's executor runs per-object work."""
    if not tasks:
        return []
    chosen: Executor = executor
    if isinstance(executor, AutoExecutor):
        if executor.ray is not None:
            chosen = executor.ray
        elif len(tasks) >= POOL_MIN_OBJECTS and len(os.sched_getaffinity(0)) >= POOL_MIN_CPUS:
            chosen = PoolExecutor(workers=executor.parallelism)
    if isinstance(chosen, RayExecutor):
        return _on_ray(tasks, blobs, limits, chosen)
    if isinstance(chosen, PoolExecutor):
        return _in_pool(tasks, blobs, limits, chosen.workers)
    return _run_tasks(tasks, blobs, limits)


def _previous(rows: Iterable[SampleRow]) -> dict[str, dict[str, Entry]]:
    """Entries recorded by earlier manifest rows, by source sha256."""
    out: dict[str, dict[str, Entry]] = {}
    for row in rows:
        text = row.get("renditions")
        if not text:
            continue
        try:
            stored = json.loads(text)
        except ValueError:
            continue
        if isinstance(stored, dict):
            out.setdefault(str(row["sha256"]), {}).update(stored)
    return out


def ensure_renditions(
    store: ObjectStore,
    shas: Iterable[str],
    specs: Mapping[str, RenditionSpec],
    *,
    executor: Executor,
    limits: Limits,
    previous_rows: Iterable[SampleRow] = (),
    progress: Callable[[int], None] = lambda _: None,
) -> RenditionResult:
    """Every rendition of ``specs`` for every sha256 in ``shas``: carried, found, or computed."""
    result = RenditionResult()
    if not specs:
        return result
    known = _previous(previous_rows)
    tasks: list[Task] = []
    for sha in sorted(set(shas)):
        entries: dict[str, Entry] = {}
        missing: dict[str, RenditionSpec] = {}
        for name, spec in sorted(specs.items()):
            key = key_of(spec, sha)
            old = known.get(sha, {}).get(name)
            if old is not None and old.get("key") == key:
                entries[name] = old
                result.carried += 1
                continue
            found = _found(store, key, spec.format)
            if found is not None:
                entries[name] = found
                result.found += 1
            else:
                missing[name] = spec
        result.entries[sha] = entries
        if missing:
            tasks.append((sha, missing))
    for (sha, _), text in zip(tasks, execute(tasks, store, limits, executor), strict=True):
        made, error = json.loads(text)
        result.entries[sha].update(made)
        result.computed += len(made)
        if error is not None:
            result.failed[sha] = error
        progress(1)
    return result


def attach(rows: Sequence[SampleRow], result: RenditionResult, stats: DatasetStats) -> list[str]:
    """Write each accepted row's ``renditions`` column; quarantine the rows whose renditions failed
    (counted in ``stats``). Returns the sample ids no longer accepted."""
    removed: list[str] = []
    for row in rows:
        if row.get("disposition") != Disposition.ACCEPTED:
            continue
        sha = str(row["sha256"])
        if sha in result.failed:
            row["disposition"], row["reason"], row["detail"] = (
                Disposition.QUARANTINED,
                QUARANTINE_REASON,
                result.failed[sha],
            )
            stats.quarantined[QUARANTINE_REASON] = stats.quarantined.get(QUARANTINE_REASON, 0) + 1
            stats.accepted -= 1
            stats.samples -= 1
            split = row.get("split")
            if split and stats.splits.get(split):
                stats.splits[split] -= 1
            if flags := row.get("flags"):  # counted among the accepted samples' flags by curation
                stats.flagged -= 1
                for flag in flags:
                    stats.flags[flag] = max(0, stats.flags.get(flag, 0) - 1)
            row["split"] = None
            removed.append(str(row["sample_id"]))
            continue
        entries = result.entries.get(sha)
        row["renditions"] = json.dumps(entries, sort_keys=True) if entries else None
    return removed


def run_stage(
    store: ObjectStore,
    specs: Mapping[str, RenditionSpec],
    rows: Sequence[SampleRow],
    stats: DatasetStats,
    states: dict[str, SampleState],
    *,
    executor: Executor,
    limits: Limits,
    previous_rows: Iterable[SampleRow],
    state_of: Callable[[SampleRow], SampleState],
    phase: Callable[[str], None] = lambda _: None,
) -> RenditionResult:
    """The pipeline's rendition stage, after curation: the accepted rows get their ``renditions``,
    those whose renditions failed are quarantined, and ``states`` (what the semver decision compares)
    follow, so a rendition change is a change of derived data (PATCH)."""
    accepted = [r for r in rows if r.get("disposition") == Disposition.ACCEPTED]
    if specs:
        phase(f"renditions of {len(accepted)} samples ({', '.join(sorted(specs))})")
    result = ensure_renditions(
        store, (str(r["sha256"]) for r in accepted), specs, executor=executor, limits=limits,
        previous_rows=previous_rows,
    )  # fmt: skip
    for sample_id in attach(rows, result, stats):
        states.pop(sample_id, None)
    for row in accepted:
        if row.get("disposition") == Disposition.ACCEPTED and row["sample_id"] in states:
            states[row["sample_id"]] = state_of(row)
    stats.renditions_computed = result.computed
    stats.renditions_reused = result.found
    return result
