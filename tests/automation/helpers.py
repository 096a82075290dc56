"""Shared helpers of the automation tests: pipelines with extension blocks, definitions of a temp project."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from osiris_dagster.components.broken_pipeline import BROKEN_PIPELINES_METADATA_KEY
from osiris_dagster.definitions import build_definitions
from osiris_dagster.project import ProjectLayout

DEMO_PIPELINE = "assets/movies_to_csv.yaml"


def extend_pipeline(project: Path, **blocks: object) -> Path:
    """Add top-level extension blocks (schedule:, sensor:) to the project's demo pipeline."""
    path = project / DEMO_PIPELINE
    document = yaml.safe_load(path.read_text())
    document.update(blocks)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def write_pipeline(project: Path, name: str, document: dict) -> Path:
    path = project / "assets" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def repository(project: Path) -> dg.RepositoryDefinition:
    return build_definitions(ProjectLayout(project)).get_repository_def()


def broken_pipelines(project: Path) -> dict[str, str]:
    """File -> error of each pipeline file the code location shows as broken (instead of failing to load)."""
    entry = build_definitions(ProjectLayout(project)).metadata.get(BROKEN_PIPELINES_METADATA_KEY)
    return dict(entry.value) if entry is not None else {}
