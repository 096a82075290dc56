"""The MariaDB fixture of the driver tests: a real server, a database of the test's own.

Never a skip: an unreachable server fails the test with the command that starts it, because a
skipped database test hides a broken data path.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pymysql
import pytest
from sqlalchemy.engine import URL

MARIADB_HOST, MARIADB_PORT = "127.0.0.1", 3306
MARIADB_UNREACHABLE = (
    "MariaDB not reachable at 127.0.0.1:3306 — start it with: "
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
)


def connect_mariadb(database: str | None = None) -> pymysql.connections.Connection:
    try:
        return pymysql.connect(
            host=MARIADB_HOST,
            port=MARIADB_PORT,
            user="root",
            password="",
            database=database,
            charset="utf8mb4",
            autocommit=True,
        )
    except pymysql.err.OperationalError as error:
        pytest.fail(f"{MARIADB_UNREACHABLE} ({error})")


@pytest.fixture
def mariadb_url() -> Iterator[URL]:
    """A SQLAlchemy URL of a fresh, uniquely named MariaDB database, dropped afterwards."""
    name = f"osiris_drv_{uuid.uuid4().hex[:10]}"
    admin = connect_mariadb()
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield URL.create(
            "mysql+pymysql", username="root", password="", host=MARIADB_HOST, port=MARIADB_PORT, database=name
        )
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
