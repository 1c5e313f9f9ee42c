"""Use a dataset version from Python: its manifest as Arrow, pandas or polars, typed samples with their
bytes, a PyTorch-style iterable dataset and a Ray Data dataset, all streaming from the store.

    from loupe_workers.use.client import open_dataset

    version = open_dataset("defects", ".loupe").version()          # the current version
    for sample in version.samples(split="train", label="animals"):
        image = sample.open_image()                                # guarded decode (media.open_image)

Only accepted samples are served; samples restricted for privacy (a ``restricted:*`` flag) are left out
unless ``allow_restricted=True``, as in ``loupe export``; with ``use="evaluation"`` (``open_dataset(...,
use=...)``) samples whose source's allowedUses exclude that use are withheld, an AccessWarning and
``Version.withheld`` saying why ("withheld 12 samples: source vendor-b allows training only, not
evaluation"). The manifest's JSON columns (``metadata``,
``labels``, ``exif``, ``privacy``, ``keep_measures``) come back decoded: dicts in samples and pandas,
structs in Arrow and polars. Bytes are read from the store one blob at a time, when a sample asks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from loupe_api.access import Use
from loupe_api.samples import SampleRow
from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore, blob_key, open_store
from loupe_storage.versions import list_versions
from loupe_workers.curation.access import Withheld, withheld_mask
from loupe_workers.storage.manifest import read_version_table
from loupe_workers.storage.rows import sample_rows
from loupe_workers.versioning.versions import (
    DatasetNotFound,
    UnknownVersion,
    VersionNotFound,
    no_dataset_message,
    resolve_version,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "AccessWarning",
    "Dataset",
    "DatasetNotFound",
    "NotFound",
    "Sample",
    "SampleStream",
    "Version",
    "VersionNotFound",
    "open_dataset",
]

JSON_COLUMNS = ("metadata", "labels", "exif", "privacy", "keep_measures", "renditions")
# What a Ray dataset row carries besides the bytes (the full manifest is one to_arrow() away).
RAY_COLUMNS = ("sample_id", "sha256", "split", "label", "labels", "metadata", "flags", "format", "width",
               "height", "uri")  # fmt: skip
UNLABELLED_TARGET = -1

Filter = str | Collection[str] | None


NotFound = UnknownVersion  # a dataset or version the store does not hold (a LookupError)


class AccessWarning(UserWarning):
    """Samples were withheld because their source's allowedUses exclude the use asked for."""


def _decode(value: Any) -> Any:
    """A JSON column's value as Python objects (already-decoded values, from newer manifests, pass)."""
    if isinstance(value, str | bytes):
        return json.loads(value) if value else None
    return value


def _as_set(value: Filter) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset([value]) if isinstance(value, str) else frozenset(value)


def _is_served(row: SampleRow, allow_restricted: bool) -> bool:
    from loupe_workers.curation.privacy import exportable

    return bool(exportable([row], allow_restricted))


# --- samples --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One accepted sample of a version, its JSON fields decoded. The bytes stay in the store until
    ``read_bytes`` or ``open_image`` is called."""

    sample_id: str
    split: str | None
    label: str | None
    labels: dict[str, Any]  # {"label": ..., "boxes": [...]} as imported with the source
    metadata: dict[str, Any]
    flags: tuple[str, ...]
    sha256: str
    width: int | None
    height: int | None
    format: str | None  # the real format found in the bytes, lower-case: jpeg, png, ...
    uri: str | None  # the raw object it came from
    exif: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None
    row: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the whole row
    store: ObjectStore | None = field(default=None, repr=False, compare=False)
    # samples(rendition=NAME): the rendition read instead of the raw bytes; width, height and format
    # are then the rendition's ({key, sha256, format, width, height, bytes})
    rendition: Mapping[str, Any] | None = None

    @property
    def boxes(self) -> list[dict[str, Any]]:
        """The imported boxes (COCO: pixel ``[x, y, w, h]``; YOLO: normalised centre boxes), in the
        stored image's coordinates (EXIF orientation not applied)."""
        return list(self.labels.get("boxes") or [])

    @property
    def blob_key(self) -> str:
        return str(self.rendition["key"]) if self.rendition else blob_key(self.sha256)

    def read_bytes(self, *, verify: bool = False) -> bytes:
        """The stored bytes (as ingested, unchanged, or the rendition's); ``verify`` checks their sha256."""
        if self.store is None:
            raise RuntimeError(f"sample {self.sample_id} is not attached to a store")
        data = self.store.get(self.blob_key)
        expected = str(self.rendition["sha256"]) if self.rendition else self.sha256
        if verify and hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(f"blob {self.blob_key} in {self.store.uri} does not match its sha256")
        return data

    def open_image(
        self, *, max_pixels: int | None = None, memory_limit: int | None = None, upright: bool = False
    ) -> Image.Image:
        """The image, opened through Loupe's guarded decode (media.open_image: the header is checked
        against ``max_pixels`` and ``memory_limit``, the spec defaults, before any pixel is decoded).
        ``upright`` applies the EXIF orientation (boxes are in the stored orientation)."""
        return _open_image(self.read_bytes(), max_pixels, memory_limit, upright)


