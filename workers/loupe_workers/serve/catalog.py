"""What ``loupe serve`` shows, apart from HTTP: one version's rows as a cached Arrow table, filtered and
paged with pyarrow.compute, duplicate groups, a sample's whole record, and the diff of two versions.

Every row of a version is here: the manifest (accepted samples) and the rejected file (rejected,
quarantined and duplicate rows), sorted by source, key and frame. A row is named by its *ref*, the first
16 hex digits of the sha256 of (source, key, frame index): unique within a version (exact copies share a
sample id, never a raw object) and the same in every version of the raw object. A full 64-hex sample id
is accepted too (the accepted row first).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from loupe_api.samples import Disposition, SampleRow
from loupe_api.tags import TAG_NAME
from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore, blob_key
from loupe_storage.versions import known_datasets, list_versions
from loupe_workers.curation.dedup import split_variants
from loupe_workers.storage.rows import edge_rows, sample_rows
from loupe_workers.use.exports import Box, pixel_boxes
from loupe_workers.versioning.diffs import diff_rows
from loupe_workers.versioning.versions import read_tag, read_version

DISPOSITIONS = tuple(Disposition)
# numeric columns a range filter may bound (min.NAME / max.NAME) and the sample page lists: SampleRow
# keys, so a row's value of one is typed (float | None; int | None for the last three)
Measure = Literal["sharpness", "noise", "brightness_p99", "brightness_p5", "clipped", "contrast", "tonal_range",
                  "black_level", "entropy", "aspect_ratio", "width", "height", "size"]  # fmt: skip
MEASURES: tuple[Measure, ...] = get_args(Measure)  # in that order
CHOICE_FILTERS = ("split", "label", "disposition", "reason", "flag")
NONE = "(none)"  # the filter value for a missing split, label or reason
DEFAULT_LIMIT = 60
MAX_LIMIT = 500
MAX_FILTER_VALUES = 100
MEMBERS_SHOWN = 50  # duplicates listed per group; the count is always complete
DIFF_SHOWN = 200  # cards per kind of change; the counts are always complete
FACET_VALUES = 50  # metadata fields with more distinct values are not offered as a picker
VERSIONS_CACHED = 4
LISTING_SECONDS = 5.0  # how long the list of datasets is reused before the store is listed again
_REF = re.compile(r"[0-9a-f]{16}|[0-9a-f]{64}")
_UPLOAD = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"\d{1,9}\.\d{1,9}\.\d{1,9}")
_FIELD = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


class QueryError(ValueError):
    """A request that cannot be answered as asked (HTTP 400)."""


class NotFound(LookupError):
    """No such dataset, version or sample (HTTP 404)."""


# --- queries ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """A bound on a numeric column: ``low <= value <= high`` (either may be open)."""

    measure: str
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Query:
    """A grid request. Within one filter the values are alternatives; filters are combined with and."""

    split: tuple[str, ...] = ()
    label: tuple[str, ...] = ()
    disposition: tuple[str, ...] = ()
    reason: tuple[str, ...] = ()
    flag: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()  # (field, value): the field equals the value
    ranges: tuple[Range, ...] = ()
    text: str | None = None  # ranked by relevance to a text (search.py)
    like: str | None = None  # ranked by similarity to this sample's image (search.py)
    image: str | None = None  # ranked by similarity to an uploaded image (its sha256)
    offset: int = 0
    limit: int = DEFAULT_LIMIT

    @property
    def ranked(self) -> bool:
        return self.text is not None or self.like is not None or self.image is not None


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise QueryError(f"{name}: {text[:40]!r} is not a number") from None
    if not np.isfinite(value):
        raise QueryError(f"{name}: {text[:40]!r} is not a finite number")
    return value


def whole_number(name: str, text: str, high: int) -> int:
    """A URL parameter as an int in [0, high]; QueryError otherwise."""
    if not text.isdigit() or len(text) > 9:
        raise QueryError(f"{name}: {text[:40]!r} is not a whole number >= 0")
    return min(int(text), high)


def parse_query(params: Iterable[tuple[str, str]]) -> Query:
    """A Query from URL parameters: ``split=val``, ``label=``, ``disposition=``, ``reason=``, ``flag=``
    (each repeatable), ``m.FIELD=VALUE`` (metadata), ``min.MEASURE=`` / ``max.MEASURE=``, ``text=``,
    ``like=REF``, ``image=UPLOAD`` (the sha256 of an uploaded example), ``offset=``, ``limit=`` (at most MAX_LIMIT). Unknown names are refused."""
    choices: dict[str, list[str]] = {name: [] for name in CHOICE_FILTERS}
    metadata: list[tuple[str, str]] = []
    bounds: dict[str, dict[str, float]] = {}
    text = like = image = None
    offset, limit = 0, DEFAULT_LIMIT
    for name, value in params:
        if name in choices:
            if value:
                choices[name].append(value[:200])
        elif name.startswith("m.") and _FIELD.fullmatch(name[2:]):
            metadata.append((name[2:], value[:200]))
        elif name[:4] in ("min.", "max.") and name[4:] in MEASURES:
            if value != "":
                bounds.setdefault(name[4:], {})[name[:3]] = _number(name, value)
        elif name == "text":
            text = value.strip()[:200] or None
        elif name == "like":
            like = value or None
            if like is not None and not _REF.fullmatch(like):
                raise QueryError("like: not a sample ref")
        elif name == "image":
            image = value or None
            if image is not None and not _UPLOAD.fullmatch(image):
                raise QueryError("image: not an upload id")
        elif name == "offset":
            offset = whole_number(name, value, 10**9)
        elif name == "limit":
            limit = max(1, whole_number(name, value, MAX_LIMIT))
        else:
            raise QueryError(f"unknown parameter {name[:40]!r}")
    bad = [d for d in choices["disposition"] if d not in DISPOSITIONS]
    if bad:
        raise QueryError(f"disposition: {bad[0][:40]!r} is not one of {', '.join(DISPOSITIONS)}")
    if any(len(v) > MAX_FILTER_VALUES for v in choices.values()):
        raise QueryError(f"at most {MAX_FILTER_VALUES} values per filter")
    ranges = tuple(Range(m, b.get("min"), b.get("max")) for m, b in sorted(bounds.items()))
    return Query(
        split=tuple(choices["split"]), label=tuple(choices["label"]),
        disposition=tuple(choices["disposition"]), reason=tuple(choices["reason"]),
        flag=tuple(choices["flag"]), metadata=tuple(metadata), ranges=ranges, text=text, like=like, image=image,
        offset=offset, limit=limit,
    )  # fmt: skip


# --- what the pages show ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    """A thumbnail in a grid."""

    ref: str
    sample_id: str
    source: str
    key: str
    frame_index: int | None  # the frame of a video, else None
    disposition: str
    reason: str | None
    detail: str | None
    label: str | None
    split: str | None
    flags: tuple[str, ...]
    format: str | None
    width: int | None
    height: int | None
    score: float | None = None  # relevance, when ranked by a search


@dataclass(frozen=True)
class Page:
    """One page of a filtered grid: ``total`` rows match of ``version_total`` in the version."""

    total: int
    version_total: int
    offset: int
    limit: int
    items: tuple[Card, ...]


@dataclass(frozen=True)
class Span:
    """The smallest and largest value of a measure in a version."""

    low: float
    high: float


@dataclass(frozen=True)
class Facets:
    """The values each filter can take in a version, with counts."""

    dataset: str
    version: str
    total: int
    splits: dict[str, int]
    labels: dict[str, int]
    dispositions: dict[str, int]
    reasons: dict[str, int]
    flags: dict[str, int]
    metadata: dict[str, dict[str, int]]
    measures: dict[str, Span]
    duplicate_groups: int


@dataclass(frozen=True)
class LineageEdge:
    """Raw object -> sample, as the version's lineage file records it."""

    version: str
    uri: str
    raw_sha256: str
    blob: str
    disposition: str


