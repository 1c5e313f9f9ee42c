"""CustomResourceDefinitions generated from the API models, so the models stay the one source of truth.

``crd_for(kind)`` turns the pydantic JSON schema of a resource's spec and status models into the
*structural* OpenAPI v3 schema that ``apiextensions.k8s.io/v1`` requires:

* every ``$ref`` is inlined (``$defs`` disappear); a property's own description wins over the
  referenced model's docstring, which is used when the property has none;
* ``Optional[X]`` (``anyOf: [X, {type: null}]``) becomes plain ``X`` and is **not** marked
  ``nullable``: the API server then drops a ``null`` sent for such a field before validation,
  which is what pydantic's ``None`` means, and keeps ``has(self.x)`` in the CEL rules false for
  it (a ``nullable`` field sent as ``null`` would make ``has()`` true). Loupe writes objects with
  ``exclude_none`` anyway, so it never sends those nulls itself;
* any other union, ``uniqueItems`` and an untyped ``dict[str, Any]`` without
  ``x-kubernetes-preserve-unknown-fields`` raise :class:`CrdSchemaError`, since a structural
  schema cannot say them;
* ``exclusiveMinimum: N`` (JSON Schema 2020-12) becomes ``minimum: N, exclusiveMinimum: true``
  (OpenAPI v3.0, which Kubernetes speaks);
* ``title``, ``$schema`` and ``additionalProperties: false`` are dropped (a structural schema may
  not have them; the API server prunes unknown fields instead, and kubectl's field validation
  reports them);
* scalar defaults are kept, after checking that each one satisfies its own field's schema;
  ``null`` defaults and object or list defaults (pydantic only writes those for literal
  ``default=``, never for ``default_factory``) are dropped, and so is anything under
  ``x-kubernetes-preserve-unknown-fields``. The scalar defaults are the same values pydantic
  fills in, so objects read by the operator do not depend on who applied them, ``kubectl get``
  and ``kubectl explain`` show the effective values, and the CEL rules that add up fields
  (``SplitSpec``) see every operand: without ``default: 0.1`` on ``test``, the rule
  ``self.train + self.val + self.test`` would fail with "no such key" on a spec such as
  ``{train: 0.7, val: 0.2}`` that pydantic accepts.

The result is plain JSON-compatible data (dicts, lists, str, int, float, bool) in a fixed key order;
callers dump it, e.g. ``yaml.safe_dump(crd, sort_keys=False)``. This module depends on pydantic
and the standard library only.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Final

from pydantic import BaseModel

from loupe_api.constants import (
    GROUP,
    KIND_DATASET,
    KIND_INGEST_SOURCE,
    KIND_RETRAIN_POLICY,
    PLURALS,
    SHORT_NAMES,
    VERSION,
)
from loupe_api.dataset import Dataset, DatasetSpec, DatasetStatus
from loupe_api.ingest import IngestSource, IngestSourceSpec, IngestSourceStatus
from loupe_api.retrain import RetrainPolicy, RetrainPolicySpec, RetrainPolicyStatus

CRD_API_VERSION: Final = "apiextensions.k8s.io/v1"
CATEGORIES: Final = ("loupe",)
KINDS: Final = (KIND_INGEST_SOURCE, KIND_DATASET, KIND_RETRAIN_POLICY)

# kind -> (resource model, spec model, status model)
_MODELS: Final[dict[str, tuple[type[BaseModel], type[BaseModel], type[BaseModel]]]] = {
    KIND_INGEST_SOURCE: (IngestSource, IngestSourceSpec, IngestSourceStatus),
    KIND_DATASET: (Dataset, DatasetSpec, DatasetStatus),
    KIND_RETRAIN_POLICY: (RetrainPolicy, RetrainPolicySpec, RetrainPolicyStatus),
}

_READY: Final = {
    "name": "Ready",
    "type": "string",
    "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    "description": "Status of the Ready condition.",
}
_AGE: Final = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_PRINTER_COLUMNS: Final[dict[str, tuple[dict[str, str], ...]]] = {
    KIND_INGEST_SOURCE: (
        # A column takes one JSONPath, so the location is two columns; one of them stays empty.
        {"name": "Bucket", "type": "string", "jsonPath": ".spec.s3.bucket", "description": "S3 bucket."},
        {"name": "Path", "type": "string", "jsonPath": ".spec.filesystem.path", "description": "Folder."},
        {
            "name": "Objects",
            "type": "integer",
            "jsonPath": ".status.lastScan.objects",
            "description": "Objects in the latest listing.",
        },
        _READY,
        _AGE,
    ),
    KIND_DATASET: (
        {
            "name": "Version",
            "type": "string",
            "jsonPath": ".status.currentVersion",
            "description": "Latest committed version.",
        },
        {
            "name": "Samples",
            "type": "integer",
            "jsonPath": ".status.samples",
            "description": "Samples in the current version.",
        },
        _READY,
        _AGE,
    ),
    KIND_RETRAIN_POLICY: (
        {
            "name": "Dataset",
            "type": "string",
            "jsonPath": ".spec.datasetRef",
            "description": "Dataset the policy watches.",
        },
        {
            "name": "Last",
            "type": "string",
            "jsonPath": ".status.runs[0].state",
            "description": "State of the latest run.",
        },
        _READY,
        _AGE,
    ),
}

_API_VERSION_DESCRIPTION: Final = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should "
    "convert recognized schemas to the latest internal value, and may reject unrecognized values."
)
_KIND_DESCRIPTION: Final = (
    "Kind is a string value representing the REST resource this object represents. Servers may "
    "infer this from the endpoint the client submits requests to. In CamelCase."
)

# Keys of a converted schema node, in the order they are written.
_KEY_ORDER: Final = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "items",
    "properties",
    "additionalProperties",
    "required",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
)
_COPIED: Final = frozenset(_KEY_ORDER) - {
    "default",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "items",
    "properties",
    "additionalProperties",
}
# Keys _convert rewrites (or refuses, for uniqueItems) rather than copies.
_CONVERTED: Final = frozenset(
    {"default", "const", "exclusiveMinimum", "exclusiveMaximum", "items", "properties"}
    | {"additionalProperties", "uniqueItems"}
)
_DROPPED: Final = frozenset({"title", "$schema", "$defs", "examples", "readOnly", "writeOnly", "deprecated"})
_PRESERVE: Final = "x-kubernetes-preserve-unknown-fields"
_DEFS_PREFIX: Final = "#/$defs/"


class CrdSchemaError(ValueError):
    """A model whose JSON schema cannot become a valid structural CRD schema."""


def crd_for(kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition of one Loupe kind, as JSON-compatible data."""
    if kind not in _MODELS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    plural = PLURALS[kind]
    return {
        "apiVersion": CRD_API_VERSION,
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": list(SHORT_NAMES[kind]),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(column) for column in _PRINTER_COLUMNS[kind]],
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions of every Loupe kind: IngestSource, Dataset, RetrainPolicy."""
    return [crd_for(kind) for kind in KINDS]


def openapi_schema(kind: str) -> dict[str, Any]:
    """The structural ``openAPIV3Schema`` of one kind; raises CrdSchemaError if the models cannot say it."""
    if kind not in _MODELS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    resource, spec_model, status_model = _MODELS[kind]
    return {
        "description": _docstring(resource),
        "type": "object",
        "properties": {
            "apiVersion": {"description": _API_VERSION_DESCRIPTION, "type": "string"},
            "kind": {"description": _KIND_DESCRIPTION, "type": "string"},
            # Kubernetes owns metadata; a CRD may not constrain more than name and generateName.
            "metadata": {"type": "object"},
            "spec": structural_schema(spec_model, resource.model_fields["spec"].description, ".spec"),
            "status": structural_schema(status_model, resource.model_fields["status"].description, ".status"),
        },
        "required": ["spec"],
    }


def structural_schema(
    model: type[BaseModel], description: str | None = None, where: str = ""
) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model (``description`` replaces its docstring).

    Raises CrdSchemaError when the model cannot be said structurally, or when a property at any
    depth has no description.
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = raw.pop("$defs", {})
    name = where or model.__name__
    schema = _convert(raw, defs, name, refs=())
    if description:
        schema["description"] = description
    missing = _missing_descriptions(schema, name)
    if missing:
        raise CrdSchemaError(f"properties without a description: {', '.join(missing)}")
    return _order(schema)


def _docstring(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def _resolve(
    node: dict[str, Any], defs: dict[str, Any], where: str, refs: tuple[str, ...]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Inline ``$ref`` and unwrap ``Optional``/single ``allOf`` until the node is one plain schema.

    Keys on the outer node (a property's description, default, vendor extensions) win over those
    of the schema it refers to.
    """
    node = dict(node)
    while True:
        if "$ref" in node:
            ref = node.pop("$ref")
            if (
                not isinstance(ref, str)
                or not ref.startswith(_DEFS_PREFIX)
                or ref[len(_DEFS_PREFIX) :] not in defs
            ):
                raise CrdSchemaError(f"{where}: unresolvable $ref {ref!r}")
            name = ref[len(_DEFS_PREFIX) :]
            if name in refs:
                raise CrdSchemaError(f"{where}: {name} refers to itself; structural schemas cannot recurse")
            refs = (*refs, name)
            node = {**defs[name], **node}
        elif "anyOf" in node or "allOf" in node:
            key = "anyOf" if "anyOf" in node else "allOf"
            options = [option for option in node.pop(key) if option != {"type": "null"}]
            if len(options) != 1:
                raise CrdSchemaError(
                    f"{where}: {key} with {len(options)} non-null schemas; a structural schema can "
                    "only say Optional[X]"
                )
            node = {**options[0], **node}
        elif "oneOf" in node or "not" in node:
            raise CrdSchemaError(f"{where}: oneOf/not cannot be expressed in a structural schema")
        else:
            return node, refs


def _convert(node: dict[str, Any], defs: dict[str, Any], where: str, refs: tuple[str, ...]) -> dict[str, Any]:
    node, refs = _resolve(node, defs, where, refs)
    unknown = set(node) - _COPIED - _DROPPED - _CONVERTED
    if unknown:
        raise CrdSchemaError(f"{where}: schema keys {sorted(unknown)} have no CRD equivalent")
    preserve = node.get(_PRESERVE) is True
    # Copies, so no two places of the result share a list (YAML would write an alias for it).
    out: dict[str, Any] = {key: copy.deepcopy(node[key]) for key in node if key in _COPIED}
    if "x-kubernetes-validations" in out:
        out["x-kubernetes-validations"] = [_rule(rule, where) for rule in out["x-kubernetes-validations"]]
    if "const" in node:
        out["enum"] = [node["const"]]
        if "type" not in out and isinstance(node["const"], str):
            out["type"] = "string"
    for exclusive, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if exclusive in node:
            bound = node[exclusive]
            if isinstance(bound, bool):  # already OpenAPI v3.0 style
                out[exclusive] = bound
            else:
                if inclusive in node:
                    raise CrdSchemaError(f"{where}: both {inclusive} and {exclusive} are set")
                out[inclusive] = bound
                out[exclusive] = True
    if node.get("uniqueItems"):
        raise CrdSchemaError(f"{where}: uniqueItems is not allowed; use x-kubernetes-list-type: set")
    if "items" in node:
        if not isinstance(node["items"], dict):
            raise CrdSchemaError(f"{where}: tuple-style items cannot be expressed in a structural schema")
        out["items"] = _convert(node["items"], defs, f"{where}[*]", refs)
    if "properties" in node:
        out["properties"] = {
            name: _convert(sub, defs, f"{where}.{name}", refs) for name, sub in node["properties"].items()
        }
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        if "properties" in node:
            raise CrdSchemaError(f"{where}: properties and additionalProperties cannot be combined")
        out["additionalProperties"] = _convert(extra, defs, f"{where}.*", refs)
    elif extra is True and not preserve:
        raise CrdSchemaError(
            f"{where}: a free-form object needs json_schema_extra x-kubernetes-preserve-unknown-fields"
        )
    if preserve:
        out.pop("properties", None)
        out.pop("additionalProperties", None)
        out.setdefault("type", "object")
    elif "type" not in out:
        raise CrdSchemaError(f"{where}: no type (a structural schema needs one on every node)")
    if out.get("type") == "array" and "items" not in out:
        raise CrdSchemaError(f"{where}: an array needs items")
    default = node.get("default")
    if default is not None and not preserve and isinstance(default, str | int | float | bool):
        _check_default(default, out, where)
        out["default"] = default
    return _order(out)


def _rule(rule: dict[str, Any], where: str) -> dict[str, Any]:
    """One x-kubernetes-validations entry with its keys in the usual order."""
    keys = ("rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf")
    if not isinstance(rule.get("rule"), str) or set(rule) - set(keys):
        raise CrdSchemaError(f"{where}: malformed x-kubernetes-validations entry {rule!r}")
    return {key: rule[key] for key in keys if key in rule}


def _order(node: dict[str, Any]) -> dict[str, Any]:
    """Rewrite the node's keys in the fixed order of _KEY_ORDER, in place, and return it."""
    items = sorted(node.items(), key=lambda item: _KEY_ORDER.index(item[0]))
    node.clear()
    node.update(items)
    return node


def _check_default(value: str | int | float | bool, node: dict[str, Any], where: str) -> None:
    """Raise unless the scalar default satisfies the node's own schema, as the API server requires."""
    kind = node.get("type")
    fits = {
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "string": isinstance(value, str),
    }.get(str(kind), False)
    problems = [] if fits else [f"is not of type {kind}"]
    if "enum" in node and value not in node["enum"]:
        problems.append(f"is not one of {node['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and (
            value <= node["minimum"] if node.get("exclusiveMinimum") else value < node["minimum"]
        ):
            problems.append(f"is below the minimum {node['minimum']}")
        if "maximum" in node and (
            value >= node["maximum"] if node.get("exclusiveMaximum") else value > node["maximum"]
        ):
            problems.append(f"is above the maximum {node['maximum']}")
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0) or len(value) > node.get("maxLength", len(value)):
            problems.append("has a length out of bounds")
        if "pattern" in node and not re.search(node["pattern"], value):
            problems.append(f"does not match {node['pattern']}")
    if problems:
        raise CrdSchemaError(f"{where}: default {value!r} {' and '.join(problems)}")


def _missing_descriptions(node: dict[str, Any], where: str) -> list[str]:
    """Paths of the properties (at any depth) that have no description."""
    missing: list[str] = []
    for name, sub in node.get("properties", {}).items():
        if not sub.get("description"):
            missing.append(f"{where}.{name}")
        missing.extend(_missing_descriptions(sub, f"{where}.{name}"))
    if isinstance(node.get("items"), dict):
        missing.extend(_missing_descriptions(node["items"], f"{where}[*]"))
    if isinstance(node.get("additionalProperties"), dict):
        missing.extend(_missing_descriptions(node["additionalProperties"], f"{where}.*"))
    return missing