def _open_image(data: bytes, max_pixels: int | None, memory_limit: int | None, upright: bool) -> Image.Image:
    from PIL import ImageOps

    from loupe_workers.media import decode as media

    image = media.open_image(
        data,
        max_pixels=media.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
        memory_limit=media.DEFAULT_MEMORY_LIMIT if memory_limit is None else memory_limit,
    )
    return ImageOps.exif_transpose(image) if upright else image


def _sample(row: SampleRow, store: ObjectStore) -> Sample:
    labels = _decode(row.get("labels")) or {}
    width, height = row.get("width"), row.get("height")
    return Sample(
        sample_id=str(row["sample_id"]),
        split=row.get("split"),
        label=row.get("label"),
        labels=dict(labels),
        metadata=dict(_decode(row.get("metadata")) or {}),
        flags=tuple(row.get("flags") or ()),
        sha256=str(row["sha256"]),
        width=None if width is None else int(width),
        height=None if height is None else int(height),
        format=row.get("format"),
        uri=row.get("uri"),
        exif=dict(_decode(row.get("exif")) or {}),
        privacy=_decode(row.get("privacy")),
        row={k: (_decode(v) if k in JSON_COLUMNS else v) for k, v in row.items()},
        store=store,
    )


def _with_rendition(sample: Sample, name: str, version: str) -> Sample:
    """``sample`` reading its rendition ``name``; a one-line ValueError when the version has none."""
    entries = sample.row.get("renditions") or {}
    entry = entries.get(name) if isinstance(entries, dict) else None
    if not isinstance(entry, dict):
        have = ", ".join(sorted(entries)) if isinstance(entries, dict) and entries else "none"
        raise ValueError(
            f"{version}: sample {sample.sample_id} has no rendition {name!r} (it has: {have}); "
            "add it to spec.renditions and run the dataset again"
        )
    return dataclasses.replace(
        sample, rendition=entry, width=int(entry["width"]), height=int(entry["height"]),
        format=str(entry["format"]),
    )  # fmt: skip


def _matches(
    sample: Sample,
    split: frozenset[str] | None,
    label: frozenset[str] | None,
    flag: frozenset[str] | None,
    metadata: Mapping[str, Any] | None,
    where: Callable[[Sample], bool] | None,
) -> bool:
    if split is not None and sample.split not in split:
        return False
    if label is not None and sample.label not in label:
        return False
    if flag is not None and not flag.intersection(sample.flags):
        return False
    if metadata and any(sample.metadata.get(k) != v for k, v in metadata.items()):
        return False
    return where is None or bool(where(sample))


# --- versions -------------------------------------------------------------------------------------


