"""`loupe query`: SQL over a version's manifest, left-out samples and lineage, read-only."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import pytest

from loupe_workers.ingest.demo import DemoFile
from loupe_workers.use.client import open_dataset
from support.cli import loupe, quickstart_project


@pytest.fixture(scope="module")
def project(demo_master: tuple[Path, list[DemoFile]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quickstart_project(tmp_path_factory.mktemp("query") / "project", demo_master[0])


def query_json(project: Path, *args: str) -> list[dict[str, object]]:
    done = loupe("query", *args, "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, object]] = json.loads(done.stdout)
    return rows


def test_counts_by_split_match_the_python_api(project: Path) -> None:
    rows = query_json(
        project, "defects", "select split, count(*) as n from samples group by split order by split"
    )
    version = open_dataset("defects", project / ".loupe").version()
    expected = Counter(s.split for s in version.samples())
    assert {str(r["split"]): r["n"] for r in rows} == dict(expected)
    assert sum(int(str(r["n"])) for r in rows) == version.record.samples


def test_json_columns_are_structs_in_sql(project: Path) -> None:
    version = open_dataset("defects", project / ".loupe").version()
    sites = Counter(str(s.metadata.get("site")) for s in version.samples())
    rows = query_json(project, "defects@" + version.name,
                      "select metadata.site as site, count(*) as n from samples group by site")  # fmt: skip
    assert {str(r["site"]): r["n"] for r in rows} == dict(sites)
    mismatched = query_json(
        project, "defects", "select count(*) as n from samples where labels.label != label"
    )
    assert mismatched == [{"n": 0}]
    nested = query_json(project, "defects", "select typeof(labels.boxes) as t from samples limit 1")
    assert str(nested[0]["t"]).endswith("[]")  # a list, not a JSON string


def test_rejected_samples_and_lineage_are_tables(project: Path) -> None:
    rows = query_json(
        project,
        "defects",
        "select disposition, reason, count(*) as n from rejected group by all order by all",
    )
    by_disposition: Counter[str] = Counter()
    for row in rows:
        by_disposition[str(row["disposition"])] += int(str(row["n"]))
    shown = json.loads(loupe("show", "defects", "--json", cwd=project).stdout)
    stats = shown["stats"]
    assert by_disposition["duplicate"] == stats["exactDuplicates"] + stats["nearDuplicates"]
    assert by_disposition["quarantined"] == sum(stats["quarantined"].values()) > 0
    assert all(r["reason"] for r in rows)
    edges = query_json(
        project, "defects", "select count(*) as n, count(distinct sample_id) as s from lineage"
    )
    assert int(str(edges[0]["n"])) >= shown["samples"]


def test_csv_and_table_output(project: Path) -> None:
    done = loupe("query", "defects", "select sample_id, metadata, split from samples order by sample_id",
                 "--csv", cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert rows and set(rows[0]) == {"sample_id", "metadata", "split"}
    table = loupe("query", "defects", "select sample_id from samples", "--max-rows", "3", cwd=project)
    assert table.returncode == 0
    assert "3 of" in table.stderr and "rows shown" in table.stderr


def test_schema_lists_every_table(project: Path) -> None:
    columns = query_json(project, "defects", "--schema")
    tables = {str(c["table"]) for c in columns}
    assert tables == {"samples", "rejected", "lineage"}
    assert {"table": "samples", "column": "sample_id", "type": "string"} in columns


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("select * from read_csv('/etc/passwd')", "disabled by configuration"),
        ("copy samples to 'out.csv'", "disabled by configuration"),
        ("set enable_external_access = true", "locked"),
        ("select nonsense from samples", "nonsense"),
        ("select * from sample", "the tables are samples, rejected, lineage"),
        ("selec 1", "syntax error"),
    ],
)
def test_bad_or_hostile_queries_get_one_line_and_exit_2(project: Path, sql: str, says: str) -> None:
    done = loupe("query", "defects", sql, cwd=project)
    assert done.returncode == 2, done.stdout
    assert says in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: query:")
    assert not (project / "out.csv").exists()


def test_unknown_dataset_exits_1_with_a_suggestion(project: Path) -> None:
    done = loupe("query", "defect", "select 1", cwd=project)
    assert done.returncode == 1 and "did you mean" in done.stderr and "defects" in done.stderr


# Dicts whose keys are data (labels, gate names, metadata fields, SQL columns), not JSON structure.
DATA_KEYED = {"labels", "flags", "rejected", "quarantined", "metadata", "splits", "privacy", "exif"}


def structural_keys(value: object, path: str = "") -> list[str]:
    """Every key of a JSON document's structure, with its path, skipping dicts keyed by data."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append(f"{path}.{key}")
            if key not in DATA_KEYED:
                found.extend(structural_keys(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for item in value:
            found.extend(structural_keys(item, f"{path}[]"))
    return found


def test_every_json_output_uses_camel_case_keys(project: Path) -> None:
    predictions = project / "predictions.jsonl"
    version = open_dataset("defects", project / ".loupe").version()
    first = next(iter(version.samples()))
    predictions.write_text(json.dumps({"sample": first.sample_id, "label": "other", "confidence": 0.9}))
    outputs = {
        "versions": loupe("versions", "defects", "--json", cwd=project),
        "show": loupe("show", "defects", "--json", cwd=project),
        "diff": loupe("diff", "defects@1.0.0", "defects@1.0.0", "--json", cwd=project),
        "lineage": loupe("lineage", "defects@1.0.0", "--json", cwd=project),
        "search": loupe("search", "defects", "--where", "width > 0", "--json", cwd=project),
        "queue": loupe("queue", "defects", "--import", str(predictions), "--json", cwd=project),
        "run": loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=project),
    }
    for command, done in outputs.items():
        assert done.returncode == 0, (command, done.stderr)
        keys = structural_keys(json.loads(done.stdout))  # stdout is only the JSON
        assert keys, command
        snake = [k for k in keys if "_" in k.rsplit(".", 1)[-1]]
        assert not snake, (command, snake[:5])


def test_piped_tables_keep_whole_uris(project: Path) -> None:
    listed = json.loads(loupe("versions", "defects", "--json", cwd=project).stdout)
    table = loupe("versions", "defects", cwd=project, env={"COLUMNS": ""})  # stdout is a pipe here
    assert table.returncode == 0, table.stderr
    assert listed[0]["manifestUri"] in table.stdout and "…" not in table.stdout
