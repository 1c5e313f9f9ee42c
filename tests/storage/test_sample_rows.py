"""The typed sample row (loupe_api.samples): one definition that matches the Parquet schema, and enum
vocabularies that write exactly the bytes string literals wrote (manifest parts are content-addressed:
one changed byte would make every version rewrite every part)."""

from __future__ import annotations

import ast
import hashlib
import json
import types
from collections import Counter
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pyarrow as pa

import loupe_workers
from loupe_api.common import GateAction
from loupe_api.dataset import QualityGates
from loupe_api.samples import (
    LEFT_OUT,
    CurationRow,
    Disposition,
    DupKind,
    Flag,
    Gate,
    LabelConsensus,
    LineageEdge,
    PrivacyKind,
    SampleRow,
    Status,
)
from loupe_storage.store import LocalStore
from loupe_workers.curation.outliers import MEASURES
from loupe_workers.storage import manifest
from loupe_workers.storage.rows import sample_rows

ARROW_TO_PYTHON: dict[pa.DataType, object] = {
    pa.string(): str,
    pa.int64(): int,
    pa.float64(): float,
    pa.bool_(): bool,
    pa.list_(pa.string()): list[str],
}


def _without_none(hint: object) -> object:
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        assert len(rest) == 1, hint
        return rest[0]
    return hint


def test_sample_row_names_every_manifest_column_with_its_type() -> None:
    hints = get_type_hints(SampleRow)
    assert list(hints) == manifest.SCHEMA.names  # same columns, same order
    for column in manifest.SCHEMA:
        assert _without_none(hints[column.name]) == ARROW_TO_PYTHON[column.type], column.name
    assert not SampleRow.__required_keys__  # rows are built up stage by stage


def test_lineage_edge_names_every_lineage_column_with_its_type(tmp_path: Path) -> None:
    hints = get_type_hints(LineageEdge)
    assert list(hints) == ["version", *manifest.LINEAGE_SCHEMA.names]  # the reader puts version first
    assert hints["version"] is str
    for column in manifest.LINEAGE_SCHEMA:
        assert _without_none(hints[column.name]) == ARROW_TO_PYTHON[column.type], column.name
    store = LocalStore(tmp_path)
    written = manifest.write_parts(store, "d", "datasets/d/runs/r", "1.0.0", [_row(enums=False)], [])
    (edge,) = manifest.read_rows(store, written.lineage_uri)
    assert list(edge) == list(hints)  # what the reader gives, key for key


def test_curation_rows_start_from_columns_and_write_only_columns() -> None:
    """run.py starts a row from a record's PROCESSING_COLUMNS (typed as SampleRow), and the keys
    CurationRow adds are never written: a row with them writes the bytes of the row without them."""
    columns = get_type_hints(SampleRow)
    assert set(manifest.PROCESSING_COLUMNS) <= set(columns)
    extra = set(get_type_hints(CurationRow)) - set(columns)
    assert extra == {"capture_time"} and not extra & set(manifest.SCHEMA.names)
    row = _row(enums=True)
    assert manifest.to_bytes([{**row, "capture_time": "2024:05:01 10:00:00"}]) == manifest.to_bytes([row])


def test_rows_read_back_fit_the_sample_row_types() -> None:
    row = _row(enums=False)
    (read,) = manifest.to_table([row]).to_pylist()
    hints = get_type_hints(SampleRow)
    for name, value in read.items():
        if value is not None:
            expected = _without_none(hints[name])
            assert isinstance(value, get_origin(expected) or expected), name  # type: ignore[arg-type]


def _row(enums: bool) -> dict[str, Any]:
    """A full row: every enum column set, as members (``enums``) or as the literals they replaced."""
    sha = hashlib.sha256(b"photo").hexdigest()
    row: dict[str, Any] = {name: None for name in manifest.SCHEMA.names}
    row.update(
        sample_id=sha, sha256=sha, disposition="duplicate", reason="near_duplicate", detail="copy of x",
        source="cams", key="a/b.jpg", uri="/data/a/b.jpg", etag="e-1", size=1234, media="image",
        format="jpeg", extension=".jpg", width=640, height=480, sharpness=12.5, noise=1.25, hash_kind="phash",
        hash="00ff00ff00ff00ff", hash_variants=["ff00ff00ff00ff00"], exif="{}", metadata=json.dumps({"a": "b"}),
        label="cat", labels=json.dumps({"label": "cat"}), label_support=0.5, label_consensus="tie",
        flags=["blur", "relative:noise", "restricted:face"], split="train", synthetic=False,
        dup_group="g1", dup_kind="near_duplicate", duplicate_of="k", keep_reason="published earlier",
        status="ok", processing_key="v7:phash",
    )  # fmt: skip
    if enums:
        row.update(
            disposition=Disposition.DUPLICATE, reason=DupKind.NEAR, label_consensus=LabelConsensus.TIE,
            flags=[Flag.BLUR, Flag.relative("noise"), Flag.privacy("face", restricted=True)],
            dup_kind=DupKind.NEAR, status=Status.OK,
        )  # fmt: skip
    return row


