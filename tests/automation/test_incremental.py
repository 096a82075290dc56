"""Incremental extraction: only new rows are read, the cursor advances only with a successful run,
and the CSV file ends up holding exactly the source table — no gap, no duplicate, value by value."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from osiris_dagster.components.incremental import committed_append
from osiris_dagster.sources.incremental import decode_cursor, encode_cursor, incremental_query
from tests.automation.helpers import broken_pipelines, repository, write_pipeline

ORDERS = dg.AssetKey(["shop", "extract_orders"])
ORDERS_CSV = dg.AssetKey(["shop", "write_orders_csv"])


def shop_pipeline(*, encoding: str = "utf-8", writer: str = "filesystem.csv_writer") -> dict:
    writer_config = (
        {"path": "output/orders.csv", "encoding": encoding}
        if writer == "filesystem.csv_writer"
        else {"table": "orders"}
    )
    return {
        "oml_version": "0.1.0",
        "name": "shop",
        "steps": [
            {
                "id": "extract-orders",
                "component": "sql.extractor",
                "mode": "read",
                "config": {
                    "connection": "@sqlite.shop",
                    "query": "SELECT * FROM orders",
                    "incremental": {"cursor": "id"},
                },
            },
            {
                "id": "write-orders-csv",
                "component": writer,
                "mode": "write",
                "needs": ["extract-orders"],
                "config": writer_config,
            },
            # An unrelated step: dropping its table makes a run fail *after* the orders were appended.
            {
                "id": "extract-health",
                "component": "sql.extractor",
                "mode": "read",
                "config": {"connection": "@sqlite.shop", "query": "SELECT * FROM health"},
            },
        ],
    }


@pytest.fixture
def shop(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OSIRIS_PROJECT_DIR", str(project))
    for pipeline in (project / "assets").glob("*.yaml"):
        pipeline.unlink()
    (project / "resources" / "connections.yaml").write_text("connections:\n  sqlite:\n    shop: {path: shop.db}\n")
    write_pipeline(project, "shop", shop_pipeline())
    with sqlite3.connect(project / "shop.db") as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount INTEGER)")
        db.execute("CREATE TABLE health (ok INTEGER)")
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return project


def insert(project: Path, *rows: tuple[int, str, int]) -> None:
    with sqlite3.connect(project / "shop.db") as db:
        db.executemany("INSERT INTO orders VALUES (?, ?, ?)", rows)


def sql(project: Path, statement: str) -> None:
    with sqlite3.connect(project / "shop.db") as db:
        db.execute(statement)


def run_shop(project: Path) -> tuple[bool, str]:
    """One run in a freshly opened instance each time: the cursor must survive restarts."""
    with dg.DagsterInstance.from_config(str(project.parent / "dagster_home")) as instance:
        result = repository(project).get_job("shop").execute_in_process(instance=instance, raise_on_error=False)
        return result.success, result.run_id


def materialization(project: Path, key: dg.AssetKey, run_id: str) -> dict:
    with dg.DagsterInstance.from_config(str(project.parent / "dagster_home")) as instance:
        (record,) = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=100).records[:1] or [
            None
        ]
        assert record is not None and record.run_id == run_id
        return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def csv_rows(project: Path) -> list[list[str]]:
    with (project / "output" / "orders.csv").open(newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def table_rows(project: Path) -> list[list[str]]:
    with sqlite3.connect(project / "shop.db") as db:
        rows = db.execute("SELECT id, customer, amount FROM orders ORDER BY id").fetchall()
    return [["id", "customer", "amount"]] + [[str(i), c, str(a)] for i, c, a in rows]


def test_runs_append_only_new_rows_and_failed_runs_never_advance_the_cursor(shop: Path) -> None:
    insert(shop, (1, "ada", 10), (2, "bob", 20))
    ok, run_id = run_shop(shop)
    assert ok
    read = materialization(shop, ORDERS, run_id)
    assert (read["rows_read"], read["incremental/cursor_from"], read["incremental/cursor_to"]) == (2, "(start)", "2")
    assert csv_rows(shop) == table_rows(shop)

    insert(shop, (3, "cyd", 30), (4, "dee", 40))
    ok, run_id = run_shop(shop)
    assert ok
    read = materialization(shop, ORDERS, run_id)
    assert (read["rows_read"], read["incremental/cursor_from"], read["incremental/cursor_to"]) == (2, "2", "4")
    written = materialization(shop, ORDERS_CSV, run_id)
    assert (written["rows_written"], written["incremental/rows_in_file"]) == (2, "4")
    assert csv_rows(shop) == table_rows(shop)

    # The orders are read and appended, then the run fails on another step: nothing is committed ...
    insert(shop, (5, "eve", 50))
    sql(shop, "DROP TABLE health")
    ok, failed_run = run_shop(shop)
    assert not ok
    assert materialization(shop, ORDERS_CSV, failed_run)["incremental/cursor_to"] == "5"
    with dg.DagsterInstance.from_config(str(shop.parent / "dagster_home")) as instance:
        assert committed_append(instance, ORDERS_CSV).cursor == 4  # type: ignore[union-attr]

    # ... so the next successful run reads from 4 again and the file holds row 5 exactly once.
    sql(shop, "CREATE TABLE health (ok INTEGER)")
    insert(shop, (6, "fay", 60))
    ok, run_id = run_shop(shop)
    assert ok
    read = materialization(shop, ORDERS, run_id)
    assert (read["rows_read"], read["incremental/cursor_from"], read["incremental/cursor_to"]) == (2, "4", "6")
    assert csv_rows(shop) == table_rows(shop)

    # A run with nothing new appends nothing and keeps the cursor.
    ok, run_id = run_shop(shop)
    assert ok
    assert materialization(shop, ORDERS, run_id)["incremental/cursor_to"] == "6"
    assert csv_rows(shop) == table_rows(shop)


def test_a_failed_write_rereads_the_rows_instead_of_skipping_them(shop: Path) -> None:
    write_pipeline(shop, "shop", shop_pipeline(encoding="ascii"))
    insert(shop, (1, "ada", 10))
    assert run_shop(shop)[0]
    insert(shop, (2, "zoë", 20), (3, "cyd", 30))  # 'ë' is not ASCII: the writer fails
    ok, run_id = run_shop(shop)
    assert not ok
    assert materialization(shop, ORDERS, run_id)["incremental/cursor_to"] == "3"  # read, but not committed
    sql(shop, "UPDATE orders SET customer = 'zoe' WHERE id = 2")
    insert(shop, (4, "dee", 40))
    ok, run_id = run_shop(shop)
    assert ok
    assert materialization(shop, ORDERS, run_id)["incremental/cursor_from"] == "1"
    assert csv_rows(shop) == table_rows(shop)


def test_rematerializing_the_writer_alone_appends_nothing_twice(shop: Path) -> None:
    insert(shop, (1, "ada", 10), (2, "bob", 20))
    assert run_shop(shop)[0]
    with dg.DagsterInstance.from_config(str(shop.parent / "dagster_home")) as instance:
        job = repository(shop).get_job("shop")
        result = job.execute_in_process(instance=instance, asset_selection=[ORDERS_CSV])
        assert result.success
        # Nothing was due, nothing was written: the row-count check passes on that, not on the extract.
        events = result.all_events
        (check,) = [e.asset_check_evaluation_data for e in events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert check.passed and check.metadata["rows_written"].value == 0
    assert csv_rows(shop) == table_rows(shop)


def test_an_incremental_step_cannot_feed_a_writer_that_cannot_append(shop: Path) -> None:
    connections = shop / "resources" / "connections.yaml"
    connections.write_text(
        connections.read_text()
        + "  supabase:\n    main: {default: true, url: '${SUPABASE_URL}', service_role_key: '${SUPABASE_KEY}'}\n"
    )
    write_pipeline(shop, "shop", shop_pipeline(writer="supabase.writer"))
    assert broken_pipelines(shop)["assets/shop.yaml"].startswith("steps[1].needs[0]: ")


@pytest.mark.parametrize(
    ("url", "cursor", "after", "expected_where"),
    [
        ("sqlite://", "id", None, " ORDER BY id"),
        ("sqlite://", "id", 7, " WHERE id > 7 ORDER BY id"),
        ("sqlite://", "order", "x", """ WHERE "order" > 'x' ORDER BY "order\""""),
        ("mysql+pymysql://h/d", "order", "it's", " WHERE `order` > 'it''s' ORDER BY `order`"),
        ("postgresql+psycopg://h/d", "id", "a'b", " WHERE id > 'a''b' ORDER BY id"),
    ],
)
def test_cursor_literal_and_column_are_rendered_by_the_dialect(
    url: str, cursor: str, after: object, expected_where: str
) -> None:
    from sqlalchemy.engine import make_url

    query = incremental_query(make_url(url), "SELECT * FROM t;", cursor, after)  # type: ignore[arg-type]
    assert query == "SELECT * FROM (SELECT * FROM t) AS osiris_inc" + expected_where


def test_cursor_values_keep_their_type_through_metadata() -> None:
    import datetime as dt
    import decimal

    for value in (7, 2.5, "x", decimal.Decimal("7.90"), dt.datetime(2026, 1, 2, 3, 4, 5, 6), dt.date(2026, 1, 2)):
        back = decode_cursor(encode_cursor(value))
        assert back == value and type(back) is type(value)
