"""Where a project's files live: pipelines, connection profiles, logs, staging, outputs.

A project is a folder holding `assets/` (pipelines) and `resources/connections.yaml`. Every
relative path in a pipeline (a CSV `path`, say) is resolved against the project folder, never
against the process's current directory, so `dagster dev`, `dagster job execute`, the CLI and a
sandboxed run all write to the same relative places.

The project folder is `$OSIRIS_PROJECT_DIR` when set, else the current directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR_ENV = "OSIRIS_PROJECT_DIR"
# Set by the sandbox worker to the HOST's project folder: a sandboxed run's files land there.
PUBLISHED_DIR_ENV = "OSIRIS_PUBLISHED_PROJECT_DIR"


@dataclass(frozen=True)
class ProjectLayout:
    root: Path

    @classmethod
    def discover(cls, root: Path | str | None = None) -> ProjectLayout:
        if root is None:
            root = os.environ.get(PROJECT_DIR_ENV) or Path.cwd()
        return cls(Path(root).resolve())

    @property
    def assets_dir(self) -> Path:
        return self.root / "assets"

    @property
    def connections_file(self) -> Path:
        return self.root / "resources" / "connections.yaml"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def state_dir(self) -> Path:
        """Product-owned working files (staged tables, demo database): safe to delete."""
        return self.root / ".osiris"

    @property
    def staging_dir(self) -> Path:
        return self.state_dir / "staging"

    def session_dir(self, run_id: str) -> Path:
        return self.logs_dir / f"run_{run_id}"

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """A pipeline path made absolute against the project folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else (self.root / candidate)

    def relative(self, path: Path) -> str:
        """How a path is shown in events and metadata: relative to the project when inside it,
        so a local run and a sandboxed run report the same string."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def uri(self, path: Path) -> str:
        """`dagster/uri` of a project file: an absolute file URI of where the user finds it (in a
        sandboxed run, the host's project folder, where the run's files are unpacked)."""
        absolute = self.resolve(path).resolve()
        published = os.environ.get(PUBLISHED_DIR_ENV)
        if published and absolute.is_relative_to(self.root):
            absolute = Path(published) / absolute.relative_to(self.root)
        return absolute.as_uri()

    def pipeline_files(self) -> list[Path]:
        return sorted(p for p in self.assets_dir.glob("*.y*ml") if p.suffix in {".yaml", ".yml"})
