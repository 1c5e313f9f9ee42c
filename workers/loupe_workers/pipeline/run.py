"""One run of one dataset: list, process what is new, curate, version, commit."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import posixpath
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, TypeVar, cast

from loupe_api.dataset import DatasetSpec, DatasetStats, DriftSpec, DriftSummary, HealthSummary
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest, RunResult
from loupe_api.keys import inputs_seen_key, label_errors_key, run_prefix
from loupe_api.label_qa import AGREEMENT_REASON, LabelQaStats
from loupe_api.labels import LabelErrorStats
from loupe_api.listing import matches_any, media_kind
from loupe_api.outliers import RelativeGateStats
from loupe_api.samples import CurationRow, Disposition, DupKind, SampleRow, Status
from loupe_api.sampling import SamplingSummary
from loupe_api.synthetic import SyntheticSpec, SyntheticSummary
from loupe_api.versions import VersionChange, VersionRecord
from loupe_storage.store import ObjectInfo, ObjectStore, StoreError, blob_key, open_store
from loupe_storage.versions import commit_version, latest_version
from loupe_workers.compute import renditions
from loupe_workers.compute.executor import AutoExecutor, Executor, InlineExecutor, RayExecutor
from loupe_workers.compute.process import ProcessSettings
from loupe_workers.curation import (
    access,
    gates,
    geometry,
    label_errors,
    label_qa,
    outliers,
    privacy,
    synthetic,
)
from loupe_workers.curation.dedup import DuplicateInfo, Measures, Verify, find_duplicates
from loupe_workers.curation.review import PredictionError, label_errors_bytes, parse_predictions
from loupe_workers.curation.sampling import Sampler, SamplingError, to_label_change
from loupe_workers.curation.splits import SplitUnit
from loupe_workers.curation.taxonomy import UNMAPPED_REASON, Tally, Taxonomy, drop_detail
from loupe_workers.embedding import ann, embed
from loupe_workers.embedding.models import model_bytes, model_spec
from loupe_workers.ingest import annotate
from loupe_workers.ingest.sources import (
    ListedObject,
    SourceUnavailable,
    list_media,
    listing_digest,
    source_store,
)
from loupe_workers.insights import analysis
from loupe_workers.media import decode as media
from loupe_workers.storage import changes, manifest
from loupe_workers.storage.leases import CollectionInProgress, run_lease
from loupe_workers.storage.rows import read_version_samples
from loupe_workers.versioning.retention import expire, retention_plan
from loupe_workers.versioning.semver import SampleState, decide, next_version
from loupe_workers.versioning.tiers import apply_tiers
from loupe_workers.versioning.versions import read_version, utcnow


def code_version() -> str:
    try:
        return package_version("loupe")
    except PackageNotFoundError:
        return "0+unknown"


class RunError(RuntimeError):
    """A run that could not complete; nothing was committed. ``reason`` is a CamelCase word the
    operator puts into the Dataset's Degraded condition (SourceUnavailable, SuspiciousShrink, ...)."""

    def __init__(self, message: str, reason: str = "RunFailed") -> None:
        super().__init__(message)
        self.reason = reason


def check_shrink(
    previous_rows: list[SampleRow],
    listed: list[ListedObject],
    sources: list[str],
    max_removed_fraction: float,
) -> str | None:
    """Why a listing that lost too much of what the current version was built from looks wrong, or None.

    An unmounted volume, a renamed prefix or an expired credential that lists nothing must not
    publish an empty dataset; sources dropped from the spec on purpose do not count.
    """
    before = {(r["source"], r["key"]) for r in previous_rows if r["source"] in sources}
    if not before or max_removed_fraction >= 1:
        return None
    now = {(o.source, o.key) for o in listed}
    lost = len(before - now)
    if lost / len(before) <= max_removed_fraction:
        return None
    return (
        f"the sources list {len(now)} objects and {lost} of the {len(before)} the current version was "
        f"built from are gone ({lost / len(before):.0%}, above versioning.maxRemovedFraction "
        f"{max_removed_fraction:g}); the current version stays. If the removal is intended, run once "
        "with --allow-shrink or raise versioning.maxRemovedFraction"
    )


@dataclass
class RunEvents:
    """Callbacks for progress reporting (the CLI draws them with rich)."""

    phase: Callable[[str], None] = lambda _: None
    start_processing: Callable[[int], None] = lambda _: None
    advance: Callable[[int], None] = lambda _: None


@dataclass
class Curated:
    rows: list[CurationRow]
    stats: DatasetStats
    states: dict[str, SampleState] = field(default_factory=dict)
    outliers: list[RelativeGateStats] = field(default_factory=list)  # stratum statistics of relative gates
    sampling: SamplingSummary | None = None  # what spec.sampling selected and left out
    label_qa: LabelQaStats | None = None  # agreement of the label sets, when two or more label one sample
    synthetic: SyntheticSummary | None = None  # real:synthetic counts (the analyzer adds the gap)


def _mapping_wire(spec: DatasetSpec) -> dict[str, Any]:
    """spec.labels without errors, as digested before errors existed: finding candidates maps nothing."""
    return {k: v for k, v in spec.labels.to_wire().items() if k != "errors"}


def spec_digest(spec: DatasetSpec, sources: dict[str, IngestSourceSpec]) -> str:
    """Digest of everything that decides membership, labels and splits (not storage or execution)."""
    relevant = {
        "sources": [s.to_wire() for s in spec.sources],
        "qualityGates": spec.quality_gates.to_wire(),
        "dedup": spec.dedup.to_wire(),
        "splits": spec.splits.to_wire(),
        **({"privacy": spec.privacy.to_wire()} if spec.privacy.active() else {}),
        **access.digest_fields(spec),
        **({"labels": _mapping_wire(spec)} if spec.labels.active() else {}),
        **({"labelErrors": spec.labels.errors.to_wire()} if spec.labels.errors.enabled else {}),
        **({"sampling": spec.sampling.to_wire()} if spec.sampling is not None else {}),
        **({"synthetic": spec.synthetic.to_wire()} if spec.synthetic != SyntheticSpec() else {}),
        "sourceSpecs": {
            # synthetic: false is left out, so adding the field changed no existing digest
            name: src.model_dump(
                mode="json",
                by_alias=True,
                exclude={"poll_interval", *([] if src.synthetic else ["synthetic"])},
            )
            for name, src in sources.items()
        },
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def _content_digest(rows: Sequence[SampleRow]) -> str:
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r["sample_id"]):
        digest.update(f"{row['sample_id']}\0{row['labels']}\0{row['split']}\n".encode())
    return digest.hexdigest()


def _derived_digest(row: SampleRow) -> str:
    # label_sets: a label set that changes no consensus label still changes the manifest (PATCH)
    fields = [row.get("metadata"), row.get("flags"), row.get("dup_group"), row.get("uri"),
              row.get("pixel_sha256"), row.get("sharpness"), row.get("noise"), row.get("entropy"),
              row.get("renditions"), row.get("label_sets")]  # fmt: skip
    return hashlib.sha256(_SORTED_JSON.encode(fields).encode()).hexdigest()[:16]


# json.dumps(value, sort_keys=True), without building an encoder per call (three calls per row a run)
_SORTED_JSON = json.JSONEncoder(sort_keys=True)


def _state(row: SampleRow) -> SampleState:
    """What semver compares of an accepted row."""
    return SampleState(row["labels"], row["split"], _derived_digest(row))


EmbeddingPairs = Callable[[Sequence[SampleRow]], list[tuple[int, int]]]
KeepMeasures = Callable[[SampleRow], Measures | None]  # may store the measures in the row
T = TypeVar("T")


def _own(call: Callable[[SampleRow], T]) -> Callable[[Mapping[str, Any]], T]:
    """A row callback for dedup, which types rows as read-only mappings and hands its callbacks the rows
    it was given: the pipeline's own rows, which the callback may update (pixel digests, keep measures)."""
    return lambda row: call(cast(SampleRow, row))


