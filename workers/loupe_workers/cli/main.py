"""The ``loupe`` command line.

Exit codes: 0 success; 1 a runtime failure (a store that cannot be reached, is full, read-only or refuses
access; a run that could not complete; a version or file that is missing); 2 a usage or spec error (bad
arguments, an invalid spec, an unknown dataset in the file). Every failure prints one line,
``error: ...``, on stderr and no traceback; ``LOUPE_DEBUG=1`` shows the traceback of unexpected errors.
With ``--json``, stdout holds only the JSON, and every key of its structure is camelCase (as in
version.json and the Kubernetes resources); keys that are data (label, gate and metadata field names,
the columns a SQL query selects) are printed as they are.
Every user-supplied string (paths, names, keys, labels, messages) is escaped before rich prints it.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loupe_api import openlineage
from loupe_api.access import ALL_USES, AccessStats
from loupe_api.common import camel_keys
from loupe_api.crd import all_crds
from loupe_api.dataset import DatasetSpec
from loupe_api.keys import EMBEDDINGS, embedding_models
from loupe_api.label_qa import LabelQaStats
from loupe_api.resources import SpecError
from loupe_api.samples import SampleRow
from loupe_api.sampling import SamplingSummary
from loupe_api.synthetic import SyntheticSummary
from loupe_api.versions import VersionRecord
from loupe_storage.store import LocalStore, ObjectStore, StoreError, open_store, os_reason
from loupe_storage.versions import CommitConflict, list_versions
from loupe_workers.compute.executor import make_executor
from loupe_workers.curation import access, label_qa, sampling, synthetic
from loupe_workers.curation.privacy import exportable
from loupe_workers.curation.review import (
    PredictionError,
    import_predictions,
    parse_predictions,
    read_label_errors,
    review_queue,
)
from loupe_workers.embedding.embed import load_embeddings
from loupe_workers.insights.report import build_report
from loupe_workers.pipeline.retraining import run_policy
from loupe_workers.pipeline.run import RunError, RunEvents, run_dataset
from loupe_workers.pipeline.specs import check_local, load_specs, run_request
from loupe_workers.storage import manifest
from loupe_workers.storage.rows import read_version_edges, read_version_samples
from loupe_workers.use import exports
from loupe_workers.versioning.diffs import diff_rows
from loupe_workers.versioning.trace import TraceError, trace_model, trace_raw
from loupe_workers.versioning.versions import list_tags, no_dataset_message, read_version, resolve_version

app = typer.Typer(
    name="loupe",
    help="Declarative, versioned image datasets: ingest, validate, deduplicate, version.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True, highlight=False)
# Piped into a file or another program, tables are as wide as their cells: a URI is never cut to "…".
PIPED_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 100_000
out = Console(highlight=False, soft_wrap=True, width=PIPED_WIDTH)  # piped output keeps paths on one line

StoreOption = Annotated[
    str,
    typer.Option("--store", envvar="LOUPE_STORE", help="Object store: a folder or s3://bucket/prefix."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DEFAULT_STORE = ".loupe"


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"loupe {version('loupe')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Declarative, versioned image datasets: ingest, validate, deduplicate, version."""


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _message(exc: BaseException) -> str:
    """One line for an exception: a StoreError found in its chain (Ray wraps worker errors), else its text."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        cause = getattr(current, "cause", None)  # ray.exceptions.RayTaskError
        if type(current) is StoreError or (
            isinstance(current, StoreError) and not isinstance(cause, BaseException)
        ):
            return " ".join(str(current).split())
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    if isinstance(exc, OSError):
        return f"{exc.filename}: {os_reason(exc)}" if exc.filename else os_reason(exc)
    text = " ".join(str(exc).split())
    return text[:500] if len(text) <= 500 else text[:497] + "..."


def _sweep_temp(uri: str) -> None:
    """Remove the temporary files a killed run left in a folder store (only those older than an hour)."""
    object_store = _store(uri)
    if isinstance(object_store, LocalStore):
        object_store.sweep_temp()


def _store(uri: str) -> ObjectStore:
    return open_store(uri, endpoint=os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("LOUPE_S3_ENDPOINT"))


def _split_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition("@")
    return name, version or None


def _version(store: ObjectStore, ref: str) -> VersionRecord:
    try:
        return resolve_version(store, *_split_ref(ref))
    except LookupError as exc:
        raise _fail(str(exc)) from exc


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


@app.command()
def run(
    file: Annotated[Path, typer.Option("-f", "--file", help="A YAML file or a folder of YAML files.")],
    store: Annotated[
        str | None,
        typer.Option("--store", envvar="LOUPE_STORE", help="Object store (default: spec, then ./.loupe)."),
    ] = None,
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Only these datasets.")] = None,
    executor: Annotated[
        str,
        typer.Option(
            help="auto (Ray when --ray-address is given, else this process or a local worker "
            "pool), inline, pool or ray (a local Ray, or --ray-address)."
        ),
    ] = "auto",
    ray_address: Annotated[
        str | None, typer.Option(envvar="RAY_ADDRESS", help="Existing Ray cluster.")
    ] = None,
    commit: Annotated[
        bool | None, typer.Option("--commit/--dry-run", help="Commit (default in auto mode) or only report.")
    ] = None,
    allow_shrink: Annotated[
        bool,
        typer.Option(
            "--allow-shrink",
            help="Accept sources that lost more than versioning.maxRemovedFraction of the current version.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the next version of every Dataset in FILE (nothing happens when nothing changed)."""
    try:
        bundle = load_specs(file)
        check_local(bundle)  # source folders, label and model files: refused before anything is written
    except SpecError as exc:
        raise _fail(str(exc), 2) from exc
    names = dataset or sorted(bundle.datasets)
    unknown = [n for n in names if n not in bundle.datasets]
    if unknown:
        raise _fail(f"no Dataset named {', '.join(unknown)} in {file}", 2)
    if not names:
        raise _fail(f"{file} defines no Dataset", 2)
    engine = make_executor(executor, address=ray_address)
    results = []
    stores: dict[str, str] = {}
    for name in names:
        spec = bundle.datasets[name].spec
        do_commit = commit if commit is not None else spec.versioning.mode == "auto"
        store_uri = store or _resolve_store(spec.storage.uri, bundle.base_dir) or DEFAULT_STORE
        stores[name] = store_uri
        request = run_request(bundle, name, store_uri, commit=do_commit)
        request.store_uri = store_uri
        request.allow_shrink = allow_shrink
        try:
            _sweep_temp(store_uri)
            result = _run_with_progress(request, bundle.base_dir, engine, quiet=as_json)
        except (RunError, CommitConflict, StoreError) as exc:
            raise _fail(f"{name}: {_message(exc)}") from exc
        results.append(result)
        if result.created:
            sources = [(src.location_uri(), ref) for ref, src in sorted(request.sources.items())]
            openlineage.emit(f"loupe.dataset/{name}", f"{name}@{result.version}", "COMPLETE", sources,
                             [(store_uri, f"{name}@{result.version}")])  # fmt: skip
        if not as_json:
            _print_run(name, result.model_dump(mode="json"), store_uri)
    outcomes = []
    for policy in bundle.policies.values():
        if policy.spec.dataset_ref in stores and (commit is None or commit):
            dataset_spec = bundle.datasets[policy.spec.dataset_ref].spec
            outcome = run_policy(policy, _store(stores[policy.spec.dataset_ref]), bundle.base_dir,
                                 endpoint=dataset_spec.storage.endpoint)  # fmt: skip
            outcomes.append(outcome)
            if not as_json:
                started = f"run {outcome.run.name} on {outcome.run.dataset_version}: " if outcome.run else ""
                out.print(
                    f"RetrainPolicy [bold]{escape(outcome.policy)}[/bold]: {escape(started + outcome.message)}"
                )
    if as_json:
        _print_json([r.to_wire() for r in results] if not outcomes else
                    {"datasets": [r.to_wire() for r in results],
                     "policies": [{"policy": o.policy, "message": o.message,
                                   "run": o.run.to_wire() if o.run else None} for o in outcomes]})  # fmt: skip