@dataclass(frozen=True)
class Member:
    """A duplicate in its group: how it was found and how far its perceptual hash is from the kept copy's."""

    card: Card
    kind: str | None  # exact_duplicate or near_duplicate
    distance: int | None  # Hamming bits, the closest of the copy's 8 flips and quarter turns
    why: str | None  # the manifest's detail ("copy of ...")


@dataclass(frozen=True)
class Group:
    """A group of duplicates: the kept copy (None when the version does not hold it) and its copies."""

    group: str
    kept: Card | None
    keep_reason: str | None
    members: tuple[Member, ...]  # the first MEMBERS_SHOWN, in key order
    members_total: int


@dataclass(frozen=True)
class GroupPage:
    total: int
    offset: int
    limit: int
    items: tuple[Group, ...]


@dataclass(frozen=True)
class Lineage:
    """Where a sample's bytes came from and where they are kept."""

    source: str
    key: str
    uri: str | None
    etag: str | None
    size: int | None
    sha256: str
    blob: str
    media: str | None
    frame_index: int | None
    frame_time: float | None
    video_sha256: str | None
    edges: tuple[LineageEdge, ...]


@dataclass(frozen=True)
class Detail:
    """Everything a version records about one row."""

    dataset: str
    version: str
    card: Card
    measures: dict[str, float | None]
    metadata: dict[str, str]
    labels: dict[str, Any]
    boxes: tuple[Box, ...]
    exif: dict[str, Any]
    privacy: dict[str, Any] | None
    extension: str | None
    hash: str | None
    duplicate_of: Card | None
    group: Group | None
    lineage: Lineage
    columns: dict[str, Any] = field(repr=False)  # the other manifest columns, as stored


