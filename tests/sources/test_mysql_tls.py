"""TLS to a MySQL source, on both read paths, against a MariaDB of the test's own that serves TLS.

The expected cells are the server's own text (the `mysql` client over the server's socket); the
account `tls_only` is refused by the server without TLS, so a read that succeeds went over TLS (a
read is one pymysql connection, whichever path splits its rows).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from osiris_dagster.sources.errors import SourceError
from osiris_dagster.sources.mysql_reader import FORCE_PATH_ENV
from osiris_dagster.sources.sql_extract import extract_to_staging
from osiris_dagster.staging import iter_staged_batches
from tests.sources.tls_mariadb import TlsServer, tls_mariadb

QUERY = "SELECT id, label, amount, born FROM things ORDER BY id"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_mariadb(tmp_path_factory.mktemp("tls") / "server") as running:
        running.admin(
            "CREATE TABLE tls_source.things (id INT PRIMARY KEY, label VARCHAR(40), amount DECIMAL(12,4), born DATE);"
            " INSERT INTO tls_source.things VALUES"
            " (1, 'über, \"quoted\"', -12.5, '2024-02-29'), (2, NULL, 0, '0000-00-00'), (3, '', 99999999.9999, NULL);"
        )
        yield running


@pytest.fixture(scope="module")
def server_without_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_mariadb(tmp_path_factory.mktemp("plain") / "server", tls=False) as running:
        running.admin(
            "CREATE TABLE tls_source.things (id INT PRIMARY KEY, label VARCHAR(40), amount DECIMAL(12,4), born DATE);"
            " INSERT INTO tls_source.things VALUES (1, 'plain', 1.5, '2024-01-01');"
        )
        yield running


def _server_text(server: TlsServer) -> list[tuple[str | None, ...]]:
    """The rows as the server prints them (`mysql --batch`; NULL as the client's NULL word)."""
    printed = server.admin(f"USE tls_source; {QUERY}").splitlines()[1:]
    return [tuple(None if cell == "NULL" else cell for cell in line.split("\t")) for line in printed]


def _staged_rows(path: Path) -> list[tuple[str | None, ...]]:
    table = pa.Table.from_batches(list(iter_staged_batches(path)))
    return [tuple(row.values()) for row in table.to_pylist()]


def _extract(url: str, target: Path, caplog: pytest.LogCaptureFixture) -> list[tuple[str | None, ...]]:
    log = logging.getLogger("tests.mysql_tls")
    with caplog.at_level(logging.INFO, logger=log.name):
        extract_to_staging(url, QUERY, target, log=log)
    return _staged_rows(target)


def _fell_back(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "reading through pymysql" in r.getMessage()]


@pytest.mark.parametrize("path", ["fast", "generic"])
def test_a_source_named_with_its_ca_is_read_over_verified_tls_on_either_path(
    server: TlsServer, path: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "generic":
        monkeypatch.setenv(FORCE_PATH_ENV, "generic")
    url = server.url("tls_only", ssl_ca=str(server.ca), ssl_verify_identity="true")
    assert _extract(url, tmp_path / "things.arrow", caplog) == _server_text(server)
    assert not _fell_back(caplog)


def test_a_certificate_the_named_ca_did_not_sign_fails_the_read_and_stages_nothing(
    server: TlsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "things.arrow"
    with pytest.raises(SourceError, match="certificate verify failed"):
        _extract(server.url("anyway", ssl_ca=str(server.other_ca), ssl_verify_cert="true"), target, caplog)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_tls_disabled_is_refused_by_a_server_that_requires_it_with_its_own_message(
    server: TlsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SourceError, match="Access denied for user 'tls_only'"):
        _extract(server.url("tls_only", ssl_disabled="true"), tmp_path / "things.arrow", caplog)


def test_a_client_certificate_is_presented_on_the_fast_path(
    server: TlsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client certificate is pymysql's to present; the C row reader then splits the rows (the
    connectorx reader could not present one and sent such a source to the generic path)."""
    certificate = server.ca.parent / "server.pem"  # any certificate with its key will do for the server
    key = server.ca.parent / "server-key.pem"
    url = server.url("tls_only", ssl_ca=str(server.ca), ssl_cert=str(certificate), ssl_key=str(key))
    assert _extract(url, tmp_path / "things.arrow", caplog) == _server_text(server)
    assert not _fell_back(caplog)


def test_an_unknown_option_fails_naming_it_before_connecting(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = "mysql+pymysql://nobody@127.0.0.1:9/none?ssl_ca=ca.pem&ssl_verify_certs=true"  # port 9: nothing listens
    with pytest.raises(SourceError, match="'ssl_verify_certs' is not one the reader applies"):
        _extract(url, tmp_path / "things.arrow", caplog)
    with pytest.raises(SourceError, match="'maybe' is not true or false"):
        _extract("mysql+pymysql://nobody@127.0.0.1:9/none?ssl_verify_cert=maybe", tmp_path / "t.arrow", caplog)


def test_a_sensors_source_fingerprint_uses_the_same_tls_options(server: TlsServer) -> None:
    """The change sensor reads the source through SQLAlchemy: with the reader's options, not SQLAlchemy's reading."""
    from sqlalchemy.engine import make_url

    from osiris_dagster.sources.fingerprint import source_fingerprint

    checksum = server.admin("CHECKSUM TABLE tls_source.things").splitlines()[1].split("\t")[1]
    verified = make_url(server.url("tls_only", ssl_ca=str(server.ca), ssl_verify_cert="true"))
    assert source_fingerprint(verified, table="things", query=None) == f"checksum:{checksum}"
    unsigned = make_url(server.url("anyway", ssl_ca=str(server.other_ca), ssl_verify_cert="true"))
    with pytest.raises(Exception, match="certificate verify failed"):
        source_fingerprint(unsigned, table="things", query=None)


@pytest.mark.parametrize(
    ("server_fixture", "user"),
    [("server", "tls_only"), ("server", "anyway"), ("server_without_tls", "anyway")],
    ids=["tls-required", "tls-offered", "no-tls"],
)
def test_without_options_the_fast_path_reads_whatever_the_server_offers_without_falling_back(
    request: pytest.FixtureRequest,
    server_fixture: str,
    user: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """pymysql's "preferred" on the fast path: TLS when the server offers it, none when not.

    Before the C row reader, connectorx connected on its own, without TLS: an account that
    requires it was refused, and connectorx retried for ~30 s printing the refusals on the console
    before the reader fell back; its own `ssl-mode=preferred` did the same against a server
    without TLS. Kept as a regression test of the one-connection design."""
    server: TlsServer = request.getfixturevalue(server_fixture)
    started = time.monotonic()
    rows = _extract(server.url(user), tmp_path / "things.arrow", caplog)
    elapsed = time.monotonic() - started
    assert rows == _server_text(server)
    assert not _fell_back(caplog)
    console = capfd.readouterr()
    assert "r2d2" not in console.err + console.out and "Access denied" not in console.err + console.out
    assert elapsed < 20, f"{elapsed:.1f} s: a refused connection was retried"  # not a speed target
