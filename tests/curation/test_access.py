"""Residency and access rules (IngestSource residency, allowedUses, classification; Dataset
storage.region, use, access): a store outside a source's residency is refused before anything is
written; a source that forbids the dataset's use or is classified above its maximum has its samples
left out with the rule as the reason (never read) or refuses the version; exports and the Python API
withhold samples whose source forbids the use asked for, and say why.

Pure tests cover the region labels, the rules and the messages; the end-to-end tests run the real
``loupe`` command over two IngestSources of real scikit-image photos, and the example.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from loupe_api.access import region_within
from loupe_api.dataset import DatasetSpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_storage.store import LocalStore
from loupe_storage.versions import list_versions
from loupe_workers.curation.access import AccessRules, digest_fields, withhold
from loupe_workers.ingest.demo import DemoFile
from loupe_workers.pipeline.run import RunError, run_dataset
from loupe_workers.storage import manifest
from loupe_workers.use.client import AccessWarning, open_dataset
from support.cli import link_folders, loupe, run_spec, show_json
from support.photos import jpeg, photo

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "07-residency"


def source(**wire: Any) -> IngestSourceSpec:
    return IngestSourceSpec.model_validate({"filesystem": {"path": "x"}, **wire})


def dataset(**wire: Any) -> DatasetSpec:
    return DatasetSpec.model_validate({"sources": [{"name": "cams"}, {"name": "vendor-b"}], **wire})


# --- pure: labels, rules, messages -------------------------------------------------------------------


def test_region_labels_are_hierarchical_by_dash() -> None:
    assert region_within("eu-west-1", "eu") and region_within("eu", "eu") and region_within("EU-West-1", "eu")
    assert not region_within("eu", "eu-west-1")  # a sub-region does not contain its parent
    assert not region_within("europe-west1", "eu") and not region_within("us-east-1", "eu")


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ({"residency": "EU West"}, "residency"),
        ({"classification": "secret"}, "classification"),
        ({"allowedUses": ["trainig"]}, "allowedUses"),
    ],
)
def test_invalid_source_values_are_refused_naming_the_field(wire: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        source(**wire)
    assert caught.value.errors()[0]["loc"][0] == field


def test_invalid_dataset_values_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        dataset(use="testing")
    assert caught.value.errors()[0]["loc"] == ("use",)
    with pytest.raises(ValidationError) as caught:
        dataset(access={"onViolation": "drop"})
    assert caught.value.errors()[0]["loc"] == ("access", "onViolation")


def test_residency_refusal_names_source_residency_and_store_region() -> None:
    sources = {"cams": source(residency="eu"), "vendor-b": source()}
    assert AccessRules(dataset(), sources, "eu-central-1").refusal() is None
    refused = AccessRules(dataset(), sources, "us-east-1").refusal()
    assert refused is not None and refused.reason == "ResidencyViolation"
    assert "IngestSource cams" in refused.message and "eu" in refused.message
    assert "us-east-1" in refused.message and "spec.storage.region" in refused.message
    undeclared = AccessRules(dataset(), sources, None).refusal()
    assert undeclared is not None and undeclared.reason == "ResidencyViolation"
    assert "declares no region" in undeclared.message  # fails closed: an unknown region is nowhere


def test_use_and_classification_violations_exclude_or_refuse() -> None:
    sources = {
        "cams": source(allowedUses=["training", "evaluation"]),
        "vendor-b": source(allowedUses=["training"], classification="confidential"),
    }
    rules = AccessRules(dataset(use="evaluation"), sources, None)
    assert rules.refusal() is None and list(rules.violations) == ["vendor-b"]
    found = rules.violations["vendor-b"]
    assert found.rules == ("use_not_allowed",)
    assert "source vendor-b allows training only" in found.detail and "evaluation" in found.detail

    strict = dataset(use="training", access={"maxClassification": "internal", "onViolation": "refuse"})
    refused = AccessRules(strict, sources, None).refusal()
    assert refused is not None and refused.reason == "ClassificationNotAllowed"
    assert "vendor-b is confidential" in refused.message and "maxClassification" in refused.message

    both = dataset(use="research", access={"maxClassification": "internal"})
    assert AccessRules(both, sources, None).violations["vendor-b"].rules == (
        "use_not_allowed",
        "classification_above_maximum",
    )


def test_a_source_with_allowed_uses_needs_a_declared_use() -> None:
    refused = AccessRules(dataset(), {"cams": source(), "vendor-b": source(allowedUses=["training"])}, None)
    found = refused.refusal()
    assert found is not None and found.reason == "UseNotAllowed"
    assert "vendor-b allows training only" in found.message and "set spec.use" in found.message


def test_objects_of_an_excluded_source_are_marked_never_read_and_decided_again() -> None:
    from loupe_workers.ingest.sources import ListedObject

    sources = {"cams": source(), "vendor-b": source(allowedUses=["training"])}
    rules = AccessRules(dataset(use="evaluation"), sources, None)
    listed = [
        ListedObject("cams", "a.jpg", 10, "e1", "image", "file:///a.jpg"),
        ListedObject("vendor-b", "b.jpg", 10, "e2", "image", "file:///b.jpg"),
        ListedObject("vendor-b", "c.jpg", 10, "e3", "image", "file:///c.jpg", "unreadable", "loop"),
    ]
    marked = rules.mark(listed)
    assert [(o.key, o.problem) for o in marked] == [
        ("a.jpg", None),
        ("b.jpg", "use_not_allowed"),
        ("c.jpg", "unreadable"),  # an unreadable entry keeps its own reason
    ]
    assert marked[1].detail is not None and "vendor-b allows training only" in marked[1].detail
    # carried rows: none of an excluded source (recorded unread instead), none left out unread before
    stored: list[dict[str, Any]] = [
        {"source": "vendor-b", "key": "b.jpg", "fail_reason": None},
        {"source": "cams", "key": "a.jpg", "fail_reason": None},
        {"source": "cams", "key": "d.jpg", "fail_reason": "use_not_allowed"},  # a lifted rule reads it
    ]
    assert [r["key"] for r in rules.reusable(stored)] == ["a.jpg"]


def test_use_and_access_enter_the_spec_digest_only_when_declared() -> None:
    assert digest_fields(dataset()) == {}
    assert digest_fields(dataset(use="training")) == {
        "access": {"use": "training", "onViolation": "exclude", "maxClassification": "restricted"}
    }


def test_nothing_declared_records_nothing() -> None:
    rules = AccessRules(dataset(), {"cams": source(), "vendor-b": source()}, None)
    assert rules.refusal() is None and rules.stats([]) is None


def test_withhold_says_which_source_and_rule() -> None:
    sources = {
        "cams": source(allowedUses=["training", "evaluation"]),
        "vendor-b": source(allowedUses=["training"]),
    }
    rows = [{"source": "cams"}] * 2 + [{"source": "vendor-b"}] * 3
    stats = AccessRules(dataset(use="training"), sources, None).stats(
        [{**r, "disposition": "accepted"} for r in rows]
    )
    kept, held = withhold(rows, stats, "evaluation")
    assert kept == [{"source": "cams"}] * 2
    assert [h.message for h in held] == [
        "withheld 3 samples: source vendor-b allows training only, not evaluation"
    ]
    assert withhold(rows, stats, "training") == (rows, [])
    assert withhold(rows, stats, None) == (rows, [])


# --- end to end: two sources, real photos, the real loupe command ---------------------------------------

CAMS = {"parts/chelsea.jpg": "chelsea", "parts/coffee.jpg": "coffee", "parts/rocket.jpg": "rocket"}
VENDOR = {"scans/camera.jpg": "camera", "scans/coins.jpg": "coins"}


def spec_text(*, region: str | None = "eu-west-1", use: str | None = "evaluation", access: str = "") -> str:
    storage = f"  storage: {{region: {region}}}\n" if region else ""
    return f"""apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {{name: cams}}
