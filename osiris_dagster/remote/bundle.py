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

import hashlib
import io
import json
import tarfile
from functools import cache
from pathlib import Path

import osiris_dagster
from osiris_dagster.project import ProjectLayout

SANDBOX_DIR = "/home/user/osiris"
BUNDLE_NAME = "bundle.tar.gz"
PAYLOAD_PATH = "run/payload.json"
_SKIPPED_NAMES = {"__pycache__", ".env", ".DS_Store"}


def _keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if _skipped(Path(info.name).name):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _package_dir() -> Path:
    return Path(osiris_dagster.__file__).parent


@cache
def code_hash() -> str:
    """sha256 of the ``code/`` part (paths and contents of the package files the bundle carries).

    A warm pooled sandbox holds the code it was filled with (and has imported it); a run whose
    code hash differs uploads its own code and does not use the warm worker.
    """
    digest = hashlib.sha256()
    root = _package_dir()
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_dir() or any(_skipped(part) for part in relative.parts):
            continue
        digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _skipped(name: str) -> bool:
    return name in _SKIPPED_NAMES or name.startswith(".env") or name.endswith((".pyc", ".pyo"))


def build_code_bundle() -> bytes:
    """Only the ``code/`` part: what a pooled sandbox receives when it is filled."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1, dereference=True) as tar:
        tar.add(_package_dir(), arcname="code/osiris_dagster", filter=_keep)
    return buffer.getvalue()


def build_bundle(
    project: ProjectLayout, payload: dict[str, str], wheel_dir: Path | None = None, *, include_code: bool = True
) -> bytes:
    """The gzip'd tar to upload; ``payload`` holds the serialized run and snapshots.

    ``include_code=False`` leaves out ``code/`` (a pooled sandbox already holds the same code).
    """
    buffer = io.BytesIO()
    # Level 1: the archive is small and local; compression time is latency on every launch.
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1, dereference=True) as tar:
        if include_code:
            tar.add(_package_dir(), arcname="code/osiris_dagster", filter=_keep)
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
