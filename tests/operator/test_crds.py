"""The CustomResourceDefinitions generated from loupe_api: committed, structural, and true to the models."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from crd_tool import CRD_DIR, WRITE_HINT, expected_files, render, stale_files
from loupe_api.common import ApiModel
from loupe_api.constants import GROUP, PLURALS, SHORT_NAMES, VERSION
from loupe_api.crd import KINDS, CrdSchemaError, all_crds, crd_for, openapi_schema, structural_schema
from loupe_api.dataset import Dataset, DatasetSpec, DatasetStatus, QualityGates, RaySpec, SplitSpec
from loupe_api.ingest import IngestSourceSpec, IngestSourceStatus, LabelImport, VideoSampling
from loupe_api.resources import parse_resource
from loupe_api.retrain import RetrainAction, RetrainPolicySpec, RetrainPolicyStatus
from loupe_api.sampling import SamplingSpec

HAVE_JSONSCHEMA = importlib.util.find_spec("jsonschema") is not None
NO_JSONSCHEMA = "jsonschema is not installed (it is not a Loupe dependency)"

Path = tuple[str, ...]
GATES = [field.alias or name for name, field in QualityGates.model_fields.items()]

# --- helpers --------------------------------------------------------------------------------------


def _schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: dict[str, Any], path: Path = ()) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every schema node with its path; ``*`` stands for list items and map values."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, (*path, name))
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _walk(node[key], (*path, "*"))


def _at(schema: dict[str, Any], path: Path) -> dict[str, Any]:
    node = schema
    for part in path:
        node = node["properties"][part]
    return node


def _draft4(schema: dict[str, Any]) -> Any:
    """A JSON Schema validator with OpenAPI v3.0 semantics (boolean exclusiveMinimum/Maximum)."""
    import jsonschema

    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def _prune_nulls(value: Any) -> Any:
    """What the API server does to ``null`` in fields that are not nullable: drop them."""
    if isinstance(value, dict):
        return {key: _prune_nulls(sub) for key, sub in value.items() if sub is not None}
    if isinstance(value, list):
        return [_prune_nulls(sub) for sub in value]
    return value


def _apply_defaults(value: Any, node: dict[str, Any]) -> Any:
    """The API server's structural defaulting: fill absent properties of present objects."""
    if isinstance(value, dict) and not node.get("x-kubernetes-preserve-unknown-fields"):
        out = dict(value)
        for name, sub in node.get("properties", {}).items():
            if name not in out and "default" in sub:
                out[name] = sub["default"]
            if name in out:
                out[name] = _apply_defaults(out[name], sub)
        if isinstance(node.get("additionalProperties"), dict):
            for name in out:
                out[name] = _apply_defaults(out[name], node["additionalProperties"])
        return out
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_apply_defaults(sub, node["items"]) for sub in value]
    return value


# --- (a) the committed files are the generated ones -----------------------------------------------


def test_committed_crds_are_up_to_date() -> None:
    stale = stale_files()
    assert not stale, f"crds/ is out of date ({', '.join(stale)}): {WRITE_HINT}"


def test_crd_files_parse_back_to_the_generated_objects() -> None:
    files = expected_files()
    assert list(files) == [f"{PLURALS[kind]}.{GROUP}.yaml" for kind in KINDS]
    for crd in all_crds():
        name = f"{crd['metadata']['name']}.yaml"
        text = render(crd)
        assert text.startswith("# Generated from loupe_api by tests/crd_tool.py; do not edit.\n")
        assert "&id" not in text and "*id" not in text, "YAML aliases: the result shares objects"
        assert yaml.safe_load(text) == crd
        assert yaml.safe_load((CRD_DIR / name).read_text(encoding="utf-8")) == crd


def test_generation_is_deterministic_and_pure() -> None:
    first = all_crds()
    first[0]["spec"]["names"]["shortNames"].append("mutated")
    first[1]["spec"]["versions"][0]["additionalPrinterColumns"][-1]["name"] = "mutated"
    assert all_crds() != first
    assert [render(crd) for crd in all_crds()] == [render(crd) for crd in all_crds()]


def test_crd_envelope() -> None:
    assert [crd["spec"]["names"]["kind"] for crd in all_crds()] == [
        "IngestSource",
        "Dataset",
        "RetrainPolicy",
    ]
    for kind in KINDS:
        crd = crd_for(kind)
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert crd["kind"] == "CustomResourceDefinition"
        assert crd["metadata"] == {"name": f"{PLURALS[kind]}.loupe.dev"}
        spec = crd["spec"]
        assert spec["group"] == GROUP
        assert spec["scope"] == "Namespaced"
        assert spec["names"] == {
            "kind": kind,
            "listKind": f"{kind}List",
            "plural": PLURALS[kind],
            "singular": kind.lower(),
            "shortNames": SHORT_NAMES[kind],
            "categories": ["loupe"],
        }
        (version,) = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
        assert version["subresources"] == {"status": {}}
    with pytest.raises(ValueError, match="unknown kind"):
        crd_for("Widget")