@dataclass(frozen=True)
class Diff:
    """Version ``a`` -> ``b`` (diffs.diff_rows): counts of each change and the first DIFF_SHOWN cards."""

    dataset: str
    a: str
    b: str
    unchanged: int
    counts: dict[str, int]
    added: tuple[Card, ...]
    removed: tuple[Card, ...]
    relabeled: tuple[Card, ...]
    resplit: tuple[Card, ...]
    previous_labels: dict[str, str | None]  # ref -> the label in ``a`` of each relabelled card


# --- one version -----------------------------------------------------------------------------------

CARD_COLUMNS = ("sample_id", "source", "key", "frame_index", "disposition", "reason", "detail", "label",
                "split", "flags", "format", "width", "height")  # fmt: skip


def row_ref(source: object, key: object, frame_index: object) -> str:
    text = f"{source}\0{key}\0{'' if frame_index is None else frame_index}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _json(value: object) -> Any:
    if isinstance(value, str | bytes):
        try:
            return json.loads(value) if value else None
        except ValueError:
            return None
    return value


def _read(store: ObjectStore, key: str) -> pa.Table:
    # a Parquet file or a part list (manifest parts), read without pyarrow's pool (see manifest.read_rows)
    from loupe_workers.storage.manifest import read_table

    return read_table(store, key)


def _counts(values: Iterable[object]) -> dict[str, int]:
    counted = Counter(NONE if v is None else str(v) for v in values)
    return dict(sorted(counted.items(), key=lambda kv: (-kv[1], kv[0])))


def _hamming(a: str | None, b: str | None) -> int | None:
    try:
        return (int(a or "", 16) ^ int(b or "", 16)).bit_count() if a and b else None
    except ValueError:
        return None


