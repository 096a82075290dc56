"""Secret fuzz: random passwords from all printable ASCII never reach a byte the product writes.

Each password belongs to a real MariaDB user on the test's own database, so the runs that use it
succeed; each wrong password is another random one, so those runs fail at the login. Every
password is used in the three ways a connection can hold it: field style (`password: ${VAR}`),
inside a URL (`url: mysql+pymysql://user:${VAR}@host/db`, the raw password in the variable) and as
a whole URL variable (`url: ${VAR}`, the password percent-encoded by the test). One successful and
one failing run go through `osiris-dagster run` (local), and one of each through the E2B launcher
and the local sandbox server (remote). Then every byte under the project folder, DAGSTER_HOME
(sqlite storage, compute logs, supervisor files), the sandbox server's folders and the captured
console output is searched for each password in the forms it could be written in: raw,
percent-encoded (quote, quote_plus, SQLAlchemy's rendering) and JSON-escaped.

Reproduce a failure with the seed it prints: ``OSIRIS_FUZZ_SEED=<seed> pytest tests/e2e/test_secret_fuzz.py``.
``OSIRIS_FUZZ_USERS`` sets how many users (passwords) a run uses (default 3: 6 random passwords,
18 connections, 4 runs; about a minute and a half on an idle 2-core machine).
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import yaml
from dagster import DagsterRunStatus

from tests.conftest import run_cli
from tests.remote.conftest import dagster_launch, instance_for, remote_home, sandbox_server, wait_for_run

__all__ = ["remote_home", "sandbox_server"]  # fixtures used below, imported from the remote suite

pytestmark = [pytest.mark.e2e, pytest.mark.mariadb, pytest.mark.sandbox]

PRINTABLE = [chr(code) for code in range(32, 127)]
# Characters that break naive URL parsing, quoting, JSON or the ${VAR} syntax: each password gets some.
AWKWARD = "@:/%$'\"\\# {}?&=+"


def random_password(rng: random.Random) -> str:
    chars = [rng.choice(PRINTABLE) for _ in range(rng.randint(12, 24))]
    for char in rng.sample(AWKWARD, 5):
        chars.insert(rng.randrange(len(chars) + 1), char)
    return "".join(chars)


def written_forms(secret: str) -> set[str]:
    """How a password could appear in bytes: computed here, independently of the product's masking."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), quote(secret, safe=" +")}
    forms |= {json.dumps(form)[1:-1] for form in list(forms)}
    forms |= {json.dumps(form)[1:-1] for form in list(forms)}  # JSON inside JSON
    forms.add(repr(secret)[1:-1])
    return forms


def files_containing(forms: set[str], roots: list[Path]) -> list[str]:
    needles = [form.encode() for form in forms]
    hits = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                hits.extend(f"{path}: {needle!r}" for needle in needles if needle in data)
    return hits