spec:
  filesystem: {{path: ./cams}}
  labels: {{format: folder}}
  residency: eu-west-1
  allowedUses: [training, evaluation]
---
apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {{name: vendor-b}}
spec:
  filesystem: {{path: ./vendor}}
  labels: {{format: folder}}
  residency: eu
  allowedUses: [training]
  classification: confidential
---
apiVersion: loupe.dev/v1alpha1
kind: Dataset
metadata: {{name: parts}}
spec:
  sources: [{{name: cams}}, {{name: vendor-b}}]
{storage}{f"  use: {use}" if use else ""}
{f"  access: {access}" if access else ""}
"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for folder, files in (("cams", CAMS), ("vendor", VENDOR)):
        for key, name in files.items():
            path = root / folder / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg(photo(name, 256)))
    return root


@pytest.fixture
def project(photos: Path, tmp_path: Path) -> Path:
    return link_folders(photos, tmp_path, ("cams", "vendor"))


def run(project: Path, text: str) -> Any:
    return run_spec(project, text)


def show(project: Path, ref: str = "parts") -> dict[str, Any]:
    return show_json(project, ref)


def store_files(project: Path) -> dict[str, bytes]:
    root = project / "store"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def blob_digests(project: Path) -> set[str]:
    return {p.name for p in (project / "store" / "blobs").rglob("*") if p.is_file()}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_store_outside_residency_refused_before_any_byte_is_written(project: Path) -> None:
    done = run(project, spec_text(region="us-east-1"))
    assert done.returncode == 1, (done.stdout, done.stderr)
    message = " ".join(done.stderr.split())
    assert "IngestSource cams must stay in eu-west-1" in message, message
    assert "us-east-1" in message and "spec.storage.region" in message and "Traceback" not in message
    assert not (project / "store").exists() or not store_files(project)

    undeclared = run(project, spec_text(region=None))
    assert undeclared.returncode == 1 and "declares no region" in " ".join(undeclared.stderr.split())
    assert not (project / "store").exists() or not store_files(project)