def _metadata_columns(column: pa.ChunkedArray) -> dict[str, pa.Array]:
    """Each metadata field as a string column (None where a row lacks it); each distinct JSON object is
    decoded once (most rows of a source share their static fields)."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    objects = [_json(v) for v in encoded.dictionary.to_pylist()]
    decoded = [m if isinstance(m, dict) else {} for m in objects]
    fields = sorted({str(k) for m in decoded for k in m})
    out = {}
    for name in fields:
        values = pa.array([None if (v := m.get(name)) is None else str(v) for m in decoded], pa.string())
        out[name] = pc.take(values, encoded.indices)
    return out


class VersionView:
    """One version's rows, read once: filters, pages, groups and records."""

    def __init__(self, store: ObjectStore, record: VersionRecord) -> None:
        self.store = store
        self.record = record
        tables = [_read(store, record.manifest_uri)]
        if record.rejected_uri:
            with contextlib.suppress(KeyError):  # an older version without the file
                tables.append(_read(store, record.rejected_uri))
        self.table = pa.concat_tables(tables, promote_options="default").combine_chunks()
        self.size = self.table.num_rows
        # The grid's order (source, key, frame) as row positions: sorting the table itself would copy
        # every column, the long JSON ones too (a second at 100,000 rows).
        keys = [(c, "ascending") for c in ("source", "key", "frame_index") if c in self.table.column_names]
        self.order: IntArray = np.asarray(pc.sort_indices(self.table, sort_keys=keys), dtype=np.int64)
        self.rank: IntArray = np.empty(self.size, dtype=np.int64)
        self.rank[self.order] = np.arange(self.size, dtype=np.int64)
        head = self.table.select(["source", "key", "frame_index", "sample_id", "disposition"]).to_pydict()
        self.refs = [row_ref(*t) for t in zip(head["source"], head["key"], head["frame_index"], strict=True)]
        self.by_ref = {ref: i for i, ref in enumerate(self.refs)}
        self.by_sample: dict[str, int] = {}
        pairs = list(enumerate(zip(head["sample_id"], head["disposition"], strict=True)))
        for i, (sample, _) in pairs:
            self.by_sample.setdefault(str(sample), i)
        for i, (sample, disposition) in pairs:  # exact copies share the id: the accepted row wins
            if disposition == Disposition.ACCEPTED:
                self.by_sample[str(sample)] = i
        self.metadata = _metadata_columns(self.table.column("metadata"))
        self._groups: dict[str, tuple[int | None, list[int]]] | None = None
        self._group_order: list[str] = []
        self._lineage: pa.Table | None = None
        self._facets: Facets | None = None
        self._lock = threading.RLock()

    # -- lookups --

    def position(self, ref: str) -> int:
        if not _REF.fullmatch(ref):
            raise QueryError("not a sample ref (16 or 64 lower-case hex digits)")
        found = self.by_ref.get(ref) if len(ref) == 16 else self.by_sample.get(ref)
        if found is None:
            raise NotFound(f"{self.record.dataset}@{self.record.version} has no sample {ref}")
        return found

    def sha256(self, ref: str) -> str:
        return str(self.table.column("sha256")[self.position(ref)].as_py())

    def cards(self, positions: Sequence[int], scores: Mapping[str, float] | None = None) -> tuple[Card, ...]:
        if not len(positions):
            return ()
        rows = sample_rows(self.table.select(list(CARD_COLUMNS)).take(pa.array(positions, pa.int64())))
        return tuple(self._card(self.refs[p], r, scores) for p, r in zip(positions, rows, strict=True))

    @staticmethod
    def _card(ref: str, row: SampleRow, scores: Mapping[str, float] | None) -> Card:
        width, height = row.get("width"), row.get("height")
        return Card(
            ref=ref, sample_id=str(row["sample_id"]), source=str(row["source"]), key=str(row["key"]),
            frame_index=row.get("frame_index"),
            disposition=str(row["disposition"]), reason=row.get("reason"), detail=row.get("detail"),
            label=row.get("label"), split=row.get("split"), flags=tuple(row.get("flags") or ()),
            format=row.get("format"), width=None if width is None else int(width),
            height=None if height is None else int(height),
            score=None if scores is None else scores.get(str(row["sample_id"])),
        )  # fmt: skip

    # -- filters --

    def _in(self, column: str, values: Sequence[str]) -> BoolArray:
        data = self.table.column(column)
        wanted = [v for v in values if v != NONE]
        mask = pc.is_in(data, value_set=pa.array(wanted, pa.string())).to_numpy(zero_copy_only=False)
        if NONE in values:
            mask = mask | pc.is_null(data).to_numpy(zero_copy_only=False)
        return np.asarray(mask, dtype=bool)

    def _flagged(self, flags: Sequence[str]) -> BoolArray:
        column = self.table.column("flags").chunk(0) if self.size else pa.array([], pa.list_(pa.string()))
        hits = pc.is_in(pc.list_flatten(column), value_set=pa.array(list(flags), pa.string()))
        rows = pc.list_parent_indices(column).filter(hits).to_numpy()
        mask = np.zeros(self.size, dtype=bool)
        mask[rows] = True
        return mask

    def mask(self, query: Query) -> BoolArray:
        mask = np.ones(self.size, dtype=bool)
        for column, values in (("split", query.split), ("label", query.label),
                               ("disposition", query.disposition), ("reason", query.reason)):  # fmt: skip
            if values:
                mask &= self._in(column, values)
        if query.flag:
            mask &= self._flagged(query.flag)
        for name, value in query.metadata:
            field_values = self.metadata.get(name)
            if field_values is None:
                return np.zeros(self.size, dtype=bool)  # no sample has the field
            mask &= np.asarray(
                pc.fill_null(pc.equal(field_values, value), False).to_numpy(zero_copy_only=False)
            )
        for bound in query.ranges:
            data = self.table.column(bound.measure)
            for op, limit in ((pc.greater_equal, bound.low), (pc.less_equal, bound.high)):
                if limit is not None:
                    mask &= np.asarray(pc.fill_null(op(data, limit), False).to_numpy(zero_copy_only=False))
        return mask

    def page(self, query: Query, ranked: Sequence[tuple[str, float]] | None = None) -> Page:
        """Rows matching ``query`` in key order, or in the order of ``ranked`` (sample id, score) when a
        search ranked them (only rows the search scored take part)."""
        mask = self.mask(query)
        scores: dict[str, float] | None = None
        if ranked is None:
            positions: IntArray = self.order[mask[self.order]]
        else:
            scores = dict(ranked)
            found = (self.by_sample.get(s) for s, _ in ranked)
            positions = np.array([p for p in found if p is not None and mask[p]], dtype=np.int64)
        chosen = positions[query.offset : query.offset + query.limit]
        return Page(total=len(positions), version_total=self.size, offset=query.offset, limit=query.limit,
                    items=self.cards(chosen.tolist(), scores))  # fmt: skip

    # -- facets --

    def facets(self) -> Facets:
        """What each filter can take (computed once per version)."""
        with self._lock:
            if self._facets is None:
                self._facets = self._count_facets()
            return self._facets

    def _count_facets(self) -> Facets:
        column = self.table.column
        flags = column("flags").chunk(0) if self.size else pa.array([], pa.list_(pa.string()))
        measures: dict[str, Span] = {}
        for measure in MEASURES:
            if measure in self.table.column_names:
                span = pc.min_max(column(measure)).as_py()
                if span["min"] is not None:
                    measures[measure] = Span(float(span["min"]), float(span["max"]))
        metadata: dict[str, dict[str, int]] = {}
        for name, values in self.metadata.items():
            counted = _counts(v for v in values.to_pylist() if v is not None)
            if len(counted) <= FACET_VALUES:
                metadata[name] = counted
        return Facets(
            dataset=self.record.dataset, version=self.record.version, total=self.size,
            splits=_counts(v for v in column("split").to_pylist() if v is not None),
            labels=_counts(column("label").to_pylist()),
            dispositions=_counts(column("disposition").to_pylist()),
            reasons=_counts(v for v in column("reason").to_pylist() if v is not None),
            flags=_counts(pc.list_flatten(flags).to_pylist()), metadata=metadata, measures=measures,
            duplicate_groups=len(self.groups_index()[1]),
        )  # fmt: skip

    # -- duplicate groups --

    def groups_index(self) -> tuple[dict[str, tuple[int | None, list[int]]], list[str]]:
        """Group id -> (kept row, duplicate rows), for the groups that have duplicates, in key order of
        their kept copies."""
        with self._lock:
            if self._groups is None:
                data = self.table.select(["dup_group", "disposition"]).to_pydict()
                kept: dict[str, int] = {}
                members: dict[str, list[int]] = {}
                for i, (group, disposition) in enumerate(
                    zip(data["dup_group"], data["disposition"], strict=True)
                ):
                    if group is None:
                        continue
                    if disposition == Disposition.DUPLICATE:
                        members.setdefault(group, []).append(i)
                    elif disposition == Disposition.ACCEPTED:
                        kept.setdefault(group, i)
                self._groups = {g: (kept.get(g), rows) for g, rows in members.items()}
                last = self.size  # groups whose kept copy is not in the version come last
                self._group_order = sorted(
                    members, key=lambda g: (int(self.rank[kept[g]]) if g in kept else last, g)
                )
            return self._groups, self._group_order

    def _group(self, group: str) -> Group:
        groups, _ = self.groups_index()
        kept_at, every = groups[group]
        rows = sorted(every, key=lambda p: int(self.rank[p]))[:MEMBERS_SHOWN]
        columns = ["hash", "hash_variants", "dup_kind", "detail", "keep_reason"]
        kept_row: SampleRow = (
            sample_rows(self.table.select(columns).slice(kept_at, 1))[0] if kept_at is not None else {}
        )
        kept_hash = kept_row.get("hash")
        infos = sample_rows(self.table.select(columns).take(pa.array(rows, pa.int64())))
        members = []
        for card, info in zip(self.cards(rows), infos, strict=True):
            hashes = [info.get("hash"), *split_variants(info)[0]]
            distances = [d for h in hashes if (d := _hamming(kept_hash, h)) is not None]
            members.append(Member(card, info.get("dup_kind"), min(distances) if distances else None,
                                  info.get("detail")))  # fmt: skip
        kept = self.cards([kept_at])[0] if kept_at is not None else None
        return Group(group, kept, kept_row.get("keep_reason"), tuple(members), len(every))

    def groups(self, offset: int = 0, limit: int = 20) -> GroupPage:
        _, order = self.groups_index()
        chosen = order[offset : offset + max(1, min(limit, 100))]
        return GroupPage(len(order), offset, limit, tuple(self._group(g) for g in chosen))

    def group_of(self, ref: str) -> Group | None:
        value = self.table.column("dup_group")[self.position(ref)].as_py()
        groups, _ = self.groups_index()
        return self._group(str(value)) if value in groups else None

    # -- one row --

    def _edges(self, sample_id: str, key: str) -> tuple[LineageEdge, ...]:
        with self._lock:
            if self._lineage is None:
                try:
                    self._lineage = (
                        _read(self.store, self.record.lineage_uri) if self.record.lineage_uri else None
                    )
                except KeyError:
                    self._lineage = None
                if self._lineage is None:
                    self._lineage = pa.table({"sample_id": pa.array([], pa.string())})
            lineage = self._lineage
        if "key" not in lineage.column_names:
            return ()
        found = edge_rows(lineage.filter((pc.field("sample_id") == sample_id) & (pc.field("key") == key)))
        return tuple(
            LineageEdge(str(e.get("version")), str(e.get("uri")), str(e.get("raw_sha256")), str(e.get("blob")),
                        str(e.get("disposition")))
            for e in found
        )  # fmt: skip

    def detail(self, ref: str) -> Detail:
        position = self.position(ref)
        row = sample_rows(self.table.slice(position, 1))[0]
        card = self.cards([position])[0]
        labels = _json(row.get("labels")) or {}
        width, height = int(row.get("width") or 0), int(row.get("height") or 0)
        boxes = pixel_boxes(labels if isinstance(labels, dict) else {}, width, height)
        of = row.get("duplicate_of")
        original = self.by_sample.get(str(of)) if of else None
        shown = {*CARD_COLUMNS, *MEASURES, "metadata", "labels", "exif", "privacy", "extension", "hash",
                 "duplicate_of", "sha256", "uri", "etag", "blob_uri", "media", "frame_index", "frame_time",
                 "video_sha256", "keep_measures", "hash_variants"}  # fmt: skip
        metadata = _json(row.get("metadata")) or {}
        return Detail(
            dataset=self.record.dataset, version=self.record.version, card=card,
            measures={m: row.get(m) for m in MEASURES if m in row},
            metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {},
            labels=labels if isinstance(labels, dict) else {}, boxes=boxes,
            exif=_json(row.get("exif")) or {}, privacy=_json(row.get("privacy")),
            extension=row.get("extension"), hash=row.get("hash"),
            duplicate_of=self.cards([original])[0] if original is not None and original != position else None,
            group=self.group_of(ref),
            lineage=Lineage(
                source=str(row["source"]), key=str(row["key"]), uri=row.get("uri"), etag=row.get("etag"),
                size=row.get("size"), sha256=str(row["sha256"]), blob=row.get("blob_uri") or blob_key(str(row["sha256"])),
                media=row.get("media"), frame_index=row.get("frame_index"), frame_time=row.get("frame_time"),
                video_sha256=row.get("video_sha256"), edges=self._edges(str(row["sample_id"]), str(row["key"])),
            ),
            columns={k: v for k, v in row.items() if k not in shown},
        )  # fmt: skip

    def accepted_rows(self) -> list[SampleRow]:
        """What diffs.diff_rows compares: the accepted rows' ids, labels and splits."""
        table = self.table.select(["sample_id", "labels", "split", "disposition"])
        return sample_rows(table.filter(pc.field("disposition") == Disposition.ACCEPTED))


