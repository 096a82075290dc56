"""A connection URL string reads the same without SQLAlchemy as with it, and the MySQL path never imports it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from osiris_dagster.sources.source_url import SourceURL, source_url

_PARTS = ("drivername", "username", "password", "host", "port", "database")


@pytest.mark.parametrize(
    "text",
    [
        "mysql+pymysql://root@127.0.0.1:3306/osiris_bench",
        "mysql://u:p%40ss%3Aw@host/db",
        "mysql://user:pa:ss@h/db?x=1&x=2&y=",
        "mariadb+pymysql://u:@[::1]:3307/d%20b?charset=latin1&unix_socket=/tmp/s.sock",
        "mysql://%C3%A9t%C3%A9:p@h:1/db?charset=utf8mb4",
        "mysql://:secret@h",
        "mysql://host/",
        "mysql://host",
        "mysql:///db",
        "mysql://u@/db?unix_socket=/x",
        "postgresql+psycopg://postgres@127.0.0.1:5432/osiris",
        "sqlite:///relative/movies.db",
    ],
)
def test_a_url_string_has_the_parts_sqlalchemy_reads_from_it(text: str) -> None:
    ours, theirs = source_url(text), make_url(text)
    assert isinstance(ours, SourceURL)
    assert [getattr(ours, p) for p in _PARTS] == [getattr(theirs, p) for p in _PARTS]
    assert dict(ours.query) == dict(theirs.query)
    assert ours.get_backend_name() == theirs.get_backend_name()


@pytest.mark.parametrize("text", ["not a url", "mysql://h:/db", "mysql://h:12x/db"])
def test_a_string_sqlalchemy_refuses_is_refused_by_sqlalchemy(text: str) -> None:
    with pytest.raises(Exception) as ours:
        source_url(text)
    with pytest.raises(Exception) as theirs:
        make_url(text)
    assert type(ours.value) is type(theirs.value)


def test_extracting_from_mysql_never_imports_sqlalchemy() -> None:
    code = (
        "import sys\n"
        "import osiris_dagster.sources.sql_extract, osiris_dagster.sources.mysql_reader\n"
        "import osiris_dagster.targets.csv_prepared, osiris_dagster.targets.csv_writer\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