def test_an_invalid_value_is_refused_by_the_cli_naming_the_field(project: Path) -> None:
    done = run(project, spec_text().replace("residency: eu\n", "residency: EU West\n"))
    assert done.returncode == 2, (done.stdout, done.stderr)
    message = " ".join(done.stderr.split())
    assert "loupe.yaml" in message and "spec.residency" in message and "not a region label" in message, (
        message
    )
    bad_use = run(project, spec_text(use="testing"))
    assert bad_use.returncode == 2 and "spec.use" in " ".join(bad_use.stderr.split()), bad_use.stderr
    assert not (project / "store").exists()


def test_residency_refusal_keeps_the_previous_version(project: Path) -> None:
    assert run(project, spec_text()).returncode == 0
    before = store_files(project)
    moved = run(project, spec_text(region="eu-central-1"))  # within vendor-b's eu, not cams' eu-west-1
    assert moved.returncode == 1 and "IngestSource cams must stay in eu-west-1" in moved.stderr
    assert store_files(project) == before  # not a byte written, the lease included
    versions = json.loads(loupe("versions", "parts", "--store", "store", "--json", cwd=project).stdout)
    assert [v["version"] for v in versions] == ["1.0.0"]


def test_use_not_allowed_excluded_with_reasons_in_rows_record_and_lineage(project: Path) -> None:
    done = run(project, spec_text())
    assert done.returncode == 0, done.stderr
    summary = show(project)
    stats = summary["stats"]
    assert stats["rejected"] == {"use_not_allowed": 2} and stats["samples"] == 3
    access = stats["access"]
    assert (access["use"], access["storeRegion"], access["excluded"]) == ("evaluation", "eu-west-1", 2)
    by_source = {s["source"]: s for s in access["sources"]}
    assert by_source["vendor-b"]["decision"] == "excluded" and by_source["vendor-b"]["samples"] == 2
    assert by_source["vendor-b"]["rules"] == ["use_not_allowed"]
    assert "source vendor-b allows training only" in by_source["vendor-b"]["detail"]
    assert by_source["cams"]["decision"] == "included" and by_source["cams"]["samples"] == 3
    assert "within residency eu-west-1" in by_source["cams"]["detail"]

    local = LocalStore(project / "store")
    record = list_versions(local, "parts")[-1]
    rejected = manifest.read_version_rows(local, record, "rejected")
    assert sorted(r["key"] for r in rejected) == sorted(VENDOR)
    for row in rejected:
        assert row["reason"] == "use_not_allowed" and "source vendor-b allows training only" in row["detail"]
        assert row["source"] == "vendor-b"
    # never read: none of vendor-b's bytes is in the store
    vendor_digests = {sha(project / "vendor" / key) for key in VENDOR}
    assert blob_digests(project).isdisjoint(vendor_digests)
    assert {sha(project / "cams" / key) for key in CAMS} <= blob_digests(project)
    edges = manifest.read_version_rows(local, record, "lineage")
    vendor_edges = [e for e in edges if e["source"] == "vendor-b"]
    assert len(vendor_edges) == 2 and {e["disposition"] for e in vendor_edges} == {"rejected"}
    rejected_by_id = {r["sample_id"]: r for r in rejected}  # each edge leads to its row and reason
    assert {rejected_by_id[e["sample_id"]]["reason"] for e in vendor_edges} == {"use_not_allowed"}
    shown = loupe("show", "parts", "--store", "store", cwd=project)
    assert "vendor-b: excluded (use_not_allowed), 2 samples" in " ".join(shown.stdout.split()), shown.stdout


