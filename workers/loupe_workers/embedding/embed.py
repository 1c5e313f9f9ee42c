"""The embedding stage: decode at reduced scale, batch, infer, and store vectors by (sha256, model).

Stored layout (any ObjectStore)::

    embeddings/<model id>/parts/<digest>.parquet    sha256, vector (float16), classes, probs

A part holds the embeddings one run computed; a sample's embedding is computed once per model and
reused by every later run and version (and by every dataset sharing the store). ``<model id>`` names
the model and a digest of its graph and preprocessing (``models.model_id``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from loupe_api.keys import embedding_parts_prefix
from loupe_storage.store import ObjectStore, blob_key
from loupe_workers.embedding.models import Device, FloatArray, ImageModel, model_id, model_spec
from loupe_workers.media import decode as media
from loupe_workers.storage.manifest import table_bytes

log = logging.getLogger(__name__)
TOP_CLASSES = 10  # class probabilities kept per sample (text search reads them)
MAX_PARTS = 32  # stored parts per model before they are merged into one
Progress = Callable[[int], None]


@dataclass(frozen=True)
class EmbedConfig:
    """What the stage runs: a model reference and how to run it."""

    model: str = "mobilenet_v2"
    batch_size: int = 32
    device: Device = "cpu"
    num_gpus: float = 1.0
    num_cpus: float = 1.0
    concurrency: int | None = None
    max_pixels: int = media.DEFAULT_MAX_PIXELS
    memory_limit: int = media.DEFAULT_MEMORY_LIMIT  # largest decode in bytes (maxPixels.memoryLimit)
    threads: int = 0  # onnxruntime threads per model instance; 0: every core
    decode_threads: int = 0  # threads decoding ahead of inference (inline); 0: from the core count

    @property
    def model_id(self) -> str:
        return model_id(self.model)


@dataclass
class Embeddings:
    """Vectors of some samples under one model: row i belongs to ``sha256[i]``."""

    model_id: str
    sha256: list[str]
    vectors: FloatArray  # (n, d), unit length
    classes: npt.NDArray[np.int16]  # (n, TOP_CLASSES) ImageNet class ids, or (n, 0)
    probs: FloatArray  # (n, TOP_CLASSES) their probabilities

    def __len__(self) -> int:
        return len(self.sha256)

    def row_of(self) -> dict[str, int]:
        return {sha: i for i, sha in enumerate(self.sha256)}

    def select(self, shas: Sequence[str]) -> Embeddings:
        """Rows for ``shas``, in that order (each must be present)."""
        index = self.row_of()
        rows = np.array([index[s] for s in shas], dtype=np.int64)
        return Embeddings(self.model_id, list(shas), self.vectors[rows], self.classes[rows], self.probs[rows])

    @staticmethod
    def concat(model: str, parts: Sequence[Embeddings], dim: int = 0) -> Embeddings:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Embeddings(model, [], np.zeros((0, dim), np.float32), np.zeros((0, 0), np.int16), np.zeros((0, 0), np.float32))  # fmt: skip
        width = max(p.classes.shape[1] for p in parts)
        classes = [p.classes if p.classes.shape[1] == width else np.zeros((len(p), width), np.int16) for p in parts]  # fmt: skip
        probs = [
            p.probs if p.probs.shape[1] == width else np.zeros((len(p), width), np.float32) for p in parts
        ]
        return Embeddings(
            model,
            [s for p in parts for s in p.sha256],
            np.concatenate([p.vectors for p in parts]),
            np.concatenate(classes),
            np.concatenate(probs),
        )


# --- decoding -----------------------------------------------------------------------------------


def decode_for_model(
    data: bytes,
    size: int,
    *,
    max_pixels: int,
    crop: float = 224 / 256,
    memory_limit: int = media.DEFAULT_MEMORY_LIMIT,
) -> npt.NDArray[np.uint8]:
    """(size, size, 3) RGB pixels of the image's centred square, orientation applied; one reduced decode.

    The decode is media.decode_reduced (header and memory checks; raises ImageRejected): JPEGs decode
    by DCT scaling straight to at least ``size`` (Image.draft), so a 12 MP photo costs about what a
    1 MP one does; other formats are box-reduced while the kept square stays at least twice ``size``.
    The centred square of ``crop`` of the short side is kept, as ImageNet models are evaluated
    (squashing the whole image distorts shapes: a rocket became an obelisk).
    """
    rgb = media.decode_reduced(
        data,
        side=math.ceil(2 * size / crop),
        short=True,
        draft_side=size,
        max_pixels=max_pixels,
        memory_limit=memory_limit,
    ).image
    width, height = rgb.size
    side = min(width, height) * crop  # the centred square of the source that is kept
    left, top = (width - side) / 2, (height - side) / 2
    resized = rgb.resize(
        (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=2.0
    )
    return np.asarray(resized, dtype=np.uint8)


def decode_many(
    blobs: ObjectStore,
    shas: Sequence[str],
    size: int,
    max_pixels: int,
    crop: float = 224 / 256,
    memory_limit: int = media.DEFAULT_MEMORY_LIMIT,
) -> tuple[list[str], npt.NDArray[np.uint8]]:
    """Read and decode blobs; undecodable ones are left out (the gates already reported them)."""
    kept: list[str] = []
    pixels: list[npt.NDArray[np.uint8]] = []
    limits = {"max_pixels": max_pixels, "memory_limit": memory_limit}
    for sha in shas:
        try:
            pixels.append(decode_for_model(blobs.get(blob_key(sha)), size, crop=crop, **limits))
        except Exception:  # a corrupt or missing blob must not stop the stage
            continue
        kept.append(sha)
    stacked = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
    return kept, stacked


# --- inference ----------------------------------------------------------------------------------


def softmax_top(logits: FloatArray, k: int) -> tuple[npt.NDArray[np.int16], FloatArray]:
    """The k most probable classes of each row and their probabilities."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    top = np.argsort(-probs, axis=1)[:, :k]
    return top.astype(np.int16), np.take_along_axis(probs, top, axis=1).astype(np.float32)