# --- (b) structural schema ------------------------------------------------------------------------

ALLOWED_KEYS = {
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
}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def _default_problems(where: str, node: dict[str, Any]) -> list[str]:
    value = node["default"]
    if value is None:
        return [f"{where}: default null"]
    if not isinstance(value, str | int | float | bool):
        return [f"{where}: non-scalar default {value!r}"]
    python_types: dict[str, Any] = {"string": str, "integer": int, "number": int | float, "boolean": bool}
    expected = python_types.get(node.get("type", ""))
    if expected is None or not isinstance(value, expected) or (isinstance(value, bool) != (expected is bool)):
        return [f"{where}: default {value!r} is not a {node.get('type')}"]
    if HAVE_JSONSCHEMA:
        leaf = {
            key: sub for key, sub in node.items() if key not in ("description", "x-kubernetes-validations")
        }
        errors = [error.message for error in _draft4(leaf).iter_errors(value)]
        if errors:
            return [f"{where}: default {value!r}: {'; '.join(errors)}"]
    return []


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """Why ``schema`` is not a structural schema Kubernetes accepts (as far as a test can tell)."""
    problems: list[str] = []
    root_props = schema.get("properties", {})
    if set(root_props) != {"apiVersion", "kind", "metadata", "spec", "status"}:
        problems.append(f"root properties {sorted(root_props)}")
    if root_props.get("metadata") != {"type": "object"}:
        problems.append("metadata must be exactly {type: object}")
    if schema.get("required") != ["spec"]:
        problems.append("spec must be the only required root property")

    def visit(node: dict[str, Any], where: str, preserved: bool, root_metadata: bool = False) -> None:
        bad_keys = set(node) - ALLOWED_KEYS
        if bad_keys:  # $ref, $defs, anyOf, oneOf, allOf, not, title, const, nullable, uniqueItems, ...
            problems.append(f"{where}: keys {sorted(bad_keys)}")
        preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
        if "type" not in node and not preserve and not node.get("x-kubernetes-int-or-string"):
            problems.append(f"{where}: no type")
        if "type" in node and node["type"] not in TYPES:
            problems.append(f"{where}: type {node['type']!r}")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            problems.append(f"{where}: array without items")
        if (
            node.get("type") == "object"
            and not preserve
            and not root_metadata
            and "properties" not in node
            and "additionalProperties" not in node
        ):
            problems.append(f"{where}: object with neither properties nor additionalProperties")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{where}: properties together with additionalProperties")
        if "additionalProperties" in node and not isinstance(node["additionalProperties"], dict):
            problems.append(f"{where}: additionalProperties must be a schema")
        for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if exclusive in node and (not isinstance(node[exclusive], bool) or bound not in node):
                problems.append(f"{where}: {exclusive} must be a boolean next to {bound}")
        missing = set(node.get("required", [])) - set(node.get("properties", {}))
        if missing:
            problems.append(f"{where}: required {sorted(missing)} are not properties")
        if "default" in node:
            if preserved or preserve:
                problems.append(f"{where}: default under x-kubernetes-preserve-unknown-fields")
            problems.extend(_default_problems(where, node))
        for rule in node.get("x-kubernetes-validations", []):
            if not isinstance(rule.get("rule"), str) or not isinstance(rule.get("message"), str):
                problems.append(f"{where}: validation rule without rule and message: {rule!r}")
        for name, sub in node.get("properties", {}).items():
            is_root_metadata = where == "" and name == "metadata"
            if not is_root_metadata and not sub.get("description"):
                problems.append(f"{where}.{name}: no description")
            if name in node.get("required", []) and "default" in sub:
                problems.append(f"{where}.{name}: required and defaulted")
            visit(sub, f"{where}.{name}", preserved or preserve, root_metadata=is_root_metadata)
        for key, suffix in (("items", "[*]"), ("additionalProperties", ".*")):
            if isinstance(node.get(key), dict):
                visit(node[key], f"{where}{suffix}", preserved or preserve)

    visit(schema, "", preserved=False)
    return problems


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    assert structural_problems(_schema(kind)) == []


