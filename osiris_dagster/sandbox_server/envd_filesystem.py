"""envd's ``filesystem.Filesystem`` Connect service (unary methods the SDK's ``files.*`` use).

Error codes are what the SDK branches on (``e2b/sandbox_sync/filesystem/filesystem.py``):
``not_found`` -> ``FileNotFoundException`` / ``exists() is False``;
``already_exists`` -> ``make_dir() is False``. ``WatchDir``/watchers are not
implemented (answered ``unimplemented``).
"""

from __future__ import annotations

import datetime as dt
import grp
import os
import pwd
import shutil
import stat as stat_module
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .connect_protocol import ConnectError, get_uint
from .sandbox import Sandbox

SERVICE = "filesystem.Filesystem"


def entry_info(sandbox: Sandbox, host: Path) -> dict[str, Any]:
    """proto3-JSON ``filesystem.EntryInfo`` of a host path (not following the last link).

    Newer envd reports a symlink with the *target's* type plus ``isSymlink`` (see
    ``map_entry_info`` in ``e2b/sandbox/filesystem/filesystem.py``).
    """
    try:
        link_stat = host.lstat()
    except FileNotFoundError as exc:
        raise ConnectError("not_found", f"path {sandbox.paths.to_sandbox(host)!r} not found") from exc
    info: dict[str, Any] = {"name": host.name, "path": sandbox.paths.to_sandbox(host)}
    st = link_stat
    if stat_module.S_ISLNK(link_stat.st_mode):
        info["isSymlink"] = True
        info["symlinkTarget"] = os.readlink(host)
        try:
            st = host.stat()
        except OSError:
            st = link_stat  # dangling link: report the link itself
    if stat_module.S_ISDIR(st.st_mode):
        info["type"] = "FILE_TYPE_DIRECTORY"
    elif stat_module.S_ISLNK(st.st_mode):
        info["type"] = "FILE_TYPE_SYMLINK"
    else:
        info["type"] = "FILE_TYPE_FILE"
    if st.st_size:
        info["size"] = str(st.st_size)  # int64 -> JSON string
    info["mode"] = stat_module.S_IMODE(st.st_mode)
    info["permissions"] = stat_module.filemode(st.st_mode)
    info["owner"] = _user_name(st.st_uid)
    info["group"] = _group_name(st.st_gid)
    info["modifiedTime"] = (
        dt.datetime.fromtimestamp(st.st_mtime, tz=dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )
    return info


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _path_field(request: dict[str, Any], name: str = "path") -> str:
    value = request.get(name, "")
    if not isinstance(value, str):
        raise ConnectError("invalid_argument", f"{name} must be a string")
    return value


def stat(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    host = sandbox.paths.to_host(_path_field(request))
    return {"entry": entry_info(sandbox, host)}


def list_dir(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    path = _path_field(request)
    depth = max(1, get_uint(request, "depth", 1))
    host = sandbox.paths.to_host(path)
    if not host.exists():
        raise ConnectError("not_found", f"directory {path!r} not found")
    if not host.is_dir():
        raise ConnectError("invalid_argument", f"path {path!r} is not a directory")
    entries: list[dict[str, Any]] = []
    _walk(sandbox, host, depth, entries)
    return {"entries": entries}


def _walk(sandbox: Sandbox, directory: Path, depth: int, out: list[dict[str, Any]]) -> None:
    with os.scandir(directory) as it:
        children = sorted(it, key=lambda e: e.name)
    for child in children:
        child_path = Path(child.path)
        out.append(entry_info(sandbox, child_path))
        # Never descend through symlinks: a link may point outside the root.
        if depth > 1 and child.is_dir(follow_symlinks=False):
            _walk(sandbox, child_path, depth - 1, out)


def make_dir(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    path = _path_field(request)
    host = sandbox.paths.to_host(path)
    if host.exists():
        if host.is_dir():
            raise ConnectError("already_exists", f"directory {path!r} already exists")
        raise ConnectError("invalid_argument", f"path {path!r} exists and is not a directory")
    try:
        host.mkdir(parents=True)
    except FileExistsError as exc:  # lost a race with a concurrent make_dir
        raise ConnectError("already_exists", f"directory {path!r} already exists") from exc
    except NotADirectoryError as exc:
        raise ConnectError("invalid_argument", f"a parent of {path!r} is not a directory") from exc
    return {"entry": entry_info(sandbox, host)}


def remove(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    path = _path_field(request)
    host = sandbox.paths.to_host(path, follow_final_symlink=False)
    if host == sandbox.paths.root:
        raise ConnectError("permission_denied", "refusing to remove the sandbox root")
    if not host.is_symlink() and not host.exists():
        return {}  # as E2B's envd: removing what is not there succeeds (its SDK suite, test_remove.py)
    if host.is_dir() and not host.is_symlink():
        shutil.rmtree(host)
    else:
        host.unlink()
    return {}


def move(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    source = _path_field(request, "source")
    destination = _path_field(request, "destination")
    host_source = sandbox.paths.to_host(source, follow_final_symlink=False)
    host_destination = sandbox.paths.to_host(destination, follow_final_symlink=False)
    if not host_source.is_symlink() and not host_source.exists():
        raise ConnectError("not_found", f"path {source!r} not found")
    host_destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(host_source, host_destination)
    return {"entry": entry_info(sandbox, host_destination)}


def _unimplemented(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    raise ConnectError("unimplemented", "directory watching is not implemented by the local sandbox server")


METHODS: dict[str, Callable[[Sandbox, dict[str, Any]], dict[str, Any]]] = {
    "Stat": stat,
    "ListDir": list_dir,
    "MakeDir": make_dir,
    "Remove": remove,
    "Move": move,
    "CreateWatcher": _unimplemented,
    "GetWatcherEvents": _unimplemented,
    "RemoveWatcher": _unimplemented,
}