class Embedder:
    """One loaded model; a callable class so Ray Data can run it as an actor pool."""

    def __init__(self, config: EmbedConfig) -> None:
        self.config = config
        self.model = ImageModel(model_spec(config.model), device=config.device, threads=config.threads)
        self.size = self.model.spec.input_size
        self.crop = self.model.spec.crop

    def infer(self, shas: Sequence[str], pixels: npt.NDArray[np.uint8]) -> Embeddings:
        vectors, logits = self.model.run(pixels, logits=True)
        if logits is not None:
            classes, probs = softmax_top(logits, TOP_CLASSES)
        else:
            classes, probs = np.zeros((len(shas), 0), np.int16), np.zeros((len(shas), 0), np.float32)
        return Embeddings(self.config.model_id, list(shas), vectors, classes, probs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Ray Data batch: decoded ``pixels`` and their ``sha256`` in, vectors and classes out."""
        result = self.infer([str(s) for s in batch["sha256"]], np.asarray(batch["pixels"], dtype=np.uint8))
        return {
            "sha256": np.array(result.sha256, dtype=object),
            "vector": result.vectors,
            "classes": result.classes,
            "probs": result.probs,
        }


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def embed_inline(
    shas: Sequence[str], blobs: ObjectStore, config: EmbedConfig, progress: Progress = lambda _: None
) -> Embeddings:
    """Embed in this process; decoding of the next batches overlaps inference of the current one.

    Pillow and onnxruntime both release the GIL, so threads decoding ahead keep the model fed.
    """
    embedder = Embedder(config)
    out: list[Embeddings] = []
    workers = config.decode_threads or max(1, min(4, (os.cpu_count() or 2) // 4))
    chunks = _batches(shas, config.batch_size)

    def decode(chunk: Sequence[str]) -> tuple[list[str], npt.NDArray[np.uint8]]:
        return decode_many(blobs, chunk, embedder.size, config.max_pixels, embedder.crop, config.memory_limit)

    with ThreadPoolExecutor(workers) as pool:
        # A bounded window of batches decodes ahead: memory stays at a few batches of pixels.
        pending: deque[Future[tuple[list[str], npt.NDArray[np.uint8]]]] = deque()
        for chunk in itertools.islice(chunks, workers + 1):
            pending.append(pool.submit(decode, chunk))
        while pending:
            kept, pixels = pending.popleft().result()
            following = next(chunks, None)
            if following is not None:
                pending.append(pool.submit(decode, following))
            if kept:
                out.append(embedder.infer(kept, pixels))
            progress(len(kept))
    return Embeddings.concat(config.model_id, out)


def _decode_batch(
    batch: dict[str, Any],
    blobs: ObjectStore,
    size: int,
    max_pixels: int,
    crop: float,
    memory_limit: int = media.DEFAULT_MEMORY_LIMIT,
) -> dict[str, Any]:
    kept, pixels = decode_many(blobs, [str(s) for s in batch["sha256"]], size, max_pixels, crop, memory_limit)
    return {"sha256": np.array(kept, dtype=object), "pixels": pixels}


def actor_pool(config: EmbedConfig, cluster_gpus: float) -> tuple[int, dict[str, float]]:
    """Number of inference actors and the resources each reserves.

    With device gpu each actor holds ``num_gpus`` (default: one actor per whole GPU share); a cluster
    without GPUs would never place such an actor, so the stage then runs on CPUs instead of waiting.
    """
    resources = {"num_cpus": config.num_cpus}
    if config.device == "gpu" and cluster_gpus >= config.num_gpus:
        resources["num_gpus"] = config.num_gpus
        return config.concurrency or max(1, math.floor(cluster_gpus / config.num_gpus)), resources
    if config.device == "gpu":
        log.warning("device gpu asked for, but the Ray cluster has no GPU: embedding on CPUs")
    return config.concurrency or 1, resources


def embed_with_ray(
    shas: Sequence[str], blobs: ObjectStore, config: EmbedConfig, progress: Progress = lambda _: None
) -> Embeddings:
    """Ray Data: decoding tasks stream into an actor pool of models (with GPUs when device is gpu),
    so reading and decoding overlap inference. Ray must already be initialised."""
    import ray

    from loupe_workers.compute.executor import ray_task_memory

    spec = model_spec(config.model)
    if not config.threads:  # each actor's onnxruntime uses the CPUs it reserved, not every core
        config = dataclasses.replace(config, threads=max(1, math.floor(config.num_cpus)))
    gpus = float(ray.cluster_resources().get("GPU", 0))  # type: ignore[no-untyped-call]
    actors, resources = actor_pool(config, gpus)
    blocks = max(1, min(math.ceil(len(shas) / config.batch_size), 200))
    dataset = (
        ray.data.from_items([{"sha256": s} for s in shas], override_num_blocks=blocks)
        .map_batches(
            _decode_batch,  # type: ignore[arg-type]  # ray's stub does not model fn_kwargs
            fn_kwargs={
                "blobs": blobs,
                "size": spec.input_size,
                "max_pixels": config.max_pixels,
                "crop": spec.crop,
                "memory_limit": config.memory_limit,
            },
            batch_size=config.batch_size,
            batch_format="numpy",
            num_cpus=1,
            memory=ray_task_memory(config.memory_limit, config.batch_size * spec.input_size**2 * 3),
        )
        .map_batches(
            Embedder,
            fn_constructor_args=(config,),
            batch_size=config.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),  # `concurrency` warns since Ray 2.51
            num_cpus=resources["num_cpus"],
            num_gpus=resources.get("num_gpus"),
        )
    )
    parts: list[Embeddings] = []
    for batch in dataset.iter_batches(batch_size=config.batch_size, batch_format="numpy"):
        n = len(batch["sha256"])
        parts.append(
            Embeddings(
                config.model_id,
                [str(s) for s in batch["sha256"]],
                np.asarray(batch["vector"], dtype=np.float32),
                np.asarray(batch["classes"], dtype=np.int16).reshape(n, -1),
                np.asarray(batch["probs"], dtype=np.float32).reshape(n, -1),
            )
        )
        progress(n)
    return Embeddings.concat(config.model_id, parts)


# --- storage ------------------------------------------------------------------------------------


parts_prefix = embedding_parts_prefix  # the stored parts of one model id


def _fixed_rows(matrix: npt.NDArray[Any], arrow_type: pa.DataType) -> pa.Array:
    """Rows of a 2-D array as Arrow lists (every row the same length, possibly 0)."""
    n, width = matrix.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width, pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), arrow_type))


def _rows_matrix(column: pa.ChunkedArray, n: int, dtype: Any) -> npt.NDArray[Any]:
    values = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=dtype).reshape(n, -1 if n else 0)


def to_parquet(embeddings: Embeddings) -> bytes:
    table = pa.table(
        {
            "sha256": pa.array(embeddings.sha256, pa.string()),
            # float16 halves the storage; cosine similarities move by about 1e-3
            "vector": _fixed_rows(embeddings.vectors.astype(np.float16), pa.float16()),
            "classes": _fixed_rows(embeddings.classes.astype(np.int16), pa.int16()),
            "probs": _fixed_rows(embeddings.probs.astype(np.float32), pa.float32()),
        }
    )
    return table_bytes(table)


def from_parquet(model: str, data: bytes) -> Embeddings:
    table = pq.read_table(io.BytesIO(data), use_threads=False)  # see manifest.read_rows
    n = table.num_rows
    if n == 0:
        return Embeddings.concat(model, [])
    shas = [str(s) for s in table.column("sha256").to_pylist()]
    vectors = _rows_matrix(table.column("vector"), n, np.float32)
    classes = _rows_matrix(table.column("classes"), n, np.int16)
    probs = _rows_matrix(table.column("probs"), n, np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # unit length again after float16 rounding
    return Embeddings(model, shas, (vectors / np.maximum(norms, 1e-12)).astype(np.float32), classes, probs)


def load_embeddings(store: ObjectStore, model: str, shas: set[str] | None = None) -> Embeddings:
    """Every stored embedding of ``model`` (a model id), or only those of ``shas``."""
    parts = []
    seen: set[str] = set()
    for info in sorted(store.list(parts_prefix(model)), key=lambda i: i.key):
        if not info.key.endswith(".parquet"):
            continue
        try:
            part = from_parquet(model, store.get(info.key))
        except KeyError:  # merged into another part by a concurrent compaction after listing
            continue
        wanted = [s for s in part.sha256 if (shas is None or s in shas) and s not in seen]
        seen.update(wanted)
        if wanted:
            parts.append(part.select(wanted))
    return Embeddings.concat(model, parts)


def save_embeddings(store: ObjectStore, embeddings: Embeddings) -> str | None:
    """Store new embeddings as one part, named by its content (a retried run writes the same key)."""
    if not len(embeddings):
        return None
    digest = hashlib.sha256("\n".join(sorted(embeddings.sha256)).encode()).hexdigest()[:24]
    key = f"{parts_prefix(embeddings.model_id)}{digest}.parquet"
    store.put_if_absent(key, to_parquet(embeddings))
    return key


def compact_parts(store: ObjectStore, model: str, max_parts: int = MAX_PARTS) -> bool:
    """Merge a model's parts into one when there are more than ``max_parts`` (one per run adds up):
    the merged part is written before the old ones are deleted, so readers never miss a vector."""
    keys = sorted(i.key for i in store.list(parts_prefix(model)) if i.key.endswith(".parquet"))
    if len(keys) <= max_parts:
        return False
    merged = load_embeddings(store, model)
    written = save_embeddings(store, merged)
    for key in keys:
        if key != written:
            store.delete(key)
    return True


Runner = Callable[[Sequence[str], ObjectStore, EmbedConfig, Progress], Embeddings]


@dataclass
class StageResult:
    embeddings: Embeddings
    computed: int


def ensure_embeddings(
    store: ObjectStore,
    shas: Sequence[str],
    config: EmbedConfig,
    *,
    runner: Runner = embed_inline,
    progress: Progress = lambda _: None,
    start: Progress = lambda _: None,
) -> StageResult:
    """Embeddings of ``shas`` (blobs in ``store``): stored ones reused, missing ones computed and stored."""
    wanted = list(dict.fromkeys(shas))
    model = config.model_id
    stored = load_embeddings(store, model, set(wanted))
    have = set(stored.sha256)
    missing = [s for s in wanted if s not in have]
    start(len(missing))
    fresh = runner(missing, store, config, progress) if missing else Embeddings.concat(model, [])
    if save_embeddings(store, fresh):
        compact_parts(store, model)
    merged = Embeddings.concat(model, [stored, fresh])
    present = set(merged.sha256)
    return StageResult(merged.select([s for s in wanted if s in present]), len(fresh))
