"""The ONE archive a run's sandbox sends back, and unpacking it safely on the host.

Packed by the worker (standard library only) with three roots:

* ``project/logs/run_<id>/...`` — the session directory;
* ``project/<path>`` — each output file the run reported (`artifact_created`, artifact_type
  ``output``), at the same project-relative path a local run writes;
* ``compute_logs/<file key>.<ext>`` — the run's captured stdout/stderr.

Unpacking is all-or-nothing and refuses anything that could write outside the project: absolute
names, ``..`` components, links and device entries are rejected before a single byte is written,
and every target is resolved (following links already on disk) and checked to stay inside the
root. Files whose content is already identical are left untouched, so unpacking twice changes
nothing.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
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
    """Write the archive's project files under ``project_dir``; return compute logs in memory."""
    root = project_dir.resolve()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        members = [(member, _checked_name(member)) for member in tar.getmembers()]
        targets = []
        for member, name in members:
            if not member.isfile() or name.parts[0] != PROJECT_ROOT:
                continue
            target = root.joinpath(*name.parts[1:])
            if not target.resolve().is_relative_to(root) or not target.parent.resolve().is_relative_to(root):
                raise UnsafeArchiveError(f"result archive path resolves outside the project: {member.name!r}")
            targets.append((member, target))
        result = UnpackedResult()
        for member, name in members:
            if member.isfile() and name.parts[0] == COMPUTE_LOGS_ROOT:
                result.compute_logs[name.name] = _read(tar, member)
        for member, target in targets:
            content = _read(tar, member)
            result.files += 1
            result.bytes += len(content)
            _write_if_changed(target, content, root)
    return result


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    return handle.read() if handle is not None else b""


def _write_if_changed(target: Path, content: bytes, root: Path) -> None:
    unchanged = target.is_file() and not target.is_symlink() and target.stat().st_size == len(content)
    if unchanged and target.read_bytes() == content:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(root):  # a link created between check and write
        raise UnsafeArchiveError(f"refusing to write through a link outside the project: {target}")
    temp = target.with_name(f".{target.name}.e2b-tmp")
    temp.write_bytes(content)
    os.replace(temp, target)
