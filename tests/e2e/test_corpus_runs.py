"""The conformance corpora through every way a run starts: the same CSV bytes, the database's own text.

One pipeline extracts the MariaDB and the PostgreSQL corpus (tests/sources/corpus.py) and writes
each as CSV. It runs through ``osiris-dagster run -v`` (on MySQL's fast path, and again forced onto
the generic path), ``dagster job execute`` and one remote run on the local sandbox server
(``dagster job launch`` with the E2B launcher); each run's files must be byte-identical, and equal
to the servers' own text (raw text protocol; ``COPY ... TO STDOUT``).
No console output of any of them may carry a Rust panic.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import psycopg
import pytest

from osiris_dagster.sources.mysql_reader import FORCE_PATH_ENV
from tests.conftest import dagster_bin, run_cli
from tests.remote.conftest import dagster_launch, instance_for, remote_home, sandbox_server, wait_for_run
from tests.sources.corpus import POSTGRES_COLUMNS, POSTGRES_SETUP, rows_sql
from tests.sources.test_conformance_mariadb import create_corpus, expected_csv, server_text

pytestmark = [pytest.mark.mariadb, pytest.mark.postgres, pytest.mark.e2e, pytest.mark.sandbox]

PIPELINE = """\
oml_version: "0.1.0"
name: corpus
steps:
- id: extract-mariadb
  component: mysql.extractor
  mode: read
  config: {connection: "@mysql.corpus", query: "SELECT * FROM corpus ORDER BY id"}
- id: write-mariadb
  component: filesystem.csv_writer
  mode: write
  needs: ["extract-mariadb"]
  config: {path: output/mariadb.csv}
- id: extract-postgres
  component: sql.extractor
  mode: read
  config: {connection: "@postgres.corpus", query: "SELECT * FROM corpus ORDER BY id"}
- id: write-postgres
  component: filesystem.csv_writer
  mode: write
  needs: ["extract-postgres"]
  config: {path: output/postgres.csv, quoting: all, header: false}
"""

CONNECTIONS = """\
connections:
  mysql:
    corpus:
      default: true
      host: ${{MYSQL_HOST:-127.0.0.1}}
      port: 3306
      database: {mariadb}
      user: root
      password: ${{MYSQL_PASSWORD:-}}
  postgres:
    corpus:
      default: true
      url: postgresql+psycopg://postgres@${{POSTGRES_HOST:-127.0.0.1}}:5432/{postgres}
"""

__all__ = ["remote_home", "sandbox_server"]  # the remote-run fixtures, used by this module's test

PANIC_MARKERS = ("panicked at", "stack backtrace", "RUST_BACKTRACE")


@pytest.fixture
def corpus_project(project: Path, mariadb_database: str, postgres_database: str) -> Path:
    create_corpus(mariadb_database)
    create, insert = rows_sql("corpus", POSTGRES_COLUMNS)
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={postgres_database}", autocommit=True) as pg:
        pg.execute(f"ALTER DATABASE \"{postgres_database}\" SET TimeZone = 'Asia/Kolkata'")
        pg.execute(POSTGRES_SETUP)
        pg.execute(create)  # type: ignore[arg-type]
        pg.execute(insert)  # type: ignore[arg-type]
    for path in (project / "assets").glob("*.yaml"):
        path.unlink()  # only the corpus pipeline: every run then does just this work
    (project / "assets" / "corpus.yaml").write_text(PIPELINE)
    (project / "resources" / "connections.yaml").write_text(
        CONNECTIONS.format(mariadb=mariadb_database, postgres=postgres_database)
    )
    return project


def outputs(project: Path) -> dict[str, bytes]:
    files = {name: (project / "output" / name).read_bytes() for name in ("mariadb.csv", "postgres.csv")}
    for name in files:
        (project / "output" / name).unlink()  # the next run must write its own
    return files


def postgres_copy(database: str) -> bytes:
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={database}") as pg, pg.cursor() as cursor:
        buffer = io.BytesIO()
        with cursor.copy("COPY (SELECT * FROM corpus ORDER BY id) TO STDOUT (FORMAT csv, FORCE_QUOTE *)") as copy:
            for chunk in copy:
                buffer.write(chunk)
    return buffer.getvalue()


def test_the_corpus_gives_the_same_bytes_however_the_run_starts(
    corpus_project: Path,
    clean_env: dict[str, str],
    remote_home,
    mariadb_database: str,
    postgres_database: str,  # type: ignore[no-untyped-def]
) -> None:
    consoles: list[str] = []

    cli = run_cli(["run", "corpus", "-v"], cwd=corpus_project, env=clean_env)
    consoles.append(cli.stdout + cli.stderr)
    assert cli.returncode == 0, consoles[-1][-3000:]
    by_cli = outputs(corpus_project)

    # The same run on MySQL's generic path (pymysql's raw text protocol, the C row reader skipped).
    generic = run_cli(["run", "corpus", "-v"], cwd=corpus_project, env={**clean_env, FORCE_PATH_ENV: "generic"})
    consoles.append(generic.stdout + generic.stderr)
    assert generic.returncode == 0, consoles[-1][-3000:]
    by_generic_path = outputs(corpus_project)

    executed = subprocess.run(
        [dagster_bin(), "job", "execute", "-m", "osiris_dagster.definitions", "-a", "defs", "-j", "corpus"],
        cwd=corpus_project,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    consoles.append(executed.stdout + executed.stderr)
    assert executed.returncode == 0, consoles[-1][-3000:]
    by_execute = outputs(corpus_project)

    _home, env = remote_home()  # MYSQL_HOST: where a sandbox reaches the host (not its own 127.0.0.1)
    env = {**env, "POSTGRES_HOST": env["MYSQL_HOST"]}
    run_id = dagster_launch(corpus_project, env, job="corpus")
    with instance_for(env) as instance:
        run = wait_for_run(instance, run_id, timeout=240)
        assert run.is_success, run.status
        consoles.extend(entry.user_message or "" for entry in instance.all_logs(run_id))
    by_remote = outputs(corpus_project)

    assert by_cli == by_generic_path == by_execute == by_remote
    names, rows = server_text(mariadb_database, "SELECT * FROM corpus ORDER BY id")
    assert by_cli["mariadb.csv"] == expected_csv(names, rows)
    assert by_cli["postgres.csv"] == postgres_copy(postgres_database)
    for console in consoles:
        assert not any(marker in console for marker in PANIC_MARKERS), console[-3000:]