class Version:
    """One committed version: its record, its manifest, its samples."""

    def __init__(
        self,
        store: ObjectStore,
        record: VersionRecord,
        *,
        allow_restricted: bool = False,
        use: Use | None = None,
    ) -> None:
        self.store = store
        self.record = record
        self.allow_restricted = allow_restricted
        self.use = use  # samples whose source's allowedUses exclude it are withheld (curation.access)
        self.withheld: list[Withheld] = []  # filled when the manifest is read, with the reason
        self._table: pa.Table | None = None

    def __repr__(self) -> str:
        return f"Version({self.record.dataset}@{self.record.version}, {self.record.samples} samples, {self.store.uri})"

    @property
    def name(self) -> str:
        return self.record.version

    def _manifest(self) -> pa.Table:
        """The served rows of the manifest (accepted; restricted ones only when allowed), read once."""
        if self._table is None:
            # parts or one file, read without pyarrow's pool (it can abort short runs at exit)
            table = read_version_table(self.store, self.record)
            mask = served_mask(table, self.allow_restricted)
            allowed, self.withheld = withheld_mask(
                table.column("source").to_pylist(), self.record.stats.access, self.use
            )
            mask = [m and a for m, a in zip(mask, allowed, strict=True)]
            for held in self.withheld:  # said once, as export says it
                warnings.warn(held.message, AccessWarning, stacklevel=3)
            self._table = table.filter(pa.array(mask, pa.bool_())) if not all(mask) else table
        return self._table

    def to_arrow(
        self, columns: Sequence[str] | None = None, filter: Any = None, *, decode_json: bool = True
    ) -> pa.Table:
        """The manifest as an Arrow table. JSON columns become structs (``decode_json=False`` keeps the
        strings), so ``filter``, a pyarrow.compute expression, can reach inside them:
        ``pc.field("metadata", "site") == "plant-a"``, ``pc.field("split") == "train"``."""
        table = self._manifest()
        if decode_json:
            table = decode_json_columns(table, JSON_COLUMNS)
        if filter is not None:
            table = table.filter(filter)
        if columns is not None:
            table = table.select(list(columns))
        return table

    def to_pandas(self, columns: Sequence[str] | None = None, filter: Any = None) -> Any:
        """The manifest as a pandas DataFrame; JSON columns as dicts."""
        table = self.to_arrow(columns, filter, decode_json=False)
        frame = table.to_pandas()
        for name in JSON_COLUMNS:
            if name in frame.columns:
                frame[name] = [_decode(v) for v in frame[name]]
        return frame

    def to_polars(self, columns: Sequence[str] | None = None, filter: Any = None) -> Any:
        """The manifest as a polars DataFrame (JSON columns as structs). Needs polars installed."""
        try:
            polars = importlib.import_module("polars")
        except ImportError as exc:
            raise ImportError(
                "to_polars needs polars: pip install polars (or use to_arrow/to_pandas)"
            ) from exc
        return polars.from_arrow(self.to_arrow(columns, filter))

    def samples(
        self,
        split: Filter = None,
        label: Filter = None,
        flag: Filter = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        where: Callable[[Sample], bool] | None = None,
        rendition: str | None = None,
    ) -> Iterator[Sample]:
        """Samples in manifest order. ``split``, ``label`` and ``flag`` take one value or several (a
        sample matches any of them; ``flag`` selects samples carrying one of the flags); ``metadata``
        keeps samples whose fields equal these values; ``where`` is any predicate on a Sample.
        ``rendition``: each sample reads that rendition (spec.renditions) instead of its raw bytes."""
        wanted = (_as_set(split), _as_set(label), _as_set(flag), metadata, where)
        for row in sample_rows(self._manifest()):
            sample = _sample(row, self.store)
            if rendition is not None:
                sample = _with_rendition(sample, rendition, self.name)
            if _matches(sample, *wanted):
                yield sample

    def classes(self) -> list[str]:
        """The labels of the version, sorted: the class indices of ``torch_dataset`` targets."""
        return sorted({str(v) for v in self._manifest().column("label").to_pylist() if v is not None})

    def torch_dataset(
        self,
        transform: Callable[[Any], Any] | None = None,
        split: Filter = None,
        *,
        label: Filter = None,
        flag: Filter = None,
        metadata: Mapping[str, Any] | None = None,
        where: Callable[[Sample], bool] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        decode: bool = True,
        num_shards: int = 1,
        shard: int = 0,
    ) -> SampleStream:
        """An iterable dataset of ``(input, target)`` pairs, as torchvision's ImageFolder gives:
        ``input`` is the RGB PIL image (``decode=False``: the stored bytes) through ``transform``,
        ``target`` the label's index in ``classes()`` (-1 when unlabelled) through ``target_transform``.
        Bytes are read from the store as the iteration reaches each sample. A
        ``torch.utils.data.IterableDataset`` when torch is installed: each DataLoader worker reads its
        own share. ``num_shards``/``shard`` split it further, e.g. by distributed rank."""
        chosen = list(self.samples(split, label, flag, metadata=metadata, where=where))
        return _stream_class()(
            chosen,
            self.classes(),
            transform=transform,
            target_transform=target_transform,
            decode=decode,
            num_shards=num_shards,
            shard=shard,
        )

    def ray_dataset(
        self, split: Filter = None, *, label: Filter = None, flag: Filter = None, batch_size: int = 64
    ) -> Any:
        """A Ray Data dataset of the samples' main columns (RAY_COLUMNS, JSON fields as structs) and
        their ``bytes``, read from the store by Ray tasks ``batch_size`` rows at a time."""
        import pyarrow.compute as pc
        import ray.data

        table = self.to_arrow(columns=[c for c in RAY_COLUMNS if c in self._manifest().column_names])
        for column, values in (("split", _as_set(split)), ("label", _as_set(label))):
            if values is not None:
                table = table.filter(pc.is_in(table.column(column), pa.array(sorted(values), pa.string())))
        if flag is not None:
            wanted = _as_set(flag) or frozenset()
            keep = [bool(wanted.intersection(f or ())) for f in table.column("flags").to_pylist()]
            table = table.filter(pa.array(keep, pa.bool_()))
        step = max(1, batch_size)
        blocks = [table.slice(i, step) for i in range(0, table.num_rows, step)] or [table]
        return ray.data.from_arrow(blocks).map_batches(
            partial(_read_blobs, store=self.store), batch_format="pyarrow", batch_size=step
        )