# sha256 of to_bytes([_row(enums=False)]) as string literals wrote it before the enums (pyarrow of
# uv.lock): an upgrade or a writer change that alters it makes every version rewrite every part
LITERAL_MANIFEST_SHA256 = "0648ad8c400bdb912ec8413553238e8bc8972ccf426e8d9e6e38ee8e8c2d699a"


def test_enum_rows_write_the_bytes_literals_wrote(tmp_path: Path) -> None:
    literal, typed = _row(enums=False), _row(enums=True)
    assert typed == literal  # members are their strings
    assert any(type(v) is not type(literal[k]) for k, v in typed.items())  # ...and are members here
    data = manifest.to_bytes([typed])
    assert data == manifest.to_bytes([literal])
    assert hashlib.sha256(data).hexdigest() == LITERAL_MANIFEST_SHA256

    def parts(rows: dict[str, Any], root: Path) -> dict[str, bytes]:
        store = LocalStore(root)
        rejected = {**rows, "sample_id": "r" + rows["sample_id"][1:], "disposition": rows["disposition"]}
        written = manifest.write_parts(store, "d", "datasets/d/runs/r", "1.0.0", [rows], [rejected])
        return {k: store.get(k) for k in written.stats.written}

    typed_parts, literal_parts = parts(typed, tmp_path / "a"), parts(literal, tmp_path / "b")
    assert typed_parts == literal_parts and len(typed_parts) == 4  # accepted, rejected, two lineage


def test_members_behave_as_their_strings() -> None:
    assert json.dumps({Disposition.ACCEPTED: [Flag.DARK]}) == '{"accepted": ["dark"]}'
    assert f"{Disposition.QUARANTINED}" == "quarantined" and str(Status.FAILED) == "failed"
    assert {"accepted": 1}[Disposition.ACCEPTED] == 1
    assert {"rejected", "quarantined"} == LEFT_OUT
    assert {k.value for k in DupKind} == {"exact_duplicate", "near_duplicate"}


def test_flags_cover_every_gate_that_can_flag() -> None:
    """Gate: the quality gates whose action may be flag (corrupt and maxPixels never flag); relative
    flags: the gates with a relative section, which are the ones curation.outliers measures."""
    fields = QualityGates.model_fields
    can_flag = {
        name
        for name, info in fields.items()
        if "action" in getattr(info.annotation, "model_fields", {})
        and "flag" in get_args(info.annotation.model_fields["action"].annotation)  # type: ignore[union-attr]
    }
    assert "flag" in get_args(GateAction)
    assert {g.value for g in Gate} == can_flag
    relative = {n for n, info in fields.items() if "relative" in getattr(info.annotation, "model_fields", {})}
    assert relative == set(MEASURES)
    expected = (
        can_flag
        | {f"relative:{g}" for g in relative}
        | {f"{p}:{k}" for p in ("privacy", "restricted") for k in PrivacyKind}
    )
    assert {f.value for f in Flag} == expected
    assert Flag.relative("blur") is Flag.RELATIVE_BLUR


def test_typed_reader_reads_parts_and_single_files_as_sample_rows(tmp_path: Path) -> None:
    """rows.sample_rows over manifest.read_table: a part list's rows and an older single-file manifest's, each the row
    written, key for key in SampleRow's order."""
    store = LocalStore(tmp_path)
    row = _row(enums=False)
    rejected = {**row, "sample_id": "r" + row["sample_id"][1:]}
    written = manifest.write_parts(store, "d", "datasets/d/runs/r", "1.0.0", [row], [rejected])
    store.put("datasets/d/runs/old/manifest.parquet", manifest.to_bytes([row]))
    for key, expected in (
        (written.manifest_uri, row),
        (written.rejected_uri, rejected),
        ("datasets/d/runs/old/manifest.parquet", row),
    ):
        (read,) = sample_rows(manifest.read_table(store, key))
        assert read == expected and list(read) == list(get_type_hints(SampleRow)), key


def test_workers_read_manifest_rows_typed() -> None:
    """The untyped readers (manifest.read_rows, read_version_rows) are called only for tables with
    columns of their own: curation.review's imported predictions and label-error candidates. Manifest,
    rejected and lineage rows go through storage.rows (SampleRow, LineageEdge)."""
    root = Path(loupe_workers.__file__).parent
    untyped = {"read_rows", "read_version_rows"}
    calls = Counter(
        path.relative_to(root).as_posix()
        for path in set(root.rglob("*.py")) - {Path(manifest.__file__)}  # manifest: where they are defined
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in untyped
    )
    assert calls == {"curation/review.py": 2}
