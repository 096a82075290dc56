"""`dagster dev -w workspace.yaml` loads the code location cleanly and shows the demo assets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import dagster_bin

QUERY = """
{
  workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } }
  assetNodes { assetKey { path } groupName kinds description hasAssetChecks }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ui(project: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`osiris-dagster ui` on a free port, as a user starts it; returns (process, port, its log)."""
    port = free_port()
    log = project / "ui.log"
    with log.open("w") as output:
        ui = subprocess.Popen(
            [sys.executable, "-m", "osiris_dagster.cli", "ui", "--port", str(port)],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return ui, port, log


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.e2e
def test_dagster_dev_loads_the_workspace_without_warnings(project: Path, clean_env: dict[str, str]) -> None:
    (Path(clean_env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    log = project / "dagster-dev.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [dagster_bin(), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=project,
            env=clean_env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        data = None
        while time.monotonic() < deadline:
            try:
                data = graphql(port, QUERY)["data"]
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["loadStatus"] == "LOADED" and data["assetNodes"]:
                    break
            except (OSError, KeyError, TypeError):
                pass
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        assert data is not None, log.read_text()[-3000:]
        (entry,) = data["workspaceOrError"]["locationEntries"]
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
        assets = {
            "/".join(node["assetKey"]["path"]): node
            for node in data["assetNodes"]
            if node["groupName"] == "movies_to_csv"
        }
        steps = {key: node for key, node in assets.items() if "/source/" not in key}
        sources = sorted(key for key in assets if "/source/" in key)
        assert len(steps) == 10  # the pipeline's 10 steps, plus its 5 source tables as external assets
        tables = ("actors", "directors", "movie_actors", "movies", "reviews")
        assert sources == [f"movies_to_csv/source/{table}" for table in tables]
        assert assets["movies_to_csv/extract_actors"]["kinds"] == ["sqlite"]
        assert assets["movies_to_csv/write_actors_csv"]["kinds"] == ["csv"]
        assert assets["movies_to_csv/write_actors_csv"]["hasAssetChecks"] is True
        assert "actors" in assets["movies_to_csv/extract_actors"]["description"]
        loaded_log = log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    # Dagster's own CLI notice that `dagster dev` is superseded by `dg dev` is not about our code.
    warnings = [
        line
        for line in loaded_log.splitlines()
        if ("WARNING" in line or "Warning" in line) and "SupersessionWarning" not in line
    ]
    assert not warnings, "\n".join(warnings)