def served_mask(table: pa.Table, allow_restricted: bool) -> list[bool]:
    """Which rows of a manifest table may be served: all, or those not restricted for privacy."""
    keys = sample_rows(table.select([c for c in ("disposition", "flags") if c in table.column_names]))
    return [_is_served(r, allow_restricted) for r in keys]


def decode_json_columns(table: pa.Table, names: Sequence[str]) -> pa.Table:
    """The named JSON string columns of ``table`` as Arrow structs (where their values share a type)."""
    for name in names:
        if name in table.column_names and pa.types.is_string(table.schema.field(name).type):
            table = table.set_column(
                table.schema.get_field_index(name), name, _struct_column(table.column(name))
            )
    return table


def _struct_column(column: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A JSON string column as Arrow values (structs for objects); kept as strings when the values do
    not share one Arrow type."""
    values = [_decode(v) for v in column.to_pylist()]
    try:
        if all(v is None or v == {} for v in values):
            return column  # nothing to structure (an empty struct type helps no reader)
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return column


def _read_blobs(batch: pa.Table, store: ObjectStore) -> pa.Table:
    data = [store.get(blob_key(str(sha))) for sha in batch.column("sha256").to_pylist()]
    return batch.append_column("bytes", pa.array(data, pa.binary()))


# --- iterable dataset -----------------------------------------------------------------------------


def shard_indices(count: int, num_shards: int, shard: int) -> range:
    """The positions of shard ``shard`` of ``num_shards`` among ``count`` items: round robin, so shards
    are disjoint, together complete, and differ in size by one at most."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in [0, {num_shards}) with num_shards >= 1, got shard {shard}")
    return range(shard, count, num_shards)


def _torch_worker() -> tuple[int, int]:
    """(worker id, workers) of the current torch DataLoader worker; (0, 1) outside one or without torch."""
    try:
        data = importlib.import_module("torch.utils.data")
    except ImportError:
        return 0, 1
    info = data.get_worker_info()
    return (0, 1) if info is None else (int(info.id), int(info.num_workers))