def _resolve_store(uri: str | None, base: Path) -> str | None:
    if uri is None or "://" in uri or Path(uri).is_absolute():
        return uri
    return str(base / uri)


def _run_with_progress(request: Any, base_dir: Path, engine: Any, quiet: bool) -> Any:
    if quiet:
        return run_dataset(request, base_dir=base_dir, executor=engine)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{request.dataset}: starting", total=None)
        events = RunEvents(
            phase=lambda text: progress.update(task, description=f"{request.dataset}: {text}"),
            start_processing=lambda total: progress.update(task, total=total, completed=0),
            advance=lambda n: progress.advance(task, n),
        )
        return run_dataset(request, base_dir=base_dir, executor=engine, events=events)


def _print_run(name: str, result: dict[str, Any], store_uri: str) -> None:
    stats = result["stats"]
    colour = "green" if result["created"] else "yellow"
    out.print(f"[bold]{escape(name)}[/bold]: [{colour}]{escape(result['message'])}[/{colour}]")
    out.print(
        f"  scanned {stats['scanned']}, processed {stats['processed']}, samples {stats['samples']} "
        f"(flagged {stats['flagged']}), exact duplicates {stats['exact_duplicates']}, "
        f"near duplicates {stats['near_duplicates']}"
    )
    for label, counts in (("rejected", stats["rejected"]), ("quarantined", stats["quarantined"])):
        if counts:
            out.print(f"  {label}: " + escape(", ".join(f"{k} {v}" for k, v in sorted(counts.items()))))
    if stats["splits"]:
        out.print("  splits: " + escape(", ".join(f"{k} {v}" for k, v in sorted(stats["splits"].items()))))
    if stats.get("sampling"):  # spec.sampling, in counts
        chosen = stats["sampling"]
        out.print(escape(f"  sampling ({chosen['strategy']}): selected {chosen['selected']} of "
                         f"{chosen['candidates']}, left out {chosen['left_out']}"))  # fmt: skip
    if stats.get("embedding_model"):
        out.print(
            escape(f"  embeddings ({stats['embedding_model']}): {stats['embedded']} samples, "
                   f"{stats['embeddings_computed']} computed in this run, {stats['embedding_pairs']} near-duplicate pairs")
        )  # fmt: skip
    if result["current_version"]:
        out.print(escape(f"  current version {result['current_version']} in {store_uri}"))
    if result.get("expired"):
        expired = ", ".join(result["expired"])
        out.print(escape(f"  expired by retention: {expired} (loupe gc frees their bytes)"))


@app.command()
def versions(dataset: str, store: StoreOption = DEFAULT_STORE, as_json: JsonOption = False) -> None:
    """List the versions of DATASET, oldest first."""
    object_store = _store(store)
    records = list_versions(object_store, dataset)
    tagged: dict[str, list[str]] = {}
    for t in list_tags(object_store, dataset):
        tagged.setdefault(t.version, []).append(t.name)
    from loupe_workers.versioning.tiers import describe, read_tiers

    tiers = read_tiers(object_store, dataset)  # where retention.tiers moved their bytes, if anywhere
    rows: list[dict[str, Any]] = [
        {
            "version": r.version,
            "tags": tagged.get(r.version, []),
            "created": r.created.isoformat(),
            "samples": r.samples,
            "bump": r.change.bump if r.change else None,
            "parent": r.parent,
            "manifestUri": object_store.uri_of(r.manifest_uri),
            "storage": describe(tiers.get(r.version)) or None,
        }
        for r in records
    ]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        raise _fail(no_dataset_message(object_store, dataset))
    storage = any(row["storage"] for row in rows)  # the column only once some version was moved
    table = Table(
        "version", "tags", "created", "samples", "bump", "manifest", *(["storage"] if storage else [])
    )
    for row in rows:
        _add_row(
            table,
            str(row["version"]),
            ", ".join(row["tags"]),
            str(row["created"]),
            str(row["samples"]),
            str(row["bump"] or ""),
            str(row["manifestUri"]),
            *([str(row["storage"] or "")] if storage else []),
        )
    out.print(table)


def _add_row(table: Table, *cells: str) -> None:
    """A table row of user data: names and keys are shown as they are, never read as markup."""
    table.add_row(*(escape(cell) for cell in cells))


