"""``loupe run -f`` refuses every invalid spec up front: exit code 2, a short message naming the file and
the field path, no traceback, and nothing written (the store folder is never created).

Cases (one test each, through the real ``loupe`` command in a subprocess):

1. Encoding: bytes that are not UTF-8, UTF-16 with and without a BOM -> ``FILE: not UTF-8 text``;
   a UTF-8 BOM is accepted.
2. Limits: 100,000 nested ``[`` and a billion-laughs alias expansion -> refused (no RecursionError),
   as is a file over 1 MiB.
3. Duplicate mapping keys anywhere in a document -> refused with the key's path and both lines.
4. Duplicate resource names across the documents of a file or the files of a folder -> refused naming
   both places (it used to be last-one-wins).
5. A filesystem source folder that does not exist, or is a file -> ``IngestSource NAME:
   spec.filesystem.path`` with the resolved path (embedded CLI only: the operator's paths are on the
   cluster).
6. A label file (CSV, COCO) or YOLO label folder that does not exist -> ``spec.labels.path``.
7. An embedding model path or file:// URI that does not exist, or an unknown model name ->
   ``spec.embedding.model`` / ``spec.dedup.embedding.model``.
8. A storage URI of another scheme than s3://, file:// or a plain path -> ``spec.storage.uri``.
9. Strict types in specs: ``threshold: true``, ``enabled: "yes"``, ``enabled: 1``, ``batchSize: true``,
   ``maxDistance: "8"`` -> refused; an integer for a number field stays fine.

And one false refusal fixed: a folder run skips hidden folders (the ./.loupe store's JSON records
are no specs).

Where the line is thin, a test also runs the valid neighbour (UTF-8 BOM, merge keys, an integer for a number).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LOUPE = Path(sys.executable).parent / "loupe"

SOURCE = """apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {{name: {name}}}
spec:
  filesystem: {{path: {path}}}
{extra}"""

DATASET = """apiVersion: loupe.dev/v1alpha1
kind: Dataset
metadata: {{name: {name}}}
spec:
  sources: [{{name: {source}}}]
{extra}"""


def source(name: str = "cams", path: str = "./images", extra: str = "") -> str:
    return SOURCE.format(name=name, path=path, extra=extra)


def dataset(name: str = "defects", source_name: str = "cams", extra: str = "") -> str:
    return DATASET.format(name=name, source=source_name, extra=extra)


def spec_text(*documents: str) -> str:
    return "---\n".join(documents)


def loupe_run(spec: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOUPE), "run", "-f", str(spec), "--store", str(cwd / "store"), "--executor", "inline"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    return tmp_path


def assert_refused(spec: Path, project: Path, *fragments: str) -> str:
    result = loupe_run(spec, project)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert spec.name in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert not (project / "store").exists()
    return result.stderr


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def assert_runs(spec: Path, project: Path) -> None:
    result = subprocess.run(
        [
            str(LOUPE),
            "run",
            "-f",
            str(spec),
            "--store",
            str(project / "store"),
            "--executor",
            "inline",
            "--dry-run",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


# 1. encoding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda t: t.encode("utf-16-le"), id="utf16-no-bom"),
        pytest.param(lambda t: t.replace("cams", "cäms-x").encode("latin-1"), id="latin1"),
    ],
)
def test_not_utf8_is_refused(project: Path, encode: object) -> None:
    text = spec_text(source(), dataset())
    spec = write(project / "loupe.yaml", encode(text))  # type: ignore[operator]
    assert_refused(spec, project, "not UTF-8 text")


def test_utf16_bom_is_refused_and_a_utf8_bom_accepted(project: Path) -> None:
    text = spec_text(source(), dataset())
    assert_refused(write(project / "utf16.yaml", text.encode("utf-16")), project, "not UTF-8 text")
    assert_runs(write(project / "utf8.yaml", b"\xef\xbb\xbf" + text.encode()), project)


# 2. limits ------------------------------------------------------------------------------------------


def test_deep_nesting_is_refused_without_recursion_error(project: Path) -> None:
    spec = write(project / "deep.yaml", "[" * 100_000)
    stderr = assert_refused(spec, project, "nested deeper than 64 levels")
    assert "RecursionError" not in stderr


def test_billion_laughs_is_refused(project: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    spec = write(project / "laughs.yaml", "\n".join(lines) + "\n")
    assert_refused(spec, project, "expands to more than")


def test_alias_that_refers_to_itself_is_refused(project: Path) -> None:
    spec = write(project / "loop.yaml", spec_text(source(), dataset(extra="  health: {slices: &a [*a]}\n")))
    assert_refused(spec, project, "refers to itself")


def test_huge_file_is_refused_unread(project: Path) -> None:
    spec = write(project / "big.yaml", spec_text(source(), dataset()) + "#" * (1 << 20) + "\n")
    assert_refused(spec, project, "larger than 1 MiB")


# 3. duplicate keys ----------------------------------------------------------------------------------


def test_duplicate_mapping_key_is_refused_with_path_and_lines(project: Path) -> None:
    gates = "  qualityGates:\n    blur:\n      threshold: 0.2\n      threshold: 0.9\n"
    spec = write(project / "dup.yaml", spec_text(source(), dataset(extra=gates)))
    assert_refused(
        spec, project, "spec.qualityGates.blur.threshold", "duplicate key 'threshold'", "first at line"
    )
    # keys merged with << may be overridden, as YAML intends
    extra = "  qualityGates:\n    blur: &b {threshold: 0.2}\n    dark:\n      <<: *b\n      threshold: 0.3\n"
    assert_runs(write(project / "merge.yaml", spec_text(source(), dataset(extra=extra))), project)


def test_duplicate_top_level_key_is_refused(project: Path) -> None:
    spec = write(project / "dup.yaml", source() + "spec:\n  filesystem: {path: ./other}\n")
    assert_refused(spec, project, "duplicate key 'spec'")


# 4. duplicate resource names ------------------------------------------------------------------------


def test_duplicate_source_name_in_one_file_is_refused(project: Path) -> None:
    (project / "other").mkdir()
    spec = write(project / "loupe.yaml", spec_text(source(), source(path="./other"), dataset()))
    assert_refused(spec, project, "IngestSource cams: metadata.name", "already defined in", "(document 1)")


def test_duplicate_dataset_name_across_files_of_a_folder_is_refused(project: Path) -> None:
    folder = project / "specs"
    write(folder / "a.yaml", spec_text(source(path="../images"), dataset()))
    write(folder / "b.yaml", dataset())
    result = loupe_run(folder, project)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "Dataset defects: metadata.name" in result.stderr
    assert "a.yaml" in result.stderr and "b.yaml" in result.stderr
    assert not (project / "store").exists()


# 5. source folders ----------------------------------------------------------------------------------


def test_missing_source_folder_is_refused_with_resolved_path(project: Path) -> None:
    spec = write(project / "loupe.yaml", spec_text(source(path="./nope"), dataset()))
    assert_refused(spec, project, "IngestSource cams: spec.filesystem.path", str(project / "nope"))


def test_source_path_that_is_a_file_is_refused(project: Path) -> None:
    write(project / "images.txt", "not a folder")
    spec = write(project / "loupe.yaml", spec_text(source(path="./images.txt"), dataset()))
    assert_refused(spec, project, "spec.filesystem.path", "is not a folder")


# 6. label files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "missing"),
    [
        ("{format: csv, path: labels.csv}", "no such file"),
        ("{format: coco, path: annotations/instances.json}", "no such file"),
        ("{format: yolo, path: labels}", "no such folder"),
        ("{format: csv, path: ../labels.csv}", "not a key inside the source folder"),
    ],
)
def test_missing_label_file_is_refused(project: Path, labels: str, missing: str) -> None:
    write(project / "labels.csv", "path,label\n")  # outside the source folder: not what the spec names
    spec = write(project / "loupe.yaml", spec_text(source(extra=f"  labels: {labels}\n"), dataset()))
    assert_refused(spec, project, "IngestSource cams: spec.labels.path", missing)


# 7. model files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field", "missing"),
    [
        ("  embedding: {enabled: true, model: ./models/clip.onnx}\n", "spec.embedding.model", "clip.onnx"),
        (
            "  embedding: {enabled: true, model: 'file:///nonexistent/m.onnx'}\n",
            "spec.embedding.model",
            "/nonexistent/m.onnx",
        ),
        ("  dedup: {embedding: {model: ./m.onnx}}\n", "spec.dedup.embedding.model", "no such file"),
        ("  embedding: {enabled: true, model: resnet9000}\n", "spec.embedding.model", "unknown model"),
    ],
)
def test_missing_model_is_refused(project: Path, extra: str, field: str, missing: str) -> None:
    spec = write(project / "loupe.yaml", spec_text(source(), dataset(extra=extra)))
    assert_refused(spec, project, f"Dataset defects: {field}", missing)


# 8. storage URI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["ftp://x", "s4://b", "s3://"])
def test_bad_storage_uri_is_refused(project: Path, uri: str) -> None:
    spec = write(project / "loupe.yaml", spec_text(source(), dataset(extra=f"  storage: {{uri: '{uri}'}}\n")))
    assert_refused(spec, project, "spec.storage.uri")


# 9. strict types ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("  qualityGates: {blur: {threshold: true}}\n", "spec.qualityGates.blur.threshold"),
        ("  qualityGates: {blur: {threshold: '0.5'}}\n", "spec.qualityGates.blur.threshold"),
        ("  qualityGates: {blur: {enabled: 'yes'}}\n", "spec.qualityGates.blur.enabled"),
        ("  dedup: {exact: {enabled: 1}}\n", "spec.dedup.exact.enabled"),
        ("  embedding: {batchSize: true}\n", "spec.embedding.batchSize"),
        ("  dedup: {perceptual: {maxDistance: '8'}}\n", "spec.dedup.perceptual.maxDistance"),
    ],
)
def test_loose_types_are_refused(project: Path, extra: str, field: str) -> None:
    spec = write(project / "loupe.yaml", spec_text(source(), dataset(extra=extra)))
    assert_refused(spec, project, field)


def test_a_boolean_is_not_a_number_but_an_integer_is(project: Path) -> None:
    splits = "  splits: {train: true, val: 0, test: 0}\n"
    assert_refused(
        write(project / "bool.yaml", spec_text(source(), dataset(extra=splits))), project, "spec.splits.train"
    )
    integers = splits.replace("true", "1")
    assert_runs(write(project / "int.yaml", spec_text(source(), dataset(extra=integers))), project)


# not a refusal: hidden folders are no specs ---------------------------------------------------------


def test_a_folder_run_skips_the_store_in_a_hidden_folder(project: Path) -> None:
    write(project / "loupe.yaml", spec_text(source(), dataset()))
    write(project / ".loupe" / "datasets" / "defects" / "versions" / "1.0.0.json", '{"version": "1.0.0"}')
    assert_runs(project, project)  # used to refuse .loupe/...json: "apiVersion: expected loupe.dev/v1alpha1"
