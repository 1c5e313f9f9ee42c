"""SQL over a version (``loupe query``): its manifest, left-out samples and lineage as DuckDB tables.

The tables are the version's Parquet files read as Arrow, with the JSON columns (metadata, labels, exif,
privacy, keep_measures) turned into structs, so ``metadata.site`` or ``labels.boxes`` work in SQL. DuckDB
runs in memory with file system access switched off and the configuration locked: a query reads the
version it was given and nothing else (no ``read_csv('/etc/passwd')``, no ``COPY ... TO``, no extension
installs), whoever wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore
from loupe_workers.curation.privacy import is_restricted
from loupe_workers.storage.manifest import read_version_table
from loupe_workers.storage.rows import sample_rows
from loupe_workers.use.client import JSON_COLUMNS, Version, decode_json_columns

TABLES = {
    "samples": "accepted samples of the version, one row each (the manifest)",
    "rejected": "samples left out: rejected, quarantined and dropped duplicates, with their reasons",
    "lineage": "edges raw object -> sample -> version, with each sample's disposition",
}


class QueryError(ValueError):
    """A query DuckDB refused (syntax, unknown table or column, a forbidden statement)."""


@dataclass(frozen=True)
class QueryResult:
    table: pa.Table
    tables: tuple[str, ...]  # the version's tables the query read


def referenced_tables(sql: str) -> tuple[str, ...]:
    """The version tables a query names, so only those are read (a large rejected file costs time)."""
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql)}
    return tuple(name for name in TABLES if name in words)


def version_table(store: ObjectStore, record: VersionRecord, name: str, allow_restricted: bool) -> pa.Table:
    """One of the version's tables as Arrow, JSON columns as structs, restricted samples only if allowed."""
    if name == "samples":
        return Version(store, record, allow_restricted=allow_restricted).to_arrow()
    table = read_version_table(store, record, "rejected" if name == "rejected" else "lineage")
    if name == "rejected":
        if not allow_restricted:  # a left-out sample's metadata may still name a face or a plate
            flags = sample_rows(table.select([c for c in ("flags",) if c in table.column_names]))
            mask = [not is_restricted(row) for row in flags]
            table = table if all(mask) else table.filter(pa.array(mask, pa.bool_()))
        table = decode_json_columns(table, JSON_COLUMNS)
    return table


def run_query(
    store: ObjectStore, record: VersionRecord, sql: str, *, allow_restricted: bool = False
) -> QueryResult:
    """The result of ``sql`` over the version's tables (samples, rejected, lineage)."""
    import duckdb

    names = referenced_tables(sql)
    connection = duckdb.connect(":memory:")
    try:
        for name in names:
            connection.register(name, version_table(store, record, name, allow_restricted))
        # After registering (which needs no file access): the query itself may touch no file.
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
        try:
            relation = connection.sql(sql)
            table = relation.to_arrow_table() if relation is not None else pa.table({})
        except duckdb.Error as exc:
            raise QueryError(_one_line(exc, names)) from exc
    finally:
        connection.close()
    return QueryResult(table=table, tables=names)


def _one_line(exc: Exception, names: Iterable[str]) -> str:
    text = " ".join(str(exc).split())
    if "does not exist" in text and "Table with name" in text:
        known = ", ".join(TABLES)
        return f"{text} (the tables are {known}; `loupe query DATASET --schema` lists their columns)"
    return text if len(text) <= 400 else text[:397] + "..."


def schema_text(store: ObjectStore, record: VersionRecord) -> list[tuple[str, str, str]]:
    """(table, column, type) of every column of the version's tables, as queries see them."""
    found: list[tuple[str, str, str]] = []
    for name in TABLES:
        table = version_table(store, record, name, allow_restricted=True)
        found.extend((name, field.name, str(field.type)) for field in table.schema)
    return found