def outlier_lines(gates: list[dict[str, Any]], strata: int = 10) -> list[str]:
    """Dataset-relative gates of a version in words: per gate its key, then per stratum (the largest
    ``strata``) n, median, MAD, threshold and outliers."""
    lines: list[str] = []
    for g in gates:
        side = "<" if g["direction"] == "below" else ">"
        lines.append(
            f"  relative {g['gate']} by {g['by']} (maxZ {g['maxZ']:g}, minSamples {g['minSamples']}, "
            f"{g['action']}): {g['outliers']} outliers ({g['flagged']} flagged, {g['dropped']} dropped), "
            f"{g['unjudgedStrata']} strata too small, {g['missing']} samples without {g['by']}"
        )
        shown = g["strata"][:strata]
        for s in shown:
            if s["judged"]:
                cut = f"{g['measure']} {side} {s['threshold']:.4g}: {s['outliers']} outliers"
            else:
                cut = "not judged (fewer than minSamples)"
            lines.append(
                f"    {s['value']}: n {s['samples']}, median {s['median']:.4g}, MAD {s['mad']:.4g}, {cut}"
            )
        rest = len(g["strata"]) - len(shown) + g["otherStrata"]
        if rest:
            lines.append(f"    ... {rest} more strata")
    return lines


def _top_label_errors(store: ObjectStore, record: VersionRecord, rows: list[SampleRow], top: int = 10) -> list[dict[str, Any]]:  # fmt: skip
    """spec.labels.errors: the highest-ranked label-error candidates of a version, with their keys."""
    key_of = {r["sample_id"]: r.get("key") for r in rows}
    return [camel_keys({"key": key_of.get(c.sample_id), **c.row()}) for c in read_label_errors(store, record)[:top]]  # fmt: skip


def _version_summary(store: ObjectStore, record: VersionRecord) -> dict[str, Any]:
    rows = read_version_samples(store, record)
    labels = Counter(r["label"] for r in rows if r["label"])
    return {
        "dataset": record.dataset,
        "version": record.version,
        "parent": record.parent,
        "created": record.created.isoformat(),
        "samples": record.samples,
        "manifestUri": store.uri_of(record.manifest_uri),
        "rejectedUri": store.uri_of(record.rejected_uri),
        "lineageUri": store.uri_of(record.lineage_uri),
        # the Parquet files holding the rows (the parts a part list names, or the one file of older versions)
        "manifestFiles": [store.uri_of(k) for k in manifest.part_files(store, record.manifest_uri)],
        "rejectedFiles": [store.uri_of(k) for k in manifest.part_files(store, record.rejected_uri)],
        "change": record.change.to_wire() if record.change else None,
        "stats": record.stats.to_wire(),
        "labels": dict(sorted(labels.items())),
        "outliers": [o.to_wire() for o in record.outliers],
        "labelErrors": _top_label_errors(store, record, rows),
        "labelQa": record.label_qa.to_wire() if record.label_qa else None,
        "synthetic": record.synthetic.to_wire() if record.synthetic else None,
        "sampling": record.sampling.to_wire() if record.sampling else None,
    }


@app.command()
def show(ref: Annotated[str, typer.Argument(help="DATASET or DATASET@VERSION")], store: StoreOption = DEFAULT_STORE, as_json: JsonOption = False) -> None:  # fmt: skip
    """Counts of a version: samples, rejections by reason, duplicates, splits."""
    object_store = _store(store)
    summary = _version_summary(object_store, _version(object_store, ref))
    if as_json:
        _print_json(summary)
        return
    stats = summary["stats"]
    out.print(
        f"[bold]{escape(summary['dataset'])}@{escape(summary['version'])}[/bold] "
        + escape(f"({summary['samples']} samples, parent {summary['parent'] or '-'})")
    )
    if summary["change"]:
        out.print(escape(f"  {summary['change']['bump']}: {'; '.join(summary['change']['reasons'])}"))
    table = Table("what", "count", "details")
    _add_row(table, "scanned objects", str(stats.get("scanned", 0)), "")
    _add_row(
        table,
        "samples",
        str(stats.get("samples", 0)),
        ", ".join(f"{k} {v}" for k, v in sorted(stats.get("splits", {}).items())),
    )
    _add_row(
        table,
        "flagged",
        str(stats.get("flagged", 0)),
        ", ".join(f"{k} {v}" for k, v in sorted(stats.get("flags", {}).items())),
    )
    _add_row(
        table,
        "rejected",
        str(sum(stats.get("rejected", {}).values())),
        ", ".join(f"{k} {v}" for k, v in sorted(stats.get("rejected", {}).items())),
    )
    _add_row(
        table,
        "quarantined",
        str(sum(stats.get("quarantined", {}).values())),
        ", ".join(f"{k} {v}" for k, v in sorted(stats.get("quarantined", {}).items())),
    )
    _add_row(table, "exact duplicates", str(stats.get("exactDuplicates", 0)), "")
    _add_row(
        table,
        "near duplicates",
        str(stats.get("nearDuplicates", 0)),
        f"{stats.get('duplicateGroups', 0)} groups",
    )
    if summary["labels"]:
        _add_row(
            table,
            "labels",
            str(len(summary["labels"])),
            ", ".join(f"{k} {v}" for k, v in summary["labels"].items()),
        )
    mapping = stats.get("labelMapping")
    if mapping:  # spec.labels: unmapped classes per source, and samples the mapping renamed
        unmapped: dict[str, dict[str, int]] = mapping.get("unmapped", {})
        per_source = "; ".join(
            f"{source}: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
            for source, counts in sorted(unmapped.items())
        )
        _add_row(
            table,
            "unmapped labels",
            str(sum(sum(c.values()) for c in unmapped.values())),
            f"{mapping['action']}: {per_source or 'none'}; {mapping.get('mapped', 0)} samples renamed",
        )
    errors = stats.get("labelErrors")
    if errors:  # spec.labels.errors: candidates kept; the top ones are listed below the table
        checked = f"{errors['method']}, {errors.get('checked', 0)} labelled samples checked"
        _add_row(table, "label-error candidates", str(errors.get("candidates", 0)), checked)
    out.print(table)
    for c in summary["labelErrors"][:5]:
        out.print(escape(f"  label error {c['score']:.2f} {c['key']}: {c['label']!r} -> {c['suggested']!r}, {c['reason']}"))  # fmt: skip
    if stats.get("access"):  # residency and access decisions per source (curation.access)
        for line in access.describe(AccessStats.model_validate(stats["access"])):
            out.print(escape(f"  {line}"))
    for line in outlier_lines(summary["outliers"]):
        out.print(escape(line))
    if summary["sampling"]:  # spec.sampling: budgets, strategy, selected and left out
        for line in sampling.describe(SamplingSummary.model_validate(summary["sampling"])):
            out.print(escape(f"  {line}"))
    if summary.get("synthetic"):  # real:synthetic counts and the gap in words
        for line in synthetic.lines(SyntheticSummary.model_validate(summary["synthetic"])):
            out.print(escape(line))
    if summary["labelQa"]:  # several label sets: agreement, consensus, golden accuracy
        for line in label_qa.describe(LabelQaStats.model_validate(summary["labelQa"])):
            out.print(escape(f"  {line}"))
    out.print(escape(f"  manifest {summary['manifestUri']}"))


