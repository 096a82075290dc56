"""The driver tests' MariaDB fixture: the suite's fresh database (tests/conftest.py), as a URL."""

from __future__ import annotations

import pymysql
import pytest
from sqlalchemy.engine import URL

from tests.conftest import _mariadb_connect


def connect_mariadb(database: str | None = None) -> pymysql.connections.Connection:
    """A root connection; an unreachable server fails the test with the command that starts it."""
    return _mariadb_connect(database)


@pytest.fixture
def mariadb_url(mariadb_database: str) -> URL:
    """A SQLAlchemy URL of a fresh, uniquely named MariaDB database, dropped afterwards."""
    return URL.create(
        "mysql+pymysql", username="root", password="", host="127.0.0.1", port=3306, database=mariadb_database
    )
