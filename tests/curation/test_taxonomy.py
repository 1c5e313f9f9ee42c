"""One taxonomy across sources (spec.labels): class names of each source mapped to the dataset's
classes, unmapped classes reported per source and handled by the declared action, and a mapping change
versioned as MAJOR with its relabelled samples listed by ``loupe diff``.

Pure tests cover name resolution (source mapping, then *, then the classes; exact, then by alias),
boxes, the four actions, spec validation, the bump reason and the diff; the end-to-end tests run the
real ``loupe`` command over two IngestSources of real scikit-image photos whose class names differ
("Cat"/"kitty" in one, "cat" in the other).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from loupe_api.dataset import DatasetSpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_api.labels import LabelsSpec, class_key
from loupe_storage.store import LocalStore
from loupe_storage.versions import list_versions
from loupe_workers.curation.taxonomy import Tally, Taxonomy
from loupe_workers.ingest.annotate import LabelSet
from loupe_workers.pipeline.run import RunError, run_dataset
from loupe_workers.storage import manifest
from loupe_workers.versioning.diffs import diff_rows
from loupe_workers.versioning.semver import SampleState, decide
from support.cli import link_folders, loupe, run_spec, show_json
from support.photos import jpeg, photo


def taxonomy(**wire: Any) -> Taxonomy:
    return Taxonomy(LabelsSpec.model_validate(wire))


# --- pure: resolution, boxes, actions ----------------------------------------------------------------


def test_alias_key_ignores_case_whitespace_underscore_and_dash() -> None:
    names = [
        "Golden Retriever",
        "golden_retriever",
        "golden-retriever",
        " GOLDEN  RETRIEVER ",
        "GoldenRetriever",
    ]
    assert {class_key(n) for n in names} == {"goldenretriever"}
    assert class_key("cat") != class_key("cats")


def test_resolution_order_source_then_shared_then_classes() -> None:
    t = taxonomy(
        classes=["cat", "dog", "golden retriever"],
        mapping={
            "shelter": {"kitty": "cat", "Puppy": "dog"},
            "*": {"kitty": "dog", "pup": "dog", "Cat": "dog"},
        },
    )
    assert t.resolve("shelter", "kitty") == "cat"  # the source's own mapping wins over *
    assert t.resolve("vet", "kitty") == "dog"  # other sources: the shared mapping
    assert t.resolve("shelter", "PUPPY") == "dog"  # source alias
    assert t.resolve("vet", "Pup") == "dog"  # shared alias
    assert t.resolve("shelter", "Cat") == "dog"  # an exact mapping wins over a class of the same name
    assert t.resolve("shelter", "CAT") == "dog"  # ... and so does its alias
    assert t.resolve("vet", "cat") == "dog"  # a mapping's alias also comes before the classes
    assert t.resolve("vet", "dog") == "dog"  # a class named exactly needs no mapping
    assert t.resolve("vet", "Golden_Retriever") == "golden retriever"  # by alias: the class's spelling
    assert t.resolve("vet", "bird") is None


def test_without_classes_the_mapping_targets_are_the_taxonomy() -> None:
    t = taxonomy(mapping={"a": {"kitty": "cat"}})
    assert t.resolve("b", "Cat") == "cat" and t.resolve("b", "cat") == "cat"
    assert t.resolve("b", "dog") is None


def test_no_labels_spec_changes_nothing() -> None:
    t = taxonomy()
    assert not t.active
    labels = LabelSet("Whatever", [{"class": "x", "bbox": [1, 2, 3, 4]}])
    result = t.apply("cams", labels)
    assert result.labels == labels and not result.unmapped and not result.renamed and not result.drop
    tally = Tally(t)
    tally.add("cams", result)
    assert tally.stats() is None and tally.refusal() is None


def test_boxes_map_like_classes_and_the_majority_is_taken_again() -> None:
    t = taxonomy(classes=["cat", "dog"], mapping={"coco": {"tabby": "cat", "kitty": "cat", "puppy": "dog"}})
    boxes = [{"class": c, "bbox": [0, 0, 1, 1]} for c in ("tabby", "kitty", "puppy", "puppy", "Dog")]
    source = LabelSet("puppy", boxes)  # the boxes' majority, as COCO and YOLO import sets it
    result = t.apply("coco", source)
    assert [b["class"] for b in result.labels.boxes] == ["cat", "cat", "dog", "dog", "dog"]
    assert result.labels.boxes[0]["bbox"] == [0, 0, 1, 1] and result.labels.label == "dog"
    tie = t.apply("coco", LabelSet("kitty", [{"class": "tabby"}, {"class": "kitty"}, {"class": "puppy"}]))
    assert tie.labels.label == "cat"  # kitty + tabby are one class now: 2 cats against 1 dog
    assert result.renamed and not result.unmapped


@pytest.mark.parametrize(
    ("action", "label", "box", "drop"),
    [
        ("keep", "bird", "bird", False),
        ("unknown", "unknown", "unknown", False),
        ("drop", "bird", "bird", True),
        ("refuse", "bird", "bird", False),
    ],
)
def test_unmapped_actions(action: str, label: str, box: str, drop: bool) -> None:
    t = taxonomy(classes=["cat"], unmapped=action)
    result = t.apply("cams", LabelSet("bird", []))
    assert (result.labels.label, result.unmapped, result.drop) == (label, ("bird",), drop)
    boxed = t.apply("cams", LabelSet("note", [{"class": "bird"}, {"class": "Cat"}]))  # class not from boxes
    assert [b["class"] for b in boxed.labels.boxes] == [box, "cat"]
    assert boxed.unmapped == ("bird", "note")
    assert t.apply("cams", LabelSet()).unmapped == ()  # an unlabelled sample is never unmapped


def test_tally_counts_per_source_and_refusal_names_the_classes() -> None:
    t = taxonomy(classes=["cat"], mapping={"a": {"kitty": "cat"}}, unmapped="refuse")
    tally = Tally(t)
    for source, name in [("a", "kitty"), ("a", "bird"), ("a", "bird"), ("b", "Fish"), ("b", "cat")]:
        tally.add(source, t.apply(source, LabelSet(name)))
    stats = tally.stats()
    assert stats is not None
    assert stats.unmapped == {"a": {"bird": 2}, "b": {"Fish": 1}} and stats.mapped == 1
    assert stats.to_wire()["mappingDigest"] == t.spec.digest() != ""
    message = tally.refusal()
    assert message is not None
    assert "IngestSource a: 'bird' 2" in message and "IngestSource b: 'Fish' 1" in message
    keep = Tally(taxonomy(classes=["cat"]))
    keep.add("a", keep.taxonomy.apply("a", LabelSet("bird")))
    assert keep.refusal() is None  # only refuse refuses


# --- pure: spec validation, bump reason, diff ----------------------------------------------------------


def test_mapping_target_outside_classes_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"shelter.kitty maps to 'feline', which is not in spec.labels"):
        LabelsSpec.model_validate({"classes": ["cat", "dog"], "mapping": {"shelter": {"kitty": "feline"}}})
    with pytest.raises(ValidationError, match="same name"):  # two aliases of one name, two targets
        LabelsSpec.model_validate({"mapping": {"a": {"Kitty": "cat", "kitty": "dog"}}})
    with pytest.raises(ValidationError, match="same class"):
        LabelsSpec.model_validate({"classes": ["cat", "Cat"]})
    with pytest.raises(ValidationError, match=r"not a source of spec\.sources"):
        DatasetSpec.model_validate({"sources": [{"name": "a"}], "labels": {"mapping": {"b": {"x": "y"}}}})
    DatasetSpec.model_validate({"sources": [{"name": "a"}], "labels": {"mapping": {"*": {"x": "y"}}}})


def test_a_mapping_change_is_major_with_the_reason_in_words() -> None:
    before = {f"s{i}": SampleState(json.dumps({"label": "Cat"}), "train", "d") for i in range(12)}
    after = {s: SampleState(json.dumps({"label": "cat"}), "train", "d") for s in before}
    change = decide(before, after, spec_changed=True, mapping_changed=True)
    assert change is not None and change.bump == "major" and change.relabeled == 12
    assert change.reasons == ["label mapping changed: 12 samples relabelled"]
    same = decide(before, dict(before), spec_changed=True, mapping_changed=True)
    assert same is not None and same.bump == "patch"  # a mapping that relabels nothing is a spec change


def test_diff_lists_old_and_new_class() -> None:
    a = [{"sample_id": "x", "labels": json.dumps({"label": "Cat", "boxes": []}), "split": "train"}]
    b = [{"sample_id": "x", "labels": json.dumps({"label": "cat", "boxes": []}), "split": "train"}]
    changes = diff_rows(a, b)
    assert changes.relabeled == ("x",) and changes.classes == {"x": ("Cat", "cat")}


# --- end to end: two sources, real photos, the real loupe command ---------------------------------------

SHELTER = {
    "Cat/chelsea.jpg": "chelsea",
    "Cat/coffee.jpg": "coffee",
    "kitty/rocket.jpg": "rocket",
    "Bird/astronaut.jpg": "astronaut",
}
VET = {
    "cat/camera.jpg": "camera",
    "cat/coins.jpg": "coins",
    "dog/horse.jpg": "horse",
    "dog/moon.jpg": "moon",
    "fish/brick.jpg": "brick",
}

SOURCES = """apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {name: shelter}
spec:
  filesystem: {path: ./shelter}
  labels: {format: folder}