@app.command()
def diff(a: str, b: str, store: StoreOption = DEFAULT_STORE, as_json: JsonOption = False) -> None:
    """Samples added, removed, relabelled or moved between two versions."""
    object_store = _store(store)
    first, second = _version(object_store, a), _version(object_store, b)
    rows_a = {r["sample_id"]: r for r in read_version_samples(object_store, first)}
    rows_b = {r["sample_id"]: r for r in read_version_samples(object_store, second)}
    changes = diff_rows(rows_a.values(), rows_b.values())
    relabels = sorted(  # each relabelled sample with its class before and after
        (
            {"sample": f"{rows_b[s]['source']}:{rows_b[s]['key']}", "from": old, "to": new}
            for s, (old, new) in changes.classes.items()
        ),
        key=lambda item: str(item["sample"]),
    )
    result = {
        "from": f"{first.dataset}@{first.version}",
        "to": f"{second.dataset}@{second.version}",
        "added": sorted(f"{rows_b[s]['source']}:{rows_b[s]['key']}" for s in changes.added),
        "removed": sorted(f"{rows_a[s]['source']}:{rows_a[s]['key']}" for s in changes.removed),
        "relabeled": sorted(rows_b[s]["key"] for s in changes.relabeled),
        "relabels": relabels,
        "resplit": sorted(rows_b[s]["key"] for s in changes.resplit),
        "unchanged": changes.unchanged,
        "labelQa": {  # agreement of the label sets in each version (None: fewer than two sets)
            "from": first.label_qa.to_wire() if first.label_qa else None,
            "to": second.label_qa.to_wire() if second.label_qa else None,
        },
    }
    synthetic_a = synthetic.manifest_counts(rows_a.values())
    synthetic_b = synthetic.manifest_counts(rows_b.values())
    if synthetic_a.synthetic or synthetic_b.synthetic:  # real:synthetic counts of both versions
        result["synthetic"] = {
            "from": synthetic_a.to_wire(),
            "to": synthetic_b.to_wire(),
            "addedSynthetic": sum(1 for s in changes.added if rows_b[s].get("synthetic")),
            "removedSynthetic": sum(1 for s in changes.removed if rows_a[s].get("synthetic")),
        }
    if first.sampling or second.sampling:  # spec.sampling: which removals and additions it decided
        left_a = sampling.left_out_ids(read_version_samples(object_store, first, "rejected"))
        left_b = sampling.left_out_ids(read_version_samples(object_store, second, "rejected"))
        result["sampling"] = {
            "from": first.sampling.counts().to_wire() if first.sampling else None,
            "to": second.sampling.counts().to_wire() if second.sampling else None,
            "leftOut": sorted(
                f"{rows_a[s]['source']}:{rows_a[s]['key']}" for s in changes.removed if s in left_b
            ),
            "broughtBack": sorted(
                f"{rows_b[s]['source']}:{rows_b[s]['key']}" for s in changes.added if s in left_a
            ),
        }
    if as_json:
        _print_json(result)
        return
    out.print(
        f"[bold]{escape(str(result['from']))} -> {escape(str(result['to']))}[/bold]: "
        f"{result['unchanged']} samples in both"
    )
    if "synthetic" in result:
        moved: Any = result["synthetic"]
        was, now = moved["from"], moved["to"]
        out.print(escape(f"  synthetic {was['synthetic']} -> {now['synthetic']} of "
                         f"{was['real'] + was['synthetic']} -> {now['real'] + now['synthetic']} samples "
                         f"({was['ratio']:.1%} -> {now['ratio']:.1%}): +{moved['addedSynthetic']} -{moved['removedSynthetic']}"))  # fmt: skip
    if "sampling" in result:
        sampled: Any = result["sampling"]
        counts = [f"{c['selected']} of {c['candidates']} ({c['strategy']})" if c else "no sampling"
                  for c in (sampled["from"], sampled["to"])]  # fmt: skip
        out.print(escape(f"  sampling: {counts[0]} -> {counts[1]}; {len(sampled['leftOut'])} of the removed "
                         f"left out by sampling, {len(sampled['broughtBack'])} of the added brought back"))  # fmt: skip
    if first.label_qa or second.label_qa:
        before, after = first.label_qa, second.label_qa
        out.print(escape(
            f"  label agreement: kappa {label_qa.figure(before.kappa if before else None)} -> "
            f"{label_qa.figure(after.kappa if after else None)}, disagreements "
            f"{before.disagreements if before else '-'} -> {after.disagreements if after else '-'}"
        ))  # fmt: skip
    for kind, colour, sign in (
        ("added", "green", "+"),
        ("removed", "red", "-"),
        ("relabeled", "yellow", "~"),
        ("resplit", "yellow", "~"),
    ):
        shown = (
            result[kind]
            if kind != "relabeled"
            else [f"{r['sample']}: {r['from'] or '-'} -> {r['to'] or '-'}" for r in relabels]
        )
        for item in shown:  # type: ignore[attr-defined]
            text = escape(f"{sign} {kind[:-2] if kind.endswith('ed') else kind} {item}")
            out.print(f"  [{colour}]{text}[/{colour}]")


