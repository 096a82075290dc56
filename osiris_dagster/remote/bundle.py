"""The ONE archive uploaded into a run's sandbox: code location, product source, run snapshot.

Layout inside the archive (extracted under the sandbox's ``~/osiris``):

* ``code/osiris_dagster/...`` — this package's source as it is on the host, so the code that runs
  in the sandbox is the host's code (it goes first on ``PYTHONPATH``, ahead of any installed copy);
* ``project/assets/``, ``project/resources/``, ``project/workspace.yaml`` — the code location;
* ``run/payload.json`` — the serialized `DagsterRun`, job snapshot and execution plan snapshot;
* ``wheels/`` — only with ``install_deps``: the offline wheel directory.

One archive because every file API call is a round trip (Osiris uploaded file by file). What it
deliberately leaves out: secrets (profiles hold ``${VAR}`` references only; ``.env`` files are
skipped), the project's ``logs/``, ``output/`` and ``.osiris/`` state, and bytecode caches.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import osiris_dagster
from osiris_dagster.project import ProjectLayout

SANDBOX_DIR = "/home/user/osiris"
BUNDLE_NAME = "bundle.tar.gz"
PAYLOAD_PATH = "run/payload.json"
_SKIPPED_NAMES = {"__pycache__", ".env", ".DS_Store"}


def _keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = Path(info.name).name
    if name in _SKIPPED_NAMES or name.startswith(".env") or name.endswith((".pyc", ".pyo")):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_bundle(project: ProjectLayout, payload: dict[str, str], wheel_dir: Path | None = None) -> bytes:
    """The gzip'd tar to upload; ``payload`` holds the serialized run and snapshots."""
    buffer = io.BytesIO()
    # Level 1: the archive is small and local; compression time is latency on every launch.
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1, dereference=True) as tar:
        tar.add(Path(osiris_dagster.__file__).parent, arcname="code/osiris_dagster", filter=_keep)
        for name in ("assets", "resources", "workspace.yaml"):
            source = project.root / name
            if source.exists():
                tar.add(source, arcname=f"project/{name}", filter=_keep)
        data = json.dumps(payload).encode("utf-8")
        info = tarfile.TarInfo(PAYLOAD_PATH)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        if wheel_dir is not None:
            for wheel in sorted(wheel_dir.glob("*.whl")):
                tar.add(wheel, arcname=f"wheels/{wheel.name}", filter=_keep)
    return buffer.getvalue()
