"""Every row a host instance's storage holds, read straight from its databases, to compare two instances.

Read with SQLAlchemy reflection, not Dagster's APIs: a row that no API reads back (a stray tag,
a duplicated mirror row in SQLite's index shard, a check execution row too many) still counts.
SQLite instances keep one database per file (``runs.db``, the ``index`` shard, a shard per run,
``schedules.db``), PostgreSQL instances one database; rows are keyed by file and table.

Left out, because they legitimately differ between two instances that stored the same events:

* ``instance_info`` (a random id per instance), ``alembic_version``, ``secondary_indexes`` and
  ``kvs`` (migration bookkeeping with wall-clock times);
* ``create_timestamp`` columns (wall-clock time of the insert: ``runs``, ``asset_keys``, ...);
* ``asset_keys.id``: a surrogate key nothing reads (Dagster looks assets up by ``asset_key``); a
  batch inserts its new keys in key order, Dagster in event order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as db
from dagster import DagsterInstance

SKIPPED_TABLES = frozenset({"instance_info", "alembic_version", "secondary_indexes", "kvs"})
SKIPPED_COLUMNS = frozenset({"create_timestamp"})
SKIPPED_TABLE_COLUMNS = frozenset({("asset_keys", "id")})


def storage_rows(target: DagsterInstance) -> dict[str, list[tuple[Any, ...]]]:
    """``{"<database>/<table>": rows}``, each row as (column, value) pairs, in a stable order."""
    url = getattr(target.event_log_storage, "postgres_url", None)
    if url is not None:
        databases = {"postgres": url}
    else:
        history = Path(target.root_directory) / "history"
        schedules = Path(target.root_directory) / "schedules"
        files = [*history.rglob("*.db"), *schedules.rglob("*.db")]
        databases = {str(path.relative_to(target.root_directory)): f"sqlite:///{path}" for path in files}
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for name, database_url in sorted(databases.items()):
        engine = db.create_engine(database_url, poolclass=db.NullPool)
        try:
            metadata = db.MetaData()
            metadata.reflect(engine)
            with engine.connect() as connection:
                for table in metadata.sorted_tables:
                    if table.name in SKIPPED_TABLES:
                        continue
                    columns = [
                        column
                        for column in table.columns
                        if column.name not in SKIPPED_COLUMNS and (table.name, column.name) not in SKIPPED_TABLE_COLUMNS
                    ]
                    result = connection.execute(db.select(*columns))
                    rows[f"{name}/{table.name}"] = sorted(
                        (tuple(zip(result.keys(), values, strict=True)) for values in result),
                        key=repr,
                    )
        finally:
            engine.dispose()
    return rows


def first_difference(expected: list[tuple[Any, ...]], actual: list[tuple[Any, ...]]) -> str:
    """The first row only one side has, with the columns where the other side's nearest row differs."""
    missing = [row for row in expected if row not in actual]
    extra = [row for row in actual if row not in expected]
    if not missing and not extra:
        return "same rows"
    if missing and extra:
        wanted, got = dict(missing[0]), dict(extra[0])
        columns = {
            key: (str(wanted.get(key))[:400], str(got.get(key))[:400])
            for key in wanted
            if wanted.get(key) != got.get(key)
        }
        return f"{len(missing)} rows differ; first, (expected, stored) per differing column: {columns}"
    return f"expected only: {missing[:1]}" if missing else f"stored only: {extra[:1]}"


def assert_same_rows(expected: dict[str, list[tuple[Any, ...]]], actual: dict[str, list[tuple[Any, ...]]]) -> None:
    """The same tables, each with the same rows (`storage_rows` of two homes); names the first difference."""
    assert sorted(actual) == sorted(expected)
    for table, rows in expected.items():
        assert actual[table] == rows, f"{table}: {first_difference(rows, actual[table])}"