def _processing_row(record: Mapping[str, object]) -> CurationRow:
    """A processed (or carried) record's processing columns, each one set (None where it has none): where
    its manifest row starts. The columns are manifest columns (tests/storage/test_sample_rows.py)."""
    columns = manifest.PROCESSING_COLUMNS
    return cast(CurationRow, dict(zip(columns, map(record.get, columns), strict=True)))  # once per row


def curate(
    records: Sequence[SampleRow],
    *,
    spec: DatasetSpec,
    sources: dict[str, IngestSourceSpec],
    labels: dict[str, dict[str, annotate.LabelSet]],
    previous: dict[str, SampleRow],
    is_new: list[bool],
    pixel_digest: Callable[[SampleRow], str],
    embedding_pairs: EmbeddingPairs | None = None,
    keep_measures: KeepMeasures | None = None,
    verify: Verify | None = None,
    sampler: Sampler | None = None,
    shape_measures: KeepMeasures | None = None,
) -> Curated:
    """Pure curation over processed records: metadata, labels, filters, gates, dedup, splits.

    ``embedding_pairs`` gives near-duplicate pairs (indices into the accepted records) found by
    embedding similarity; they join the hash-based groups, so they never straddle splits either.
    """
    stats = DatasetStats()
    rows, new, candidates = _label_and_gate(records, is_new, spec, sources, labels, stats)
    qa = label_qa.reconcile(rows, spec.labels)  # sources labelling the same bytes: consensus, agreement
    if qa.refusal is not None:
        raise RunError(qa.refusal, reason=AGREEMENT_REASON)
    # dataset-relative gates: judged on what the absolute gates kept, before dedup (like every gate);
    # a sample accepted in the parent version is only ever flagged by them (loupe_workers.curation.outliers)
    published = [
        (old := previous.get(rows[i]["sample_id"])) is not None
        and old.get("disposition") == Disposition.ACCEPTED
        for i in candidates
    ]
    judgement = outliers.judge([rows[i] for i in candidates], spec.quality_gates, published)
    candidates = outliers.apply(rows, candidates, judgement, stats)
    accepted, duplicates = _group_duplicates(
        [rows[i] for i in candidates], [new[i] for i in candidates], spec, previous, stats,
        pixel_digest=pixel_digest, embedding_pairs=embedding_pairs, keep_measures=keep_measures, verify=verify,
        shape_measures=shape_measures,
    )  # fmt: skip
    groups = _keep_copies(accepted, duplicates, stats)
    sampled = None
    if sampler is not None:  # spec.sampling: after gates and dedup, before splits (over the selected)
        try:
            groups, sampled = sampler.apply(groups, previous, stats.rejected)
        except SamplingError as exc:
            raise RunError(f"spec.sampling: {exc}", reason="SamplingFailed") from exc
        stats.sampling = sampled.counts()
    published_ids = {sid for sid, r in previous.items() if r.get("disposition") == Disposition.ACCEPTED}
    groups = synthetic.cap_groups(groups, spec.synthetic, spec.splits.seed, published_ids, stats)  # maxRatio
    assignment = _assign_splits(groups, spec, previous, stats)
    states = _settle(rows, assignment, stats)
    stats.privacy = privacy.counts(rows, spec.privacy)
    stats.label_qa = qa.settle(rows)  # disagreements among the accepted samples: the review queue's
    counts = synthetic.summarize(rows, spec.synthetic)
    return Curated(
        rows, stats, states, judgement.stats, label_qa=qa.stats, sampling=sampled, synthetic=counts
    )


def _label_and_gate(
    records: Sequence[SampleRow],
    is_new: list[bool],
    spec: DatasetSpec,
    sources: dict[str, IngestSourceSpec],
    labels: dict[str, dict[str, annotate.LabelSet]],
    stats: DatasetStats,
) -> tuple[list[CurationRow], list[bool], list[int]]:
    """One manifest row per record of this dataset, with its metadata, mapped labels, gate and privacy
    decision; whether each row's record is new (processed by this run); and the indices of the rows
    still accepted (the candidates for dedup)."""
    filters = {ref.name: ref.filter for ref in spec.sources}
    tally = Tally(Taxonomy(spec.labels))  # spec.labels: one taxonomy across sources
    rows: list[CurationRow] = []
    new_rows: list[bool] = []
    candidates: list[int] = []
    texts = _JsonTexts()
    for record, new in zip(records, is_new, strict=True):
        row = _processing_row(record)
        source_spec = sources[row["source"]]
        metadata = annotate.sample_metadata(row, source_spec) if row["status"] == Status.OK else {}
        if any(metadata.get(k) != v for k, v in filters[row["source"]].items()):
            continue  # not part of this dataset at all
        source_labels = labels.get(row["source"], {}).get(row["key"], annotate.LabelSet())
        mapped = tally.taxonomy.apply(row["source"], source_labels)
        tally.add(row["source"], mapped)
        label_set = mapped.labels
        row["metadata"] = texts.metadata(metadata)
        row["synthetic"] = synthetic.is_synthetic(source_spec.synthetic, metadata, spec.synthetic)
        row["capture_time"] = metadata.get("capture_time")
        row["label"] = label_set.label
        row["labels"] = texts.labels(label_set)
        outcome = privacy.apply(gates.evaluate(row, spec.quality_gates), row, spec.privacy)
        row["flags"] = outcome.flags
        row["disposition"] = outcome.disposition
        row["reason"], row["detail"] = outcome.reason, outcome.detail
        if mapped.drop and row["disposition"] not in (
            Disposition.REJECTED,
            Disposition.QUARANTINED,
        ):  # unmapped: drop
            row["disposition"], row["reason"] = Disposition.REJECTED, UNMAPPED_REASON
            row["detail"] = drop_detail(row["source"], mapped.unmapped)
            tally.dropped += 1
        if row["disposition"] == Disposition.REJECTED:
            stats.rejected[row["reason"] or "unknown"] = stats.rejected.get(row["reason"] or "unknown", 0) + 1
        elif row["disposition"] == Disposition.QUARANTINED:
            key = outcome.reason or "unknown"
            stats.quarantined[key] = stats.quarantined.get(key, 0) + 1
            row["blob_uri"] = blob_key(row["sha256"])
        else:
            candidates.append(len(rows))
            row["blob_uri"] = blob_key(row["sha256"])
        rows.append(row)
        new_rows.append(new)
    refusal = tally.refusal()
    if refusal is not None:
        raise RunError(refusal, reason="UnmappedLabels")
    stats.label_mapping = tally.stats()
    return rows, new_rows, candidates


class _JsonTexts:
    """The metadata and label JSON of a run's rows, encoded once per distinct value: most rows share a
    few (no metadata, a folder's class). Keyed by the whole value, and only where the key says all that
    the text depends on (string values; a label set without boxes)."""

    def __init__(self) -> None:
        self._metadata: dict[tuple[tuple[str, str], ...], str] = {}
        self._labels: dict[str | None, str] = {}

    def metadata(self, metadata: dict[str, str]) -> str:
        if not all(type(v) is str for v in metadata.values()):
            return json.dumps(metadata, sort_keys=True)
        key = tuple(sorted(metadata.items()))
        if (text := self._metadata.get(key)) is None:
            text = self._metadata[key] = json.dumps(metadata, sort_keys=True)
        return text

    def labels(self, label_set: annotate.LabelSet) -> str:
        label = label_set.label
        if label_set.boxes or not (label is None or type(label) is str):
            return label_set.to_json()
        if (text := self._labels.get(label)) is None:
            text = self._labels[label] = label_set.to_json()
        return text


