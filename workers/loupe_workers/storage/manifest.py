"""Parquet manifests: one row per sample, accepted or not, with everything derived about it.

Layout (since manifest parts): a version's accepted rows, its rejected rows and its lineage edges are each
a *part list* (``runs/<run>/manifest.parts.json``, ``rejected.parts.json``, ``lineage.parts.json``, a
loupe_api.versions.PartList) naming content-addressed Parquet parts under
``datasets/<dataset>/parts/<sha256>.parquet``. The record's ``manifest_uri``, ``rejected_uri`` and
``lineage_uri`` name the lists; records written before parts name one Parquet file each, and every
reader here (``read_table``, ``read_rows``, ``read_version_rows``) takes either.

Why the writing costs O(change):

- A part's rows are sorted by sample id (``PART_ORDER``) and written deterministically (zstd, no
  timestamps in the metadata; checked by tests), so the same rows give the same bytes, the same sha256
  and the same key: a part that exists is never written again, and versions share it.
- Rows are grouped by *where they were* (``Layout``: the part of each sample id in the parent version),
  not by a hash of the id: new sample ids are random, and with hash buckets 1 % of new samples would
  touch every bucket. So rows of a parent part stay together (the part is reused when none of them
  changed, rewritten once when one did), and rows new in this version form new parts of ``PART_ROWS``
  rows, sorted by sample id. A +1 % version writes about 1 % of the rows, plus at most one small part.
- Small groups (fewer than ``SMALL_PART_ROWS``: the tail of the new rows, parts that lost most of their
  rows) are merged greedily, in order, into parts of at most ``PART_ROWS`` rows. Every part this emits
  holds at least ``PART_ROWS - SMALL_PART_ROWS`` rows except possibly the last, so a version has at most
  one small part, and an unchanged rerun merges nothing and reuses every part. Manifests smaller than
  ``SMALL_PART_ROWS`` stay one part (rewritten whole when they change: they are small).
- Lineage edges are derived from the accepted and rejected parts one to one (edge part i holds the edges
  of the rows of manifest part i) without the ``version`` column, which the reader adds back from the
  part list: an unchanged manifest part gives an unchanged, shared edge part.

Bounded memory (10,000,000 rows and more): ``write_parts`` holds every row of the version and the
parent's ``Layout`` (one id per row). ``PartWriter`` / ``write_new_parts`` write a first (or rebuilt)
version from batches that come in each kind's part order (by sample id), holding one batch and less
than a part per kind; ``write_change`` writes a version from its parent's part lists (``ParentParts``)
and the changed rows only. Each part's entry in its list carries the smallest and largest sample id
of its rows (``first_id`` / ``last_id``; None in lists written before, read as "may hold any id"), so
a change reads just the parts whose range can hold a changed id and references every other part by
its key. Both follow the rules above to the part, so their parts are the parts ``write_parts`` gives.

Crash safety: parts are written first, then the part lists under the run, then (pipeline) the version
record with one conditional put. A run that dies before the record leaves parts no record names; they
are never read (a future garbage collector may delete parts that no version record references, and
must never delete one that a record names).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loupe_api.keys import blob_prefix, dataset_prefix, manifest_part_key
from loupe_api.samples import Disposition, SampleRow
from loupe_api.versions import PARTS_SUFFIX, ManifestPart, PartKind, PartList, VersionRecord, is_part_list
from loupe_storage.store import ObjectStore

SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("sha256", pa.string()),
        ("disposition", pa.string()),  # accepted, rejected, quarantined, duplicate
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("source", pa.string()),
        ("key", pa.string()),
        ("uri", pa.string()),
        ("etag", pa.string()),
        ("size", pa.int64()),
        ("blob_uri", pa.string()),
        ("media", pa.string()),
        ("frame_index", pa.int64()),
        ("frame_time", pa.float64()),
        ("video_sha256", pa.string()),
        ("format", pa.string()),
        ("extension", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("brightness_p99", pa.float64()),
        ("brightness_p5", pa.float64()),
        ("clipped", pa.float64()),  # share of the pixels with a blown-out colour channel
        ("contrast", pa.float64()),  # (p99 - p1) / (p99 + p1) of brightness
        ("black_level", pa.float64()),  # p1 of brightness: how far the darkest tones are lifted
        ("tonal_range", pa.float64()),  # p99 - p1 of brightness: the share of the scale the tones span
        ("sharpness", pa.float64()),
        ("noise", pa.float64()),
        ("entropy", pa.float64()),
        ("aspect_ratio", pa.float64()),
        ("hash_kind", pa.string()),
        ("hash", pa.string()),
        ("hash_variants", pa.list_(pa.string())),  # the hash in the 7 other flips and quarter turns
        ("pixel_sha256", pa.string()),
        ("keep_measures", pa.string()),  # JSON: what the bestOriginal keep policy compared (group members)
        ("exif", pa.string()),
        ("privacy", pa.string()),  # JSON: {"faces": [{box, score}], "plates": [{box, votes}]}
        ("metadata", pa.string()),  # JSON object of string fields
        ("label", pa.string()),
        ("labels", pa.string()),  # JSON: {"label": ..., "boxes": [...]}
        # bytes labelled by two or more sources: JSON {source: labels}; labels above are their consensus,
        # label_support the share of the sets agreeing with it, label_consensus how it was reached
        # (unanimous, majority, golden, tie); absent in older manifests, read as null
        ("label_sets", pa.string()),
        ("label_support", pa.float64()),
        ("label_consensus", pa.string()),
        ("flags", pa.list_(pa.string())),
        ("split", pa.string()),
        ("synthetic", pa.bool_()),  # from a synthetic source or marker field; null in older manifests: real
        ("dup_group", pa.string()),
        ("dup_kind", pa.string()),
        ("duplicate_of", pa.string()),
        ("keep_reason", pa.string()),  # the kept copy of a group: why it was the one kept
        ("status", pa.string()),
        ("fail_reason", pa.string()),
        ("fail_detail", pa.string()),
        ("processing_key", pa.string()),
        # JSON: {name: {key, sha256, format, width, height, bytes}} of spec.renditions (null: none)
        ("renditions", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
PROCESSING_COLUMNS = (
    "sample_id", "sha256", "source", "key", "uri", "etag", "size", "media", "frame_index", "frame_time",
    "video_sha256", "format", "extension", "width", "height", "brightness_p99", "brightness_p5", "clipped",
    "contrast", "black_level", "tonal_range", "sharpness", "noise", "entropy", "aspect_ratio", "hash_kind", "hash", "hash_variants", "pixel_sha256", "keep_measures", "exif", "privacy",
    "status", "fail_reason", "fail_detail", "processing_key",
)  # fmt: skip


def to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{c: row.get(c) for c in COLUMNS} for row in rows], schema=SCHEMA)


def to_bytes(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """A manifest (or rejected-samples) file in the fixed schema."""
    return table_bytes(to_table(rows))


def table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def read_rows(store: ObjectStore, key: str) -> list[dict[str, Any]]:
    """Rows of any Parquet file in the store, or of a part list, untyped: for tables with columns of their
    own (imported predictions, label-error candidates). Manifest and rejected rows read typed through
    ``storage.rows`` (SampleRow), lineage edges through ``rows.read_version_edges`` (LineageEdge)."""
    rows: list[dict[str, Any]] = read_table(store, key).to_pylist()
    return rows


def _parquet(data: bytes, columns: Sequence[str] | None = None) -> pa.Table:
    # No reader threads: pyarrow 26's pool can abort the interpreter at exit ("terminate called without
    # an active exception", seen in about half of short CLI runs); these files are small anyway.
    # One file: pq.ParquetFile reads it as pq.read_table does, without importing pyarrow.dataset (and
    # pandas with it: about half a second of a small run). read_table keeps the cases where the two
    # differ: a column asked for twice or missing (it raises; ParquetFile would leave it out).
    wanted = list(columns) if columns else None
    file = pq.ParquetFile(io.BytesIO(data))
    if wanted is None:
        return file.read(use_threads=False)
    if len(set(wanted)) == len(wanted) and set(wanted) <= set(file.schema_arrow.names):
        return file.read(columns=wanted, use_threads=False).select(wanted)
    return pq.read_table(io.BytesIO(data), columns=wanted, use_threads=False)


Which = PartKind  # accepted (the manifest), rejected or lineage


def version_key(record: VersionRecord, which: Which = "accepted") -> str:
    """The key of a version's accepted rows (the manifest), rejected rows or lineage edges."""
    return {"accepted": record.manifest_uri, "rejected": record.rejected_uri, "lineage": record.lineage_uri}[
        which
    ]