@pytest.mark.parametrize("kind", KINDS)
def test_schema_conventions(kind: str) -> None:
    schema = _schema(kind)
    nodes = dict(_walk(schema))
    # Optional fields are plain (not nullable): the API server then drops a null sent for them, and
    # has() in CEL stays false, as pydantic's None means.
    assert not [path for path, node in nodes.items() if "nullable" in node]
    # Free-form fields keep their content and carry nothing else.
    for path, node in nodes.items():
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert set(node) == {"description", "type", "x-kubernetes-preserve-unknown-fields"}, path
    # Field names are the camelCase wire names.
    snake = [path for path in nodes if any("_" in part for part in path)]
    assert not snake


def test_schema_details_from_the_models() -> None:
    ingest, dataset, retrain = (_schema(kind) for kind in KINDS)
    fps = _at(ingest, ("spec", "video", "fps"))
    assert (fps["type"], fps["minimum"], fps["exclusiveMinimum"]) == ("number", 0, True)
    assert _at(ingest, ("spec", "s3", "bucket"))["maxLength"] == 63
    assert _at(ingest, ("spec", "mediaKinds"))["items"]["enum"] == ["image", "video"]
    assert _at(ingest, ("spec", "mediaKinds"))["minItems"] == 1
    assert _at(ingest, ("spec", "metadata", "static"))["additionalProperties"] == {"type": "string"}
    assert "pattern" in _at(ingest, ("spec", "pollInterval"))
    assert re.fullmatch(_at(retrain, ("spec", "cooldown"))["pattern"], "1h30m")
    assert _at(ingest, ("status", "lastScan", "time"))["format"] == "date-time"
    assert _at(ingest, ("spec", "s3", "prefix"))["default"] == ""
    assert _at(dataset, ("spec",))["required"] == ["sources"]
    assert _at(dataset, ("spec", "splits", "test"))["default"] == 0.1
    assert _at(dataset, ("status", "stats", "rejected"))["additionalProperties"] == {"type": "integer"}
    assert _at(dataset, ("status", "job", "state"))["enum"] == ["Pending", "Running", "Succeeded", "Failed"]
    assert _at(retrain, ("spec", "action", "job")) == {
        "description": "A batch/v1 Job template (spec only).",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert _at(retrain, ("spec", "historyLimit"))["maximum"] == 100
    # A $ref property keeps its own description; list items take the model docstring.
    assert _at(dataset, ("spec", "qualityGates"))["description"] == "Quality gates."
    conditions_items = _at(dataset, ("status", "conditions"))["items"]
    assert conditions_items["description"].startswith("A Kubernetes-style condition")


@pytest.mark.parametrize(
    ("spec_model", "status_model", "examples"),
    [
        (
            IngestSourceSpec,
            IngestSourceStatus,
            [
                {
                    "s3": {"bucket": "raw", "credentialsSecretRef": {"name": "s3"}},
                    "video": {},
                    "metadata": {},
                    "labels": {"format": "folder"},
                },
                {
                    "filesystem": {"path": "/data"},
                    "video": {"fps": 2},
                    "labels": {"format": "csv", "path": "l.csv"},
                },
            ],
        ),
        (
            DatasetSpec,
            DatasetStatus,
            [
                {
                    "sources": [{"name": "a"}],
                    "storage": {"credentialsSecretRef": {"name": "s3"}},
                    "qualityGates": {name: {} for name in GATES},
                    "dedup": {"exact": {}, "perceptual": {}},
                    "splits": {"seed": 3},
                    "versioning": {},
                    "ray": {},
                }
            ],
        ),
        (
            RetrainPolicySpec,
            RetrainPolicyStatus,
            [
                {
                    "datasetRef": "d",
                    "triggers": {},
                    "action": {"webhook": {"url": "http://x", "secretRef": {"name": "k"}}},
                }
            ],
        ),
    ],
)
def test_crd_defaults_are_the_model_defaults(
    spec_model: type[BaseModel], status_model: type[BaseModel], examples: list[dict[str, Any]]
) -> None:
    """Defaulting by the API server changes nothing pydantic would not have filled in itself."""
    kind = {IngestSourceSpec: "IngestSource", DatasetSpec: "Dataset", RetrainPolicySpec: "RetrainPolicy"}[
        spec_model
    ]
    schema = _schema(kind)
    for example in examples:
        defaulted = _apply_defaults(example, schema["properties"]["spec"])
        assert defaulted != example  # the example has objects with defaults to fill
        assert spec_model.model_validate(defaulted) == spec_model.model_validate(example)
    status = {
        "conditions": [{"type": "Ready", "status": "True"}],
        "lastScan": {},
        "stats": {},
        "job": {"id": "r1", "mode": "local", "state": "Running"},
        "runs": [{"name": "r1", "datasetVersion": "1.0.0", "state": "Running"}],
    }
    status = {
        key: value for key, value in status.items() if key in schema["properties"]["status"]["properties"]
    }
    defaulted_status = _apply_defaults(status, schema["properties"]["status"])
    assert defaulted_status != status
    assert status_model.model_validate(defaulted_status) == status_model.model_validate(status)


def test_models_that_cannot_be_structural_are_refused() -> None:
    class NoDescription(ApiModel):
        """A model with an undocumented field."""

        size: int = 0

    class Either(ApiModel):
        """A union."""

        value: int | str = Field(description="Either.")

    class FreeForm(ApiModel):
        """A free-form map without preserve-unknown-fields."""

        extra: dict[str, Any] = Field(default_factory=dict, description="Anything.")

    class BadDefault(ApiModel):
        """A default its own bounds refuse (pydantic does not check defaults)."""

        count: int = Field(default=0, ge=1, description="Count.")

    class UniqueItems(ApiModel):
        """A set."""

        tags: set[str] = Field(default_factory=set, description="Tags.")

    cases: list[tuple[type[BaseModel], str]] = [
        (NoDescription, "without a description: NoDescription.size"),
        (Either, "anyOf with 2 non-null schemas"),
        (FreeForm, "x-kubernetes-preserve-unknown-fields"),
        (BadDefault, "is below the minimum"),
        (UniqueItems, "uniqueItems"),
    ]
    for model, message in cases:
        with pytest.raises(CrdSchemaError, match=re.escape(message)):
            structural_schema(model)


# --- (c) printer columns --------------------------------------------------------------------------

COLUMNS = {
    "IngestSource": [
        ("Bucket", "string", ".spec.s3.bucket"),
        ("Path", "string", ".spec.filesystem.path"),
        ("Objects", "integer", ".status.lastScan.objects"),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ("Age", "date", ".metadata.creationTimestamp"),
    ],
    "Dataset": [
        ("Version", "string", ".status.currentVersion"),
        ("Samples", "integer", ".status.samples"),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ("Age", "date", ".metadata.creationTimestamp"),
    ],
    "RetrainPolicy": [
        ("Dataset", "string", ".spec.datasetRef"),
        ("Last", "string", ".status.runs[0].state"),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ("Age", "date", ".metadata.creationTimestamp"),
    ],
}


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns(kind: str) -> None:
    columns = crd_for(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["type"], c["jsonPath"]) for c in columns] == COLUMNS[kind]
    schema = _schema(kind)
    for column in columns:
        path = column["jsonPath"]
        if path.startswith(".metadata."):
            continue
        # Each column points at a field of the schema, of the column's type.
        node = schema
        for part in re.sub(r"\[[^\]]*\]", "[]", path).lstrip(".").split("."):
            name, indexed = part.removesuffix("[]"), part.endswith("[]")
            node = node["properties"][name]
            if indexed:
                assert node["type"] == "array", path
                node = node["items"]
        assert node["type"] == column["type"], path