def _group_duplicates(
    accepted: list[CurationRow],
    is_new: list[bool],
    spec: DatasetSpec,
    previous: dict[str, SampleRow],
    stats: DatasetStats,
    *,
    pixel_digest: Callable[[SampleRow], str],
    embedding_pairs: EmbeddingPairs | None,
    keep_measures: KeepMeasures | None,
    verify: Verify | None,
    shape_measures: KeepMeasures | None = None,
) -> tuple[list[CurationRow], list[DuplicateInfo]]:
    """Duplicate groups over the accepted rows (``is_new``: processed by this run; published groups kept
    as they were); the rows that survive (a file whose full decode fails leaves) and each one's place in
    its group."""
    previously_kept = {sid for sid, r in previous.items() if r.get("disposition") == Disposition.ACCEPTED}
    for row, new in zip(accepted, is_new, strict=True):
        old = previous.get(row["sample_id"])
        if old is not None and not new:
            row["dup_group"], row["dup_kind"] = old.get("dup_group"), old.get("dup_kind")
            row["keep_reason"] = old.get("keep_reason")
    while True:
        extra = embedding_pairs(accepted) if embedding_pairs is not None else []
        stats.embedding_pairs = len(extra)
        duplicates = find_duplicates(
            list[Mapping[str, Any]](accepted),
            spec.dedup,
            is_new=is_new,
            previously_kept=previously_kept,
            pixel_digest=_own(pixel_digest),
            extra_pairs=extra,
            keep_measures=_own(keep_measures) if keep_measures is not None else None,
            verify=verify,
            shape_measures=_own(shape_measures) if shape_measures is not None else None,
        )
        # A row whose full decode failed in the exact-pixel check (pixel_digest marks it failed) is a
        # corrupt file: it leaves, and the groups are found again without it, so no copy is dropped
        # in favour of a broken one.
        broken = [r for r in accepted if r["status"] != Status.OK]
        if not broken:
            return accepted, duplicates
        for row in broken:
            failed = gates.evaluate(row, spec.quality_gates)
            reason = failed.reason or "corrupt"
            row["disposition"], row["reason"], row["detail"] = failed.disposition, reason, failed.detail
            counts = stats.quarantined if failed.disposition == Disposition.QUARANTINED else stats.rejected
            counts[reason] = counts.get(reason, 0) + 1
        kept = [r["status"] == Status.OK for r in accepted]
        is_new = [n for n, ok in zip(is_new, kept, strict=True) if ok]
        accepted = [r for r, ok in zip(accepted, kept, strict=True) if ok]


def _keep_copies(
    accepted: list[CurationRow], duplicates: list[DuplicateInfo], stats: DatasetStats
) -> list[list[CurationRow]]:
    """Mark the copies that are dropped; the kept rows, grouped (a group never straddles splits)."""
    groups: dict[str, list[CurationRow]] = {}
    seen_ids: Counter[str] = Counter()
    for row, dup in zip(accepted, duplicates, strict=True):
        row["dup_group"], row["dup_kind"], row["duplicate_of"] = dup.group, dup.kind, dup.of
        row["keep_reason"] = dup.reason
        if dup.kind == DupKind.EXACT:
            stats.exact_duplicates += 1
        elif dup.kind == DupKind.NEAR:
            stats.near_duplicates += 1
        if not dup.kept:
            row["disposition"], row["reason"] = Disposition.DUPLICATE, dup.kind
            row["detail"] = f"copy of {dup.of}"
            continue
        seen_ids[row["sample_id"]] += 1
        if seen_ids[row["sample_id"]] > 1:  # the same bytes kept twice (dedup off or flag): keep ids unique
            row["sample_id"] = hashlib.sha256(
                f"{row['sha256']}:{row['source']}:{row['key']}".encode()
            ).hexdigest()
        groups.setdefault(dup.group or row["sample_id"], []).append(row)
    stats.duplicate_groups = sum(1 for g in groups.values() if len(g) > 1) + len(
        {d.group for d in duplicates if d.group and not d.kept} - {k for k, g in groups.items() if len(g) > 1}
    )
    return list(groups.values())


def _assign_splits(
    groups: list[list[CurationRow]], spec: DatasetSpec, previous: dict[str, SampleRow], stats: DatasetStats
) -> dict[str, str]:
    """Each kept sample's split: whole groups, sticky across versions, stratified as the spec says;
    synthetic samples only where spec.synthetic.evalSplits lets them (loupe_workers.curation.synthetic)."""
    stratify = spec.splits.stratify_by
    units = []
    for members in groups:
        first = members[0]
        if stratify is None:
            stratum = ""
        elif stratify == "label":
            stratum = first["label"] or ""
        else:
            stratum = json.loads(first["metadata"] or "{}").get(stratify, "")  # set on every curated row
        units.append(SplitUnit(tuple(m["sample_id"] for m in members), stratum))
    ratios = {"train": spec.splits.train, "val": spec.splits.val, "test": spec.splits.test}
    previous_splits = {sid: split for sid, r in previous.items() if (split := r.get("split"))}
    return synthetic.split(groups, units, ratios, spec.splits.seed, previous_splits, spec.synthetic, stats)


def _settle(
    rows: Sequence[SampleRow], assignment: dict[str, str], stats: DatasetStats
) -> dict[str, SampleState]:
    """Give accepted rows their split and count them; what semver compares, by sample id."""
    states: dict[str, SampleState] = {}
    for row in rows:
        if row["disposition"] == Disposition.ACCEPTED:
            split = row["split"] = assignment[row["sample_id"]]
            states[row["sample_id"]] = _state(row)
            if flags := row["flags"]:
                stats.flagged += 1
                for flag in flags:
                    stats.flags[flag] = stats.flags.get(flag, 0) + 1
            stats.splits[split] = stats.splits.get(split, 0) + 1
    stats.samples = stats.accepted = len(states)
    return states


def _stored_keep(row: SampleRow) -> dict[str, float] | None:
    """The keep measures stored with a row (manifest column keep_measures), if of this code's version."""
    text = row.get("keep_measures")
    if not text:
        return None
    try:
        stored = json.loads(text)
    except ValueError:
        return None
    if not isinstance(stored, dict) or stored.get("version") != media.KEEP_MEASURES_VERSION:
        return None
    measures = stored.get("measures")
    return measures if isinstance(measures, dict) else None


def run_dataset(
    request: RunRequest,
    *,
    base_dir: Path | None = None,
    executor: Executor | None = None,
    events: RunEvents | None = None,
    store: ObjectStore | None = None,
) -> RunResult:
    """Build the next version of one dataset, then expire what spec.retention lets go. Idempotent:
    unchanged inputs commit nothing. Holds a lease on the store throughout, so that garbage collection
    never removes a blob or part this run relies on (leases.py)."""
    secret = request.spec.storage.credentials_secret_ref
    store = store or open_store(
        request.store_uri,
        endpoint=request.store_endpoint,
        region=request.store_region,
        credentials_secret=secret.name if secret else None,
    )
    try:
        with contextlib.ExitStack() as held:
            # Taken once the sources are listed (a refused listing writes nothing), before any blob.
            def hold_lease() -> None:
                held.enter_context(run_lease(store, request.dataset))

            held.callback(gc.unfreeze)  # _build_version freezes the parent's rows (below)
            result = _build_version(request, base_dir=base_dir, executor=executor, events=events,
                                    store=store, hold_lease=hold_lease)  # fmt: skip
    except CollectionInProgress as exc:
        raise RunError(str(exc), reason="GarbageCollectionInProgress") from exc
    if request.spec.retention.active():
        plan = retention_plan(store, request.dataset, request.spec.retention)
        result.expired = [t.version for t in expire(store, request.dataset, plan)]
    try:  # S3 stores with spec.retention.tiers; maintenance: the version is committed whatever happens
        apply_tiers(store, request.dataset, request.spec.retention)
    except StoreError as exc:
        result.message += f"; storage tiers not applied (the next run retries): {exc}"
    return result