---
apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {name: vet}
spec:
  filesystem: {path: ./vet}
  labels: {format: folder}
---
"""


def dataset(labels: str) -> str:
    return (
        SOURCES
        + "apiVersion: loupe.dev/v1alpha1\nkind: Dataset\nmetadata: {name: pets}\nspec:\n"
        + "  sources: [{name: shelter}, {name: vet}]\n  splits: {stratifyBy: label}\n"
        + "".join(f"  {line}\n" for line in labels.strip().splitlines())
    )


MAPPED = """labels:
  classes: [cat, dog]
  mapping:
    shelter: {kitty: cat}
  unmapped: %s"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for folder, files in (("shelter", SHELTER), ("vet", VET)):
        for key, name in files.items():
            path = root / folder / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg(photo(name, 256)))
    return root


@pytest.fixture
def project(photos: Path, tmp_path: Path) -> Path:
    return link_folders(photos, tmp_path, ("shelter", "vet"))


def run(project: Path, labels: str) -> Any:
    return run_spec(project, dataset(labels))


def show(project: Path, ref: str = "pets") -> dict[str, Any]:
    return show_json(project, ref)


def test_two_sources_one_taxonomy_unmapped_dropped(project: Path) -> None:
    done = run(project, MAPPED % "drop")
    assert done.returncode == 0, done.stderr
    summary = show(project)
    assert summary["labels"] == {"cat": 5, "dog": 2}  # Cat, kitty (shelter) and cat (vet) are one class
    stats = summary["stats"]
    mapping = stats["labelMapping"]
    assert mapping["unmapped"] == {"shelter": {"Bird": 1}, "vet": {"fish": 1}}
    assert (mapping["action"], mapping["dropped"], mapping["mapped"]) == ("drop", 2, 3)
    assert stats["rejected"] == {"unmapped_label": 2}
    store = LocalStore(project / "store")
    [record] = list_versions(store, "pets")
    rejected = {r["key"]: r for r in manifest.read_version_rows(store, record, "rejected")}
    assert rejected["Bird/astronaut.jpg"]["reason"] == "unmapped_label"
    assert "IngestSource shelter" in rejected["Bird/astronaut.jpg"]["detail"]
    assert "'Bird'" in rejected["Bird/astronaut.jpg"]["detail"]
    assert "IngestSource vet" in rejected["fish/brick.jpg"]["detail"]
    text = loupe("show", "pets", "--store", "store", cwd=project)
    assert "unmapped labels" in text.stdout and "shelter: Bird 1" in text.stdout, text.stdout


