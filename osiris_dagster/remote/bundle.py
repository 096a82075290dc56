"""The ONE archive uploaded into a run's sandbox: code location, product source, run snapshot.

Layout inside the archive (extracted under the sandbox's ``~/osiris``):

* ``code/osiris_dagster/...`` — this package's source as it is on the host, so the code that runs
  in the sandbox is the host's code (it goes first on ``PYTHONPATH``, ahead of any installed copy);
* ``project/assets/``, ``project/resources/``, ``project/workspace.yaml`` — the code location;
* ``run/payload.json`` — the serialized `DagsterRun`, job snapshot and execution plan snapshot;
* ``wheels/`` — only with ``install_deps``: the offline wheel directory;
* ``dagster_home/`` — an empty sqlite instance (its schema already created: that costs a fresh
  worker about a second), built once per host and Dagster version by `ensure_instance_template`.

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


def instance_template_dir(cache_root: Path) -> Path:
    """Where this host keeps the empty sandbox instance for the installed Dagster version."""
    from importlib.metadata import version

    return cache_root / "sandbox_home" / f"dagster-{version('dagster')}"


def ensure_instance_template(cache_root: Path) -> Path:
    """Create (once, atomically) an empty sqlite Dagster instance to ship in every bundle."""
    import shutil
    import tempfile

    from dagster import DagsterInstance

    target = instance_template_dir(cache_root)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    try:
        (temp / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with DagsterInstance.from_config(str(temp)):
            pass
        for path in list(temp.rglob("*")):  # only the storage schemas travel
            if path.is_file() and path.suffix != ".db" and path.name != "dagster.yaml":
                path.unlink()
        temp.rename(target)
    except OSError:
        if not target.is_dir():  # another supervisor won the race: fine
            raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return target


def build_bundle(
    project: ProjectLayout,
    payload: dict[str, str],
    wheel_dir: Path | None = None,
    *,
    include_code: bool = True,
    instance_template: Path | None = None,
) -> bytes:
    """The gzip'd tar to upload; ``payload`` holds the serialized run and snapshots.

    ``include_code=False`` leaves out ``code/`` (a pooled sandbox already holds the same code);
    ``instance_template`` is an `ensure_instance_template` directory.
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
        if instance_template is not None:
            tar.add(instance_template, arcname="dagster_home", filter=_keep)
        if wheel_dir is not None:
            for wheel in sorted(wheel_dir.glob("*.whl")):
                tar.add(wheel, arcname=f"wheels/{wheel.name}", filter=_keep)
    return buffer.getvalue()