def _build_version(
    request: RunRequest,
    *,
    base_dir: Path | None,
    executor: Executor | None,
    events: RunEvents | None,
    store: ObjectStore,
    hold_lease: Callable[[], None] = lambda: None,
) -> RunResult:
    """The stages of one run, in order; each stage is a function below."""
    events = events or RunEvents()
    executor = executor or InlineExecutor()
    spec = request.spec
    used = _used_sources(request)
    access_rules = access.AccessRules(spec, used, request.store_region)  # residency, use, classification
    if (refusal := access_rules.refusal()) is not None:  # before anything is read, listed or written
        raise RunError(refusal.message, reason=refusal.reason)
    latest = latest_version(store, request.dataset)  # its record only: the manifest waits
    events.phase("listing sources")
    listing = _list_sources(request, used, base_dir)
    predictions_file = _predictions_file(spec, base_dir)  # read before anything is written
    settings = _process_settings(spec)
    inputs = inputs_digest(request, used, listing, predictions_file, settings)
    if latest is not None and _inputs_confirmed(store, request.dataset, latest, inputs):
        # what the latest version was built from (or was found to give it), again: it is the answer
        return _unchanged(request, used, latest, listing)
    events.phase("reading the previous version")
    previous = _read_previous(store, latest)
    # The parent's rows (a dict per row, live all run) out of the cyclic collector's full passes, which
    # would otherwise walk every one of them several times a run; refcounting still frees them, and
    # run_dataset unfreezes when the run ends. No result depends on when garbage is collected.
    gc.freeze()
    _refuse_shrink(request, previous, listing)
    predictions = _sampling_predictions(predictions_file)
    privacy.prefetch(settings.privacy)  # a missing model fails here, before any task runs
    listing.listed = access_rules.mark(listing.listed)  # a source the rules exclude: recorded, never read
    hold_lease()  # from here on blobs are written or reused: garbage collection must wait
    carried, to_process = _split_unchanged(access_rules.reusable(previous.rows), listing.listed, settings)
    events.phase(f"processing {len(to_process)} new or changed objects")
    events.start_processing(len(to_process))
    fresh = executor.process(to_process, listing.stores, store, settings, events.advance)
    events.phase("curating")
    labels = _load_labels(listing)
    decodes = _FullDecodes(store, settings, previous.rows)
    decodes.carry_keep_measures(fresh)
    records = carried + fresh
    stage = _embedding_stage(store, spec, records, executor, events)
    near = _EmbeddingNear(store, request.dataset, previous.record, spec, stage)
    curated = curate(
        records,
        spec=spec,
        sources=used,
        labels=labels,
        previous=previous.by_id(),
        is_new=[False] * len(carried) + [True] * len(fresh),
        pixel_digest=decodes.pixel_digest,
        embedding_pairs=near if near.enabled else None,
        keep_measures=decodes.keep_measures,
        shape_measures=decodes.shape_measures,
        verify=geometry.Verifier(  # crop candidates: one guarded reduced decode per file, cached
            lambda sha: store.get(blob_key(sha)),
            max_pixels=settings.max_pixels,
            memory_limit=settings.memory_limit,
            min_inliers=spec.dedup.perceptual.min_inliers,
            min_ratio=spec.dedup.perceptual.min_inlier_ratio,
        ),
        sampler=_sampler(spec, previous.record, stage, predictions),
    )
    # processed: objects read and decoded now; those carried unchanged or marked unread (access rules,
    # listing gates) are not, while those decoded and then left out (sampling, a dropped class) are
    read = sum(1 for obj in to_process if obj.problem is None)
    _count(curated, stage, near, scanned=len(listing.listed), processed=read)
    renditions.run_stage(  # derived forms of the accepted samples, made where missing (spec.renditions)
        store, spec.renditions, curated.rows, curated.stats, curated.states, executor=executor,
        limits=renditions.Limits(settings.max_pixels, settings.memory_limit), previous_rows=previous.rows,
        state_of=_state, phase=events.phase,
    )  # fmt: skip
    curated.stats.access = access_rules.stats(curated.rows)
    digest = spec_digest(spec, used)
    change = _decide_change(spec, previous, curated, digest)
    current = previous.record.version if previous.record else None
    run_id = _run_id(request, current, digest, listing.digest)
    error_files = _label_errors(spec, curated, stage, request.dataset, run_id)
    result = RunResult(dataset=request.dataset, run_id=run_id, current_version=current, stats=curated.stats)
    held_back = _why_no_version(spec, change, curated, previous, current)
    if held_back is not None or change is None:
        result.message = held_back or ""
        if change is None and current is not None and inputs is not None and request.commit:
            _confirm_inputs(store, request.dataset, current, inputs, run_id)
        return result
    version = next_version(current, change.bump)
    if not request.commit:
        result.version = version
        result.message = f"would create {version} ({change.bump}: {'; '.join(change.reasons)}); not committed"
        return result
    events.phase(f"committing {version}")
    record, wrote = _commit(
        store, request.dataset, run_id, version, current, curated, change, digest, listing.digest,
        near.index_files(request.dataset, run_id) | error_files,
        analyzer(store, request.dataset, spec, previous.record, previous.accepted, stage), previous=previous,
        inputs=inputs,
    )  # fmt: skip
    result.version = record.version
    result.current_version = record.version
    result.created = wrote  # the same run id is no proof: two identical runs at once share it
    result.message = (
        f"created {record.version} ({change.bump}: {'; '.join(change.reasons)})"
        if wrote
        else f"adopted {record.version}: an identical run committed it first"
    )
    return result


@dataclass(frozen=True)
class _PredictionsFile:
    path: Path
    text: str

    def digest(self) -> str:
        return hashlib.sha256(f"{self.path.name}\0{self.text}".encode()).hexdigest()


def _predictions_file(spec: DatasetSpec, base_dir: Path | None) -> _PredictionsFile | None:
    """The file of predictions hardest-first sampling ranks by (beside the spec), read; or None."""
    name = spec.sampling.predictions if spec.sampling is not None else None
    if name is None:
        return None
    path = Path(name) if Path(name).is_absolute() or base_dir is None else base_dir / name
    try:
        return _PredictionsFile(path, path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"spec.sampling.predictions: cannot read {path}: {exc}", reason="SpecInvalid") from exc


def _sampling_predictions(file: _PredictionsFile | None) -> list[Any]:
    """The predictions of the file, parsed (a run whose inputs are unchanged never parses them)."""
    if file is None:
        return []
    try:
        return list(parse_predictions(file.text, file.path.name))
    except PredictionError as exc:
        raise RunError(
            f"spec.sampling.predictions: cannot read {file.path}: {exc}", reason="SpecInvalid"
        ) from exc


def _sampler(
    spec: DatasetSpec, parent: VersionRecord | None, stage: EmbeddingStage | None, predictions: list[Any]
) -> Sampler | None:
    """spec.sampling with what it selects on: the parent's selection digest, embeddings, predictions."""
    if spec.sampling is None:
        return None
    embeddings = stage.by_model.get(spec.embedding.model) if stage is not None else None
    return Sampler(
        spec.sampling,
        parent_digest=parent.sampling.spec_digest if parent is not None and parent.sampling else None,
        vectors=(embeddings.row_of(), embeddings.vectors) if embeddings is not None else None,
        predictions=predictions,
    )


def _used_sources(request: RunRequest) -> dict[str, IngestSourceSpec]:
    """The IngestSources the spec names, in its order; an unknown name refuses the run."""
    missing = [ref.name for ref in request.spec.sources if ref.name not in request.sources]
    if missing:
        raise RunError(
            f"dataset {request.dataset} refers to unknown IngestSource(s): {', '.join(missing)}",
            reason="SourceNotFound",
        )
    return {ref.name: request.sources[ref.name] for ref in request.spec.sources}


@dataclass
class Previous:
    """The current version, read once: carried rows, the semver comparison and health all use it."""

    record: VersionRecord | None = None
    accepted: list[SampleRow] = field(default_factory=list)
    rows: list[SampleRow] = field(default_factory=list)  # accepted and rejected
    layout: manifest.VersionLayout | None = None  # where its rows lie: the parts the next one reuses
    states: dict[str, SampleState] | None = None  # what semver compares against, before curation

    def by_id(self) -> dict[str, SampleRow]:
        """Accepted and duplicate rows by sample id. A dropped byte-identical copy shares its sample id
        with the kept one: the kept row must win."""
        ranked = sorted(
            (r for r in self.rows if r.get("disposition") in (Disposition.ACCEPTED, Disposition.DUPLICATE)),
            key=lambda r: r["disposition"] == Disposition.ACCEPTED,
        )
        return {r["sample_id"]: r for r in ranked}