@pytest.fixture
def fuzz_seed() -> int:
    seed = int(os.environ.get("OSIRIS_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    print(f"secret fuzz seed: {seed} (reproduce with OSIRIS_FUZZ_SEED={seed})")
    return seed


@pytest.fixture
def fuzz_users(mariadb_database: str, mariadb_connect, fuzz_seed: int) -> Iterator[list[tuple[str, str, str]]]:  # type: ignore[no-untyped-def]
    """(user, password, wrong password) per user, each user able to read the test's database."""
    rng = random.Random(fuzz_seed)
    users = []
    connection = mariadb_connect(mariadb_database)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE people (id INT PRIMARY KEY, name VARCHAR(40))")
        cursor.execute("INSERT INTO people VALUES (1, 'Ada'), (2, 'Grace'), (3, 'Edsger')")
        for _ in range(int(os.environ.get("OSIRIS_FUZZ_USERS", "3"))):
            user = f"ofz_{uuid.uuid4().hex[:10]}"
            password = random_password(rng)
            for host in ("%", "localhost", "127.0.0.1"):
                cursor.execute(f"CREATE USER '{user}'@%s IDENTIFIED BY %s", (host, password))
                cursor.execute(f"GRANT SELECT ON `{mariadb_database}`.* TO '{user}'@'{host}'")
            users.append((user, password, random_password(rng)))
    try:
        yield users
    finally:
        with connection.cursor() as cursor:
            for user, _, _ in users:
                for host in ("%", "localhost", "127.0.0.1"):
                    cursor.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
        connection.close()


def _connections(database: str, count: int) -> dict:
    mysql = {}
    for i in range(count):
        mysql[f"fields_{i}"] = {
            "host": "${MYSQL_HOST}",  # where a sandbox reaches the host (remote_home sets it)
            "port": 3306,
            "database": database,
            "user": f"${{FZ_USER_{i}}}",
            "password": f"${{FZ_PASSWORD_{i}}}",
        }
        mysql[f"url_{i}"] = {
            "url": f"mysql+pymysql://${{FZ_USER_{i}}}:${{FZ_PASSWORD_{i}}}@${{MYSQL_HOST}}:3306/{database}"
        }
        mysql[f"whole_url_{i}"] = {"url": f"${{FZ_URL_{i}}}"}
    return {"connections": {"sqlite": {"movies": {"demo": "movies", "default": True}}, "mysql": mysql}}


def _pipeline(name: str, aliases: list[str]) -> str:
    steps = []
    for alias in aliases:
        steps.append(
            {
                "id": f"extract-{alias}",
                "component": "mysql.extractor",
                "mode": "read",
                "config": {"connection": f"@mysql.{alias}", "query": "SELECT id, name FROM people ORDER BY id"},
            }
        )
        steps.append(
            {
                "id": f"write-{alias}",
                "component": "filesystem.csv_writer",
                "mode": "write",
                "needs": [f"extract-{alias}"],
                "config": {"path": f"output/{name}/{alias}.csv"},
            }
        )
    return yaml.safe_dump({"oml_version": "0.1.0", "name": name, "steps": steps}, sort_keys=False)


def _env(base: dict[str, str], users: list[tuple[str, str, str]], database: str, *, wrong: bool) -> dict[str, str]:
    env = dict(base)
    for i, (user, password, wrong_password) in enumerate(users):
        used = wrong_password if wrong else password
        env[f"FZ_USER_{i}"] = user
        env[f"FZ_PASSWORD_{i}"] = used
        env[f"FZ_URL_{i}"] = f"mysql+pymysql://{user}:{quote(used, safe='')}@{base['MYSQL_HOST']}:3306/{database}"
    return env


def test_random_passwords_never_reach_any_byte_written(  # type: ignore[no-untyped-def]
    project: Path,
    clean_env: dict[str, str],
    mariadb_database: str,
    fuzz_users: list[tuple[str, str, str]],
    fuzz_seed: int,
    remote_home,
    sandbox_server,
    capfd: pytest.CaptureFixture[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    count = len(fuzz_users)
    styles = ("fields", "url", "whole_url")
    aliases = [f"{style}_{i}" for i in range(count) for style in styles]
    for other in (project / "assets").iterdir():  # this test's pipeline only
        other.unlink()
    (project / "resources" / "connections.yaml").write_text(yaml.safe_dump(_connections(mariadb_database, count)))
    (project / "assets" / "fuzz.yaml").write_text(_pipeline("fuzz", aliases))
    _home, base = remote_home()
    good, bad = (
        _env(base, fuzz_users, mariadb_database, wrong=False),
        _env(base, fuzz_users, mariadb_database, wrong=True),
    )
    context = f"seed {fuzz_seed}"
    console = []

    # Local: a successful run, every style of every password, then the same with wrong passwords.
    ok = run_cli(["run", "fuzz", "-v"], cwd=project, env=good)
    console += [ok.stdout, ok.stderr]
    assert ok.returncode == 0, f"{context}\n{ok.stdout}\n{ok.stderr[-3000:]}"
    expected = "id,name\n1,Ada\n2,Grace\n3,Edsger\n"
    for alias in aliases:
        assert (project / "output" / "fuzz" / f"{alias}.csv").read_text() == expected, f"{context}: {alias}"
    failed = run_cli(["run", "fuzz", "-v"], cwd=project, env=bad)
    console += [failed.stdout, failed.stderr]
    assert failed.returncode == 1, f"{context}\n{failed.stdout}\n{failed.stderr[-3000:]}"
    assert "Access denied" in failed.stdout + failed.stderr, context

    # Remote: the same two runs through the E2B launcher and the local sandbox server.
    for output in (project / "output" / "fuzz").iterdir():
        output.unlink()
    instance = instance_for(good)
    remote_ok = wait_for_run(instance, dagster_launch(project, good, job="fuzz"), timeout=240)
    assert remote_ok.status == DagsterRunStatus.SUCCESS, f"{context}: {remote_ok.run_id}"
    for alias in aliases:
        assert (project / "output" / "fuzz" / f"{alias}.csv").read_text() == expected, f"{context}: remote {alias}"
    remote_failed = wait_for_run(instance, dagster_launch(project, bad, job="fuzz"), timeout=240)
    assert remote_failed.status == DagsterRunStatus.FAILURE, f"{context}: {remote_failed.run_id}"

    captured = capfd.readouterr()
    console += [captured.out, captured.err]
    sandboxes = list(tmp_path_factory.getbasetemp().glob("sandboxes*"))  # the sandbox server's folders
    roots = [project, Path(good["DAGSTER_HOME"]), *sandboxes]
    for user, password, wrong_password in fuzz_users:
        for secret in (password, wrong_password):
            forms = written_forms(secret)
            hits = files_containing(forms, roots)
            hits += [f"console: {form!r}" for form in forms for text in console if form in text]
            assert not hits, f"{context}: password {secret!r} of {user} written:\n" + "\n".join(hits[:20])
