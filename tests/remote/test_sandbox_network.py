"""A sandboxed run reaches the host's databases only at the address E2B's cloud would make it use.

With the local server's default network (isolated when the kernel allows it; CI runs as root),
127.0.0.1 inside a sandbox is the sandbox itself, as in E2B's cloud. So a product change that
makes a run connect to 127.0.0.1 fails here, not only in production.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dagster import DagsterRunStatus

from osiris_dagster.sandbox_server import LocalSandboxServer
from osiris_dagster.session.reader import SessionRecord
from tests.conftest import run_cli
from tests.remote.conftest import dagster_launch, instance_for, wait_for_run

pytestmark = [pytest.mark.sandbox, pytest.mark.mariadb]


def test_a_run_at_127_0_0_1_fails_while_the_forwarded_host_address_succeeds(  # type: ignore[no-untyped-def]
    project: Path, remote_home, sandbox_server: LocalSandboxServer, mariadb_database: str
) -> None:
    assert os.geteuid() != 0 or sandbox_server.isolated, "as root the default network must be isolated"
    _, env = remote_home()
    url = f"mysql+pymysql://root@127.0.0.1:3306/{mariadb_database}"
    loaded = run_cli(["demo", "load-mysql", "--url", url], cwd=project, env=env)
    assert loaded.returncode == 0, loaded.stderr
    env = {**env, "OSIRIS_PARAM_MOVIES_DB": "mysql.movies", "MYSQL_DATABASE": mariadb_database}
    assert env["MYSQL_HOST"] == sandbox_server.host_address

    with instance_for(env) as instance:
        loopback = wait_for_run(instance, dagster_launch(project, {**env, "MYSQL_HOST": "127.0.0.1"}))
        assert loopback.status == DagsterRunStatus.FAILURE
        reason = SessionRecord.read(project / "logs" / f"run_{loopback.run_id}").status["reason"]
        assert "Can't connect to MySQL server on '127.0.0.1'" in reason and "Connection refused" in reason, reason
        assert not (project / "output" / "movies.csv").exists()

        forwarded = wait_for_run(instance, dagster_launch(project, env))
        assert forwarded.status == DagsterRunStatus.SUCCESS
        assert (project / "output" / "movies.csv").read_text().count("\n") > 1