def _read_previous(store: ObjectStore, record: VersionRecord | None) -> Previous:
    """The rows of the latest version (``record``), read in full."""
    if record is None:
        return Previous()
    accepted, rejected, layout = manifest.read_parent(store, record)
    states = {r["sample_id"]: _state(r) for r in accepted}
    return Previous(record, accepted, accepted + rejected, layout, states)


@dataclass
class Listing:
    stores: dict[str, tuple[IngestSourceSpec, ObjectStore]]
    listed: list[ListedObject]
    digest: str
    others: dict[str, list[ObjectInfo]] = field(default_factory=dict)  # per source: label files, sidecars


def _list_sources(request: RunRequest, used: dict[str, IngestSourceSpec], base_dir: Path | None) -> Listing:
    """Every source's media objects (cheap: keys, sizes, ETags); a source that cannot be listed refuses
    the run before anything is written."""
    stores = {name: (src, source_store(src, base_dir)) for name, src in used.items()}
    listed: list[ListedObject] = []
    others: dict[str, list[ObjectInfo]] = {}
    for name, (src, src_store) in stores.items():
        try:
            found, others[name] = list_media(
                name, src, src_store, max_file_size=request.spec.quality_gates.max_file_size.limit
            )
        except SourceUnavailable as exc:
            raise RunError(f"IngestSource {name}: {exc}", reason="SourceUnavailable") from exc
        except Exception as exc:
            raise RunError(
                f"cannot list IngestSource {name} ({src.location_uri()}): {exc}", reason="SourceUnavailable"
            ) from exc
        listed.extend(found)
    return Listing(stores, listed, listing_digest(listed), others)


# Spec fields that cannot change what a run computes: where and how parallel the work runs, and
# retention, which run_dataset applies after every run (one that changes nothing too).
NOT_INPUTS = ("ray", "retention")
INPUTS_VERSION = 1  # bump when the inputs digest starts to cover something else


def inputs_digest(
    request: RunRequest,
    used: dict[str, IngestSourceSpec],
    listing: Listing,
    predictions: _PredictionsFile | None,
    settings: ProcessSettings,
) -> str | None:
    """Digest of everything a run's result depends on, as a build system keys an action; None when
    one of them cannot be read now (the run then takes the full path, which reports why).

    Runs are idempotent (a run over the inputs the latest version was built from commits nothing),
    so a run whose digest equals the latest version's can answer "no change" without reading its
    manifest. Covered: the dataset spec (all of it but NOT_INPUTS) and the IngestSource specs (via
    spec_digest), the listing of every source (key, size, ETag of each media object) and its root,
    the label files each source's label import reads, the predictions file sampling ranks by, the
    store region the access rules check, the code version and the processing settings, and custom
    embedding model files (their id digests the graph; registered names are pinned by the code).
    Left out because they cannot change such a run's result:
    - the store's own objects: blobs, embeddings and renditions are addressed by content and by the
      parameters that made them, and the parent manifest and ANN index are the latest version's own;
    - other listed files (sidecars, notes): no stage reads them (metadata comes from the spec, the key
      and the bytes); a stage that starts to read one must add it here;
    - run_id, commit and allow_shrink: they decide how a result is committed or reported, not what it
      is; versioning.minNewSamples and maxRemovedFraction likewise (in the digest anyway, with the
      spec), since over unchanged inputs there is no change to hold back and nothing lost.
    """
    spec = request.spec
    try:
        labels = {name: _label_inputs(name, src, src_store, listing)
                  for name, (src, src_store) in listing.stores.items()}  # fmt: skip
        models = {ref: _model_digest(ref) for ref in _stage_models(spec) if ref.endswith(".onnx")}
    except Exception:  # a label or model file that cannot be read now: the full path says why
        return None
    wire = {
        "inputsVersion": INPUTS_VERSION,
        "code": code_version(),
        "processing": settings.key(),
        "specDigest": spec_digest(spec, used),
        "spec": {k: v for k, v in spec.to_wire().items() if k not in NOT_INPUTS},
        "storeRegion": request.store_region,
        "roots": {name: src_store.uri for name, (_, src_store) in listing.stores.items()},  # rows hold URIs
        "listing": listing.digest,
        "labels": labels,
        "predictions": predictions.digest() if predictions is not None else None,
        "models": models,
    }
    return hashlib.sha256(json.dumps(wire, sort_keys=True, default=str).encode()).hexdigest()