@app.command()
def lineage(
    ref: Annotated[str | None, typer.Argument(help="DATASET@VERSION")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Trace a model URI back to its raw objects.")
    ] = None,
    raw: Annotated[str | None, typer.Option("--raw", help="Trace a raw object (sha256) forward.")] = None,
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
) -> None:
    """Where a version came from (ancestry, raw object -> sample edges); or a model back to the raw objects
    it learned from (--model); or a raw object forward to every version and model that used it (--raw)."""
    object_store = _store(store)
    if sum(x is not None for x in (ref, model, raw)) != 1:
        raise _fail("give exactly one of DATASET@VERSION, --model URI and --raw SHA256", 2)
    if model is not None or raw is not None:
        try:
            found = (
                trace_model(object_store, model) if model is not None else trace_raw(object_store, raw or "")
            )
        except TraceError as exc:
            raise _fail(str(exc)) from exc
        if as_json:
            _print_json(found)
        elif model is not None:
            out.print(f"[bold]{escape(model)}[/bold] " + escape(f"<- run {found['run']} ({found['policy']}) <- "
                      f"{found['dataset']}@{found['datasetVersion']} <- {len(found['rawObjects'])} raw objects"))  # fmt: skip
            table = Table("raw object", "raw sha256", "sample")
            for edge in found["rawObjects"]:
                _add_row(table, str(edge["uri"]), str(edge["rawSha256"])[:12], str(edge["sampleId"])[:12])
            out.print(table)
        else:
            out.print(
                f"[bold]{escape(str(raw))}[/bold] " + escape(f"-> versions: {', '.join(found['versions'])}")
            )
            out.print(escape(f"-> models: {', '.join(found['models']) or '(none)'}"))
            for left in found["leftOut"]:  # versions that left it out, and why (the edge's reason)
                out.print(
                    escape(f"-> left out of {left['version']}: {left['reason']}: {left['detail'] or ''}")
                )
        return
    assert ref is not None
    record = _version(object_store, ref)
    chain = []
    current: VersionRecord | None = record
    while current is not None:
        chain.append({"version": current.version, "created": current.created.isoformat(), "runId": current.run_id,
                      "specDigest": current.spec_digest, "sourceDigest": current.source_digest,
                      "codeVersion": current.code_version})  # fmt: skip
        parent = current.parent
        current = None
        if parent:
            try:
                current = read_version(object_store, record.dataset, parent)
            except LookupError as exc:  # expired by retention: the chain ends here, saying why
                chain.append({"version": parent, "expired": str(exc)})
    edges = read_version_edges(object_store, record)
    result = {"dataset": record.dataset, "version": record.version, "ancestry": chain,
              "edges": [camel_keys(edge) for edge in edges]}  # fmt: skip
    if as_json:
        _print_json(result)
        return
    out.print(
        f"[bold]{escape(record.dataset)}@{escape(record.version)}[/bold] <- "
        + escape(" <- ".join(c["version"] + (" (expired)" if "expired" in c else "") for c in chain[1:]))
    )
    table = Table("raw object", "raw sha256", "sample", "disposition", "why left out")
    for edge in edges:
        why = ": ".join(str(edge[k]) for k in ("reason", "detail") if edge.get(k))  # null on accepted edges
        _add_row(
            table,
            str(edge["uri"]),
            str(edge["raw_sha256"])[:12],
            str(edge["sample_id"])[:12],
            str(edge["disposition"]),
            why,
        )
    out.print(table)


