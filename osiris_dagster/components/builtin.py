"""The built-in OML components: SQL extractors and the CSV writer.

An extractor with `incremental: {cursor: <column>}` reads only the rows above the committed
cursor (`sources.incremental`), and the CSV writer then appends them (`targets.csv_append`); the
committed state comes from Dagster's storage (`components.incremental`).

`mysql.extractor` and `sql.extractor` share one driver: MySQL/MariaDB URLs take the fast
columnar path inside `sources.sql_extract`, any other SQLAlchemy URL the generic streaming path.
"""

from __future__ import annotations

import codecs
import functools
import json
from collections.abc import Mapping
from os.path import normpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osiris_dagster.components.registry import ComponentType, ConfigProblem, WriteTarget
from osiris_dagster.step_run import StepRun, WrittenTarget

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from osiris_dagster.components.incremental import CommittedAppend
    from osiris_dagster.project import ProjectLayout
    from osiris_dagster.sources.incremental import CursorValue
    from osiris_dagster.staging import ExtractedTable
    from osiris_dagster.targets.csv_writer import CsvOptions

# Drivers (pyarrow, pymysql, SQLAlchemy engines) are imported when a step runs, not when
# definitions load: every `dagster` command and code-server start pays for what is imported here.

_EXTRACT_CONFIG: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "connection": {"type": "string"},
        "query": {"type": "string", "minLength": 1},
        "table": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$"},
        "batch_rows": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
        # Read only rows with cursor > the last committed value (docs/automation.md).
        "incremental": {
            "type": "object",
            "additionalProperties": False,
            "required": ["cursor"],
            "properties": {"cursor": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_$]*$"}},
        },
    },
    "oneOf": [{"required": ["query"]}, {"required": ["table"]}],
}

_CSV_CONFIG: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path"],
    "properties": {
        "path": {"type": "string", "minLength": 1},
        "delimiter": {"type": "string", "minLength": 1, "maxLength": 1},
        "header": {"type": "boolean"},
        "encoding": {"type": "string"},
        "newline": {"enum": ["lf", "crlf"]},
        "quoting": {"enum": ["minimal", "all"]},
    },
}


def _table_query(url: URL, table: str) -> str:
    preparer = url.get_dialect()().identifier_preparer
    return "SELECT * FROM " + ".".join(preparer.quote(part) for part in table.split("."))


def run_sql_extract(step: StepRun, *, after: CursorValue | None = None) -> ExtractedTable:
    """Extract the step's query or table; an incremental step only rows with cursor > ``after``."""
    from osiris_dagster.demo.movies import ensure_demo_database
    from osiris_dagster.sources.incremental import incremental_query
    from osiris_dagster.sources.sql_extract import extract_to_staging
    from osiris_dagster.targets.csv_prepared import CsvPreparation

    assert step.connection is not None  # the loader guarantees extractors have one
    if step.connection.demo_database:
        ensure_demo_database(step.project, step.connection.demo_database)
    url = step.connection.sqlalchemy_url(step.project)
    query = step.config.get("query") or _table_query(url, step.config["table"])
    if "incremental" in step.config:
        query = incremental_query(url, query, step.config["incremental"]["cursor"], after)
    return extract_to_staging(
        url,
        query,
        step.staging_path,
        batch_rows=step.config.get("batch_rows", 100_000),
        progress=step.progress("extract"),
        log=step.log,
        consumers=[functools.partial(CsvPreparation, plan) for plan in step.csv_plans],
    )


def csv_options(config: Mapping[str, Any]) -> CsvOptions:
    from osiris_dagster.targets.csv_writer import CsvOptions

    return CsvOptions(
        delimiter=config.get("delimiter", ","),
        header=config.get("header", True),
        encoding=config.get("encoding", "utf-8"),
        newline=config.get("newline", "lf"),
        quoting=config.get("quoting", "minimal"),
    )


def run_csv_writer(
    step: StepRun, inputs: Mapping[str, ExtractedTable], *, committed: CommittedAppend | None = None
) -> WrittenTarget:
    """Write the input table as the step's CSV file; append when the input step is incremental."""
    from osiris_dagster.staging import iter_staged_batches
    from osiris_dagster.targets.csv_prepared import CsvPlan, adopt_prepared
    from osiris_dagster.targets.csv_writer import write_csv

    ((need, table),) = inputs.items()
    cursor = (step.pipeline.step(need).config.get("incremental") or {}).get("cursor")
    options = csv_options(step.config)
    target = step.project.resolve(step.config["path"])
    if cursor is not None:
        return _append_csv(step, table, cursor, target, options, committed)
    result = adopt_prepared(CsvPlan(target, options, step.run_id), table) if step.run_id else None
    if result is not None:
        step.log.info(f"{step.step_id}: the CSV was written while {need} was extracted in this run")
    else:
        result = write_csv(
            iter_staged_batches(table.path),
            table.schema,
            target,
            options,
            progress=step.progress("write"),
            run_id=step.run_id,
        )
    return WrittenTarget(
        uri=step.project.relative(result.path),
        rows_written=result.rows,
        bytes=result.bytes,
        path=result.path,
        storage_kind="csv",
    )


