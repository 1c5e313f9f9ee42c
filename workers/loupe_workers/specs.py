"""Reading YAML spec files into typed resources and run requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loupe_api.dataset import Dataset
from loupe_api.ingest import IngestSource
from loupe_api.jobs import RunRequest
from loupe_api.resources import SpecError, parse_resource
from loupe_api.retrain import RetrainPolicy

SPEC_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class SpecBundle:
    """Every resource found in a file or folder, and the folder relative paths resolve against."""

    base_dir: Path
    sources: dict[str, IngestSource] = field(default_factory=dict)
    datasets: dict[str, Dataset] = field(default_factory=dict)
    policies: dict[str, RetrainPolicy] = field(default_factory=dict)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in SPEC_SUFFIXES and p.is_file())
    if not path.exists():
        raise SpecError(str(path), [("(file)", "no such file or folder")])
    return [path]


def load_specs(path: Path) -> SpecBundle:
    """Parse every document; raises SpecError naming the file, document and field of the first bad one."""
    bundle = SpecBundle(base_dir=(path if path.is_dir() else path.parent).resolve())
    for file in _files(path):
        try:
            documents = list(yaml.safe_load_all(file.read_text()))
        except yaml.YAMLError as exc:
            raise SpecError(str(file), [("(yaml)", str(exc))]) from exc
        for index, document in enumerate(d for d in documents if d is not None):
            where = f"{file}" if len(documents) == 1 else f"{file} (document {index + 1})"
            resource = parse_resource(document, where)
            name = resource.metadata.name
            if isinstance(resource, IngestSource):
                bundle.sources[name] = resource
            elif isinstance(resource, Dataset):
                bundle.datasets[name] = resource
            else:
                bundle.policies[name] = resource
    for dataset in bundle.datasets.values():
        missing = [ref.name for ref in dataset.spec.sources if ref.name not in bundle.sources]
        if missing:
            raise SpecError(
                f"{path}",
                [
                    (
                        f"Dataset {dataset.metadata.name}: spec.sources",
                        f"no IngestSource named {', '.join(missing)}",
                    )
                ],
            )
    return bundle


def run_request(bundle: SpecBundle, name: str, store_uri: str, *, commit: bool = True) -> RunRequest:
    dataset = bundle.datasets[name]
    spec = dataset.spec
    return RunRequest(
        dataset=name,
        spec=spec,
        sources={ref.name: bundle.sources[ref.name].spec for ref in spec.sources},
        store_uri=spec.storage.uri or store_uri,
        store_endpoint=spec.storage.endpoint,
        store_region=spec.storage.region,
        commit=commit,
    )