def diff(a: VersionView, b: VersionView) -> Diff:
    """The changes from ``a`` to ``b``, with cards (removed ones from ``a``, the others from ``b``)."""
    changes = diff_rows(a.accepted_rows(), b.accepted_rows())

    def shown(view: VersionView, ids: Sequence[str]) -> tuple[Card, ...]:
        return view.cards([view.by_sample[s] for s in ids[:DIFF_SHOWN] if s in view.by_sample])

    relabeled = shown(b, changes.relabeled)
    labels = a.table.column("label").to_pylist()
    before = {c.sample_id: labels[a.by_sample[c.sample_id]] for c in relabeled if c.sample_id in a.by_sample}
    kinds = {"added": changes.added, "removed": changes.removed, "relabeled": changes.relabeled,
             "resplit": changes.resplit}  # fmt: skip
    return Diff(
        dataset=b.record.dataset, a=a.record.version, b=b.record.version, unchanged=changes.unchanged,
        counts={k: len(v) for k, v in kinds.items()}, added=shown(b, changes.added),
        removed=shown(a, changes.removed), relabeled=relabeled, resplit=shown(b, changes.resplit),
        previous_labels={c.ref: before.get(c.sample_id) for c in relabeled},
    )  # fmt: skip


# --- the store -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created: str
    samples: int
    parent: str | None
    bump: str | None


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    versions: tuple[VersionInfo, ...]


