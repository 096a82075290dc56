"""The conformance corpora written by ``supabase.writer`` (COPY and REST) read back equal.

"Equal" is decided by PostgreSQL, not by the product: for every cell, the written column's value
and the reference value read through the same column type print the same (``::text``), so ``8.0``
and ``8`` in a ``numeric(3,1)`` are equal while ``1.5`` and ``1.50`` in ``jsonb`` are not. The
reference is the source itself: the PostgreSQL corpus table, or MariaDB's raw text protocol
bound as plain parameters (no COPY, no CSV) into a text table.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL

from osiris_dagster.sources.sql_extract import extract_to_staging
from osiris_dagster.staging import ExtractedTable, iter_staged_batches
from osiris_dagster.targets.supabase.postgres_copy import PostgresTarget, copy_write
from osiris_dagster.targets.supabase.postgres_ddl import create_table_sql
from osiris_dagster.targets.supabase.rest import SupabaseRestWriter
from osiris_dagster.targets.supabase.value_check import UnloadableValueError, checked_batches
from tests.sources.corpus import MARIADB_COLUMNS, POSTGRES_COLUMNS, POSTGRES_SETUP, rows_sql
from tests.sources.test_conformance_mariadb import create_corpus, server_text
from tests.supabase.conftest import SERVICE_KEY
from tests.supabase.postgrest_server import PostgrestServer

pytestmark = [pytest.mark.postgres, pytest.mark.mariadb]

# MariaDB columns Postgres cannot hold as they are (zero dates; the NUL in vc): refused, see below.
_ZERO_DATE_COLUMNS = ("dte", "dt0", "dt3", "ts2")


def write_both_ways(pg: psycopg.Connection, conninfo: str, server: PostgrestServer, staged: ExtractedTable) -> None:
    for table in ("corpus_copy", "corpus_rest"):
        pg.execute(create_table_sql("public", table, staged.schema, ["id"]))  # type: ignore[arg-type]
    pg.execute("NOTIFY pgrst, 'reload schema'")
    batches = iter_staged_batches(staged.path)
    copy_write(PostgresTarget(conninfo, "public", "corpus_copy"), "append", staged.schema, batches, primary_key=["id"])
    with SupabaseRestWriter(server.url, SERVICE_KEY, "public", "corpus_rest") as writer:
        writer.write("append", staged.schema, iter_staged_batches(staged.path), primary_key=["id"], batch_size=5)


def differences(
    pg: psycopg.Connection, reference: str, written: str, cast: bool, json_by_value: bool = False
) -> list[tuple[str, list[int]]]:
    """Columns whose values differ between ``reference`` and ``written``, with the differing ids."""
    columns = pg.execute(
        "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c "
        "JOIN pg_attribute a ON a.attrelid = %s::regclass AND a.attname = c.column_name "
        "WHERE table_name = %s AND column_name <> 'id' ORDER BY ordinal_position",
        [written, written],
    ).fetchall()
    assert columns, f"{written} has no columns"
    out = []
    for name, type_name in columns:
        column = sql.Identifier(name)
        if json_by_value and type_name in ("json", "jsonb"):
            # Over REST a json value is re-serialized (docs/supabase.md): equal as jsonb, not as text.
            ids = pg.execute(
                sql.SQL(
                    "SELECT r.id FROM {r} r FULL JOIN {w} w USING (id) WHERE r.{c}::jsonb IS DISTINCT FROM w.{c}::jsonb"
                ).format(r=sql.Identifier(reference), w=sql.Identifier(written), c=column)
            ).fetchall()
            if ids:
                out.append((name, [i for (i,) in ids]))
            continue
        reference_value = (
            sql.SQL("(r.{} ::{})::text").format(column, sql.SQL(type_name))
            if cast
            else sql.SQL("r.{}::text").format(column)
        )
        ids = pg.execute(
            sql.SQL(
                "SELECT r.id FROM {r} r FULL JOIN {w} w USING (id) WHERE {ref} IS DISTINCT FROM w.{c}::text ORDER BY 1"
            ).format(r=sql.Identifier(reference), w=sql.Identifier(written), ref=reference_value, c=column)
        ).fetchall()
        if ids:
            out.append((name, [i for (i,) in ids]))
    return out


def test_postgres_corpus_reads_back_equal_over_copy_and_rest(
    pg: psycopg.Connection, pg_conninfo: str, postgrest: PostgrestServer, postgres_database: str, tmp_path: Path
) -> None:
    create, insert = rows_sql("corpus", POSTGRES_COLUMNS)
    pg.execute(POSTGRES_SETUP)  # the target database has the source's enum type (see docs/supabase.md)
    pg.execute(create)  # type: ignore[arg-type]
    pg.execute(insert)  # type: ignore[arg-type]
    url = URL.create("postgresql+psycopg", username="postgres", host="127.0.0.1", port=5432, database=postgres_database)
    staged = extract_to_staging(url, "SELECT * FROM corpus ORDER BY id", tmp_path / "pg.arrow")
    write_both_ways(pg, pg_conninfo, postgrest, staged)
    assert differences(pg, "corpus", "corpus_copy", cast=False) == []
    # Row 2 holds JSON null in js and jb: REST can only send it as SQL NULL, so the writer refuses it
    # (below); every other cell reads back equal.
    assert differences(pg, "corpus", "corpus_rest", cast=False, json_by_value=True) == [("js", [2]), ("jb", [2])]
    with pytest.raises(UnloadableValueError, match=r"row id=2, column 'js': value 'null' is a JSON null"):
        list(checked_batches(iter_staged_batches(staged.path), staged.schema, "public.corpus", ["id"], rest=True))
    assert len(list(checked_batches(iter_staged_batches(staged.path), staged.schema, "public.corpus", ["id"]))) > 0


def test_mariadb_corpus_reads_back_equal_over_copy_and_rest(
    mariadb_url: URL, pg: psycopg.Connection, pg_conninfo: str, postgrest: PostgrestServer, tmp_path: Path
) -> None:
    create_corpus(mariadb_url.database)
    keep = [c.split()[0] for c, _ in MARIADB_COLUMNS]
    select = ", ".join(
        "REPLACE(vc, CHAR(0), '') AS vc" if c == "vc" else f"`{c}`"
        for c in ["id", *keep]
        if c not in _ZERO_DATE_COLUMNS
    )
    query = f"SELECT {select} FROM corpus ORDER BY id"
    staged = extract_to_staging(mariadb_url, query, tmp_path / "my.arrow")
    write_both_ways(pg, pg_conninfo, postgrest, staged)
    # The reference: MariaDB's raw text, bound as parameters into a table of text columns.
    names, rows = server_text(mariadb_url.database, query)
    pg.execute(
        sql.SQL("CREATE TABLE reference (id int, {})").format(
            sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(n)) for n in names[1:])
        )
    )
    with pg.cursor() as cursor:
        placeholders = sql.SQL(", ").join(sql.Placeholder() * len(names))
        cursor.executemany(sql.SQL("INSERT INTO reference VALUES ({})").format(placeholders), rows)
    assert differences(pg, "reference", "corpus_copy", cast=True) == []
    assert differences(pg, "reference", "corpus_rest", cast=True) == []


def test_a_mysql_zero_date_fails_the_write_naming_table_row_and_column(mariadb_url: URL, tmp_path: Path) -> None:
    create_corpus(mariadb_url.database)
    staged = extract_to_staging(mariadb_url, "SELECT id, dte FROM corpus ORDER BY id", tmp_path / "z.arrow")
    with pytest.raises(UnloadableValueError) as raised:
        list(checked_batches(iter_staged_batches(staged.path), staged.schema, "public.films", ["id"]))
    message = str(raised.value)
    assert "public.films" in message and "row id=3" in message and "column 'dte'" in message
    assert "'0000-00-00'" in message


def test_a_nul_character_fails_the_write_naming_its_row_position(mariadb_url: URL, tmp_path: Path) -> None:
    create_corpus(mariadb_url.database)
    staged = extract_to_staging(mariadb_url, "SELECT vc FROM corpus ORDER BY id", tmp_path / "n.arrow")
    with pytest.raises(
        UnloadableValueError, match=r"public.films: row 8 \(the write has no primary_key\), column 'vc'"
    ):
        list(checked_batches(iter_staged_batches(staged.path), staged.schema, "public.films", []))