# --- (d) CEL rules --------------------------------------------------------------------------------

RULE_PLACES: dict[str, dict[Path, type[BaseModel]]] = {
    "IngestSource": {
        ("spec",): IngestSourceSpec,
        ("spec", "video"): VideoSampling,
        ("spec", "labels"): LabelImport,
    },
    "Dataset": {
        ("spec", "splits"): SplitSpec,
        ("spec", "ray"): RaySpec,
        ("spec",): DatasetSpec,  # sampling strategies that need spec.embedding
        ("spec", "sampling"): SamplingSpec,
    },
    "RetrainPolicy": {("spec", "action"): RetrainAction},
}
CEL_RESERVED = {"in", "as", "break", "const", "continue", "else", "false", "for", "function", "if"} | {
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "null",
    "return",
    "true",
    "var",
    "void",
    "while",
}


@pytest.mark.parametrize("kind", KINDS)
def test_cel_rules(kind: str) -> None:
    schema = _schema(kind)
    found = {
        path: node["x-kubernetes-validations"]
        for path, node in _walk(schema)
        if "x-kubernetes-validations" in node
    }
    assert set(found) == set(RULE_PLACES[kind])
    for path, model in RULE_PLACES[kind].items():
        extra = model.model_config.get("json_schema_extra")
        assert isinstance(extra, dict)
        assert found[path] == extra["x-kubernetes-validations"]
        node = _at(schema, path)
        for rule in found[path]:
            # CEL sees the camelCase wire names, which must be properties of the node.
            for name in re.findall(r"self\.(\w+)", rule["rule"]):
                assert name in node["properties"], f"{rule['rule']}: no property {name}"
                assert name not in CEL_RESERVED
        # A rule under a list or map is run once per element; keep the cost estimate trivially
        # bounded by keeping rules out of lists and maps.
        assert "*" not in path