def read_version_rows(
    store: ObjectStore, record: VersionRecord, which: Which = "accepted"
) -> list[dict[str, Any]]:
    """A version's accepted rows (sorted by sample id), rejected rows (by source, key, sample id) or
    lineage edges (accepted first), whatever its layout: parts, or one file per kind (older versions).
    Untyped, as ``which`` may be any kind: for code that treats the three alike (tests comparing layouts);
    typed readers: ``rows.read_version_samples`` and ``rows.read_version_edges``."""
    return read_rows(store, version_key(record, which))


def read_version_table(
    store: ObjectStore, record: VersionRecord, which: Which = "accepted", columns: Sequence[str] | None = None
) -> pa.Table:
    """A version's accepted rows, rejected rows or lineage edges as an Arrow table (``columns``: only these)."""
    return read_table(store, version_key(record, which), columns)


def read_table(store: ObjectStore, key: str, columns: Sequence[str] | None = None) -> pa.Table:
    """A Parquet file of the store, or the union of a part list's parts in its reading order."""
    if not is_part_list(key):
        return _parquet(store.get(key), columns)
    return read_layout(store, key, columns)[0]


def part_files(store: ObjectStore, key: str) -> list[str]:
    """The keys of the Parquet files holding the rows under ``key``: the parts of a part list, or ``key``
    itself. (Read lineage parts through ``read_table``: it adds their ``version`` column back.)"""
    if not is_part_list(key):
        return [key]
    return [p.key for p in PartList.model_validate_json(store.get(key)).parts]


# --- parts ----------------------------------------------------------------------------------------