def test_unmapped_unknown_keeps_the_samples_as_unknown(project: Path) -> None:
    done = run(project, MAPPED % "unknown")
    assert done.returncode == 0, done.stderr
    summary = show(project)
    assert summary["labels"] == {"cat": 5, "dog": 2, "unknown": 2}
    assert summary["stats"]["labelMapping"]["unknown"] == 2
    assert summary["stats"]["rejected"] == {}


def test_unmapped_refuse_keeps_the_previous_version(project: Path) -> None:
    first = run(project, MAPPED % "drop")
    assert first.returncode == 0, first.stderr
    refused = run(project, MAPPED % "refuse")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "Traceback" not in refused.stderr
    message = " ".join(refused.stderr.split())
    assert "unmapped labels" in message and "'Bird' 1" in message and "'fish' 1" in message, message
    assert "IngestSource shelter" in message and "IngestSource vet" in message
    versions = json.loads(loupe("versions", "pets", "--store", "store", "--json", cwd=project).stdout)
    assert [v["version"] for v in versions] == ["1.0.0"]
    assert show(project)["labels"] == {"cat": 5, "dog": 2}
    # the run's reason, as the operator puts it into the Degraded condition
    sources = {
        n: IngestSourceSpec.model_validate(
            {"filesystem": {"path": str(project / n)}, "labels": {"format": "folder"}}
        )
        for n in ("shelter", "vet")
    }
    spec = DatasetSpec.model_validate(
        {
            "sources": [{"name": "shelter"}, {"name": "vet"}],
            "labels": {
                "classes": ["cat", "dog"],
                "mapping": {"shelter": {"kitty": "cat"}},
                "unmapped": "refuse",
            },
        }
    )
    with pytest.raises(RunError) as caught:
        run_dataset(RunRequest(dataset="pets", spec=spec, sources=sources, store_uri=str(project / "store")))
    assert caught.value.reason == "UnmappedLabels"
    assert [r.version for r in list_versions(LocalStore(project / "store"), "pets")] == ["1.0.0"]


