"""Fixtures shared by the suite: a scratch project, and real MariaDB / PostgreSQL databases.

Service fixtures never skip: a server that cannot be reached fails the test with the command
that starts it, because a skipped database test in CI hides a broken product.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MARIADB_START = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
POSTGRES_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def add_counting_pipeline(project: Path, name: str, rows: int) -> None:
    """A pipeline ``name`` whose one extract counts to ``rows`` in SQLite: a run that takes a while
    (40,000,000 rows: a few seconds idle), to act on while it runs. Its writer writes
    ``output/count.csv``."""
    (project / "assets" / f"{name.replace('-', '_')}.yaml").write_text(
        f"""\
oml_version: "0.1.0"
name: {name}
description: One deliberately slow SQLite query, to act on a run while it runs.
steps:
- id: extract-count
  component: sql.extractor
  mode: read
  config:
    connection: "@sqlite.movies"
    query: >-
      WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows}) SELECT count(*) AS n FROM c
- id: write-count
  component: filesystem.csv_writer
  mode: write
  needs: ["extract-count"]
  config: {{path: output/count.csv}}
"""
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the repository's project files (assets/, resources/, workspace.yaml) in a temp dir."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("assets", "resources"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "workspace.yaml", root / "workspace.yaml")
    return root


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment for a subprocess: no OSIRIS_*/MYSQL_* leaking in from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSIRIS_", "MYSQL_", "DAGSTER_"))}
    home = tmp_path / "dagster_home"
    home.mkdir()
    env["DAGSTER_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(
    args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osiris_dagster.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def dagster_bin() -> str:
    return str(Path(sys.executable).with_name("dagster"))


def _mariadb_connect(database: str | None = None):  # type: ignore[no-untyped-def]
    import pymysql

    try:
        return pymysql.connect(
            host="127.0.0.1", port=3306, user="root", password="", database=database, charset="utf8mb4", autocommit=True
        )
    except pymysql.err.OperationalError as error:
        pytest.fail(f"MariaDB not reachable at 127.0.0.1:3306 ({error}) — start it with: {MARIADB_START}")


@pytest.fixture
def mariadb_database() -> Iterator[str]:
    """A fresh, uniquely named MariaDB database (dropped afterwards); yields its name."""
    name = f"osiris_t_{uuid.uuid4().hex[:10]}"
    connection = _mariadb_connect()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        connection.close()


@pytest.fixture
def mariadb_connect():  # type: ignore[no-untyped-def]
    return _mariadb_connect


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432 (dropped afterwards); yields its name."""
    import psycopg

    name = f"osiris_t_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True)
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL not reachable at 127.0.0.1:5432 ({error}) — start it with: {POSTGRES_START}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def connect_mariadb(database: str | None = None):  # type: ignore[no-untyped-def]
    """A root connection; an unreachable server fails the test with the command that starts it."""
    return _mariadb_connect(database)


@pytest.fixture
def mariadb_url(mariadb_database: str):  # type: ignore[no-untyped-def]
    """A SQLAlchemy URL of a fresh, uniquely named MariaDB database, dropped afterwards."""
    from sqlalchemy.engine import URL

    return URL.create(
        "mysql+pymysql", username="root", password="", host="127.0.0.1", port=3306, database=mariadb_database
    )


@contextlib.contextmanager
def running_daemon(project: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A real `dagster-daemon run` over the project's workspace, in its own session, stopped whole after.

    Yields the process and its log file (daemon output, for failure messages)."""
    log = project / "dagster-daemon.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