class Catalog:
    """A store's datasets and versions, with the last VERSIONS_CACHED versions' views kept in memory.
    Safe to call from several threads."""

    def __init__(self, store: ObjectStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        self._views: OrderedDict[tuple[str, str], VersionView] = OrderedDict()
        self._listing: tuple[float, list[str]] | None = None
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}

    def dataset_names(self) -> list[str]:
        with self._lock:
            if self._listing is not None and self._clock() - self._listing[0] < LISTING_SECONDS:
                return self._listing[1]
        names = known_datasets(self.store)
        with self._lock:
            self._listing = (self._clock(), names)
        return names

    def _check_dataset(self, dataset: str) -> None:
        if dataset not in self.dataset_names():
            raise NotFound(f"no dataset {dataset[:100]!r} in {self.store.uri}")

    def datasets(self) -> list[DatasetInfo]:
        out = []
        for name in self.dataset_names():
            records = list_versions(self.store, name)
            out.append(DatasetInfo(name, tuple(
                VersionInfo(r.version, r.created.isoformat(), r.samples, r.parent, r.change.bump if r.change else None)
                for r in records)))  # fmt: skip
        return out

    def warm(self) -> None:
        """Read the latest version of each dataset ahead of the first request (best effort)."""
        try:
            for info in self.datasets()[:VERSIONS_CACHED]:
                if info.versions:
                    self.view(info.name, info.versions[-1].version).facets()
        except Exception:  # a request for it will report the failure
            return

    def view(self, dataset: str, version: str) -> VersionView:
        """The version's view (read on first use). NotFound for an unknown dataset or version."""
        self._check_dataset(dataset)
        if not _VERSION.fullmatch(version):  # a tag (production): read each time, as tags may move
            tag = read_tag(self.store, dataset, version) if TAG_NAME.fullmatch(version) else None
            if tag is None:
                raise NotFound(f"dataset {dataset} has no version or tag {version[:40]!r}")
            version = tag.version
        key = (dataset, version)
        with self._lock:
            if key in self._views:
                self._views.move_to_end(key)
                return self._views[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one reader per version; the others wait for its view
            with self._lock:
                if key in self._views:
                    return self._views[key]
            try:
                record = read_version(self.store, dataset, version)
            except LookupError as exc:
                raise NotFound(str(exc)) from exc
            view = VersionView(self.store, record)
            with self._lock:
                self._views[key] = view
                while len(self._views) > VERSIONS_CACHED:
                    self._views.popitem(last=False)
                self._loading.pop(key, None)
        return view