def test_a_mapping_change_is_major_and_diff_lists_the_relabelled(project: Path) -> None:
    first = run(project, MAPPED % "drop")
    assert first.returncode == 0, first.stderr
    before = show(project)
    # Cat and kitty of the shelter now mean dog: the source's mapping wins over the class "cat"
    second = run(project, MAPPED.replace("{kitty: cat}", "{kitty: dog, Cat: dog}") % "drop")
    assert second.returncode == 0, second.stderr
    [result] = json.loads(second.stdout)
    assert result["created"] and result["version"] == "2.0.0", result
    assert result["stats"]["processed"] == 0  # a curation step on stored rows: nothing decoded again
    after = show(project)
    assert after["change"]["bump"] == "major"
    assert after["change"]["reasons"] == ["label mapping changed: 3 samples relabelled"]
    assert after["change"]["resplit"] == 0
    assert after["labels"] == {"cat": 2, "dog": 5}
    assert before["stats"]["labelMapping"]["mappingDigest"] != after["stats"]["labelMapping"]["mappingDigest"]
    diffed = loupe("diff", "pets@1.0.0", "pets@2.0.0", "--store", "store", "--json", cwd=project)
    assert diffed.returncode == 0, diffed.stderr
    changes = json.loads(diffed.stdout)
    assert changes["relabels"] == [
        {"sample": "shelter:Cat/chelsea.jpg", "from": "cat", "to": "dog"},
        {"sample": "shelter:Cat/coffee.jpg", "from": "cat", "to": "dog"},
        {"sample": "shelter:kitty/rocket.jpg", "from": "cat", "to": "dog"},
    ]
    assert sorted(changes["relabeled"]) == ["Cat/chelsea.jpg", "Cat/coffee.jpg", "kitty/rocket.jpg"]
    assert changes["added"] == changes["removed"] == []
    text = loupe("diff", "pets@1.0.0", "pets@2.0.0", "--store", "store", cwd=project)
    assert "~ relabel shelter:kitty/rocket.jpg: cat -> dog" in text.stdout, text.stdout


def test_a_mapping_target_outside_classes_is_refused_before_anything_is_written(project: Path) -> None:
    done = run(project, (MAPPED % "drop").replace("{kitty: cat}", "{kitty: feline}"))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert "loupe.yaml" in message and "spec.labels.mapping" in message and "'feline'" in message, message
    assert not (project / "store").exists()