PART_ROWS = 4096  # rows of a full part (about 1 MB): what a one-sample relabel rewrites at most
SMALL_PART_ROWS = PART_ROWS // 4  # parts below this are merged with other small ones
READ_THREADS = 8  # parts fetched at once (S3 round trips overlap; pyarrow decodes without its pool)

LINEAGE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("disposition", pa.string()),
        ("source", pa.string()),
        ("key", pa.string()),
        ("uri", pa.string()),
        ("etag", pa.string()),
        ("raw_sha256", pa.string()),
        ("blob", pa.string()),
        ("frame_index", pa.int64()),
        # why a sample was left out (its rejected row's reason and detail: an access rule names its
        # source and rule); null on accepted edges and in older lineage parts
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)
ORDER: dict[str, list[str]] = {  # the order rows are read in
    "accepted": ["sample_id"],
    "rejected": ["source", "key", "sample_id"],
}
# The order rows are stored in, within and across parts: by sample id for both kinds, so each part's
# [first_id, last_id] is narrow and a change reads only the parts that may hold its ids (in reading
# order a rejected part would span nearly every id). Rejected rows are sorted back into ORDER on reading.
PART_ORDER: dict[str, list[str]] = {
    "accepted": ["sample_id"],
    "rejected": ["sample_id", "source", "key"],  # (a dropped byte copy shares its kept copy's id)
}


def part_key(prefix: str, sha256: str) -> str:
    """Where a part lives: by content, under its dataset's folder (``prefix``: datasets/<dataset>)."""
    return manifest_part_key(prefix, sha256)


@dataclass(frozen=True)
class Layout:
    """Where the rows of one kind of a version lie: its parts, and for each row (as read, parts
    concatenated) its sample id and the index of its part. What the next version groups rows by."""

    parts: list[ManifestPart]
    ids: pa.Array
    part_index: pa.Array

    @staticmethod
    def of(parts: list[ManifestPart], tables: list[pa.Table]) -> Layout:
        ids = (
            pa.concat_arrays([t.column("sample_id").combine_chunks() for t in tables])
            if tables
            else pa.array([], pa.string())
        )
        index = np.repeat(np.arange(len(parts), dtype=np.int32), [t.num_rows for t in tables])
        return Layout(parts, ids, pa.array(index, pa.int32()))


@dataclass
class VersionLayout:
    """The layouts of a version's accepted and rejected rows (None: one file each, an older version),
    and the part lists they were read from (what ``write_change`` starts from: a commit reads none of
    them again)."""

    accepted: Layout | None = None
    rejected: Layout | None = None
    lists: ParentParts | None = None

    def known_keys(self) -> set[str]:
        return {p.key for lay in (self.accepted, self.rejected) if lay is not None for p in lay.parts}


@dataclass
class WriteStats:
    """What writing a version's parts cost: parts and bytes written, parts referenced again."""

    parts_written: int = 0
    parts_reused: int = 0
    bytes_written: int = 0  # parts and part lists
    rows_written: int = 0
    written: list[str] = field(default_factory=list)


@dataclass
class Written:
    """The part lists of a committed version's three kinds, and the cost of writing them."""

    manifest_uri: str
    rejected_uri: str
    lineage_uri: str
    stats: WriteStats


def _fetch(store: ObjectStore, keys: list[str]) -> list[bytes]:
    if len(keys) <= 1:
        return [store.get(k) for k in keys]
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(keys))) as pool:
        return list(pool.map(store.get, keys))


def _sorted(table: pa.Table, kind: str) -> pa.Table:
    if table.num_rows <= 1:
        return table
    if kind == "lineage":
        accepted = pc.equal(table.column("disposition"), Disposition.ACCEPTED.value).fill_null(False)
        first = table.filter(accepted).sort_by([(c, "ascending") for c in ORDER["accepted"]])
        rest = table.filter(pc.invert(accepted)).sort_by([(c, "ascending") for c in ORDER["rejected"]])
        return pa.concat_tables([first, rest])
    return table.sort_by([(c, "ascending") for c in ORDER[kind]])


def _in_part_order(table: pa.Table, kind: str) -> pa.Table:
    if table.num_rows <= 1:
        return table
    return table.sort_by([(c, "ascending") for c in PART_ORDER[kind]])


def _empty(kind: str) -> pa.Table:
    schema = LINEAGE_SCHEMA if kind == "lineage" else SCHEMA
    return schema.empty_table()


def read_layout(
    store: ObjectStore, key: str, columns: Sequence[str] | None = None
) -> tuple[pa.Table, Layout | None]:
    """The rows under ``key`` in reading order, and where they lie (None for a single Parquet file)."""
    if not is_part_list(key):
        return _parquet(store.get(key), columns), None
    return _read_listed(store, PartList.model_validate_json(store.get(key)), columns)


