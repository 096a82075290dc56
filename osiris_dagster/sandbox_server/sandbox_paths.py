"""The path rule: how a sandbox path (``/home/user/x``) maps to a host path.

A sandbox owns a host directory ``root``. A sandbox path is resolved like envd does
(relative paths and ``~`` are relative to the user's home, ``/home/user``) and then
re-rooted: ``/home/user/x`` -> ``<root>/home/user/x``. Commands get
``HOME=<root>/home/user`` and run in that directory by default, so a command that
uses home-relative paths (``~/x``, ``$HOME/x``, ``x`` from the default cwd) sees the
same file the file API wrote at ``/home/user/x``. Absolute paths *inside a command*
are host paths (there is no mount namespace); see docs/local-sandbox.md.

Anything that would leave ``root`` is refused: ``..`` climbing above ``/``, and
symlinks whose target resolves outside ``root``. This keeps honest clients honest;
it is not a security boundary (commands run as the server's user).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from .connect_protocol import ConnectError

SANDBOX_USER = "user"
SANDBOX_HOME = f"/home/{SANDBOX_USER}"


def normalize_sandbox_path(path: str) -> str:
    """Absolute, normalized sandbox path; refuses ``..`` that climbs above ``/``.

    ``posixpath.normpath`` would silently clamp ``/../etc`` to ``/etc``; a client
    sending that is confused or probing, so it gets an error instead.
    """
    if "\x00" in path:
        raise ConnectError("invalid_argument", "path contains a NUL byte")
    if path == "~" or path.startswith("~/"):
        path = SANDBOX_HOME + path[1:]
    elif not path.startswith("/"):
        path = f"{SANDBOX_HOME}/{path}" if path else SANDBOX_HOME
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ConnectError("permission_denied", f"path {path!r} escapes the sandbox root")
            parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


class SandboxPaths:
    """Maps sandbox paths into one sandbox's root directory and back."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self.home = self.root / SANDBOX_HOME.lstrip("/")

    def to_host(self, sandbox_path: str, *, follow_final_symlink: bool = True) -> Path:
        """Host path for ``sandbox_path``, refusing anything that resolves outside root.

        ``follow_final_symlink=False`` is for operations on a link itself (remove,
        rename, stat of the link): removing a link that points out is harmless, so only
        its parent directory must resolve inside the root.
        """
        normalized = normalize_sandbox_path(sandbox_path)
        host = self.root / normalized.lstrip("/") if normalized != "/" else self.root
        if follow_final_symlink or host == self.root:
            self._check_inside(Path(os.path.realpath(host)), sandbox_path)
        else:
            self._check_inside(Path(os.path.realpath(host.parent)), sandbox_path)
        return host

    def to_sandbox(self, host_path: Path) -> str:
        """Sandbox path of a host path under root (used for paths in responses)."""
        relative = os.path.relpath(host_path, self.root)
        if relative == ".":
            return "/"
        return posixpath.join("/", relative.replace(os.sep, "/"))

    def is_inside(self, resolved: Path) -> bool:
        return resolved == self.root or self.root in resolved.parents

    def _check_inside(self, resolved: Path, original: str) -> None:
        if not self.is_inside(resolved):
            raise ConnectError("permission_denied", f"path {original!r} resolves outside the sandbox root")
