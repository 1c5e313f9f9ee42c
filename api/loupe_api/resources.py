"""Parsing of YAML/JSON documents into typed Loupe resources."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from loupe_api.constants import API_VERSION
from loupe_api.dataset import Dataset
from loupe_api.ingest import IngestSource
from loupe_api.retrain import RetrainPolicy

Resource = Annotated[IngestSource | Dataset | RetrainPolicy, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[IngestSource | Dataset | RetrainPolicy] = TypeAdapter(Resource)
KINDS = {"IngestSource": IngestSource, "Dataset": Dataset, "RetrainPolicy": RetrainPolicy}


class SpecError(ValueError):
    """A document that is not a valid Loupe resource; ``errors`` name the field paths."""

    def __init__(self, where: str, errors: list[tuple[str, str]]) -> None:
        self.where = where
        self.errors = errors
        lines = "\n".join(f"  {path}: {message}" for path, message in errors)
        super().__init__(f"{where}: invalid spec\n{lines}")


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in KINDS:  # discriminator tag that pydantic puts in the location
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


def parse_resource(document: Any, where: str = "<input>") -> IngestSource | Dataset | RetrainPolicy:
    """Validate one document; raises SpecError naming every bad field path."""
    if not isinstance(document, dict):
        raise SpecError(
            where, [("(document)", "expected a mapping with apiVersion, kind, metadata and spec")]
        )
    api_version = document.get("apiVersion")
    if api_version != API_VERSION:
        raise SpecError(where, [("apiVersion", f"expected {API_VERSION}, got {api_version!r}")])
    if document.get("kind") not in KINDS:
        raise SpecError(
            where, [("kind", f"expected one of {', '.join(KINDS)}, got {document.get('kind')!r}")]
        )
    try:
        return _ADAPTER.validate_python(document, by_alias=True, by_name=True)
    except ValidationError as exc:
        raise SpecError(where, [(_path(e["loc"]), e["msg"]) for e in exc.errors()]) from exc
