"""Parsing of YAML/JSON documents into typed Loupe resources.

Every field of a resource's ``spec`` is validated strictly, after the usual (lax) validation has
passed: a boolean field takes only true or false (not "yes", 1 or "true"), an integer field only an
integer (not true, 3.0 or "3"), a number field an integer or a float (not true or "0.5"). YAML
already types these values unambiguously, and the CRD schema refuses the same values on a cluster,
so a spec file means the same under ``loupe run`` and ``kubectl apply``; lax coercion used to read
``threshold: true`` as 1.0. ``status`` and ``metadata`` stay lax: they come from the API server
and from stored JSON, with timestamps as strings.
"""

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


_EXPECTED = {"bool_type": "expected true or false", "int_type": "expected an integer",
             "float_type": "expected a number"}  # fmt: skip


def _message(error: Any) -> str:
    return str(error["msg"]).removeprefix("Value error, ")


def _strict_message(error: Any) -> str:
    value = error.get("input")
    if isinstance(value, bool):
        got = "true" if value else "false"
    elif isinstance(value, str):
        got = f"the string {value!r}"
    else:
        got = repr(value)
    return f"{_EXPECTED.get(error['type'], _message(error))}, got {got}"


def _check_strict(
    resource: IngestSource | Dataset | RetrainPolicy, document: dict[str, Any], where: str
) -> None:
    """Validate the spec again in strict mode: no booleans, strings or floats coerced to other types."""
    try:
        type(resource.spec).model_validate(document["spec"], strict=True, by_alias=True, by_name=True)
    except ValidationError as exc:
        errors = [(_path(("spec", *e["loc"])), _strict_message(e)) for e in exc.errors()]
        raise SpecError(where, errors) from exc


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
        resource = _ADAPTER.validate_python(document, by_alias=True, by_name=True)
    except ValidationError as exc:
        raise SpecError(where, [(_path(e["loc"]), _message(e)) for e in exc.errors()]) from exc
    _check_strict(resource, document, where)
    return resource