def test_the_expected_cel_rules() -> None:
    rules = {
        kind: {
            path: [r["rule"] for r in _at(_schema(kind), path)["x-kubernetes-validations"]] for path in places
        }
        for kind, places in RULE_PLACES.items()
    }
    assert rules["IngestSource"][("spec",)] == ["has(self.s3) != has(self.filesystem)"]
    assert rules["IngestSource"][("spec", "video")] == ["!(has(self.everyNthFrame) && has(self.fps))"]
    assert rules["IngestSource"][("spec", "labels")] == ["self.format == 'folder' || has(self.path)"]
    (split_rule,) = rules["Dataset"][("spec", "splits")]
    assert "self.train + self.val + self.test" in split_rule
    # The operands of the sum always exist once the API server has applied the defaults.
    assert all("default" in _at(_schema("Dataset"), ("spec", "splits", f)) for f in ("train", "val", "test"))
    (action_rule,) = rules["RetrainPolicy"][("spec", "action")]
    assert "has(self.rayJob)" in action_rule and action_rule.endswith(".size() == 1")


# --- (e) round trip -------------------------------------------------------------------------------

MINIMAL_DATASET = {
    "apiVersion": "loupe.dev/v1alpha1",
    "kind": "Dataset",
    "metadata": {"name": "line-a"},
    "spec": {"sources": [{"name": "line-a-cameras"}]},
}


def test_minimal_dataset_round_trip() -> None:
    dataset = Dataset.model_validate(MINIMAL_DATASET)
    assert dataset.spec.sources[0].name == "line-a-cameras"
    assert Dataset.model_validate(dataset.model_dump(by_alias=True)) == dataset


@pytest.mark.skipif(not HAVE_JSONSCHEMA, reason=NO_JSONSCHEMA)
def test_model_dumps_validate_against_the_crd_schema() -> None:
    validator = _draft4(openapi_schema("Dataset"))
    validator.validate(MINIMAL_DATASET)
    dataset = Dataset.model_validate(MINIMAL_DATASET)
    full = dataset.model_dump(by_alias=True, mode="json")
    assert full["spec"]["storage"]["uri"] is None  # the full dump has nulls in Optional fields ...
    validator.validate(_prune_nulls(full))  # ... which the API server drops before validation
    validator.validate(dataset.to_wire())  # what Loupe itself writes
    status = DatasetStatus.model_validate(
        {
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}],
            "currentVersion": "1.0.0",
            "samples": 3,
            "stats": {"rejected": {"corrupt": 1}},
            "job": {"id": "r1", "mode": "local", "state": "Succeeded"},
        }
    )
    validator.validate({**dataset.to_wire(), "status": status.to_wire()})
    # The validator does validate: out-of-bounds values and unknown enum members are refused.
    bad_specs: list[dict[str, Any]] = [
        {"sources": []},
        {"sources": [{"name": "a"}], "splits": {"train": 2}},
        {"sources": [{"name": "a"}], "dedup": {"keep": "newest"}},
        {"sources": [{"name": "a"}], "qualityGates": {"aspectRatio": {"minRatio": 0}}},
    ]
    for spec in bad_specs:
        assert list(validator.iter_errors({**MINIMAL_DATASET, "spec": spec})), spec


@pytest.mark.skipif(not HAVE_JSONSCHEMA, reason=NO_JSONSCHEMA)
def test_other_kinds_validate_against_their_crd_schema() -> None:
    documents = {
        "IngestSource": {
            "spec": {
                "s3": {"bucket": "raw", "endpoint": "http://minio:9000"},
                "pollInterval": "5m",
                "labels": {"format": "coco", "path": "ann.json"},
            }
        },
        "RetrainPolicy": {
            "spec": {
                "datasetRef": "line-a",
                "cooldown": "1h30m",
                "action": {"job": {"template": {"spec": {"containers": [{"name": "t"}]}}}},
            }
        },
    }
    for kind, document in documents.items():
        full = {"apiVersion": "loupe.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, **document}
        validator = _draft4(openapi_schema(kind))
        validator.validate(full)
        validator.validate(parse_resource(full).to_wire())
    bad_duration = {**documents["RetrainPolicy"]["spec"], "cooldown": "soon"}
    assert list(_draft4(openapi_schema("RetrainPolicy")).iter_errors({"spec": bad_duration}))