@app.command()
def search(
    ref: Annotated[str, typer.Argument(help="DATASET or DATASET@VERSION")],
    image: Annotated[
        Path | None, typer.Option("--image", "-i", help="Example image: rank by similarity.")
    ] = None,
    text: Annotated[
        str | None, typer.Option("--text", "-t", help="Text: rank by relevance (e.g. 'cat').")
    ] = None,
    where: Annotated[
        str | None,
        typer.Option("--where", "-w", help="Filter expression, e.g. 'label == \"cat\" and width >= 640'."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-k", min=1, help="Results to show.")] = 10,
    min_score: Annotated[
        float | None,
        typer.Option("--min-score", help="Leave out hits scoring below this (see README: Search)."),
    ] = None,
    model: Annotated[
        str, typer.Option(help="Embedding model (registered name or .onnx URI).")
    ] = "mobilenet_v2",
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
) -> None:
    """Samples of a version ranked by an example image or a text, among those matching a filter."""
    from loupe_workers.embedding.models import ModelError
    from loupe_workers.use.search import SearchError, hits_json
    from loupe_workers.use.search import search as run_search

    object_store = _store(store)
    _version(object_store, ref)  # a missing version exits 1 here, as in every command (bad queries exit 2)
    name, version = _split_ref(ref)
    try:
        example = image.read_bytes() if image is not None else None
    except OSError as exc:
        raise _fail(f"cannot read {image}: {exc}", 2) from exc
    try:
        hits = run_search(
            object_store, name, version, image=example, text=text, where=where, limit=limit, model=model,
            min_score=min_score,
        )  # fmt: skip
    except SearchError as exc:
        raise _fail(str(exc), 2) from exc
    except ModelError as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        _print_json(hits_json(hits))
        return
    if not hits:
        out.print("no matching samples")
        return
    table = Table("score", "sample", "label", "split", "key", "why")
    for hit in hits:
        _add_row(
            table,
            f"{hit.score:.3f}",
            hit.sample_id[:12],
            hit.label or "",
            hit.split or "",
            hit.key,
            hit.detail,
        )
    out.print(table)


@app.command()
def query(
    ref: Annotated[str, typer.Argument(help="DATASET or DATASET@VERSION")],
    sql: Annotated[
        str | None,
        typer.Argument(help="SQL over the tables samples, rejected and lineage (DuckDB dialect)."),
    ] = None,
    schema: Annotated[bool, typer.Option("--schema", help="List the tables and their columns.")] = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    max_rows: Annotated[int, typer.Option("--max-rows", min=1, help="Rows a table shows.")] = 50,
    allow_restricted: Annotated[
        bool, typer.Option("--allow-restricted", help="Include samples restricted for privacy.")
    ] = False,
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
) -> None:
    """SQL over a version: `samples` (the manifest, JSON columns as structs: metadata.site, labels.boxes),
    `rejected` (left-out samples and why) and `lineage`. Read-only: the query reaches no file."""
    from loupe_workers.use.query import QueryError, run_query, schema_text

    object_store = _store(store)
    record = _version(object_store, ref)
    if schema:
        columns = schema_text(object_store, record)
        if as_json:
            _print_json([{"table": t, "column": c, "type": k} for t, c, k in columns])
            return
        table = Table("table", "column", "type")
        for row in columns:
            _add_row(table, *row)
        out.print(table)
        return
    if not sql:
        raise _fail(
            'give a SQL query, e.g. "select split, count(*) from samples group by split", or --schema', 2
        )
    try:
        result = run_query(object_store, record, sql, allow_restricted=allow_restricted).table
    except QueryError as exc:
        raise _fail(f"query: {exc}", 2) from exc
    if as_json:
        sys.stdout.write(json.dumps(result.to_pylist(), indent=2, default=str) + "\n")
        return
    if csv_out:
        import pyarrow.csv as pacsv

        sink = io.BytesIO()
        pacsv.write_csv(_flatten_for_csv(result), sink)
        sys.stdout.write(sink.getvalue().decode())
        return
    table = Table(*result.column_names)
    for row in result.slice(0, max_rows).to_pylist():
        _add_row(table, *(_cell(v) for v in row.values()))
    out.print(table)
    if result.num_rows > max_rows:
        console.print(f"{max_rows} of {result.num_rows} rows shown (--max-rows, --json or --csv for all)")


def _cell(value: Any) -> str:
    """A query result value as table text: nested values as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def _flatten_for_csv(table: Any) -> Any:
    """CSV has no nested values: struct and list columns become JSON text."""
    import pyarrow as pa

    for index, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            text = pa.array(
                [None if v is None else _cell(v) for v in table.column(index).to_pylist()], pa.string()
            )
            table = table.set_column(index, field.name, text)
    return table


@app.command()
def tag(
    ref: Annotated[str, typer.Argument(help="DATASET@VERSION to tag (DATASET alone with --delete)")],
    name: Annotated[str, typer.Argument(help="Tag name, e.g. production")],
    force: Annotated[bool, typer.Option("--force", help="Move the tag if it names another version.")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the tag (the version stays).")] = False,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Name a version (DATASET@production works wherever a version does). A tag is immutable: --force
    moves it, and the tag keeps the versions it named before."""
    from loupe_workers.versioning.tags import TagError, TagExists, remove_tag, set_tag

    object_store = _store(store)
    dataset, version = _split_ref(ref)
    try:
        if delete:
            removed = remove_tag(object_store, dataset, name)
            out.print(escape(f"removed tag {name} of {dataset} (it named {removed.version})"))
            return
        if version is None:
            raise _fail(f"give the version to tag: loupe tag {dataset}@VERSION {name}", 2)
        record = _version(object_store, ref)  # a tag or a number; one line with a suggestion if unknown
        done = set_tag(object_store, dataset, record.version, name, force=force)
    except TagExists as exc:
        raise _fail(str(exc)) from exc
    except TagError as exc:
        raise _fail(str(exc), 2 if not delete else 1) from exc
    moved = f" (moved from {done.history[-1].version})" if done.history and force else ""
    out.print(escape(f"{dataset}@{name} -> {done.version}{moved}"))


@app.command()
def tags(dataset: str, store: StoreOption = DEFAULT_STORE, as_json: JsonOption = False) -> None:
    """The tags of DATASET: the version each names, since when, and where it pointed before."""
    object_store = _store(store)
    found = list_tags(object_store, dataset)
    if as_json:
        _print_json([t.to_wire() for t in found])
        return
    if not found and not list_versions(object_store, dataset):
        raise _fail(no_dataset_message(object_store, dataset))
    table = Table("tag", "version", "since", "before")
    for t in found:
        _add_row(table, t.name, t.version, t.created.isoformat(), ", ".join(m.version for m in t.history))
    out.print(table)


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go; delete nothing.")] = False,
    file: Annotated[
        Path | None,
        typer.Option("-f", "--file", help="Apply the spec.retention of these Datasets first."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", envvar="LOUPE_STORE", help="Object store (default: the spec's, or .loupe)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Free what no version references: blobs, manifest parts, run folders and reviews of expired
    versions and failed runs, across every dataset of the store. With -f, first expire the versions
    that each Dataset's spec.retention lets go (never the current, a tagged or a trained-on one)."""
    from loupe_workers.storage.leases import CollectionInProgress
    from loupe_workers.versioning.retention import collect_garbage, expire, retention_plan
    from loupe_workers.versioning.tiers import apply_tiers

    expired: dict[str, list[str]] = {}
    tiered: dict[str, list[str]] = {}
    store_uri = store
    if file is not None:
        try:
            bundle = load_specs(file)
        except SpecError as exc:
            raise _fail(str(exc), 2) from exc
        for name, dataset in sorted(bundle.datasets.items()):
            uri = store or _resolve_store(dataset.spec.storage.uri, bundle.base_dir) or DEFAULT_STORE
            store_uri = store_uri or uri
            plan = retention_plan(_store(uri), name, dataset.spec.retention)
            expired[name] = [p.version for p in plan] if dry_run else [
                t.version for t in expire(_store(uri), name, plan)]  # fmt: skip
            if not dry_run:  # then spec.retention.tiers, on what is left
                moved = apply_tiers(_store(uri), name, dataset.spec.retention)
                tiered[name] = [f"{t.version} to {t.storage_class} ({t.applied})" for t in moved.moved]
                if moved.skipped and not as_json:
                    out.print(escape(f"{name}: tiers skipped: {moved.skipped}"))
    object_store = _store(store_uri or DEFAULT_STORE)
    try:
        report = collect_garbage(object_store, dry_run=dry_run)
    except CollectionInProgress as exc:
        raise _fail(str(exc)) from exc
    summary = {"dryRun": dry_run, "expired": expired, "tiered": tiered, "versionsKept": report.versions,
               "deleted": len(report.deleted), "freedBytes": report.freed_bytes, "skipped": report.skipped}  # fmt: skip
    if as_json:
        _print_json(summary | {"deletedKeys": report.deleted})
        return
    verb = "would expire" if dry_run else "expired"
    for name, versions in expired.items():
        out.print(escape(f"{name}: {verb} {', '.join(versions) or 'nothing'}"))
    for name, moves in tiered.items():
        if moves:
            out.print(escape(f"{name}: moved {'; '.join(moves)}"))
    if report.skipped:
        out.print(escape(f"nothing collected: {report.skipped}"))
        return
    verb = "would free" if dry_run else "freed"
    out.print(escape(f"{verb} {report.freed_bytes / 1e6:.1f} MB in {len(report.deleted)} objects; "
                     f"{report.versions} versions kept in {object_store.uri}"))  # fmt: skip


@app.command()
def crds() -> None:
    """Print the CustomResourceDefinitions (kubectl apply -f -)."""
    sys.stdout.write(yaml.safe_dump_all(all_crds(), sort_keys=False))


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the demo images into.")],
    size: Annotated[str, typer.Option(help="small or large")] = "small",
) -> None:
    """Write a demo corpus built from real photos, with duplicates and faults, and its ground truth."""
    from loupe_workers.ingest.demo import build_demo_corpus, write_truth

    files = build_demo_corpus(out_dir, size=size)
    truth = write_truth(out_dir, files)
    out.print(escape(f"wrote {len(files)} files to {out_dir} (ground truth in {truth})"))


def _dataset_spec(file: Path | None, name: str) -> DatasetSpec | None:
    if file is None:
        return None
    try:
        bundle = load_specs(file)
    except SpecError as exc:
        raise _fail(str(exc), 2) from exc
    if name not in bundle.datasets:
        raise _fail(f"no Dataset named {name} in {file}", 2)
    return bundle.datasets[name].spec


def _stored_vectors(store: ObjectStore, record: VersionRecord) -> dict[str, Any] | None:
    """Embeddings already stored for the version's samples (the report maps them), or None; nothing is computed."""
    models = embedding_models([info.key for info in store.list(EMBEDDINGS)])
    if not models:
        return None
    shas = {r["sha256"] for r in read_version_samples(store, record)}
    found = load_embeddings(store, models[0], shas)
    return {sha: found.vectors[i] for i, sha in enumerate(found.sha256)} or None


@app.command()
def report(
    ref: Annotated[str, typer.Argument(help="DATASET or DATASET@VERSION")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
    file: Annotated[
        Path | None, typer.Option("-f", "--file", help="Spec file: health slices, drift reference.")
    ] = None,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """One self-contained HTML page: counts, quality, class balance, slices, a map, drift, left-out samples."""
    object_store = _store(store)
    record = _version(object_store, ref)
    name = _split_ref(ref)[0]
    page = build_report(
        object_store, name, record.version, _dataset_spec(file, name), _stored_vectors(object_store, record)
    )
    try:
        out_file.write_text(page)
    except OSError as exc:
        raise _fail(f"cannot write {out_file}: {os_reason(exc)}") from exc
    out.print(escape(f"wrote {out_file} ({len(page) // 1024} KiB) for {name}@{record.version}"))


@app.command()
def serve(
    file: Annotated[
        Path | None,
        typer.Option("-f", "--file", help="Spec file: its spec.storage.uri, else .loupe beside it."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", envvar="LOUPE_STORE", help="Object store (default: spec, then ./.loupe)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: a free one).")] = 8765,
) -> None:
    """Browse the versions of a store in a web browser: a filtered grid of samples, each sample's record,
    duplicate groups, what was left out and why, diffs between versions, search. Ctrl-C stops it."""
    from loupe_workers.serve.app import bind, serve_forever

    store_uri = store
    if store_uri is None and file is not None:
        try:
            bundle = load_specs(file)
        except SpecError as exc:
            raise _fail(str(exc), 2) from exc
        specs = [d.spec for _, d in sorted(bundle.datasets.items())]
        store_uri = next((u for s in specs if (u := _resolve_store(s.storage.uri, bundle.base_dir))), None)
        beside = bundle.base_dir / DEFAULT_STORE  # the embedded default: .loupe next to the spec
        if store_uri is None and beside.is_dir():
            store_uri = str(beside)
    object_store = _store(store_uri or DEFAULT_STORE)
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {os_reason(exc)}") from exc

    def ready(url: str) -> None:
        out.print(escape(f"Loupe: browsing {object_store.uri} at {url} (Ctrl-C stops)"))
        sys.stdout.flush()

    serve_forever(object_store, sock, ready)


@app.command()
def queue(
    ref: Annotated[str, typer.Argument(help="DATASET or DATASET@VERSION")],
    import_file: Annotated[
        Path | None, typer.Option("--import", help="Predictions (JSONL or CSV: sample, label, confidence).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Items to list.")] = 20,
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
) -> None:
    """The review queue of a version: samples ranked by uncertainty, disagreement with the label, uniqueness."""
    object_store = _store(store)
    record = _version(object_store, ref)
    name = _split_ref(ref)[0]
    try:
        if import_file is not None:
            found = parse_predictions(import_file.read_text(), import_file.name)
            matched = import_predictions(object_store, name, record.version, found)
            said = f"imported {matched} of {len(found)} predictions for {name}@{record.version}"
            (console if as_json else out).print(escape(said))  # --json: stdout holds only the JSON
        items = review_queue(object_store, name, record.version)
    except PredictionError as exc:
        raise _fail(str(exc), 2) from exc
    except OSError as exc:
        raise _fail(f"cannot read {import_file}: {os_reason(exc)}", 2) from exc
    if as_json:
        _print_json([camel_keys(item.__dict__) for item in items[:limit]])
        return
    table = Table("score", "sample", "label", "predicted", "confidence", "why")
    for item in items[:limit]:
        confidence = f"{item.confidence:.2f}" if item.confidence is not None else ""
        _add_row(table, f"{item.score:.2f}", item.key, item.label or "", item.predicted or "",
                 confidence, "; ".join(item.reasons))  # fmt: skip
    out.print(table)


@app.command()
def export(
    ref: Annotated[str, typer.Argument(help="DATASET or DATASET@VERSION")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to write.")],
    fmt: Annotated[
        str, typer.Option("--format", help="imagefolder (SPLIT/LABEL/ID.EXT), coco, yolo, hf or webdataset.")
    ] = "imagefolder",
    split: Annotated[list[str] | None, typer.Option("--split", help="Only these splits.")] = None,
    shard_size: Annotated[
        str | None,
        typer.Option("--shard-size", help="webdataset: samples per shard (1000) or bytes (500MB, 1GiB)."),
    ] = None,
    allow_restricted: Annotated[
        bool, typer.Option("--allow-restricted", help="Include samples restricted for privacy.")
    ] = False,
    rendition: Annotated[
        str | None,
        typer.Option("--rendition", help="Write this rendition (spec.renditions) instead of the raw bytes."),
    ] = None,
    use: Annotated[
        str | None,
        typer.Option(
            "--use",
            help="What the export is for (training, evaluation, research): samples whose source's "
            "allowedUses exclude it are withheld, and the output says why.",
        ),
    ] = None,
    to_label: Annotated[
        bool,
        typer.Option(
            "--to-label",
            help="Export the samples spec.sampling left out (to label next), in a split folder to_label.",
        ),
    ] = False,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Check a version out in a layout training code reads: imagefolder (the default: train/val/test
    folders, one per label, plus manifest.csv), coco, yolo, hf (Hugging Face imagefolder) or webdataset.
    Samples restricted for privacy stay out unless --allow-restricted."""
    if fmt not in exports.FORMATS:
        raise _fail(f"unknown --format {fmt!r}: use one of {', '.join(exports.FORMATS)}", 2)
    if use is not None and use not in ALL_USES:
        raise _fail(f"unknown --use {use!r}: use one of {', '.join(ALL_USES)}", 2)
    if to_label and split:
        raise _fail("--to-label exports what sampling left out (split to_label): drop --split", 2)
    object_store = _store(store)
    record = _version(object_store, ref)
    from loupe_workers.versioning.tiers import ensure_readable

    ensure_readable(object_store, record.dataset, record.version)  # archived bytes: say how to restore
    rows = read_version_samples(object_store, record)
    if to_label:  # the rejected rows with reason sampling, as a split of their own
        rows = sampling.to_label(read_version_samples(object_store, record, "rejected"))
    # sources whose allowedUses exclude --use: withheld, and said why (curation.access)
    rows, withheld = access.withhold(rows, record.stats.access, use)
    allowed = exportable(rows, allow_restricted)
    try:
        wanted = (r for r in allowed if not split or r.get("split") in split)
        chosen = exports.samples_from_rows(wanted, rendition, object_store)
        done = exports.export_samples(object_store, chosen, fmt, out_dir, shard_size)
    except exports.ExportError as exc:
        raise _fail(str(exc), 2 if str(exc).startswith("--shard-size") else 1) from exc
    held = len(exportable(rows, True)) - len(allowed)
    note = f"; {held} restricted samples left out (--allow-restricted)" if held else ""
    splits = ", ".join(f"{name} {count}" for name, count in sorted(done.splits.items()))
    detail = f" ({splits}; {done.boxes} boxes)" if done.samples else ""
    summary = f"exported {done.samples} samples of {record.dataset}@{record.version} as {fmt} to {out_dir}"
    out.print(escape(f"{summary}{detail}{note}"))
    for withheld_source in withheld:
        out.print(escape(f"  {withheld_source.message} (--use {use})"))


@app.command()
def restore(
    ref: Annotated[str, typer.Argument(help="DATASET@VERSION")],
    days: Annotated[int, typer.Option("--days", min=1, help="Days S3 keeps a restored archive copy.")] = 7,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Bring the bytes of a version that spec.retention.tiers moved back to STANDARD. Objects in GLACIER
    or DEEP_ARCHIVE need an S3 restore first (hours): this asks for it; run it again once S3 is done."""
    from loupe_workers.versioning.tiers import restore as restore_version

    object_store = _store(store)
    record = _version(object_store, ref)
    done = restore_version(object_store, record.dataset, record.version, days=days)
    where = f"{record.dataset}@{record.version}"
    if not done.done:
        out.print(escape(f"{where}: S3 is restoring {done.pending} archived objects ({done.copied} back "
                         "already); run loupe restore again in a few hours"))  # fmt: skip
        raise typer.Exit(3)
    out.print(escape(f"{where} is in STANDARD ({done.copied} objects copied back)"))


def main() -> None:
    """The console script: usage errors exit 2 (click), failures print one line and exit 1."""
    try:
        _run_app()
    except SystemExit as done:
        _exit_skipping_native_teardown(done.code)
    _exit_skipping_native_teardown(0)


def _exit_skipping_native_teardown(code: int | str | None) -> NoReturn:
    """Exit once Python's own clean-up has run, without running C++ static destructors.

    pyarrow's thread pools can abort the process while they are torn down ("terminate called without
    an active exception", apache/arrow#34314), turning a finished run into exit 134 now and then.
    Everything a command wrote is flushed and closed before this point, so skipping that teardown
    loses nothing.
    """
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # Ray's shutdown, temporary folders, logging: as a normal exit would
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing can reach the reader
            stream.flush()
    os._exit(code or 0)


def _run_app() -> None:
    try:
        app()
    except Exception as exc:  # typer.Exit and click's usage errors are handled inside app()
        if os.environ.get("LOUPE_DEBUG"):
            raise
        known = isinstance(exc, StoreError | OSError | LookupError) or any(
            isinstance(e, StoreError) for e in (exc.__cause__, getattr(exc, "cause", None))
        )
        hint = "" if known else f" ({type(exc).__name__}; LOUPE_DEBUG=1 shows the traceback)"
        console.print(f"[red]error:[/red] {escape(_message(exc))}{escape(hint)}", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
