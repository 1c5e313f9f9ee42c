"""The ``loupe`` command line."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loupe_api.crd import all_crds
from loupe_api.resources import SpecError
from loupe_api.versions import VersionRecord
from loupe_workers import manifest
from loupe_workers.executor import make_executor
from loupe_workers.pipeline import RunError, RunEvents, run_dataset
from loupe_workers.specs import load_specs, run_request
from loupe_workers.store import ObjectStore, StoreError, open_store
from loupe_workers.versions import CommitConflict, list_versions, read_version

app = typer.Typer(
    name="loupe",
    help="Declarative, versioned image datasets: ingest, validate, deduplicate, version.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console(highlight=False)

StoreOption = Annotated[
    str,
    typer.Option("--store", envvar="LOUPE_STORE", help="Object store: a folder or s3://bucket/prefix."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DEFAULT_STORE = ".loupe"


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return typer.Exit(code)


def _store(uri: str) -> ObjectStore:
    import os

    return open_store(uri, endpoint=os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("LOUPE_S3_ENDPOINT"))


def _split_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition("@")
    return name, version or None


def _version(store: ObjectStore, ref: str) -> VersionRecord:
    name, version = _split_ref(ref)
    if version is None:
        versions = list_versions(store, name)
        if not versions:
            raise _fail(f"dataset {name} has no versions in {store.uri}")
        return versions[-1]
    try:
        return read_version(store, name, version)
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
    executor: Annotated[str, typer.Option(help="ray (local Ray, or --ray-address) or inline.")] = "ray",
    ray_address: Annotated[
        str | None, typer.Option(envvar="RAY_ADDRESS", help="Existing Ray cluster.")
    ] = None,
    commit: Annotated[
        bool | None, typer.Option("--commit/--dry-run", help="Commit (default in auto mode) or only report.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Build the next version of every Dataset in FILE (nothing happens when nothing changed)."""
    try:
        bundle = load_specs(file)
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
    for name in names:
        spec = bundle.datasets[name].spec
        do_commit = commit if commit is not None else spec.versioning.mode == "auto"
        store_uri = store or _resolve_store(spec.storage.uri, bundle.base_dir) or DEFAULT_STORE
        request = run_request(bundle, name, store_uri, commit=do_commit)
        request.store_uri = store_uri
        try:
            result = _run_with_progress(request, bundle.base_dir, engine, quiet=as_json)
        except (RunError, CommitConflict, StoreError) as exc:
            raise _fail(f"{name}: {exc}") from exc
        results.append(result)
        if not as_json:
            _print_run(name, result.model_dump(mode="json"), store_uri)
    if as_json:
        _print_json([r.to_wire() for r in results])


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
    out.print(f"[bold]{name}[/bold]: [{colour}]{result['message']}[/{colour}]")
    out.print(
        f"  scanned {stats['scanned']}, processed {stats['processed']}, samples {stats['samples']} "
        f"(flagged {stats['flagged']}), exact duplicates {stats['exact_duplicates']}, "
        f"near duplicates {stats['near_duplicates']}"
    )
    for label, counts in (("rejected", stats["rejected"]), ("quarantined", stats["quarantined"])):
        if counts:
            out.print(f"  {label}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if stats["splits"]:
        out.print("  splits: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["splits"].items())))
    if result["current_version"]:
        out.print(f"  current version {result['current_version']} in {store_uri}")


@app.command()
def versions(dataset: str, store: StoreOption = DEFAULT_STORE, as_json: JsonOption = False) -> None:
    """List the versions of DATASET, oldest first."""
    object_store = _store(store)
    records = list_versions(object_store, dataset)
    rows = [
        {
            "version": r.version,
            "created": r.created.isoformat(),
            "samples": r.samples,
            "bump": r.change.bump if r.change else None,
            "parent": r.parent,
            "manifestUri": object_store.uri_of(r.manifest_uri),
        }
        for r in records
    ]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        raise _fail(f"dataset {dataset} has no versions in {object_store.uri}")
    table = Table("version", "created", "samples", "bump", "manifest")
    for row in rows:
        table.add_row(
            str(row["version"]),
            str(row["created"]),
            str(row["samples"]),
            str(row["bump"] or ""),
            str(row["manifestUri"]),
        )
    out.print(table)


def _version_summary(store: ObjectStore, record: VersionRecord) -> dict[str, Any]:
    rows = manifest.read_rows(store, record.manifest_uri)
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
        "change": record.change.to_wire() if record.change else None,
        "stats": record.stats.to_wire(),
        "labels": dict(sorted(labels.items())),
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
        f"[bold]{summary['dataset']}@{summary['version']}[/bold] ({summary['samples']} samples, parent {summary['parent'] or '-'})"
    )
    if summary["change"]:
        out.print(f"  {summary['change']['bump']}: {'; '.join(summary['change']['reasons'])}")
    table = Table("what", "count", "details")
    table.add_row("scanned objects", str(stats.get("scanned", 0)), "")
    table.add_row(
        "samples",
        str(stats.get("samples", 0)),
        ", ".join(f"{k} {v}" for k, v in sorted(stats.get("splits", {}).items())),
    )
    table.add_row(
        "flagged",
        str(stats.get("flagged", 0)),
        ", ".join(f"{k} {v}" for k, v in sorted(stats.get("flags", {}).items())),
    )
    table.add_row(
        "rejected",
        str(sum(stats.get("rejected", {}).values())),
        ", ".join(f"{k} {v}" for k, v in sorted(stats.get("rejected", {}).items())),
    )
    table.add_row(
        "quarantined",
        str(sum(stats.get("quarantined", {}).values())),
        ", ".join(f"{k} {v}" for k, v in sorted(stats.get("quarantined", {}).items())),
    )
    table.add_row("exact duplicates", str(stats.get("exactDuplicates", 0)), "")
    table.add_row(
        "near duplicates", str(stats.get("nearDuplicates", 0)), f"{stats.get('duplicateGroups', 0)} groups"
    )
    if summary["labels"]:
        table.add_row(
            "labels", str(len(summary["labels"])), ", ".join(f"{k} {v}" for k, v in summary["labels"].items())
        )
    out.print(table)
    out.print(f"  manifest {summary['manifestUri']}")  # fmt: skip


@app.command()
def diff(a: str, b: str, store: StoreOption = DEFAULT_STORE, as_json: JsonOption = False) -> None:
    """Samples added, removed, relabelled or moved between two versions."""
    object_store = _store(store)
    first, second = _version(object_store, a), _version(object_store, b)
    rows_a = {r["sample_id"]: r for r in manifest.read_rows(object_store, first.manifest_uri)}
    rows_b = {r["sample_id"]: r for r in manifest.read_rows(object_store, second.manifest_uri)}
    common = rows_a.keys() & rows_b.keys()
    result = {
        "from": f"{first.dataset}@{first.version}",
        "to": f"{second.dataset}@{second.version}",
        "added": sorted(f"{rows_b[s]['source']}:{rows_b[s]['key']}" for s in rows_b.keys() - rows_a.keys()),
        "removed": sorted(f"{rows_a[s]['source']}:{rows_a[s]['key']}" for s in rows_a.keys() - rows_b.keys()),
        "relabeled": sorted(rows_b[s]["key"] for s in common if rows_a[s]["labels"] != rows_b[s]["labels"]),
        "resplit": sorted(rows_b[s]["key"] for s in common if rows_a[s]["split"] != rows_b[s]["split"]),
        "unchanged": len(common),
    }
    if as_json:
        _print_json(result)
        return
    out.print(f"[bold]{result['from']} -> {result['to']}[/bold]: {result['unchanged']} samples in both")
    for kind, colour, sign in (
        ("added", "green", "+"),
        ("removed", "red", "-"),
        ("relabeled", "yellow", "~"),
        ("resplit", "yellow", "~"),
    ):
        for item in result[kind]:  # type: ignore[attr-defined]
            out.print(f"  [{colour}]{sign} {kind[:-2] if kind.endswith('ed') else kind} {item}[/{colour}]")


@app.command()
def lineage(ref: Annotated[str, typer.Argument(help="DATASET@VERSION")], store: StoreOption = DEFAULT_STORE, as_json: JsonOption = False) -> None:  # fmt: skip
    """Where a version came from: its ancestry and every raw object -> sample edge."""
    object_store = _store(store)
    record = _version(object_store, ref)
    chain = []
    current: VersionRecord | None = record
    while current is not None:
        chain.append({"version": current.version, "created": current.created.isoformat(), "runId": current.run_id,
                      "specDigest": current.spec_digest, "sourceDigest": current.source_digest,
                      "codeVersion": current.code_version})  # fmt: skip
        current = read_version(object_store, record.dataset, current.parent) if current.parent else None
    edges = manifest.read_rows(object_store, record.lineage_uri)
    result = {"dataset": record.dataset, "version": record.version, "ancestry": chain, "edges": edges}
    if as_json:
        _print_json(result)
        return
    out.print(
        f"[bold]{record.dataset}@{record.version}[/bold] <- " + " <- ".join(c["version"] for c in chain[1:])
        or ""
    )
    table = Table("raw object", "raw sha256", "sample", "disposition")
    for edge in edges:
        table.add_row(
            str(edge["uri"]),
            str(edge["raw_sha256"])[:12],
            str(edge["sample_id"])[:12],
            str(edge["disposition"]),
        )
    out.print(table)


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
    from loupe_workers.demo import build_demo_corpus, write_truth

    files = build_demo_corpus(out_dir, size=size)
    truth = write_truth(out_dir, files)
    out.print(f"wrote {len(files)} files to {out_dir} (ground truth in {truth})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
