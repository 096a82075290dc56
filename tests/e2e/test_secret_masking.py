"""A connection password never reaches any byte the product writes, whether the run works or not."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import run_cli


def bytes_containing(secret: str, *roots: Path) -> list[str]:
    needle = secret.encode()
    hits = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                hits.append(str(path))
    return hits


@pytest.fixture
def mariadb_user(mariadb_database: str, mariadb_connect):  # type: ignore[no-untyped-def]
    user = f"osiris_{uuid.uuid4().hex[:8]}"
    password = f"Zebra-Quartz-{uuid.uuid4().hex[:12]}"
    connection = mariadb_connect()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cursor.execute(f"GRANT SELECT ON `{mariadb_database}`.* TO '{user}'@'%'")
    yield user, password
    with connection.cursor() as cursor:
        cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")
    connection.close()


@pytest.mark.e2e
@pytest.mark.mariadb
def test_password_is_in_no_byte_written_after_success_and_after_wrong_password(
    project: Path, clean_env: dict[str, str], mariadb_database: str, mariadb_user: tuple[str, str]
) -> None:
    user, password = mariadb_user
    load = run_cli(
        ["demo", "load-mysql", "--url", f"mysql+pymysql://root@127.0.0.1:3306/{mariadb_database}"],
        cwd=project,
        env=clean_env,
    )
    assert load.returncode == 0, load.stderr
    env = {
        **clean_env,
        "OSIRIS_PARAM_MOVIES_DB": "mysql.movies",
        "MYSQL_DATABASE": mariadb_database,
        "MYSQL_USER": user,
        "MYSQL_PASSWORD": password,
    }
    ok = run_cli(["run", "movies_to_csv"], cwd=project, env=env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "rows_written: 110" in ok.stdout
    home = Path(clean_env["DAGSTER_HOME"])
    assert not bytes_containing(password, project, home)
    assert password not in ok.stdout + ok.stderr

    wrong = f"Giraffe-Wrong-{uuid.uuid4().hex[:12]}"
    failed = run_cli(["run", "movies_to_csv"], cwd=project, env={**env, "MYSQL_PASSWORD": wrong})
    assert failed.returncode == 1, failed.stdout + failed.stderr[-3000:]
    assert "FAILED" in failed.stdout and "Access denied" in failed.stdout
    assert not bytes_containing(wrong, project, home)
    assert not bytes_containing(password, project, home)
    assert wrong not in failed.stdout + failed.stderr
