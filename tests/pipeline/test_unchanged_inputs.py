"""A run over the inputs the latest version was built from answers "no change" from its listing alone.

Each version records an inputs digest (spec, listings, label files, predictions, code, settings). A
later run with the same digest reads no manifest part; one that changed any input takes the full path
and must give what the full path gives (here: the same run with the digest switched off).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loupe_api.dataset import DatasetSpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest, RunResult
from loupe_api.keys import version_key_of
from loupe_storage.store import LocalStore
from loupe_storage.versions import latest_version, list_versions
from loupe_workers.pipeline import run
from loupe_workers.pipeline.run import run_dataset
from support.photos import jpeg, photo
from support.runs import rows_of
from support.stores import SpyStore

NAMES = ("chelsea", "coffee", "rocket", "astronaut", "camera", "coins")
DATASET = "defects"


def write_images(folder: Path, names: tuple[str, ...] = NAMES) -> list[str]:
    """Real photos under folder/images/<a|b>/<name>.jpg; their keys (relative to folder)."""
    keys = []
    for i, name in enumerate(names):
        key = f"images/{'ab'[i % 2]}/{name}.jpg"
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(jpeg(photo(name, 256)))
        keys.append(key)
    return keys


def make_request(folder: Path, store: Path, labels: dict[str, Any], **dataset: Any) -> RunRequest:
    source = IngestSourceSpec.model_validate({"filesystem": {"path": str(folder)}, "labels": labels})
    spec = DatasetSpec.model_validate({"sources": [{"name": "cams"}], **dataset})
    return RunRequest(dataset=DATASET, spec=spec, sources={"cams": source}, store_uri=str(store))


def run_on(request: RunRequest, store: LocalStore, base_dir: Path) -> RunResult:
    return run_dataset(request, store=store, base_dir=base_dir)


def full_path(
    request: RunRequest, store: LocalStore, base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> RunResult:
    """The run as it was before the inputs digest: every run reads the manifest and curates."""
    with monkeypatch.context() as patched:
        patched.setattr(run, "inputs_digest", lambda *_, **__: None)
        return run_on(request, store, base_dir)


def outcome(result: RunResult) -> dict[str, Any]:
    return result.model_dump(mode="json")


def write_csv_labels(folder: Path, keys: list[str], relabel: str | None = None) -> None:
    lines = ["path,label", *(f"{k},{'cat' if k == relabel else k.split('/')[1]}" for k in keys)]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


def write_yolo_labels(folder: Path, keys: list[str], boxes: int = 1) -> None:
    for key in keys:
        target = folder / "labels" / Path(key).relative_to("images").with_suffix(".txt")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(f"{i % 2} 0.5 0.5 0.{i + 2} 0.3\n" for i in range(boxes)))


def test_an_unchanged_rerun_reads_only_the_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "src"
    write_images(folder)
    request = make_request(folder, tmp_path / "store", {"format": "folder"})
    first = run_on(request, LocalStore(tmp_path / "store"), tmp_path)
    assert first.created and first.version == "1.0.0"
    record = latest_version(LocalStore(tmp_path / "store"), DATASET)
    assert record is not None and record.inputs_digest

    spy = SpyStore(tmp_path / "store")
    again = run_on(request, spy, tmp_path)
    assert spy.manifest_reads() == []  # not one part list or part: only the version record
    assert again.message == "no change since 1.0.0" and again.version is None and not again.created
    assert again.current_version == "1.0.0"
    assert again.stats.scanned == len(NAMES) and again.stats.processed == 0
    # what the full path answers for the same run, down to the counts and the run id
    assert outcome(again) == outcome(
        full_path(request, LocalStore(tmp_path / "store"), tmp_path, monkeypatch)
    )
    assert [v.version for v in list_versions(LocalStore(tmp_path / "store"), DATASET)] == ["1.0.0"]


def add_image(folder: Path, _: list[str]) -> None:
    (folder / "images" / "a" / "horse.jpg").write_bytes(jpeg(photo("horse", 256)))


def edit_csv_labels(folder: Path, keys: list[str]) -> None:
    write_csv_labels(folder, keys, relabel=keys[0])


def edit_yolo_sidecar(folder: Path, keys: list[str]) -> None:
    write_yolo_labels(folder, keys[:1], boxes=2)  # one label file of one image gains a box


def edit_predictions(folder: Path, keys: list[str]) -> None:
    write_predictions(folder, keys, reverse=True)


def write_predictions(folder: Path, keys: list[str], reverse: bool = False) -> None:
    confidences = [0.1 * (i + 1) for i in range(len(keys))]
    if reverse:
        confidences.reverse()
    lines = [
        json.dumps({"sample": k, "label": "x", "confidence": c})
        for k, c in zip(keys, confidences, strict=True)
    ]
    (folder.parent / "predictions.jsonl").write_text("\n".join(lines) + "\n")  # beside the spec


Change = Callable[[Path, list[str]], None]
CSV = {"format": "csv", "path": "labels.csv"}
YOLO = {"format": "yolo", "path": "labels", "classNames": ["scratch", "dent"]}
HARDEST = {"sampling": {"maxSamples": 3, "strategy": "hardest", "predictions": "predictions.jsonl"}}
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any], Change | None]] = {
    # name: (labels, dataset spec, dataset spec after, change to the source folder)
    "a new image": ({"format": "folder"}, {}, {}, add_image),
    "an edited label file": (CSV, {}, {}, edit_csv_labels),
    "a changed spec threshold": (
        {"format": "folder"},
        {},
        {"qualityGates": {"resolution": {"minHeight": 200}}},
        None,
    ),
    "a changed label sidecar (yolo)": (YOLO, {}, {}, edit_yolo_sidecar),
    "a changed predictions file": ({"format": "folder"}, HARDEST, HARDEST, edit_predictions),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_changed_input_takes_the_full_path_with_the_same_result(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels, before, after, change = CASES[case]
    folder = tmp_path / "src"
    keys = write_images(folder)
    write_csv_labels(folder, keys)
    write_yolo_labels(folder, keys)
    write_predictions(folder, keys)
    (folder / "notes.txt").write_text("read by no stage\n")
    first = run_on(
        make_request(folder, tmp_path / "store", labels, **before), LocalStore(tmp_path / "store"), tmp_path
    )
    assert first.created, first.message
    # the unchanged rerun is answered from the listing, whatever the label import
    spy = SpyStore(tmp_path / "store")
    assert run_on(make_request(folder, tmp_path / "store", labels, **before), spy, tmp_path).message == (
        "no change since 1.0.0"
    )
    assert spy.manifest_reads() == []
    if change is not None:
        change(folder, keys)
    shutil.copytree(tmp_path / "store", tmp_path / "store-full")
    request = make_request(folder, tmp_path / "store", labels, **after)

    spy = SpyStore(tmp_path / "store")
    result = run_on(request, spy, tmp_path)
    assert spy.manifest_reads()  # the full path: the parent's rows were read
    expected = full_path(request.model_copy(update={"store_uri": str(tmp_path / "store-full")}),
                         LocalStore(tmp_path / "store-full"), tmp_path, monkeypatch)  # fmt: skip
    assert outcome(result) == outcome(expected)
    if not expected.created:  # sampling keeps what it published: new predictions alone change nothing
        assert case == "a changed predictions file" and result.message == "no change since 1.0.0"
        return
    record = latest_version(LocalStore(tmp_path / "store"), DATASET)
    other = latest_version(LocalStore(tmp_path / "store-full"), DATASET)
    assert record is not None and other is not None and record.version == other.version != "1.0.0"
    assert rows_of(LocalStore(tmp_path / "store"), record) == rows_of(
        LocalStore(tmp_path / "store-full"), other
    )
    # and the version it made is what the next unchanged run answers from
    spy = SpyStore(tmp_path / "store")
    assert run_on(request, spy, tmp_path).message == f"no change since {record.version}"
    assert spy.manifest_reads() == []


def test_a_file_no_stage_reads_does_not_count_as_input(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    write_images(folder)
    (folder / "notes.txt").write_text("first\n")
    request = make_request(folder, tmp_path / "store", {"format": "folder"})
    assert run_on(request, LocalStore(tmp_path / "store"), tmp_path).created
    (folder / "notes.txt").write_text("second, longer\n")
    spy = SpyStore(tmp_path / "store")
    assert run_on(request, spy, tmp_path).message == "no change since 1.0.0"
    assert spy.manifest_reads() == []


def touch(image: Path) -> None:
    """Same bytes, a new modification time: a new ETag, so a new inputs digest."""
    image.write_bytes(image.read_bytes() + b"")
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def store_files(store: Path) -> list[Path]:
    return sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file() and "lease" not in str(p))


def test_a_touched_file_takes_the_full_path_once_and_records_its_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "src"
    keys = write_images(folder)
    request = make_request(folder, tmp_path / "store", {"format": "folder"})
    assert run_on(request, LocalStore(tmp_path / "store"), tmp_path).created
    before = store_files(tmp_path / "store")
    touch(folder / keys[0])

    spy = SpyStore(tmp_path / "store")  # new inputs: the full path, which finds nothing to change
    assert run_on(request, spy, tmp_path).message == "no change since 1.0.0"
    assert spy.manifest_reads()
    # what it records: one small mark (these inputs give 1.0.0), written with one conditional put
    [mark] = [p for p in store_files(tmp_path / "store") if p not in before]
    assert mark.parts[:3] == ("datasets", DATASET, "inputs") and mark.parts[3] == "1.0.0"
    assert [k for k in spy.puts if "lease" not in k] == [str(mark)]

    spy = SpyStore(tmp_path / "store")  # the same inputs again: answered from the listing and the mark
    again = run_on(request, spy, tmp_path)
    assert spy.manifest_reads() == [] and [k for k in spy.puts if "lease" not in k] == []
    assert again.message == "no change since 1.0.0" and again.current_version == "1.0.0"
    full = full_path(request, LocalStore(tmp_path / "store"), tmp_path, monkeypatch)
    assert full.stats.processed == 1  # the full path decodes the touched file again; this run did not
    full.stats.processed = 0
    assert outcome(again) == outcome(full)
    assert [v.version for v in list_versions(LocalStore(tmp_path / "store"), DATASET)] == ["1.0.0"]


def test_recorded_inputs_count_only_while_their_version_is_the_latest(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    keys = write_images(folder)
    request = make_request(folder, tmp_path / "store", {"format": "folder"}).model_copy(
        update={"allow_shrink": True}
    )
    assert run_on(request, LocalStore(tmp_path / "store"), tmp_path).created
    touch(folder / keys[0])
    assert run_on(request, LocalStore(tmp_path / "store"), tmp_path).message == "no change since 1.0.0"
    add_image(folder, keys)  # 1.1.0, from other inputs
    assert run_on(request, LocalStore(tmp_path / "store"), tmp_path).version == "1.1.0"
    (folder / "images" / "a" / "horse.jpg").unlink()  # the inputs confirmed for 1.0.0, again
    spy = SpyStore(tmp_path / "store")
    result = run_on(request, spy, tmp_path)
    assert spy.manifest_reads() and result.created and result.version == "2.0.0"


def test_a_record_written_before_the_digest_takes_the_full_path(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    write_images(folder)
    request = make_request(folder, tmp_path / "store", {"format": "folder"})
    assert run_on(request, LocalStore(tmp_path / "store"), tmp_path).created
    key = tmp_path / "store" / version_key_of(DATASET, "1.0.0")
    wire = json.loads(key.read_text())
    assert wire.pop("inputsDigest")
    key.write_text(json.dumps(wire, indent=2, sort_keys=True))
    record = latest_version(LocalStore(tmp_path / "store"), DATASET)
    assert record is not None and record.inputs_digest is None

    spy = SpyStore(tmp_path / "store")
    again = run_on(request, spy, tmp_path)
    assert spy.manifest_reads() and again.message == "no change since 1.0.0" and again.version is None


def test_the_digest_covers_what_decides_the_result_and_nothing_else(tmp_path: Path) -> None:
    write_images(tmp_path / "src", NAMES[:2])
    # the same files (and modification times) under another folder, for a spec naming a relative path
    shutil.copytree(tmp_path / "src", tmp_path / "moved" / "src")

    def digest(request: RunRequest, base_dir: Path = tmp_path) -> str | None:
        used = run._used_sources(request)
        listing = run._list_sources(request, used, base_dir)
        settings = run._process_settings(request.spec)
        return run.inputs_digest(
            request, used, listing, run._predictions_file(request.spec, base_dir), settings
        )

    base = make_request(Path("src"), tmp_path / "store", {"format": "folder"})
    same = digest(base)
    assert same is not None and digest(base) == same
    # execution and retention do not change what a run computes
    assert (
        digest(make_request(Path("src"), tmp_path / "store", {"format": "folder"}, ray={"parallelism": 3}))
        == same
    )
    assert digest(make_request(Path("src"), tmp_path / "store", {"format": "folder"},
                               retention={"keepLast": 2})) == same  # fmt: skip
    # the region the access rules check, the source root the rows' URIs name, processing settings
    assert digest(base.model_copy(update={"store_region": "eu-west-1"})) != same
    assert digest(base, tmp_path / "moved") != same
    maxpixels = {"qualityGates": {"maxPixels": {"limit": 10_000_000}}}
    assert digest(make_request(Path("src"), tmp_path / "store", {"format": "folder"}, **maxpixels)) != same
    # a label file the listing leaves out (include) is digested by content
    write_csv_labels(tmp_path / "src", ["images/a/chelsea.jpg"])
    csv = make_request(Path("src"), tmp_path / "store", CSV)
    csv.sources["cams"].include = ["images/**"]
    before = digest(csv)
    write_csv_labels(tmp_path / "src", ["images/a/chelsea.jpg"], relabel="images/a/chelsea.jpg")
    assert before is not None and digest(csv) not in (before, None)


def test_a_custom_embedding_model_is_an_input(tmp_path: Path) -> None:
    """A custom .onnx model's bytes (and the options beside it) are in the digest, read afresh on every
    run: a model replaced at the same path in a long-lived worker is a new input."""
    write_images(tmp_path / "src", NAMES[:2])
    model = tmp_path / "models" / "custom.onnx"
    model.parent.mkdir()
    model.write_bytes(b"graph one")
    request = make_request(
        tmp_path / "src", tmp_path / "store", {"format": "folder"},
        embedding={"enabled": True, "model": str(model)},
    )  # fmt: skip

    def digest() -> str | None:
        used = run._used_sources(request)
        listing = run._list_sources(request, used, tmp_path)
        settings = run._process_settings(request.spec)
        return run.inputs_digest(request, used, listing, None, settings)

    first = digest()
    assert first is not None and digest() == first
    model.write_bytes(b"graph two")  # same path, same size class, other bytes
    second = digest()
    assert second not in (first, None)
    model.with_suffix(".json").write_text(json.dumps({"inputSize": 256}))  # its preparation options
    assert digest() not in (first, second, None)
    model.unlink()  # a model that cannot be read now: no digest (the full path says why)
    assert digest() is None
