"""A source's connection URL given as a string, read without importing SQLAlchemy.

The readers use a URL's parts (backend, host, port, user, password, database, query). A
``sqlalchemy.engine.URL`` has them; so does ``SourceURL``, parsed here from a string by
SQLAlchemy's own grammar (``dialect[+driver]://[user[:password]@][host|[ipv6]][:port][/database][?query]``,
user, password and database percent-decoded; tests/sources/test_source_url.py checks both parse
the same).

Why: importing SQLAlchemy costs ~0.2 CPU-s, ~0.3 s of wall time on a loaded 2-core machine and
~15 MB of RSS, before the first row is read. A process that only extracts a MySQL table (the
child of bench/extract_csv.py; a script using the library) does not otherwise need it. A Dagster
run has SQLAlchemy loaded already (Dagster's storage is built on it), so there this changes nothing.

Deliberately not here: anything a reader needs SQLAlchemy for. The PostgreSQL reader and the
generic path get a real SQLAlchemy URL (``sqlalchemy_url``), made from the original string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["SourceURL", "source_url", "sqlalchemy_url"]

_GRAMMAR = re.compile(
    r"(?P<drivername>[\w+]+)://"
    r"(?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?"
    r"(?:(?:\[(?P<ipv6>[^/?]+)\]|(?P<ipv4>[^/:?]+))?(?::(?P<port>[^/?]*))?)?"
    r"(?:/(?P<database>[^?]*))?"
    r"(?:\?(?P<query>.*))?"
)


@dataclass(frozen=True)
class SourceURL:
    """The parts of a connection URL string that the readers use, named as SQLAlchemy names them."""

    text: str  # the URL as given (``sqlalchemy_url`` parses it again when SQLAlchemy is needed)
    drivername: str
    username: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)

    def get_backend_name(self) -> str:
        return self.drivername.split("+", 1)[0]


def source_url(url: URL | str) -> URL | SourceURL:
    """``url`` itself when it is a SQLAlchemy URL; a string as a ``SourceURL`` when it parses.

    A string that does not parse goes to SQLAlchemy, which raises its usual error for it.
    """
    if not isinstance(url, str):
        return url
    match = _GRAMMAR.fullmatch(url)
    if match is None or (match["port"] is not None and not match["port"].isdigit()):
        return sqlalchemy_url(url)
    parts = match.groupdict()
    query: dict[str, str | tuple[str, ...]] = {}
    for key, value in parse_qsl(parts["query"] or ""):
        previous = query.get(key)
        if previous is None:
            query[key] = value
        else:
            query[key] = (*((previous,) if isinstance(previous, str) else previous), value)
    decoded = {
        name: unquote(parts[name]) if parts[name] is not None else None for name in ("username", "password", "database")
    }
    return SourceURL(
        text=url,
        drivername=parts["drivername"],
        host=parts["ipv4"] or parts["ipv6"],
        port=int(parts["port"]) if parts["port"] else None,
        query=query,
        **decoded,
    )


def sqlalchemy_url(url: URL | SourceURL | str) -> URL:
    """A SQLAlchemy URL (imports SQLAlchemy)."""
    from sqlalchemy.engine import make_url

    return make_url(url.text if isinstance(url, SourceURL) else url)
