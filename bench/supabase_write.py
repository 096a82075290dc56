"""Benchmark: 100,000 generated rows into PostgreSQL over REST batches vs direct COPY.

REST goes through supabase-py to the PostgREST-compatible test server (tests/supabase/
postgrest_server.py) on the same local PostgreSQL, so it measures the writer's REST path
(JSON encoding, batching, HTTP) plus that server's cost, not Supabase's network. COPY goes
straight to PostgreSQL in one transaction.

    .venv/bin/python bench/supabase_write.py [--rows 100000] [--batch-size 500]

Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth); creates and drops its own database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from osiris_dagster.targets.supabase.postgres_copy import PostgresTarget, copy_write
from osiris_dagster.targets.supabase.postgres_ddl import create_table_sql
from osiris_dagster.targets.supabase.rest import SupabaseRestWriter
from tests.supabase.postgrest_server import PostgrestServer

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("score", pa.float64()),
        ("active", pa.bool_()),
        ("created_at", pa.timestamp("us")),
        ("day", pa.date32()),
    ]
)
KEY = "bench-service-role-key"


def batches(rows: int, batch_rows: int = 10_000) -> list[pa.RecordBatch]:
    base = dt.datetime(2024, 1, 1)
    out = []
    for start in range(0, rows, batch_rows):
        ids = range(start, min(start + batch_rows, rows))
        out.append(
            pa.RecordBatch.from_pydict(
                {
                    "id": list(ids),
                    "name": [f'name {i} - ünïcode, "quoted"' for i in ids],
                    "amount": [Decimal(i % 100_000) / 100 for i in ids],
                    "score": [i / 7 for i in ids],
                    "active": [i % 2 == 0 for i in ids],
                    "created_at": [base + dt.timedelta(seconds=i) for i in ids],
                    "day": [(base + dt.timedelta(days=i % 3650)).date() for i in ids],
                },
                schema=SCHEMA,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    data = batches(args.rows)
    name = f"osiris_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    conninfo = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        with psycopg.connect(conninfo, autocommit=True) as pg:
            for table in ("via_copy", "via_rest"):
                pg.execute(create_table_sql("public", table, SCHEMA, ["id"]))  # type: ignore[arg-type]
        started = time.perf_counter()
        copied = copy_write(PostgresTarget(conninfo, "public", "via_copy"), "append", SCHEMA, data).rows
        copy_s = time.perf_counter() - started
        with (
            PostgrestServer(conninfo, KEY) as server,
            SupabaseRestWriter(server.url, KEY, "public", "via_rest") as rest,
        ):
            started = time.perf_counter()
            posted = rest.write("append", SCHEMA, data, batch_size=args.batch_size)
            rest_s = time.perf_counter() - started
        with psycopg.connect(conninfo) as pg:
            counts = [pg.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("via_copy", "via_rest")]  # type: ignore[index]
        assert counts == [args.rows, args.rows] == [copied, posted], counts
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    print(f"{args.rows:,} rows, 7 columns (REST batch_size {args.batch_size})")
    print(f"{'transport':<14}{'seconds':>10}{'rows/s':>14}")
    print(f"{'direct COPY':<14}{copy_s:>10.2f}{args.rows / copy_s:>14,.0f}")
    print(f"{'REST batches':<14}{rest_s:>10.2f}{args.rows / rest_s:>14,.0f}")
    print(f"COPY is {rest_s / copy_s:.1f}x faster")


if __name__ == "__main__":
    main()