def _model_digest(ref: str) -> str:
    """A custom model's graph and all its options, read now. Not embedding.models.model_id: that digests
    only what changes the vectors, follows a local file by its stat (a same-size rewrite within one clock
    tick would keep the old digest) and reads a remote (s3://) model once per process."""
    spec = model_spec(ref)
    digest = hashlib.sha256(model_bytes(spec))
    digest.update(json.dumps(asdict(spec), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _label_inputs(name: str, src: IngestSourceSpec, src_store: ObjectStore, listing: Listing) -> list[Any]:
    """The files the label import of one source reads: (key, size, ETag) as listed, or None where the
    listing shows there is none; a file the listing does not cover (include/exclude leave it out) is
    digested by content (csv, coco) or found by listing its folder (yolo)."""
    if src.labels is None or src.labels.format == "folder":
        return []  # folder labels are the keys' folders: in the listing
    wanted = annotate.label_files(src.labels, [o.key for o in listing.listed if o.source == name])
    seen = {i.key: (i.size, i.etag) for i in listing.others.get(name, [])}
    seen.update((o.key, (o.size, o.etag)) for o in listing.listed if o.source == name)
    out: list[Any] = []
    unlisted: list[str] = []
    for key in wanted:
        if key in seen:
            out.append([key, *seen[key]])
        elif media_kind(key) is None and matches_any(key, src.include) and not matches_any(key, src.exclude):
            out.append([key, None])  # list_media reports every such file: it does not exist
        else:
            unlisted.append(key)
    if unlisted and src.labels.format == "yolo":
        found = {i.key: (i.size, i.etag) for i in src_store.list(posixpath.commonpath(unlisted))}
        out.extend([key, *found[key]] if key in found else [key, None] for key in unlisted)
    elif unlisted:
        for key in unlisted:
            try:
                out.append([key, hashlib.sha256(src_store.get(key)).hexdigest()])
            except KeyError:
                out.append([key, None])
    return out


def _inputs_confirmed(store: ObjectStore, dataset: str, latest: VersionRecord, inputs: str | None) -> bool:
    """Whether a run over ``inputs`` is known to give ``latest``: they are what it was built from, or
    a run over them found nothing to change in it (``_confirm_inputs``; keyed by the version, so the
    mark stops counting once another version is the latest)."""
    if inputs is None:
        return False
    return latest.inputs_digest == inputs or store.exists(inputs_seen_key(dataset, latest.version, inputs))


def _confirm_inputs(store: ObjectStore, dataset: str, version: str, inputs: str, run_id: str) -> None:
    """Record that a full run over ``inputs`` changed nothing in ``version`` (after a code upgrade or a
    touched file the digest differs from the record's, and without this every later run would take
    the full path until a version is committed). One small conditional put: a second run over the same
    inputs finds the mark and writes nothing."""
    body = json.dumps({"version": version, "inputsDigest": inputs, "runId": run_id}, sort_keys=True)
    store.put_if_absent(inputs_seen_key(dataset, version, inputs), body.encode())


def _unchanged(
    request: RunRequest, used: dict[str, IngestSourceSpec], latest: VersionRecord, listing: Listing
) -> RunResult:
    """What a run over the inputs ``latest`` was built from answers: no change, with the latest
    version's counts (this run listed the sources and read nothing else)."""
    stats = latest.stats.model_copy(deep=True)
    stats.scanned = len(listing.listed)
    stats.processed = stats.embeddings_computed = stats.renditions_computed = stats.renditions_reused = 0
    return RunResult(
        dataset=request.dataset,
        run_id=_run_id(request, latest.version, spec_digest(request.spec, used), listing.digest),
        current_version=latest.version,
        stats=stats,
        message=f"no change since {latest.version}",
    )


def _run_id(
    request: RunRequest, current: str | None, spec_digest_value: str, listing_digest_value: str
) -> str:
    """The given run id, or one derived from what the run builds on (a retried run finds its commit)."""
    return (
        request.run_id
        or hashlib.sha256(
            f"{request.dataset}\0{current}\0{spec_digest_value}\0{listing_digest_value}\0{code_version()}".encode()
        ).hexdigest()[:16]
    )


def _refuse_shrink(request: RunRequest, previous: Previous, listing: Listing) -> None:
    shrink = check_shrink(
        previous.rows, listing.listed, list(listing.stores), request.spec.versioning.max_removed_fraction
    )
    if shrink is not None and not request.allow_shrink:
        raise RunError(f"dataset {request.dataset}: {shrink}", reason="SuspiciousShrink")


def _process_settings(spec: DatasetSpec) -> ProcessSettings:
    return ProcessSettings(
        hash_kind=spec.dedup.perceptual.hash,
        max_pixels=spec.quality_gates.max_pixels.limit,
        privacy=privacy.detectors(spec.privacy),
        memory_limit=spec.quality_gates.max_pixels.memory_limit,
    )


def _split_unchanged(
    previous_rows: list[SampleRow], listed: list[ListedObject], settings: ProcessSettings
) -> tuple[list[SampleRow], list[ListedObject]]:
    """Rows carried from the previous version (same source, key and ETag, processed the same way) and
    the objects that must be processed."""
    by_object: dict[tuple[str, str, str | None], list[SampleRow]] = {}
    for row in previous_rows:
        if row.get("processing_key") == settings.key():
            by_object.setdefault((row["source"], row["key"], row["etag"]), []).append(row)
    carried: list[SampleRow] = []
    to_process: list[ListedObject] = []
    for obj in listed:
        old = by_object.get((obj.source, obj.key, obj.etag))
        if old:
            carried.extend({**r, "uri": obj.uri} for r in old)
        else:
            to_process.append(obj)
    return carried, to_process


def _load_labels(listing: Listing) -> dict[str, dict[str, annotate.LabelSet]]:
    labels: dict[str, dict[str, annotate.LabelSet]] = {}
    for name, (src, src_store) in listing.stores.items():
        if src.labels is not None:
            keys = [o.key for o in listing.listed if o.source == name]
            try:
                labels[name] = annotate.load_labels(src.labels, src_store, keys)
            except Exception as exc:
                raise RunError(f"cannot read labels of IngestSource {name}: {exc}") from exc
    return labels


class _FullDecodes:
    """The run's guarded full decodes, at most one per sha256 and purpose: exact-pixel digests (whose
    decode gives the file's keep measures too) and the keep measures of group members, carried by
    content from the previous version when it has them."""

    def __init__(self, store: ObjectStore, settings: ProcessSettings, previous_rows: list[SampleRow]) -> None:
        self.store = store
        self.settings = settings
        self.pixel_cache = {r["sha256"]: r["pixel_sha256"] for r in previous_rows if r.get("pixel_sha256")}
        # keep measures carried by sha256 like pixel digests, so unchanged samples are not decoded again
        self.keep_cache = {
            r["sha256"]: r["keep_measures"] for r in previous_rows if _stored_keep(r) is not None
        }
        self.unchecked: set[str] = set()
        self.digests: dict[str, str | Exception] = {}
        self.measured: dict[str, dict[str, float] | None] = {}
        self.outlines: dict[str, dict[str, float] | None] = {}  # shape measures alone
        self.broken: dict[str, str] = {}  # sha256 -> why its keep or shape decode failed (a corrupt file)

    def carry_keep_measures(self, fresh: list[SampleRow]) -> None:
        """The same bytes processed again keep their measures, asked for or not."""
        for processed in fresh:
            if processed.get("sha256") in self.keep_cache and not processed.get("keep_measures"):
                processed["keep_measures"] = self.keep_cache[processed["sha256"]]

    def _digest(self, row: SampleRow) -> str | Exception:
        """One guarded full decode per sha256: its pixel digest, or what the decode raised; its keep
        measures too, when not measured yet (None when they cannot be measured)."""
        sha = row["sha256"]
        if sha not in self.digests:
            keep: dict[str, float] | None = {} if sha not in self.measured else None
            outcome: str | Exception
            try:
                outcome = media.pixel_digest(
                    self.store.get(blob_key(sha)),
                    max_pixels=self.settings.max_pixels,
                    memory_limit=self.settings.memory_limit,
                    keep=keep,
                )
            except Exception as error:  # judged by the caller: pixel_digest and keep_measures differ
                outcome = error
            self.digests[sha] = outcome
            if keep is not None:
                self.measured[sha] = keep or None
        return self.digests[sha]

    def _measures(self, row: SampleRow) -> dict[str, float] | None:
        """The keep measures of one guarded decode per sha256 (None when they cannot be measured): most
        group members need no pixel digest, and keep_measures decodes a JPEG's luma alone."""
        return self._decoded(row, media.keep_measures, self.measured)

    def _decoded(
        self, row: SampleRow, read: Callable[..., dict[str, float]], cache: dict[str, dict[str, float] | None]
    ) -> dict[str, float] | None:
        """``read`` of the row's blob, guarded, once per sha256 (None when it fails). A file too large to
        decode in full is compared by its stored fields; one that fails otherwise is marked failed like a
        failed pixel check: curate quarantines it and groups the rest without it."""
        sha = row["sha256"]
        if sha not in cache:
            limits = {"max_pixels": self.settings.max_pixels, "memory_limit": self.settings.memory_limit}
            try:
                cache[sha] = read(self.store.get(blob_key(sha)), **limits)
            except Exception as error:  # whatever a hostile file triggers must not stop the run
                cache[sha] = None
                if (detail := _failure_detail(error)) is not None:
                    self.broken.setdefault(sha, detail)
        detail = self.broken.get(sha)
        if detail is not None and row["status"] == Status.OK:
            _mark_corrupt(row, detail)
        return cache[sha]

    def pixel_digest(self, row: SampleRow) -> str:
        """The exact-pixel digest (a full decode, guarded like every decode). A file that fails it is
        marked failed (corrupt, curate quarantines it) and one too large to decode in full within the
        memory limit is compared by its hash only: each gets a digest that matches nothing."""
        if row["status"] != Status.OK:
            return f"corrupt:{row['sha256']}"
        if row["sha256"] in self.unchecked:
            return f"unchecked:{row['sha256']}"
        if not row.get("pixel_sha256"):
            cached = self.pixel_cache.get(row["sha256"])
            outcome = cached or self._digest(row)
            if isinstance(outcome, Exception):  # whatever a hostile file triggers must not stop the run
                detail = _failure_detail(outcome)
                if detail is None:
                    self.unchecked.add(row["sha256"])
                    return f"unchecked:{row['sha256']}"
                _mark_corrupt(row, detail)
                return f"corrupt:{row['sha256']}"
            row["pixel_sha256"] = outcome
        return str(row["pixel_sha256"])

    def _stored(self, row: SampleRow) -> dict[str, float] | None:
        """The keep measures stored with the row or carried by its content (all, or the shape alone)."""
        stored = _stored_keep(row)
        if stored is None and row["sha256"] in self.keep_cache:
            row["keep_measures"] = self.keep_cache[row["sha256"]]
            stored = _stored_keep(row)
        return stored

    def keep_measures(self, row: SampleRow) -> dict[str, float] | None:
        """What the bestOriginal keep policy compares (group members still in the running): stored with
        the row, from an earlier version, or from the run's one guarded full decode of that file."""
        stored = self._stored(row)
        if stored is not None and "detail" in stored:
            return stored
        # too large to decode in full, or broken: None, compared by its stored fields only
        measured = self._measures(row)
        if measured is not None:
            _store_keep(row, measured)
        return measured

    def shape_measures(self, row: SampleRow) -> dict[str, float] | None:
        """The keep measures' padded and content_aspect (every group member): stored or carried, from
        the file's full keep measures when this run has them, or from a decode at the working scale
        (media.shape_measures), stored with the row so that later versions carry them."""
        stored = self._stored(row)
        if stored is None and row["sha256"] in self.measured:
            stored = self._measures(row)
        if stored is not None:
            return {k: stored[k] for k in media.SHAPE_MEASURES if k in stored}
        shape = self._decoded(row, media.shape_measures, self.outlines)
        if shape is not None:
            _store_keep(row, shape)
        return shape


def _failure_detail(error: Exception) -> str | None:
    """Why a full decode that raised ``error`` makes its file corrupt; None for one refused by its size
    (max_pixels: compared by its hash and stored fields only)."""
    if isinstance(error, media.ImageRejected):
        return None if error.reason == "max_pixels" else error.detail
    return f"full decode failed: {type(error).__name__}: {error}"


def _mark_corrupt(row: SampleRow, detail: str) -> None:
    row.update({"status": Status.FAILED, "fail_reason": "corrupt", "fail_detail": detail})


def _store_keep(row: SampleRow, measures: dict[str, float]) -> None:
    row["keep_measures"] = json.dumps(
        {"version": media.KEEP_MEASURES_VERSION, "measures": measures}, sort_keys=True
    )


def _count(
    curated: Curated, stage: EmbeddingStage | None, near: _EmbeddingNear, *, scanned: int, processed: int
) -> None:
    stats = curated.stats
    if stage is not None:
        stats.embedding_model = (near.model if near.enabled else None) or stage.embeddings.model_id
        stats.embeddings_computed = stage.computed
        accepted_shas = {r["sha256"] for r in curated.rows if r["disposition"] == Disposition.ACCEPTED}
        stats.embedded = len(accepted_shas & set(stage.embeddings.sha256))
    stats.scanned = scanned
    stats.processed = processed


def _decide_change(
    spec: DatasetSpec, previous: Previous, curated: Curated, digest: str
) -> VersionChange | None:
    """What differs from the current version and the bump it implies; None when nothing does."""
    parent = previous.record
    parent_mapping = parent.stats.label_mapping if parent is not None else None
    mapping_changed = parent is not None and (parent_mapping.mapping_digest if parent_mapping else "") != (
        spec.labels.digest()
    )
    change = decide(
        previous.states,
        curated.states,
        spec_changed=parent is not None and parent.spec_digest != digest,
        mapping_changed=mapping_changed,
    )
    if change is None and (moved := to_label_change(previous.rows, curated.rows)) is not None:
        # same content, but what export --to-label gives (newcomers left out by a full budget) is not
        change = VersionChange(bump="patch", reasons=[moved])
    return change


def _why_no_version(
    spec: DatasetSpec, change: VersionChange | None, curated: Curated, previous: Previous, current: str | None
) -> str | None:
    """Why this run makes no version (a message), or None when it makes one."""
    if change is None:
        return f"no change since {current}" if current else "no samples"
    if change.bump == "minor" and change.added < spec.versioning.min_new_samples:
        return f"{change.added} new samples, fewer than versioning.minNewSamples ({spec.versioning.min_new_samples})"
    if not curated.states and previous.record is None:
        return "no samples were accepted; nothing to version"
    return None


def _commit(
    store: ObjectStore,
    dataset: str,
    run_id: str,
    version: str,
    parent: str | None,
    curated: Curated,
    change: VersionChange,
    spec_digest_value: str,
    source_digest: str,
    extra_files: dict[str, bytes] | None = None,
    analyze: Analyzer | None = None,
    previous: Previous | None = None,
    inputs: str | None = None,
) -> tuple[VersionRecord, bool]:
    """Stage every file under the run, then publish the version record with one conditional put;
    True when this call published it. The rows go into manifest parts (``_write_rows``) before the
    record."""
    prefix = run_prefix(dataset, run_id)
    for key, data in (extra_files or {}).items():
        store.put(key, data)
    accepted = sorted(
        (r for r in curated.rows if r["disposition"] == Disposition.ACCEPTED), key=lambda r: r["sample_id"]
    )
    others = sorted(
        (r for r in curated.rows if r["disposition"] != Disposition.ACCEPTED),
        key=lambda r: (r["source"], r["key"], r["sample_id"]),
    )
    written = _write_rows(store, dataset, prefix, version, accepted, others, previous or Previous())
    record = VersionRecord(
        dataset=dataset,
        version=version,
        parent=parent,
        created=utcnow(),
        run_id=run_id,
        spec_digest=spec_digest_value,
        source_digest=source_digest,
        content_digest=_content_digest(accepted),
        code_version=code_version(),
        manifest_uri=written.manifest_uri,
        rejected_uri=written.rejected_uri,
        lineage_uri=written.lineage_uri,
        samples=len(accepted),
        stats=curated.stats,
        change=change,
        outliers=curated.outliers,
        synthetic=curated.synthetic,
        sampling=curated.sampling,
        label_qa=curated.label_qa,
        inputs_digest=inputs,
    )
    if analyze is not None:
        health, drift, figures = analyze(accepted, others)
        health.report_uri = f"{prefix}/analysis.json"
        store.put(health.report_uri, json.dumps(figures, indent=1, sort_keys=True, default=str).encode())
        record.health, record.drift = health, drift
        if figures.get("synthetic"):  # the counts with the synthetic-to-real gap
            record.synthetic = SyntheticSummary.model_validate(figures["synthetic"]["summary"])
    return commit_version(store, record)


def _write_rows(
    store: ObjectStore,
    dataset: str,
    prefix: str,
    version: str,
    accepted: list[CurationRow],
    others: list[CurationRow],
    previous: Previous,
) -> manifest.Written:
    """The version's parts: from the parent's part lists and the rows that differ from its rows
    (manifest.write_change, O(change)), or every row through manifest.write_parts (only parts the
    parent lacks are stored) for a first version, a parent of one file per kind, or a change that
    touches so many rows that a rebuild is cheaper (changes.rebuild_is_cheaper). Both give the same
    parts for the same rows."""
    layout = previous.layout
    parent = layout.lists if layout is not None else None  # read with the parent's rows, not again
    if parent is not None and layout is not None:
        change = changes.diff_rows(previous.rows, accepted + others)
        parts = len(parent.accepted.parts) + len(parent.rejected.parts)
        if change is not None and not changes.rebuild_is_cheaper(change, parts):
            return manifest.write_change(
                store, dataset, prefix, version, parent,
                upserts=change.upserts, deletes=change.deletes, added=change.added,
            )  # fmt: skip
    return manifest.write_parts(store, dataset, prefix, version, accepted, others, layout)


Analyzer = Callable[
    [Sequence[SampleRow], Sequence[SampleRow]], tuple[HealthSummary, DriftSummary | None, dict[str, Any]]
]


def analyzer(
    store: ObjectStore,
    dataset: str,
    spec: DatasetSpec,
    parent: VersionRecord | None,
    parent_rows: list[SampleRow],
    stage: EmbeddingStage | None,
) -> Analyzer:
    """Health of the new version, and drift of its new samples against the reference (default: the parent)."""

    def analyze(
        accepted: Sequence[SampleRow], others: Sequence[SampleRow]
    ) -> tuple[HealthSummary, DriftSummary | None, dict[str, Any]]:
        health, health_figures = analysis.health(accepted, others, parent_rows, spec.health)
        figures: dict[str, Any] = {"health": health_figures, "drift": None}
        figures["synthetic"] = synthetic_gap(spec, accepted, others, stage)
        reference = spec.drift.reference_version or (parent.version if parent is not None else None)
        if reference is None:
            return health, None, figures
        reference_rows = parent_rows
        if parent is None or parent.version != reference:
            try:
                reference_rows = read_version_samples(store, read_version(store, dataset, reference))
            except LookupError:
                figures["drift"] = {"error": f"reference version {reference} does not exist"}
                return health, None, figures
        known = {r["sample_id"] for r in reference_rows}
        vectors = None
        if stage is not None:
            vectors = {sha: stage.embeddings.vectors[i] for i, sha in enumerate(stage.embeddings.sha256)}
        drift, drift_figures = analysis.drift(reference_rows, [r for r in accepted if r["sample_id"] not in known],
                                              reference, spec.drift, vectors=vectors)  # fmt: skip
        figures["drift"] = drift_figures
        return health, drift, figures

    return analyze


def synthetic_gap(
    spec: DatasetSpec,
    accepted: Sequence[SampleRow],
    others: Sequence[SampleRow],
    stage: EmbeddingStage | None,
) -> dict[str, Any] | None:
    """Real and synthetic counts and, with spec.synthetic.compare, the gap: the drift figures of the
    synthetic samples against the real ones, in words. None when the version has no synthetic data."""
    summary = synthetic.summarize([*accepted, *others], spec.synthetic)
    if summary is None:
        return None
    real, fake = (synthetic.gap_rows(side) for side in synthetic.real_and_synthetic(accepted))
    gap = None
    if spec.synthetic.compare and real and fake:
        vectors = None
        if stage is not None:
            vectors = {sha: stage.embeddings.vectors[i] for i, sha in enumerate(stage.embeddings.sha256)}
        gauge = DriftSpec(threshold=spec.drift.threshold, min_samples=synthetic.MIN_COMPARED)
        _, gap = analysis.drift(real, fake, "real", gauge, vectors=vectors)
        synthetic.describe_gap(summary, real, fake, gap, embedding_threshold=spec.drift.threshold)
    return {"summary": summary.to_wire(), "figures": gap}


def embed_config(spec: DatasetSpec, model: str | None = None) -> embed.EmbedConfig:
    """How the embedding stage runs for a dataset (``model`` overrides the spec's)."""
    e = spec.embedding
    return embed.EmbedConfig(
        model=model or e.model,
        batch_size=e.batch_size,
        device=e.device,
        num_gpus=e.num_gpus,
        num_cpus=e.num_cpus,
        concurrency=e.concurrency,
        max_pixels=spec.quality_gates.max_pixels.limit,
        memory_limit=spec.quality_gates.max_pixels.memory_limit,
    )


def _dedup_model(spec: DatasetSpec) -> str | None:
    dedup = spec.dedup.embedding
    if dedup is None or not dedup.enabled:
        return None
    return dedup.model or spec.embedding.model


@dataclass
class EmbeddingStage:
    """Embeddings of a run's decodable samples, per model id (the spec's model first)."""

    embeddings: embed.Embeddings
    computed: int
    by_model: dict[str, embed.Embeddings] = field(default_factory=dict)


def _label_errors_embed(spec: DatasetSpec) -> bool:
    """Whether spec.labels.errors needs the embeddings (of spec.embedding.model), on or off."""
    return spec.labels.errors.enabled and spec.labels.errors.method != "predictions"


def _label_errors(
    spec: DatasetSpec, curated: Curated, stage: EmbeddingStage | None, dataset: str, run_id: str
) -> dict[str, bytes]:
    """spec.labels.errors: neighbour candidates among the accepted samples, counted in the stats and
    stored with the run (confident learning runs in the review queue, where predictions are imported)."""
    errors = spec.labels.errors
    if not errors.enabled:
        return {}
    embeddings = stage.by_model.get(spec.embedding.model) if stage is not None else None
    checked, found = 0, list[label_errors.LabelErrorCandidate]()
    if embeddings is not None and _label_errors_embed(spec):
        vectors = {sha: embeddings.vectors[i] for i, sha in enumerate(embeddings.sha256)}
        accepted = [r for r in curated.rows if r["disposition"] == Disposition.ACCEPTED]
        checked, found = label_errors.in_rows(
            accepted, vectors, k=errors.k, min_score=errors.min_score, limit=errors.max_candidates
        )
    key = label_errors_key(dataset, run_id)
    curated.stats.label_errors = LabelErrorStats(
        method=errors.method, k=errors.k, min_score=errors.min_score, max_candidates=errors.max_candidates,
        checked=checked, candidates=len(found), uri=key,
    )  # fmt: skip
    return {key: label_errors_bytes(found)}


def _stage_models(spec: DatasetSpec) -> list[str]:
    """The models the embedding stage runs (the spec's first): for embeddings, label errors, dedup."""
    models = [spec.embedding.model] if spec.embedding.enabled or _label_errors_embed(spec) else []
    dedup_model = _dedup_model(spec)
    if dedup_model is not None and dedup_model not in models:
        models.append(dedup_model)
    return models


def _embedding_stage(
    store: ObjectStore, spec: DatasetSpec, records: list[SampleRow], executor: Executor, events: RunEvents
) -> EmbeddingStage | None:
    """Embed every decodable sample under each model the spec needs; stored ones are reused."""
    models = _stage_models(spec)
    if not models:
        return None
    shas = sorted({r["sha256"] for r in records if r.get("status") == Status.OK})
    runner: embed.Runner = embed.embed_inline
    on_ray = executor.ray if isinstance(executor, AutoExecutor) else executor  # auto: Ray when given one
    if isinstance(on_ray, RayExecutor):
        on_ray.ensure_ray()
        runner = embed.embed_with_ray
    stage: EmbeddingStage | None = None
    for model in models:
        config = embed_config(spec, model)
        events.phase(f"embedding {len(shas)} samples with {model}")
        try:
            result = embed.ensure_embeddings(
                store, shas, config, runner=runner, progress=events.advance, start=events.start_processing
            )
        except Exception as exc:
            raise RunError(f"embedding stage ({model}): {exc}") from exc
        if stage is None:
            stage = EmbeddingStage(result.embeddings, result.computed)
        else:
            stage.computed += result.computed
        stage.by_model[model] = result.embeddings
    return stage


class _EmbeddingNear:
    """Embedding near-duplicate pairs of the accepted records, through the parent's stored index."""

    def __init__(
        self,
        store: ObjectStore,
        dataset: str,
        parent: VersionRecord | None,
        spec: DatasetSpec,
        stage: EmbeddingStage | None,
    ) -> None:
        self.store, self.dataset, self.parent = store, dataset, parent
        self.ref = _dedup_model(spec)
        self.threshold = spec.dedup.embedding.threshold if spec.dedup.embedding else 1.0
        self.embeddings = stage.by_model.get(self.ref) if stage is not None and self.ref else None
        self.model = self.embeddings.model_id if self.embeddings is not None else None
        self.index: ann.AnnIndex | None = None

    @property
    def enabled(self) -> bool:
        return self.embeddings is not None

    def __call__(self, accepted: Sequence[SampleRow]) -> list[tuple[int, int]]:
        assert self.embeddings is not None and self.model is not None
        rows = self.embeddings.row_of()
        members = [i for i, r in enumerate(accepted) if r["sha256"] in rows]
        shas = [accepted[i]["sha256"] for i in members]
        vectors = self.embeddings.vectors[[rows[s] for s in shas]] if shas else self.embeddings.vectors[:0]
        previous = (
            ann.load_index(self.store, self.dataset, self.parent.run_id, self.model) if self.parent else None
        )
        pairs, self.index = ann.near_pairs(previous, shas, vectors, self.threshold)
        return [(members[a], members[b]) for a, b, _ in pairs]

    def index_files(self, dataset: str, run_id: str) -> dict[str, bytes]:
        if self.index is None or self.model is None:
            return {}
        graph_key, ids_key = ann.index_keys(dataset, run_id, self.model)
        graph, ids = self.index.to_bytes()
        return {graph_key: graph, ids_key: ids}