def _append_csv(
    step: StepRun,
    table: ExtractedTable,
    cursor: str,
    target: Path,
    options: CsvOptions,
    committed: CommittedAppend | None,
) -> WrittenTarget:
    from osiris_dagster.components.incremental import CURSOR_FROM_KEY, CURSOR_TO_KEY, STATE_KEY
    from osiris_dagster.sources.incremental import encode_cursor, rows_after, show_cursor, staged_cursor_max
    from osiris_dagster.staging import iter_staged_batches
    from osiris_dagster.targets.csv_append import append_csv

    after = committed.cursor if committed else None
    # Only rows above this writer's own committed cursor: re-writing a staged table twice appends nothing.
    batches = rows_after(iter_staged_batches(table.path), cursor, after)
    result = append_csv(
        batches,
        table.schema,
        target,
        options,
        committed_bytes=committed.bytes if committed else None,
        progress=step.progress("append"),
        run_id=step.run_id,
    )
    # Counted apart from the write, from the staged table, so the row-count check has a real reference.
    expected = sum(batch.num_rows for batch in rows_after(iter_staged_batches(table.path), cursor, after))
    newest = staged_cursor_max(table.path, cursor)
    cursor_to = newest if newest is not None and (after is None or newest > after) else after
    total_rows = (committed.rows if committed else 0) + result.rows
    state = {"cursor": encode_cursor(cursor_to), "bytes": result.bytes, "rows": total_rows}
    return WrittenTarget(
        uri=step.project.relative(result.path),
        rows_written=result.rows,
        bytes=result.bytes,
        path=result.path,
        storage_kind="csv",
        rows_expected=expected,
        metadata={
            CURSOR_FROM_KEY: show_cursor(after),
            CURSOR_TO_KEY: show_cursor(cursor_to),
            "incremental/rows_in_file": total_rows,
            STATE_KEY: json.dumps(state),
        },
    )


def check_csv_config(config: Mapping[str, Any], project: ProjectLayout | None) -> None:
    """Refuse at validation what would otherwise fail mid-run or write in the wrong place."""
    encoding = config.get("encoding")
    if encoding is not None:
        try:
            text_encoding = codecs.lookup(encoding)._is_text_encoding  # type: ignore[attr-defined]
        except LookupError:
            raise ConfigProblem(
                "encoding", f"unknown encoding '{encoding}' (e.g. utf-8, utf-8-sig, latin-1, cp1252)"
            ) from None
        if not text_encoding:
            raise ConfigProblem("encoding", f"'{encoding}' is not a text encoding (e.g. utf-8, latin-1)")
    if project is not None:
        from osiris_dagster.output_roots import resolve_write_path

        resolve_write_path(project, config["path"])


def csv_target(config: Mapping[str, Any], connection: str | None, project: ProjectLayout | None) -> WriteTarget:
    from osiris_dagster.output_roots import resolve_write_path

    path = resolve_write_path(project, config["path"]) if project is not None else Path(normpath(config["path"]))
    shown = project.relative(path) if project is not None else config["path"]
    return WriteTarget(identity=f"file:{path}", shown=shown, field="path")


def _source_kinds(config: Mapping[str, Any], family: str | None) -> frozenset[str]:
    return frozenset({family or "sql"})


SQL_EXTRACTOR = ComponentType(
    name="sql.extractor",
    mode="read",
    description="Extract a query or table from any SQLAlchemy database (SQLite, MySQL, PostgreSQL, ...)",
    config_schema=_EXTRACT_CONFIG,
    connection_families=frozenset({"sql", "sqlite", "mysql", "postgres"}),
    run=run_sql_extract,
    kinds=_source_kinds,
)

MYSQL_EXTRACTOR = ComponentType(
    name="mysql.extractor",
    mode="read",
    description="Extract a query or table from MySQL / MariaDB (columnar fast path)",
    config_schema=_EXTRACT_CONFIG,
    connection_families=frozenset({"mysql"}),
    run=run_sql_extract,
    kinds=_source_kinds,
)

CSV_WRITER = ComponentType(
    name="filesystem.csv_writer",
    mode="write",
    description="Write the rows of one extracted table to a CSV file (atomic replace)",
    config_schema=_CSV_CONFIG,
    connection_families=frozenset(),
    run=run_csv_writer,
    kinds=lambda config, family: frozenset({"csv"}),
    check_config=check_csv_config,
    target_of=csv_target,
)

BUILTIN_COMPONENTS = (SQL_EXTRACTOR, MYSQL_EXTRACTOR, CSV_WRITER)