def test_lineage_edges_carry_the_access_decision_and_loupe_lineage_prints_it(project: Path) -> None:
    rules = (
        (spec_text(), "use_not_allowed", "source vendor-b allows training only"),
        (spec_text(use="training", access="{maxClassification: internal}"), "classification_above_maximum",
         "source vendor-b is confidential"),
    )  # fmt: skip
    for text, rule, says in rules:
        assert run(project, text).returncode == 0
        local = LocalStore(project / "store")
        record = list_versions(local, "parts")[-1]
        edges = manifest.read_version_rows(local, record, "lineage")
        left_out = [e for e in edges if e["source"] == "vendor-b"]
        assert len(left_out) == len(VENDOR) and all(e["disposition"] == "rejected" for e in left_out)
        assert all(e["reason"] == rule and says in e["detail"] for e in left_out), left_out
        assert all(e["reason"] is None and e["detail"] is None for e in edges if e["source"] == "cams")
        listed = json.loads(loupe("lineage", f"parts@{record.version}", "--store", "store", "--json",
                                  cwd=project).stdout)  # fmt: skip
        assert {(e["reason"], says in e["detail"]) for e in listed["edges"] if e["source"] == "vendor-b"} == {
            (rule, True)
        }
        shown = loupe(
            "lineage", f"parts@{record.version}", "--store", "store", cwd=project, env={"COLUMNS": "300"}
        )
        assert shown.returncode == 0, shown.stderr
        text_out = " ".join(shown.stdout.split())
        assert f"{rule}: {says}" in text_out, shown.stdout
    # forward from a raw object: each version that left it out, with the rule, and the one that used it
    raw = str(left_out[0]["raw_sha256"])
    traced = json.loads(loupe("lineage", "--raw", raw, "--store", "store", "--json", cwd=project).stdout)
    assert traced["versions"] == [] and [e["version"] for e in traced["leftOut"]] == [
        "parts@1.0.0",
        "parts@1.0.1",
    ]
    assert [e["reason"] for e in traced["leftOut"]] == [r[1] for r in rules]


def test_classification_above_maximum_is_excluded(project: Path) -> None:
    done = run(project, spec_text(use="training", access="{maxClassification: internal}"))
    assert done.returncode == 0, done.stderr
    stats = show(project)["stats"]
    assert stats["rejected"] == {"classification_above_maximum": 2}
    vendor = next(s for s in stats["access"]["sources"] if s["source"] == "vendor-b")
    assert "vendor-b is confidential" in vendor["detail"] and "maxClassification" in vendor["detail"]


def test_refuse_mode_fails_the_run_naming_source_and_rule(project: Path) -> None:
    done = run(project, spec_text(access="{onViolation: refuse}"))
    assert done.returncode == 1, (done.stdout, done.stderr)
    message = " ".join(done.stderr.split())
    assert "source vendor-b allows training only" in message and "onViolation is refuse" in message, message
    assert not (project / "store").exists() or not store_files(project)


def test_refusal_reason_is_what_the_operator_puts_in_degraded(photos: Path, tmp_path: Path) -> None:
    """RunError.reason is the word the operator's Degraded condition carries (reconcile copies it)."""
    spec = DatasetSpec.model_validate(
        {"sources": [{"name": "vendor-b"}], "use": "evaluation", "access": {"onViolation": "refuse"}}
    )
    vendor = IngestSourceSpec.model_validate(
        {"filesystem": {"path": str(photos / "vendor")}, "allowedUses": ["training"]}
    )
    request = RunRequest(
        dataset="parts", spec=spec, sources={"vendor-b": vendor}, store_uri=str(tmp_path / "s")
    )
    with pytest.raises(RunError) as caught:
        run_dataset(request)
    assert caught.value.reason == "UseNotAllowed"
    request.spec = DatasetSpec.model_validate({"sources": [{"name": "vendor-b"}], "use": "training"})
    request.sources["vendor-b"] = vendor.model_copy(update={"residency": "eu"})
    request.store_region = "us-east-1"
    with pytest.raises(RunError) as caught:
        run_dataset(request)
    assert caught.value.reason == "ResidencyViolation"
    assert not (tmp_path / "s").exists()