class SampleStream:
    """Streams ``(input, target)`` pairs of chosen samples, reading each one's bytes when reached.

    Without torch this is a plain iterable; with torch, ``Version.torch_dataset`` returns the subclass
    ``TorchSampleStream`` (also a ``torch.utils.data.IterableDataset``). Shard ``shard`` of
    ``num_shards`` is taken first, then split again between DataLoader workers, so every sample is read
    by exactly one worker of exactly one shard."""

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: Sequence[str],
        *,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        decode: bool = True,
        num_shards: int = 1,
        shard: int = 0,
    ) -> None:
        shard_indices(0, num_shards, shard)  # validate now, not in a worker
        self.all_samples = list(samples)
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform = transform
        self.target_transform = target_transform
        self.decode = decode
        self.num_shards = num_shards
        self.shard = shard

    def shard_samples(self, worker: int = 0, workers: int = 1) -> list[Sample]:
        """The samples worker ``worker`` of ``workers`` reads in this shard."""
        mine = [
            self.all_samples[i] for i in shard_indices(len(self.all_samples), self.num_shards, self.shard)
        ]
        return [mine[i] for i in shard_indices(len(mine), workers, worker)]

    def __len__(self) -> int:
        """Samples in this shard (all workers together)."""
        return len(shard_indices(len(self.all_samples), self.num_shards, self.shard))

    def load(self, sample: Sample) -> tuple[Any, Any]:
        data = sample.read_bytes()
        item: Any = _open_image(data, None, None, False).convert("RGB") if self.decode else data
        target: Any = (
            self.class_to_idx.get(sample.label, UNLABELLED_TARGET) if sample.label else UNLABELLED_TARGET
        )
        if self.transform is not None:
            item = self.transform(item)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return item, target

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for sample in self.shard_samples(*_torch_worker()):
            yield self.load(sample)


@cache
def _torch_stream() -> type[SampleStream] | None:
    try:
        data = importlib.import_module("torch.utils.data")
    except ImportError:
        return None
    cls = type("TorchSampleStream", (SampleStream, data.IterableDataset), {"__module__": __name__})
    cls.__qualname__ = "TorchSampleStream"
    return cls


def _stream_class() -> type[SampleStream]:
    return _torch_stream() or SampleStream


def __getattr__(name: str) -> Any:
    """``TorchSampleStream`` is made on first use (importing torch costs seconds), and found here
    again when a DataLoader worker unpickles one."""
    if name == "TorchSampleStream":
        found = _torch_stream()
        if found is not None:
            return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- datasets -------------------------------------------------------------------------------------


class Dataset:
    """A dataset's committed versions in one store."""

    def __init__(
        self, store: ObjectStore, name: str, *, allow_restricted: bool = False, use: Use | None = None
    ) -> None:
        self.store = store
        self.name = name
        self.allow_restricted = allow_restricted
        self.use = use

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {self.store.uri})"

    def versions(self) -> list[VersionRecord]:
        """Committed versions, oldest first."""
        return list_versions(self.store, self.name)

    def version(self, version: str | None = None, *, allow_restricted: bool | None = None) -> Version:
        """A version by number ("1.2.0"), or the current (latest) one."""
        allow = self.allow_restricted if allow_restricted is None else allow_restricted
        # DatasetNotFound / VersionNotFound name the store and what it holds, with a near miss
        record = resolve_version(self.store, self.name, version)
        from loupe_workers.versioning.tiers import ensure_readable

        ensure_readable(self.store, self.name, record.version)  # VersionArchived says how to restore
        return Version(self.store, record, allow_restricted=allow, use=self.use)


def open_dataset(
    name: str,
    store: str | os.PathLike[str] | ObjectStore = ".loupe",
    *,
    endpoint: str | None = None,
    region: str | None = None,
    allow_restricted: bool = False,
    use: Use | None = None,
) -> Dataset:
    """A dataset in a folder store (the embedded default ``.loupe``) or ``s3://bucket/prefix`` (credentials
    from the AWS environment; ``endpoint`` for MinIO or another S3-compatible server, else
    ``AWS_ENDPOINT_URL``). DatasetNotFound (a LookupError) when the store has no version of it."""
    if isinstance(store, str | os.PathLike):
        opened = open_store(os.fspath(store), endpoint=endpoint, region=region)
    else:
        opened = store
    dataset = Dataset(opened, name, allow_restricted=allow_restricted, use=use)
    if not dataset.versions():
        raise DatasetNotFound(no_dataset_message(opened, name))
    return dataset