def _read_listed(
    store: ObjectStore, listing: PartList, columns: Sequence[str] | None = None
) -> tuple[pa.Table, Layout]:
    """The rows of a part list's parts in reading order, and where they lie."""
    kind = listing.kind
    order = ORDER["rejected"] + ["disposition"] if kind == "lineage" else ORDER[kind]
    wanted = None if columns is None else list(dict.fromkeys([*columns, *order, "sample_id"]))
    blobs = _fetch(store, [p.key for p in listing.parts])
    tables = [_parquet(data, [c for c in wanted if c != "version"] if wanted else None) for data in blobs]
    layout = Layout.of(listing.parts, tables)
    schema = tables[0].schema if tables else _empty(kind).schema
    table = pa.concat_tables(tables, promote_options="default") if tables else schema.empty_table()
    if len(tables) > 1 or kind != "accepted":  # one accepted part is stored in reading order already
        table = _sorted(table, kind)
    if kind == "lineage":  # the one column lineage parts do not store: every edge names this version
        table = table.add_column(0, "version", pa.array([listing.version] * table.num_rows, pa.string()))
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    return table, layout


def read_parent(
    store: ObjectStore, record: VersionRecord
) -> tuple[list[SampleRow], list[SampleRow], VersionLayout]:
    """A parent version's accepted and rejected rows, and its layout (what the next version reuses),
    each part list read once."""
    lists = ParentParts.read(store, record)
    accepted: tuple[pa.Table, Layout | None]
    rejected: tuple[pa.Table, Layout | None]
    if lists is not None:
        accepted, rejected = _read_listed(store, lists.accepted), _read_listed(store, lists.rejected)
    else:  # an older version: one Parquet file per kind (or one of each)
        accepted, rejected = read_layout(store, record.manifest_uri), read_layout(store, record.rejected_uri)
    accepted_rows: list[SampleRow] = accepted[0].to_pylist()
    rejected_rows: list[SampleRow] = rejected[0].to_pylist()
    return accepted_rows, rejected_rows, VersionLayout(accepted[1], rejected[1], lists)