def test_the_job_the_operator_launches_reports_residency_violation(photos: Path, tmp_path: Path) -> None:
    """The run-job entrypoint prints the RunFailure the operator copies into Degraded."""
    from loupe_operator.adapters.launchers import LocalLauncher

    request = RunRequest(
        dataset="parts",
        spec=DatasetSpec.model_validate({"sources": [{"name": "cams"}], "storage": {"region": "us-east-1"}}),
        sources={
            "cams": IngestSourceSpec.model_validate(
                {"filesystem": {"path": str(photos / "cams")}, "residency": "eu"}
            )
        },
        store_uri=str(tmp_path / "store"),
        store_region="us-east-1",
    )
    launcher = LocalLauncher(tmp_path / "jobs")
    launcher.launch("job-1", request, {"LOUPE_EXECUTOR": "inline"})
    deadline = time.monotonic() + 120
    observed = launcher.observe("job-1")
    while observed is not None and observed.state == "Running" and time.monotonic() < deadline:
        time.sleep(0.2)  # waiting for the job process, not asserting on time
        observed = launcher.observe("job-1")
    assert observed is not None and observed.state == "Failed"
    assert observed.reason == "ResidencyViolation"
    assert "IngestSource cams must stay in eu" in observed.message and "us-east-1" in observed.message
    assert not (tmp_path / "store").exists()


def test_export_and_python_api_withhold_samples_whose_source_forbids_the_use(project: Path) -> None:
    done = run(project, spec_text(use="training"))
    assert done.returncode == 0, done.stderr
    exported = loupe(
        "export", "parts", "--out", "eval", "--use", "evaluation", "--store", "store", cwd=project
    )
    assert exported.returncode == 0, exported.stderr
    text = " ".join(exported.stdout.split())
    assert "exported 3 samples" in text, text
    assert "withheld 2 samples: source vendor-b allows training only, not evaluation" in text, text
    files = [p for p in (project / "eval").rglob("*.jpg")]
    assert len(files) == 3 and {sha(p) for p in files} == {sha(project / "cams" / k) for k in CAMS}
    training = loupe(
        "export", "parts", "--out", "train", "--use", "training", "--store", "store", cwd=project
    )
    assert training.returncode == 0 and "withheld" not in training.stdout
    assert len(list((project / "train").rglob("*.jpg"))) == 5
    bad = loupe("export", "parts", "--out", "x", "--use", "testing", "--store", "store", cwd=project)
    assert bad.returncode == 2 and "--use" in bad.stderr

    with pytest.warns(AccessWarning, match="withheld 2 samples: source vendor-b allows training only"):
        version = open_dataset("parts", project / "store", use="evaluation").version()
        frame = version.to_pandas()
    assert set(frame["source"]) == {"cams"} and len(frame) == 3
    assert [(w.source, w.samples) for w in version.withheld] == [("vendor-b", 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        everything = open_dataset("parts", project / "store").version()
        assert len(list(everything.samples())) == 5 and everything.withheld == []


# --- the example ----------------------------------------------------------------------------------


def test_example_runs_as_its_readme_says(corpus: tuple[Path, list[DemoFile]], tmp_path: Path) -> None:
    images, _ = corpus
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(EXAMPLE / "loupe.yaml", project / "loupe.yaml")
    shutil.move(str(images), project / "images")
    done = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    results = {r["dataset"]: r for r in json.loads(done.stdout)}
    assert results["defects"]["created"] and results["defects-eval"]["created"]
    assert "use_not_allowed" not in results["defects"]["stats"]["rejected"]
    excluded = results["defects-eval"]["stats"]["rejected"]["use_not_allowed"]
    assert excluded > 0
    exported = loupe("export", "defects", "--use", "evaluation", "--out", "eval-export", cwd=project)
    assert exported.returncode == 0, exported.stderr
    text = " ".join(exported.stdout.split())
    assert "source vendor-b allows training only, not evaluation" in text, text

    spec = (project / "loupe.yaml").read_text(encoding="utf-8")
    (project / "loupe.yaml").write_text(
        spec.replace("region: eu-west-1", "region: us-east-1"), encoding="utf-8"
    )
    before = sorted(p for p in (project / ".loupe").rglob("*") if p.is_file())
    refused = loupe("run", "-f", "loupe.yaml", "--executor", "inline", cwd=project)
    assert refused.returncode == 1
    message = " ".join(refused.stderr.split())
    assert "IngestSource plant-cameras must stay in eu-west-1" in message and "us-east-1" in message, message
    assert sorted(p for p in (project / ".loupe").rglob("*") if p.is_file()) == before
