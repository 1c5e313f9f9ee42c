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

import difflib
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

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
    if error.get("type") == "extra_forbidden":
        return _unknown_field(error["loc"])
    return str(error["msg"]).removeprefix("Value error, ")


def _unknown_field(loc: tuple[int | str, ...]) -> str:
    """An "unknown field" message with the field it probably meant, from the model at that place."""
    names = _field_names(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    if close:
        return f"unknown field (did you mean {close[0]}?)"
    return f"unknown field; the fields here are {', '.join(sorted(names))}" if names else "unknown field"


def _field_names(loc: tuple[int | str, ...]) -> list[str]:
    """The YAML names (camelCase aliases) of the fields of the model found at ``loc``, if any."""
    current: Any = None
    for part in loc:
        if part in KINDS:
            current = KINDS[str(part)]
            continue
        current = _inner(current, part)
        if current is None:
            return []
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    return [info.alias or name for name, info in current.model_fields.items()]


def _inner(annotation: Any, part: int | str) -> Any:
    """The type one step into ``annotation`` (a model field, a list item or a mapping value)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            if part in (name, info.alias):
                return _unwrap(info.annotation)
        return None
    args = [a for a in get_args(annotation) if a is not type(None)]
    origin = get_origin(annotation)
    if origin in (list, tuple) and isinstance(part, int) and args:
        return _unwrap(args[0])
    if origin is dict and len(args) == 2:
        return _unwrap(args[1])
    return None


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` as X; other unions as their only model, if one."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and args:
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return _unwrap(models[0] if len(models) == 1 else args[0])
    return annotation


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
