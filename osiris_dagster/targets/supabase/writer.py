"""The ``supabase.writer`` component: one extracted table into one Supabase (Postgres) table.

This module is the component's declaration (config schema, registration through the
``osiris_dagster.components`` entry point) and the orchestration of one write: choose the
transport, plan and run the DDL, emit the ``write.*`` / ``table.ddl_*`` events, return the
``WrittenTarget``. The transports themselves live in ``supabase_rest`` (PostgREST through
supabase-py, batched, retried) and ``postgres_copy`` (COPY in one transaction, when the
connection has ``pg_dsn``); the type mapping in ``postgres_ddl``.

Deliberately not here: the ``rows_written`` metric, the materialization and the row-count check
(the framework records them from the returned ``WrittenTarget``), step_start / step_failed
events and masking of the final error (``step_execution`` does both).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from osiris_dagster.components.registry import ComponentType, WriteTarget
from osiris_dagster.connections import Connection
from osiris_dagster.secrets import mask_text
from osiris_dagster.step_run import StepRun, WrittenTarget

if TYPE_CHECKING:
    import psycopg
    import pyarrow as pa

    from osiris_dagster.staging import ExtractedTable

# The transports (supabase-py, psycopg, pyarrow) are imported when a write runs: this module is
# loaded through the entry point whenever definitions load, and supabase-py alone costs ~0.5 s.

__all__ = ["SUPABASE_WRITER", "SupabaseWriteError", "run_supabase_writer"]

_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_$]*$"
_KEY = {
    "oneOf": [
        {"type": "string", "pattern": _IDENTIFIER},
        {"type": "array", "items": {"type": "string", "pattern": _IDENTIFIER}, "minItems": 1, "uniqueItems": True},
    ]
}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["table"],
    "properties": {
        "connection": {"type": "string"},
        "table": {"type": "string", "pattern": _IDENTIFIER},
        "schema": {"type": "string", "pattern": _IDENTIFIER, "default": "public"},
        "write_mode": {"enum": ["append", "upsert", "replace"], "default": "append"},
        # The columns identifying a row (upsert's ON CONFLICT target, replace's diff key).
        "primary_key": _KEY,
        "batch_size": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 500},
        "create_if_missing": {"type": "boolean", "default": False},
        "transport": {"enum": ["auto", "rest", "direct"], "default": "auto"},
        "retry": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "attempts": {"type": "integer", "minimum": 1, "maximum": 20},
                "base_delay_s": {"type": "number", "minimum": 0, "maximum": 60},
                "max_delay_s": {"type": "number", "minimum": 0, "maximum": 600},
            },
        },
    },
    "if": {"required": ["write_mode"], "properties": {"write_mode": {"enum": ["upsert", "replace"]}}},
    "then": {"required": ["primary_key"]},
}


@dataclass(frozen=True)
class _TableWrite:
    """One write of staged batches into one table, whichever transport carries it."""

    step: StepRun
    connection: Connection
    schema: str
    table: str
    mode: str
    arrow_schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    key: Sequence[str]
    ddl: str | None  # CREATE TABLE to run when the table is missing (create_if_missing), else None
    progress: Callable[[int], None]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


class SupabaseWriteError(Exception):
    """A write that cannot proceed, with a message saying what to change."""


def _key_columns(config: Mapping[str, Any]) -> list[str]:
    key = config.get("primary_key")
    if key is None:
        return []
    return [key] if isinstance(key, str) else list(key)


def _transport(config: Mapping[str, Any], connection: Connection) -> str:
    choice = config.get("transport", "auto")
    has_dsn = bool(connection.fields.get("pg_dsn"))
    if choice == "direct" and not has_dsn:
        raise SupabaseWriteError(
            f"transport 'direct' needs pg_dsn in connection {connection.reference} (e.g. pg_dsn: ${{SUPABASE_PG_DSN}})"
        )
    if choice == "auto":
        return "direct" if has_dsn else "rest"
    return str(choice)


def _target_uri(transport: str, connection: Connection, schema: str, table: str) -> str:
    """Where the rows went, without any credential."""
    import psycopg

    from osiris_dagster.targets.supabase.postgres_copy import postgres_conninfo

    if transport == "direct":
        info = psycopg.conninfo.conninfo_to_dict(postgres_conninfo(str(connection.fields["pg_dsn"])))
        host = info.get("host") or "localhost"
        return f"postgres://{host}/{info.get('dbname') or ''}/{schema}.{table}"
    return f"{str(connection.fields['url']).rstrip('/')}/rest/v1/{schema}.{table}"


def run_supabase_writer(step: StepRun, inputs: Mapping[str, ExtractedTable]) -> WrittenTarget:
    from osiris_dagster.staging import iter_staged_batches
    from osiris_dagster.targets.supabase.value_check import checked_batches

    (source,) = inputs.values()
    config = step.config
    connection = step.connection
    assert connection is not None  # the loader guarantees a supabase connection
    schema, table = config.get("schema", "public"), config["table"]
    mode = config.get("write_mode", "append")
    key = _key_columns(config)
    if mode in ("upsert", "replace") and not key:
        raise SupabaseWriteError(f"write_mode '{mode}' needs primary_key (the columns identifying a row)")
    missing = [c for c in key if c not in source.schema.names]
    if missing:
        raise SupabaseWriteError(
            f"primary key column(s) {', '.join(missing)} not among the columns of {step.step.needs[0]}: "
            + ", ".join(source.schema.names)
        )
    transport = _transport(config, connection)
    qualified = f"{schema}.{table}"
    session = step.session
    session.event("write.start", step_id=step.step_id, table=qualified, write_mode=mode, transport=transport)
    started = time.perf_counter()

    log_progress = step.progress("write")

    def progress(rows: int) -> None:
        session.event("write.progress", step_id=step.step_id, rows_written=rows)
        log_progress(rows)

    try:
        ddl = _plan_ddl(step, schema, table, source.schema, key) if config.get("create_if_missing") else None
        staged = iter_staged_batches(source.path)
        batches = checked_batches(staged, source.schema, qualified, key, rest=transport == "rest")
        write = _TableWrite(step, connection, schema, table, mode, source.schema, batches, key, ddl, progress)
        rows = _write_direct(write) if transport == "direct" else _write_rest(write)
    except Exception as error:
        session.event("write.error", step_id=step.step_id, error=mask_text(str(error)) or type(error).__name__)
        raise
    session.event(
        "write.complete",
        step_id=step.step_id,
        rows_written=rows,
        duration_ms=int((time.perf_counter() - started) * 1000),
    )
    return WrittenTarget(
        uri=_target_uri(transport, connection, schema, table),
        rows_written=rows,
        storage_kind="postgres",
        table_name=qualified,
        metadata={"write_mode": mode, "transport": transport},
    )


def _plan_ddl(step: StepRun, schema: str, table: str, arrow_schema: pa.Schema, key: Sequence[str]) -> str:
    from osiris_dagster.targets.supabase.postgres_ddl import create_table_sql

    sql = create_table_sql(schema, table, arrow_schema, key)
    path = step.artifact("ddl_plan.sql", sql, "ddl_plan")
    step.session.event(
        "table.ddl_planned", step_id=step.step_id, table=f"{schema}.{table}", path=step.project.relative(path)
    )
    return sql


def _write_direct(write: _TableWrite) -> int:
    import psycopg

    from osiris_dagster.targets.supabase.postgres_copy import PostgresTarget, copy_write, postgres_conninfo

    step, ddl = write.step, write.ddl
    target = PostgresTarget(postgres_conninfo(str(write.connection.fields["pg_dsn"])), write.schema, write.table)
    created = {"done": False}

    def create_table(pg: psycopg.Connection) -> None:
        # Inside the write's transaction: a failed write leaves no half-made table behind either.
        if ddl is None:
            return
        if pg.execute("SELECT to_regclass(%s)", [target.qualified]).fetchone()[0] is not None:  # type: ignore[index]
            return
        try:
            pg.execute(ddl)  # type: ignore[arg-type]  # generated SQL, identifiers quoted
        except psycopg.Error as error:
            step.session.event(
                "table.ddl_failed", step_id=step.step_id, table=write.qualified, error=mask_text(str(error))
            )
            raise
        created["done"] = True

    result = copy_write(
        target,
        write.mode,
        write.arrow_schema,
        write.batches,
        primary_key=write.key,
        before_write=create_table,
        on_progress=write.progress,
    )
    if created["done"]:
        step.session.event("table.ddl_executed", step_id=step.step_id, table=write.qualified)
    return result.rows


def _write_rest(write: _TableWrite) -> int:
    from osiris_dagster.targets.supabase.rest import RetryPolicy, SupabaseRestWriter

    step = write.step
    retry_config = step.config.get("retry") or {}
    policy = RetryPolicy(
        attempts=retry_config.get("attempts", RetryPolicy.attempts),
        base_delay_s=retry_config.get("base_delay_s", RetryPolicy.base_delay_s),
        max_delay_s=retry_config.get("max_delay_s", RetryPolicy.max_delay_s),
    )

    def on_retry(attempt: int, delay_ms: int, reason: str) -> None:
        step.session.event(
            "write.retry", step_id=step.step_id, attempt=attempt, delay_ms=delay_ms, reason=mask_text(reason)
        )

    fields = write.connection.fields
    with SupabaseRestWriter(
        str(fields["url"]), str(fields["service_role_key"]), write.schema, write.table, retry=policy, on_retry=on_retry
    ) as writer:
        if write.ddl is not None and not writer.table_exists():
            _create_over_dsn(step, write.connection, write.schema, write.table, write.ddl)
        return writer.write(
            write.mode,  # type: ignore[arg-type]
            write.arrow_schema,
            write.batches,
            primary_key=write.key,
            batch_size=step.config.get("batch_size", 500),
            on_progress=write.progress,
        )


def _create_over_dsn(step: StepRun, connection: Connection, schema: str, table: str, ddl: str) -> None:
    """REST cannot run DDL: create the table through pg_dsn, or say exactly what to do instead."""
    import psycopg

    from osiris_dagster.targets.supabase.postgres_copy import postgres_conninfo

    qualified = f"{schema}.{table}"
    dsn = connection.fields.get("pg_dsn")
    if not dsn:
        message = (
            f"table {qualified} does not exist and create_if_missing cannot create it over the REST API: "
            f"add pg_dsn to connection {connection.reference}, or run "
            f"artifacts/{step.step_id}/ddl_plan.sql in the Supabase SQL editor"
        )
        step.session.event("table.ddl_failed", step_id=step.step_id, table=qualified, error=message)
        raise SupabaseWriteError(message)
    try:
        with psycopg.connect(postgres_conninfo(str(dsn)), connect_timeout=10) as pg:
            pg.execute(ddl)  # type: ignore[arg-type]
            # PostgREST caches the schema: ask it to reload so the next request sees the table.
            pg.execute("NOTIFY pgrst, 'reload schema'")
    except psycopg.Error as error:
        step.session.event("table.ddl_failed", step_id=step.step_id, table=qualified, error=mask_text(str(error)))
        raise
    step.session.event("table.ddl_executed", step_id=step.step_id, table=qualified)


def supabase_target(config: Mapping[str, Any], connection: str | None, project: object) -> WriteTarget:
    """Two steps writing one table over one connection race each other: refused at validation."""
    qualified = f"{config.get('schema', 'public')}.{config['table']}"
    reference = connection or "@supabase (default)"
    return WriteTarget(identity=f"supabase:{reference}:{qualified}", shown=f"{qualified} on {reference}", field="table")


SUPABASE_WRITER = ComponentType(
    name="supabase.writer",
    mode="write",
    description="Write one extracted table to a Supabase table (REST batches, or COPY through pg_dsn)",
    config_schema=CONFIG_SCHEMA,
    connection_families=frozenset({"supabase"}),
    run=run_supabase_writer,
    kinds=lambda config, family: frozenset({"supabase", "postgres"}),
    target_of=supabase_target,
)
