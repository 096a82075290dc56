"""The connection options the MySQL reader applies, in pymysql's terms.

Options come from the URL's query (``?ssl_ca=...``) or a profile's ``options:`` (which become that
query), under pymysql's names, which are also what SQLAlchemy's MySQL dialects take:

* ``charset`` (default ``utf8mb4``), ``unix_socket``;
* TLS: ``ssl_ca``, ``ssl_cert``, ``ssl_key`` (PEM files), ``ssl_verify_cert``,
  ``ssl_verify_identity``, ``ssl_disabled`` (true/false), with pymysql's meaning: any of the first
  five makes TLS required (``ssl_ca`` alone encrypts without verifying, as in pymysql); the
  verify flags check the certificate against ``ssl_ca`` (or the system's roots) and, for
  identity, the host name; with none of them TLS is used when the server offers it ("preferred").

Both read paths use the one pymysql connection these options make (``sources.mysql_reader``); the
change sensor's fingerprint connects with the same ones (``sources.fingerprint``).

An option the reader does not know fails the step naming it, instead of being ignored: a
misspelt ``ssl_verify_cert`` must not silently mean "do not verify".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from osiris_dagster.sources.errors import SourceError

TLS_FILES = ("ssl_ca", "ssl_cert", "ssl_key")
TLS_FLAGS = ("ssl_verify_cert", "ssl_verify_identity", "ssl_disabled")
MYSQL_OPTIONS = ("charset", "unix_socket", *TLS_FILES, *TLS_FLAGS)
_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class MySQLOptions:
    charset: str = "utf8mb4"
    unix_socket: str | None = None
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    ssl_verify_cert: bool = False
    ssl_verify_identity: bool = False
    ssl_disabled: bool = False

    @classmethod
    def of(cls, query: Mapping[str, Any]) -> MySQLOptions:
        """The options of a URL's query; an unknown option or a value that is no boolean is a `SourceError`."""
        values: dict[str, Any] = {}
        for name, value in query.items():
            if name not in MYSQL_OPTIONS:
                known = ", ".join(MYSQL_OPTIONS)
                raise SourceError(f"MySQL connection option '{name}' is not one the reader applies (known: {known})")
            if not isinstance(value, str):
                raise SourceError(f"MySQL connection option '{name}' is given more than once")
            values[name] = _flag(name, value) if name in TLS_FLAGS else value
        return cls(**values)

    def pymysql_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"charset": self.charset}
        if self.unix_socket:
            args["unix_socket"] = self.unix_socket
        if self.ssl_disabled:
            args["ssl_disabled"] = True
        for name in (*TLS_FILES, "ssl_verify_cert", "ssl_verify_identity"):
            if getattr(self, name):
                args[name] = getattr(self, name)
        return args


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SourceError(f"MySQL connection option '{name}': '{value}' is not true or false")
