"""Where per-object work runs: in this process, or as Ray Data tasks on a local or remote Ray cluster."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

from loupe_api.ingest import IngestSourceSpec
from loupe_api.retry import retry_transient
from loupe_api.samples import SampleRow
from loupe_storage.store import ObjectStore
from loupe_workers.compute.process import ProcessSettings, process_object
from loupe_workers.ingest.sources import ListedObject

Progress = Callable[[int], None]
RECORD_BYTES = 64 << 10  # a processed record as JSON, with its privacy findings

# Under `uv run`, Ray would rebuild the uv environment for every worker from the working directory;
# the embedded cluster shares this interpreter's environment instead.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


# A worker process with numpy, Pillow and pyarrow loaded, and the object it is reading.
WORKER_MEMORY = 512 << 20


def ray_task_memory(memory_limit: int, batch_bytes: int) -> int:
    """The ``memory`` a decoding Ray task declares, so the scheduler packs no more of them on a node
    than its memory holds: one guarded decode at a time (at most ``memory_limit``, the header check
    refuses larger ones), the batch it builds, and the worker itself. Capped at the largest node's
    memory resource, so a small node still runs the tasks (one at a time) instead of none."""
    import ray

    need = memory_limit + batch_bytes + WORKER_MEMORY
    nodes = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    largest = max((float(n.get("Resources", {}).get("memory", 0)) for n in nodes), default=0.0)
    return min(need, int(largest)) if largest > 0 else need


class Executor(Protocol):
    def process(
        self,
        objects: list[ListedObject],
        sources: dict[str, tuple[IngestSourceSpec, ObjectStore]],
        blobs: ObjectStore,
        settings: ProcessSettings,
        progress: Progress,
    ) -> list[SampleRow]: ...


class InlineExecutor:
    """Runs every object in this process, one after another."""

    def process(
        self,
        objects: list[ListedObject],
        sources: dict[str, tuple[IngestSourceSpec, ObjectStore]],
        blobs: ObjectStore,
        settings: ProcessSettings,
        progress: Progress,
    ) -> list[SampleRow]:
        out: list[SampleRow] = []
        for obj in objects:
            spec, store = sources[obj.source]
            out.extend(process_object(obj, store, blobs, settings, spec))
            progress(1)
        return out


def _process_batch(
    batch: dict[str, Any],
    sources: dict[str, tuple[IngestSourceSpec, ObjectStore]],
    blobs: ObjectStore,
    settings: ProcessSettings,
) -> dict[str, list[str]]:
    records: list[str] = []
    for row in batch["object"]:
        obj = ListedObject(**json.loads(row))
        spec, store = sources[obj.source]
        produced = process_object(obj, store, blobs, settings, spec)
        # One JSON column keeps block schemas identical whatever fields are null in a batch.
        records.append(json.dumps({"key": f"{obj.source}\0{obj.key}", "records": produced}))
    return {"result": records}


# Ray (2.60 here) starts a local cluster with token authentication on by default and says so, on stderr,
# in every run (a notice, not a warning: nothing for the user to do). Only that notice is dropped; its
# warnings (authentication off, a token missing) still show.
TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"


class _DropTokenNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TOKEN_NOTICE)


def quiet_ray_notices() -> None:
    """Keep Ray's default-authentication notice out of the user's output (idempotent)."""
    logger = logging.getLogger(TOKEN_NOTICE_LOGGER)
    if not any(isinstance(f, _DropTokenNotice) for f in logger.filters):
        logger.addFilter(_DropTokenNotice())


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address``, or start a local Ray without a dashboard (``num_cpus``: its
    size, default every core); nothing when this process already has one. Transient refusals are
    retried with bounds (retry_transient): a loaded machine can time a local Ray out during start-up,
    a busy cluster refuse a driver."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    quiet_ray_notices()
    kwargs: dict[str, Any] = {
        "ignore_reinit_error": True,
        "logging_level": "WARNING",
        "log_to_driver": False,
    }
    if address:
        kwargs["address"] = address
    else:
        kwargs["include_dashboard"] = False
        kwargs["configure_logging"] = False
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus

    def start() -> None:
        try:
            ray.init(**kwargs)
        except Exception:
            ray.shutdown()  # a half-started local Ray must go before the next try
            raise

    retry_transient(start, "start Ray" if not address else f"connect to Ray at {address}")


class RayExecutor:
    """Ray Data map_batches over the listed objects; the same code on a laptop and on a cluster."""

    def __init__(
        self, address: str | None = None, parallelism: int | None = None, batch_size: int = 16
    ) -> None:
        self.address = address
        self.parallelism = parallelism
        self.batch_size = batch_size

    def ensure_ray(self) -> None:
        """This executor's Ray, joined or started once (stages other than processing run on it too)."""
        ensure_ray(self.address)

    def process(
        self,
        objects: list[ListedObject],
        sources: dict[str, tuple[IngestSourceSpec, ObjectStore]],
        blobs: ObjectStore,
        settings: ProcessSettings,
        progress: Progress,
    ) -> list[SampleRow]:
        if not objects:
            return []
        self.ensure_ray()
        import ray
        from ray.data import DataContext

        logging.getLogger("ray.data").setLevel(logging.WARNING)  # Loupe draws its own progress
        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        items = [{"object": json.dumps(asdict(o))} for o in objects]
        blocks = max(1, min(len(items) // self.batch_size, 200))
        dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            _process_batch,  # type: ignore[arg-type]  # ray's stub does not model fn_kwargs
            fn_kwargs={"sources": sources, "blobs": blobs, "settings": settings},
            batch_size=self.batch_size,
            batch_format="numpy",
            compute=ray.data.TaskPoolStrategy(size=self.parallelism),  # `concurrency` warns since Ray 2.51
            num_cpus=1,
            # records are small; the decode (bounded by maxPixels.memoryLimit) dominates
            memory=ray_task_memory(settings.memory_limit, self.batch_size * RECORD_BYTES),
        )
        by_key: dict[str, list[SampleRow]] = {}
        for row in dataset.iter_rows():
            payload = json.loads(row["result"])
            by_key[payload["key"]] = payload["records"]
            progress(1)
        out: list[SampleRow] = []
        for obj in objects:  # the input order, so results never depend on scheduling
            out.extend(by_key.get(f"{obj.source}\0{obj.key}", []))
        return out


_pool_state: dict[str, Any] = {}  # a pool worker's sources, blob store and settings (set once per worker)


def _pool_init(
    sources: dict[str, tuple[IngestSourceSpec, ObjectStore]], blobs: ObjectStore, settings: ProcessSettings
) -> None:
    _pool_state.update(sources=sources, blobs=blobs, settings=settings)


def _pool_chunk(chunk: list[ListedObject]) -> list[list[SampleRow]]:
    sources, blobs, settings = _pool_state["sources"], _pool_state["blobs"], _pool_state["settings"]
    out = []
    for obj in chunk:
        spec, store = sources[obj.source]
        out.append(process_object(obj, store, blobs, settings, spec))
    return out


def pool_workers(memory_limit: int, cpus: int | None = None, memory: int | None = None) -> int:
    """Worker processes for this machine: one per CPU (at most 8), and no more than its memory holds
    when each runs one guarded decode at a time (``memory_limit``) besides its own footprint."""
    cpus = cpus if cpus is not None else len(os.sched_getaffinity(0))
    memory = memory if memory is not None else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(cpus, 8, memory // (memory_limit + WORKER_MEMORY)))


class PoolExecutor:
    """Per-object work in a pool of local worker processes: all the cores of one machine without the
    start-up of a Ray cluster. Results come back in the input order."""

    def __init__(self, workers: int | None = None, chunk: int = 8) -> None:
        self.workers = workers
        self.chunk = chunk

    def process(
        self,
        objects: list[ListedObject],
        sources: dict[str, tuple[IngestSourceSpec, ObjectStore]],
        blobs: ObjectStore,
        settings: ProcessSettings,
        progress: Progress,
    ) -> list[SampleRow]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        workers = self.workers or pool_workers(settings.memory_limit)
        chunks = [objects[i : i + self.chunk] for i in range(0, len(objects), self.chunk)]
        out: list[SampleRow] = []
        # forkserver: workers never inherit this process's threads (pyarrow's pool, Ray's) mid-state
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_pool_init,
                                 initargs=(sources, blobs, settings)) as pool:  # fmt: skip
            for chunk, produced in zip(chunks, pool.map(_pool_chunk, chunks), strict=True):
                for records in produced:
                    out.extend(records)
                progress(len(chunk))
        return out


POOL_MIN_OBJECTS = 64  # below this, worker start-up (about a second) costs more than it saves
# Fewer CPUs than this: the pool's start-up and the driver's own share of the cores cost more than the
# parallel decoding saves (measured on 2 cores: 200 camera photos took 32 s in the pool, 27 s inline).
POOL_MIN_CPUS = 4


class AutoExecutor:
    """The default: a Ray cluster when one is given (``--ray-address`` / ``RAY_ADDRESS``), else this
    process for a few objects or a small machine, and a local worker pool for more. A local Ray is only started when asked
    (``--executor ray``): on one machine it adds start-up time and gains nothing over the pool."""

    def __init__(self, address: str | None = None, parallelism: int | None = None) -> None:
        self.ray = RayExecutor(address=address, parallelism=parallelism) if address else None
        self.parallelism = parallelism
        self.chosen: Executor | None = None  # what the last process() call used

    def process(
        self,
        objects: list[ListedObject],
        sources: dict[str, tuple[IngestSourceSpec, ObjectStore]],
        blobs: ObjectStore,
        settings: ProcessSettings,
        progress: Progress,
    ) -> list[SampleRow]:
        if self.ray is not None:
            self.chosen = self.ray
        elif len(objects) < POOL_MIN_OBJECTS or len(os.sched_getaffinity(0)) < POOL_MIN_CPUS:
            self.chosen = InlineExecutor()
        else:
            self.chosen = PoolExecutor(workers=self.parallelism)
        return self.chosen.process(objects, sources, blobs, settings, progress)


def make_executor(kind: str, address: str | None = None, parallelism: int | None = None) -> Executor:
    if kind == "auto":
        return AutoExecutor(address=address or os.environ.get("RAY_ADDRESS") or None, parallelism=parallelism)
    if kind == "inline":
        return InlineExecutor()
    if kind == "pool":
        return PoolExecutor(workers=parallelism)
    if kind == "ray":
        return RayExecutor(address=address, parallelism=parallelism)
    raise ValueError(f"unknown executor {kind!r}: use auto, inline, pool or ray")