def _normalized(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in exactly ``schema`` (field names of list items included: those change the bytes)."""
    table = table.select(schema.names)
    return table.cast(schema)  # Schema.equals overlooks those names; a cast to the same types copies nothing


def plan_parts(table: pa.Table, kind: str, parent: Layout | None) -> list[pa.Table]:
    """The parts of ``table``'s rows, each sorted in the kind's part order (see the module docstring)."""
    count = table.num_rows
    if count == 0:
        return []
    parents = len(parent.parts) if parent is not None else 0
    if parent is not None and parents:
        position = pc.index_in(table.column("sample_id"), value_set=parent.ids)
        group = pc.fill_null(pc.take(parent.part_index, position), parents)  # new rows: group ``parents``
    else:
        group = pa.array(np.zeros(count, dtype=np.int32))
    keys = [("_group", "ascending")] + [(c, "ascending") for c in PART_ORDER[kind]]
    ordered = table.append_column("_group", group).sort_by(keys)
    groups = ordered.column("_group").to_numpy()
    ordered = ordered.drop_columns(["_group"])
    values, starts, sizes = np.unique(groups, return_index=True, return_counts=True)
    pieces: list[pa.Table] = []
    for value, start, size in zip(values.tolist(), starts.tolist(), sizes.tolist(), strict=True):
        if value == parents:  # rows new in this version: full parts, sorted by sample id
            pieces.extend(_new_pieces(ordered.slice(start, size)))
        else:
            pieces.append(ordered.slice(start, size))
    full: list[pa.Table] = []
    merged: list[pa.Table] = []
    for whole, batch in _merge_small((p, p.num_rows) for p in pieces):
        (full if whole else merged).append(batch[0] if whole else pa.concat_tables(batch))
    return full + [_in_part_order(m, kind) if len(m.column("sample_id").chunks) > 1 else m for m in merged]


def _new_pieces(ordered: pa.Table) -> Iterator[pa.Table]:
    """Rows new in a version, sorted in the kind's part order, as parts of ``PART_ROWS`` rows."""
    for start in range(0, ordered.num_rows, PART_ROWS):
        yield ordered.slice(start, min(PART_ROWS, ordered.num_rows - start))


Piece = TypeVar("Piece")


def _merge_small(pieces: Iterable[tuple[Piece, int]]) -> Iterator[tuple[bool, list[Piece]]]:
    """The plan's rule, one piece (and its row count) at a time, in order: a piece of at least
    ``SMALL_PART_ROWS`` rows is a part of its own, ``(True, [piece])``; smaller ones are merged
    greedily, in order, into parts of at most ``PART_ROWS`` rows, ``(False, pieces)``. Lazy, so that a
    streaming writer holds one batch of small pieces at most. A version's part list is the full parts,
    then the merged ones."""
    batch: list[Piece] = []
    batch_rows = 0
    for piece, rows in pieces:
        if rows >= SMALL_PART_ROWS:
            yield True, [piece]
            continue
        if batch and batch_rows + rows > PART_ROWS:
            yield False, batch
            batch, batch_rows = [], 0
        batch.append(piece)
        batch_rows += rows
    if batch:
        yield False, batch


def _edges(part: pa.Table) -> pa.Table:
    """The lineage edges of a part's rows (object -> sample), without the version column."""
    sha = part.column("sha256")
    video = part.column("video_sha256")
    has_video = pc.fill_null(pc.greater(pc.utf8_length(video), 0), False)
    blob = pc.binary_join_element_wise(blob_prefix(), pc.utf8_slice_codeunits(sha, 0, 2), "/", sha, "")
    return pa.table(
        {
            "sample_id": part.column("sample_id"),
            "disposition": part.column("disposition"),
            "source": part.column("source"),
            "key": part.column("key"),
            "uri": part.column("uri"),
            "etag": part.column("etag"),
            "raw_sha256": pc.if_else(has_video, video, sha),
            "blob": blob,
            "frame_index": part.column("frame_index"),
            "reason": part.column("reason"),
            "detail": part.column("detail"),
        },
        schema=LINEAGE_SCHEMA,
    )


def _store_part(
    store: ObjectStore, prefix: str, part: pa.Table, known: set[str], stats: WriteStats
) -> ManifestPart:
    data = table_bytes(part.combine_chunks())
    digest = hashlib.sha256(data).hexdigest()
    key = part_key(prefix, digest)
    if key in known or store.exists(key):  # the same rows: the part a version already names is reused
        stats.parts_reused += 1
    else:
        store.put(key, data)
        stats.parts_written += 1
        stats.bytes_written += len(data)
        stats.rows_written += part.num_rows
        stats.written.append(key)
    first, last = _id_range(part)
    return ManifestPart(
        key=key, rows=part.num_rows, bytes=len(data), sha256=digest, first_id=first, last_id=last
    )


def _id_range(part: pa.Table) -> tuple[str | None, str | None]:
    """The smallest and largest sample id of a part (what ``write_change`` picks candidate parts by)."""
    bounds = pc.min_max(part.column("sample_id"))
    first: str | None = bounds["min"].as_py()
    last: str | None = bounds["max"].as_py()
    return first, last


def write_parts(
    store: ObjectStore,
    dataset: str,
    run_prefix: str,
    version: str,
    accepted: pa.Table | Sequence[Mapping[str, Any]],
    rejected: pa.Table | Sequence[Mapping[str, Any]],
    parent: VersionLayout | None = None,
) -> Written:
    """Write a version's accepted rows, rejected rows and lineage edges as parts (only those no version
    holds yet) and their part lists under ``run_prefix``; the caller publishes the record afterwards."""
    parent = parent or VersionLayout()
    prefix = dataset_prefix(dataset)
    known = parent.known_keys()
    stats = WriteStats()
    uris: dict[PartKind, str] = {}
    lineage: list[ManifestPart] = []
    kinds: list[tuple[PartKind, pa.Table | Sequence[Mapping[str, Any]], Layout | None]] = [
        ("accepted", accepted, parent.accepted),
        ("rejected", rejected, parent.rejected),
    ]
    for kind, rows, layout in kinds:
        table = _normalized(rows if isinstance(rows, pa.Table) else to_table(rows), SCHEMA)
        parts = plan_parts(table, kind, layout)
        stored = [_store_part(store, prefix, p, known, stats) for p in parts]
        lineage.extend(_store_part(store, prefix, _edges(p), known, stats) for p in parts)
        uris[kind] = _write_list(store, run_prefix, kind, version, stored, stats)
    uris["lineage"] = _write_list(store, run_prefix, "lineage", version, lineage, stats)
    return Written(uris["accepted"], uris["rejected"], uris["lineage"], stats)


LIST_NAMES: dict[str, str] = {"accepted": "manifest", "rejected": "rejected", "lineage": "lineage"}


def _write_list(
    store: ObjectStore,
    run_prefix: str,
    kind: PartKind,
    version: str,
    parts: list[ManifestPart],
    stats: WriteStats,
) -> str:
    listing = PartList(
        kind=kind,
        version=version,
        rows=sum(p.rows for p in parts),
        bytes=sum(p.bytes for p in parts),
        parts=parts,
    )
    key = f"{run_prefix}/{LIST_NAMES[kind]}{PARTS_SUFFIX}"
    body = listing.model_dump_json(by_alias=True, indent=1).encode()
    store.put(key, body)
    stats.bytes_written += len(body)
    return key


# --- streaming and incremental writers ---------------------------------------------------------------
#
# ``write_parts`` takes every row of a version at once (and the parent's ``Layout``, one entry per row),
# which bounds it by the driver's memory. The writers below give the same parts, lists and lineage while
# holding a bounded number of rows: ``PartWriter`` for a first (or fully rebuilt) version fed batch by
# batch, ``write_change`` for a version that differs from its parent by a few upserts, additions and
# deletions, which reads only the parent parts whose id range can hold a changed sample.


def _conform(table: pa.Table, schema: pa.Schema = SCHEMA) -> pa.Table:
    """``table`` in ``schema``, columns it lacks (parts written before they existed) added as nulls."""
    missing = [f for f in schema if f.name not in table.column_names]
    for f in missing:
        table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    return _normalized(table, schema)


def _rows_table(rows: pa.Table | Sequence[Mapping[str, Any]] | None) -> pa.Table:
    if rows is None:  # not SCHEMA.empty_table(): that imports pandas (seconds, for nothing)
        return pa.Table.from_batches([], schema=SCHEMA)
    return _conform(rows) if isinstance(rows, pa.Table) else to_table(rows)


def _split(table: pa.Table) -> dict[PartKind, pa.Table]:
    """Accepted rows and the others (rejected, quarantined, duplicate: the rejected kind), as the
    pipeline splits them."""
    if not table.num_rows:  # (a compute call with a Python scalar imports pandas: seconds, for nothing)
        return {"accepted": table, "rejected": table}
    accepted = pc.equal(table.column("disposition"), Disposition.ACCEPTED.value).fill_null(False)
    return {"accepted": table.filter(accepted), "rejected": table.filter(pc.invert(accepted))}


def _sort_key(table: pa.Table, row: int, kind: str) -> tuple[tuple[bool, str], ...]:
    """Row ``row``'s place in the kind's part order as Python compares it: nulls last, like Arrow's sort
    (code point order of str is the byte order of UTF-8 that Arrow sorts by)."""
    values = (table.column(c)[row].as_py() for c in PART_ORDER[kind])
    return tuple((v is None, v or "") for v in values)


def _store_with_edges(
    store: ObjectStore, prefix: str, part: pa.Table, known: set[str], stats: WriteStats
) -> tuple[ManifestPart, ManifestPart]:
    """A part and its lineage edge part (edge part i of a version belongs to its manifest part i)."""
    return _store_part(store, prefix, part, known, stats), _store_part(
        store, prefix, _edges(part), known, stats
    )


def _finish_lists(
    store: ObjectStore,
    run_prefix: str,
    version: str,
    kinds: dict[PartKind, list[tuple[ManifestPart, ManifestPart]]],
    stats: WriteStats,
) -> Written:
    """The three part lists of a version from its (part, edge part) pairs, accepted then rejected."""
    uris: dict[PartKind, str] = {}
    lineage: list[ManifestPart] = []
    for kind in ("accepted", "rejected"):
        pairs = kinds[kind]
        uris[kind] = _write_list(store, run_prefix, kind, version, [p for p, _ in pairs], stats)
        lineage.extend(e for _, e in pairs)
    uris["lineage"] = _write_list(store, run_prefix, "lineage", version, lineage, stats)
    return Written(uris["accepted"], uris["rejected"], uris["lineage"], stats)


class PartWriter:
    """A first (or fully rebuilt) version's parts, written while its rows stream in: ``add`` batches of
    rows of any disposition, then ``finish`` for the part lists. Holds one batch and, per kind, less
    than one part of rows; gives the parts, lists and lineage that ``write_parts`` gives for the same
    rows without a parent.

    Each kind's rows must arrive in its part order across batches (``PART_ORDER``: by sample id), as
    a first version's parts are slices of that order; a
    batch may be unsorted within itself. A batch out of order is refused (``ValueError``) rather than
    written into parts whose id ranges overlap. (Ray Data gives ordered batches: ``ds.sort(...)``.)
    """

    def __init__(
        self, store: ObjectStore, dataset: str, run_prefix: str, version: str, known: Iterable[str] = ()
    ) -> None:
        self.store = store
        self.prefix = dataset_prefix(dataset)
        self.run_prefix = run_prefix
        self.version = version
        self.known = set(known)  # parts known to exist (a rebuilt version's parent): no exists() call
        self.stats = WriteStats()
        self._pending: dict[PartKind, pa.Table | None] = {"accepted": None, "rejected": None}
        self._last: dict[PartKind, tuple[tuple[bool, str], ...] | None] = {"accepted": None, "rejected": None}
        self._pairs: dict[PartKind, list[tuple[ManifestPart, ManifestPart]]] = {
            "accepted": [],
            "rejected": [],
        }
        self._done = False

    def add(self, batch: pa.Table | Sequence[Mapping[str, Any]]) -> None:
        """Rows of the version (accepted ones go to the manifest, the others to the rejected rows)."""
        if self._done:
            raise ValueError("PartWriter.add after finish")
        for kind, rows in _split(_rows_table(batch)).items():
            if rows.num_rows:
                self._add(kind, _in_part_order(rows, kind))

    def _add(self, kind: PartKind, rows: pa.Table) -> None:
        first = _sort_key(rows, 0, kind)
        last = self._last[kind]
        if last is not None and first < last:
            raise ValueError(
                f"{kind} rows out of order: a batch starts at {first} after {last}; a streamed version "
                f"needs its rows in the order {PART_ORDER[kind]} (write_parts takes them in any order)"
            )
        self._last[kind] = _sort_key(rows, rows.num_rows - 1, kind)
        pending = self._pending[kind]
        table = rows if pending is None else pa.concat_tables([pending, rows])
        start = 0
        while table.num_rows - start >= PART_ROWS:
            self._write(kind, table.slice(start, PART_ROWS))
            start += PART_ROWS
        rest = table.num_rows - start
        # a copy: a slice would keep the whole batch alive until the next part
        self._pending[kind] = table.slice(start).take(np.arange(rest)) if rest else None

    def _write(self, kind: PartKind, part: pa.Table) -> None:
        self._pairs[kind].append(_store_with_edges(self.store, self.prefix, part, self.known, self.stats))

    def finish(self) -> Written:
        """The last (possibly small) part of each kind, then the three part lists."""
        if self._done:
            raise ValueError("PartWriter.finish twice")
        self._done = True
        for kind, pending in self._pending.items():
            if pending is not None:
                self._write(kind, pending)
            self._pending[kind] = None
        return _finish_lists(self.store, self.run_prefix, self.version, self._pairs, self.stats)


def write_new_parts(
    store: ObjectStore,
    dataset: str,
    run_prefix: str,
    version: str,
    batches: Iterable[pa.Table | Sequence[Mapping[str, Any]]],
    known: Iterable[str] = (),
) -> Written:
    """``PartWriter`` over ``batches`` (each kind's rows in its reading order across batches)."""
    writer = PartWriter(store, dataset, run_prefix, version, known)
    for batch in batches:
        writer.add(batch)
    return writer.finish()


@dataclass(frozen=True)
class ParentParts:
    """A parent version as its part lists: all ``write_change`` needs (reading it reads no part)."""

    accepted: PartList
    rejected: PartList
    lineage: PartList | None = None  # None: edges of reused parts are derived again (their parts read)

    @staticmethod
    def read(store: ObjectStore, source: VersionRecord | Written) -> ParentParts | None:
        """The part lists a version record (or a ``Written``) names; None for a version written before
        parts (one Parquet file per kind)."""
        if not (is_part_list(source.manifest_uri) and is_part_list(source.rejected_uri)):
            return None
        accepted = PartList.model_validate_json(store.get(source.manifest_uri))
        rejected = PartList.model_validate_json(store.get(source.rejected_uri))
        lineage = (
            PartList.model_validate_json(store.get(source.lineage_uri))
            if is_part_list(source.lineage_uri)
            else None
        )
        return ParentParts(accepted, rejected, lineage)

    def known_keys(self) -> set[str]:
        lists = [self.accepted, self.rejected] + ([self.lineage] if self.lineage is not None else [])
        return {p.key for listing in lists for p in listing.parts}

    def edge_parts(self) -> dict[str, ManifestPart]:
        """Each manifest (or rejected) part's lineage part, when the lineage list matches them one to
        one (as ``write_parts`` writes it); empty otherwise."""
        parts = self.accepted.parts + self.rejected.parts
        edges = self.lineage.parts if self.lineage is not None else []
        if len(parts) != len(edges) or any(p.rows != e.rows for p, e in zip(parts, edges, strict=True)):
            return {}
        return {p.key: e for p, e in zip(parts, edges, strict=True)}


def _unique_ids(table: pa.Table, what: str) -> pa.Array:
    column = table.column("sample_id")  # (combine_chunks of no chunks imports pandas)
    ids = pa.concat_arrays(column.chunks) if column.num_chunks else pa.nulls(0, pa.string())
    if ids.null_count or len(pc.unique(ids)) != len(ids):
        raise ValueError(f"{what}: every row needs its own sample id")
    return ids


class _Change:
    """One ``write_change`` call: the parent, the changed ids and where the new parts go."""

    def __init__(
        self, store: ObjectStore, dataset: str, parent: ParentParts, touched: pa.Array, stats: WriteStats
    ) -> None:
        self.store = store
        self.prefix = dataset_prefix(dataset)
        self.known = parent.known_keys()
        self.edges = parent.edge_parts()
        self.touched = touched
        self.touched_sorted = sorted(touched.to_pylist())
        self.stats = stats

    def _load(self, part: ManifestPart) -> pa.Table:
        return _conform(_parquet(self.store.get(part.key)))

    def _pieces(
        self, kind: PartKind, parts: list[ManifestPart], upserts: pa.Table, added: pa.Table
    ) -> Iterator[tuple[ManifestPart | pa.Table, int]]:
        """The plan's pieces in its order: each parent part (a reference when none of its rows changed,
        else its rows rewritten), then the new rows; one rewritten part held at a time."""
        found: list[pa.Array] = []
        for part in parts:
            if not part.may_hold_any(self.touched_sorted):
                yield part, part.rows
                continue
            data = self.store.get(part.key)
            ids = _parquet(data, ["sample_id"]).column("sample_id")
            if not pc.any(pc.is_in(ids, value_set=self.touched)).as_py():
                yield part, part.rows  # in range, but none of its rows changed
                continue
            rows = _conform(_parquet(data))
            kept = rows.filter(pc.invert(pc.is_in(rows.column("sample_id"), value_set=self.touched)))
            mine = upserts.filter(pc.is_in(upserts.column("sample_id"), value_set=ids))
            found.append(mine.column("sample_id").combine_chunks())
            piece = _in_part_order(pa.concat_tables([kept, mine]), kind)
            if piece.num_rows:
                yield piece, piece.num_rows
        seen = pa.concat_arrays(found) if found else pa.nulls(0, pa.string())
        new = pa.concat_tables(
            [upserts.filter(pc.invert(pc.is_in(upserts.column("sample_id"), value_set=seen))), added]
        )
        for piece in _new_pieces(_in_part_order(new, kind)):
            yield piece, piece.num_rows

    def _emit(
        self, batch: list[ManifestPart | pa.Table], kind: PartKind
    ) -> tuple[ManifestPart, ManifestPart]:
        only = batch[0] if len(batch) == 1 else None
        if isinstance(only, ManifestPart):  # an unchanged parent part, referenced by its key
            self.stats.parts_reused += 1
            edge = self.edges.get(only.key)
            if edge is None:  # the parent's lineage list does not say: derive its edges again
                return only, _store_part(
                    self.store, self.prefix, _edges(self._load(only)), self.known, self.stats
                )
            self.stats.parts_reused += 1
            return only, edge
        tables = [self._load(p) if isinstance(p, ManifestPart) else p for p in batch]
        table = _in_part_order(pa.concat_tables(tables), kind) if len(tables) > 1 else tables[0]
        return _store_with_edges(self.store, self.prefix, table, self.known, self.stats)

    def kind(
        self, kind: PartKind, parts: list[ManifestPart], upserts: pa.Table, added: pa.Table
    ) -> list[tuple[ManifestPart, ManifestPart]]:
        full: list[tuple[ManifestPart, ManifestPart]] = []
        merged: list[tuple[ManifestPart, ManifestPart]] = []
        for whole, batch in _merge_small(self._pieces(kind, parts, upserts, added)):
            (full if whole else merged).append(self._emit(batch, kind))
        return full + merged


def write_change(
    store: ObjectStore,
    dataset: str,
    run_prefix: str,
    version: str,
    parent: ParentParts | VersionRecord | Written,
    upserts: pa.Table | Sequence[Mapping[str, Any]] | None = None,
    deletes: Iterable[str] | pa.Array | pa.ChunkedArray | None = None,
    added: pa.Table | Sequence[Mapping[str, Any]] | None = None,
) -> Written:
    """A version that differs from ``parent`` by some rows, written in proportion to the change.

    - ``upserts``: rows that replace the parent's rows of the same sample id wherever they were
      (accepted or rejected; a row goes to the kind its disposition says), or join it when no parent
      row has their id;
    - ``deletes``: sample ids whose rows leave the version;
    - ``added``: rows of samples the parent does not hold (the caller knows: the listing diff's new
      objects). Not looked up in the parent: random new ids fall in the id range of nearly every part,
      so as upserts they would make every part a candidate. A wrong claim gives a duplicate sample id.

    Only the parent parts whose ``[first_id, last_id]`` can hold an upserted or deleted id are read
    (their ``sample_id`` column first, the whole part when one of its rows changed; a part without
    statistics is always a candidate), one at a time; every other parent part (and its lineage part) is
    referenced by its key without reading it. The parts are those ``write_parts`` gives for the same
    final rows and the parent's layout (same plan rules), so a version costs about its changed parts.
    A parent written before parts (one file per kind) is read whole and written with ``write_parts``.
    """
    upserted = _rows_table(upserts)
    new = _rows_table(added)
    if isinstance(deletes, pa.ChunkedArray):
        deleted = deletes.combine_chunks().cast(pa.string())
    elif isinstance(deletes, pa.Array):
        deleted = deletes.cast(pa.string())
    else:
        listed = list(deletes or ())  # pa.array of a list imports pandas: seconds, so only when needed
        deleted = pa.array(listed, pa.string()) if listed else pa.nulls(0, pa.string())
    upserts_of, added_of = _split(upserted), _split(new)
    # one row per id and kind: an accepted row and its dropped byte-identical copy share a sample id
    upserted_ids = pa.concat_arrays(
        [_unique_ids(upserts_of[k], f"{k} upserts") for k in ("accepted", "rejected")]
    )
    new_ids = pa.concat_arrays([_unique_ids(added_of[k], f"{k} added") for k in ("accepted", "rejected")])
    touched = pc.unique(pa.concat_arrays([deleted, upserted_ids]).drop_null())
    if pc.any(pc.is_in(new_ids, value_set=touched)).as_py():
        raise ValueError("a sample is both added and upserted or deleted")
    parts = parent if isinstance(parent, ParentParts) else ParentParts.read(store, parent)
    if parts is None:
        assert not isinstance(parent, ParentParts)
        return _write_change_whole(store, dataset, run_prefix, version, parent, upserted, touched, new)
    stats = WriteStats()
    change = _Change(store, dataset, parts, touched, stats)
    kinds: list[tuple[PartKind, PartList]] = [("accepted", parts.accepted), ("rejected", parts.rejected)]
    pairs = {
        kind: change.kind(kind, listing.parts, upserts_of[kind], added_of[kind]) for kind, listing in kinds
    }
    return _finish_lists(store, run_prefix, version, pairs, stats)


def _write_change_whole(
    store: ObjectStore,
    dataset: str,
    run_prefix: str,
    version: str,
    parent: VersionRecord | Written,
    upserts: pa.Table,
    touched: pa.Array,
    added: pa.Table,
) -> Written:
    """``write_change`` on a parent of one Parquet file per kind: its rows, changed, through write_parts."""
    before = pa.concat_tables(
        [_conform(read_table(store, parent.manifest_uri)), _conform(read_table(store, parent.rejected_uri))]
    )
    kept = before.filter(pc.invert(pc.is_in(before.column("sample_id"), value_set=touched)))
    rows = _split(pa.concat_tables([kept, upserts, added]))
    return write_parts(store, dataset, run_prefix, version, rows["accepted"], rows["rejected"])
