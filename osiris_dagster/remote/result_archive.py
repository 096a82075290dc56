"""The ONE archive a run's sandbox sends back, and unpacking it safely on the host.

Packed by the worker (standard library only) with three roots:

* ``project/logs/run_<id>/...`` — the session directory;
* ``project/<path>`` — each output file the run reported (`artifact_created`, artifact_type
  ``output``), at the same project-relative path a local run writes;
* ``compute_logs/<file key>.<ext>`` — the run's captured stdout/stderr.

Unpacking is all-or-nothing and refuses anything that could write outside the project: absolute
names, ``..`` components, links and device entries are rejected before a single byte is written,
and every target directory is resolved (following links already on disk) and checked to stay
inside the root. Files whose content is already identical are left untouched, so unpacking twice
changes nothing. Changed files are staged on the same filesystem and renamed into place.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

PROJECT_ROOT = "project"
COMPUTE_LOGS_ROOT = "compute_logs"
RESULT_NAME = "result.tar"


class UnsafeArchiveError(Exception):
    """The sandbox returned an archive entry that could write outside its destination."""


@dataclass
class UnpackedResult:
    files: int = 0
    bytes: int = 0
    compute_logs: dict[str, bytes] = field(default_factory=dict)


def pack_result(archive: Path, project_dir: Path, session_dir: Path, outputs: Iterable[str], compute_logs: Path) -> int:
    """Write the result archive (uncompressed: outputs are CSV-sized, and tar is cheap); return files."""
    count = 0
    with tarfile.open(archive, "w") as tar:
        for path in sorted(p for p in session_dir.rglob("*") if p.is_file()):
            tar.add(path, arcname=f"{PROJECT_ROOT}/{path.relative_to(project_dir).as_posix()}")
            count += 1
        for output in sorted(set(outputs)):
            path = (project_dir / output).resolve()
            if path.is_file() and path.is_relative_to(project_dir.resolve()):
                tar.add(path, arcname=f"{PROJECT_ROOT}/{path.relative_to(project_dir.resolve()).as_posix()}")
                count += 1
        if compute_logs.is_dir():
            for path in sorted(p for p in compute_logs.iterdir() if p.is_file()):
                tar.add(path, arcname=f"{COMPUTE_LOGS_ROOT}/{path.name}")
                count += 1
    return count


def output_paths(events_file: Path) -> list[str]:
    """Project-relative paths of the output files a run reported in its session events."""
    if not events_file.exists():
        return []
    paths = []
    for line in events_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            event = json.loads(line)
            if event.get("event") == "artifact_created" and event.get("artifact_type") == "output":
                paths.append(str(event["path"]))
    return paths


def _checked_name(member: tarfile.TarInfo) -> PurePosixPath:
    name = PurePosixPath(member.name)
    if member.name.startswith(("/", "\\")) or name.is_absolute() or ":" in name.parts[0]:
        raise UnsafeArchiveError(f"absolute path in result archive: {member.name!r}")
    if any(part == ".." for part in name.parts):
        raise UnsafeArchiveError(f"'..' in result archive path: {member.name!r}")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"link or special file in result archive: {member.name!r}")
    if name.parts[0] not in (PROJECT_ROOT, COMPUTE_LOGS_ROOT):
        raise UnsafeArchiveError(f"unexpected top-level entry in result archive: {member.name!r}")
    return name


def unpack_result(data: bytes, project_dir: Path) -> UnpackedResult:
    """Write the archive's project files under ``project_dir``; return compute logs in memory.

    Every check runs before a byte is written. Changed files are extracted into a staging
    directory inside the project's state dir (``.osiris/unpack-<id>``, same filesystem) and then
    moved into place with ``rename``: a directory that does not exist yet (e.g. the run's session
    directory) in ONE rename, files into existing directories one rename each. So no reader ever
    sees a half-written file, and there is no per-file temp-write-replace round trip.
    """
    root = project_dir.resolve()
    result = UnpackedResult()
    files: list[tuple[PurePosixPath, bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member, name in [(member, _checked_name(member)) for member in tar.getmembers()]:
            if not member.isfile():
                continue
            content = _read(tar, member)
            if name.parts[0] == COMPUTE_LOGS_ROOT:
                result.compute_logs[name.name] = content
                continue
            relative = PurePosixPath(*name.parts[1:])
            if not relative.parts:
                raise UnsafeArchiveError(f"result archive entry names the project folder itself: {member.name!r}")
            files.append((relative, content))
    for directory in {relative.parent for relative, _ in files}:
        _check_inside(root, root.joinpath(*directory.parts), directory)
    changed = []
    for relative, content in files:
        target = os.path.join(root, *relative.parts)
        try:
            info: os.stat_result | None = os.lstat(target)
        except FileNotFoundError:
            info = None
        if info is not None and stat.S_ISLNK(info.st_mode) and not Path(target).resolve().is_relative_to(root):
            raise UnsafeArchiveError(f"result archive path resolves outside the project: {relative}")
        result.files += 1
        result.bytes += len(content)
        if not _unchanged(target, info, content):
            changed.append((relative, content))
    if changed:
        _stage_and_move(root, changed)
    return result


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    return handle.read() if handle is not None else b""


def _check_inside(root: Path, path: Path, shown: PurePosixPath) -> None:
    """The deepest existing ancestor of ``path`` (links followed) must be inside ``root``."""
    existing = path
    while not os.path.lexists(existing) and existing != root:
        existing = existing.parent
    if not existing.resolve().is_relative_to(root):
        raise UnsafeArchiveError(f"result archive path resolves outside the project: {shown}")


def _unchanged(target: str, info: os.stat_result | None, content: bytes) -> bool:
    if info is None or not stat.S_ISREG(info.st_mode) or info.st_size != len(content):
        return False
    with open(target, "rb") as handle:
        return handle.read() == content


def _stage_and_move(root: Path, files: list[tuple[PurePosixPath, bytes]]) -> None:
    state_dir = root / ".osiris"
    base = state_dir if not state_dir.is_symlink() else root
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f"unpack-{uuid.uuid4().hex}"
    try:
        made: set[str] = set()
        for relative, content in files:
            path = os.path.join(staging, *relative.parts)
            parent = os.path.dirname(path)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        _move_tree(root, staging, PurePosixPath())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_tree(root: Path, staging: Path, relative: PurePosixPath) -> None:
    """Move ``staging/relative``'s entries to ``root/relative`` (a new directory in one rename)."""
    target_dir = root.joinpath(*relative.parts)
    if not target_dir.resolve().is_relative_to(root):  # once per directory: a link created since the checks
        raise UnsafeArchiveError(f"refusing to write through a link outside the project: {relative}")
    with os.scandir(staging.joinpath(*relative.parts)) as entries:
        for entry in entries:
            target = os.path.join(target_dir, entry.name)
            if entry.is_dir(follow_symlinks=False) and os.path.lexists(target):
                if os.path.islink(target) or not os.path.isdir(target):
                    raise UnsafeArchiveError(f"refusing to write through {relative / entry.name}: not a directory")
                _move_tree(root, staging, relative / entry.name)
                continue
            os.replace(entry.path, target)
