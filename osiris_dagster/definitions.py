"""The code location: every pipeline in the project's `assets/` folder, as Dagster definitions.

Loaded by `workspace.yaml` (`dagster dev -w workspace.yaml`, `dagster job execute -w
workspace.yaml -j <job>`). The project folder is `$OSIRIS_PROJECT_DIR`, else the current
directory; it is exported here so run workers started from this process resolve the same one.
"""

from __future__ import annotations

import os

import dagster as dg

from osiris_dagster.components.pipeline_component import OmlPipelineComponent
from osiris_dagster.components.resources import pipeline_resources
from osiris_dagster.components.sensors import run_alert_sensor
from osiris_dagster.project import PROJECT_DIR_ENV, ProjectLayout


def build_definitions(project: ProjectLayout | None = None) -> dg.Definitions:
    project = project or ProjectLayout.discover()
    os.environ.setdefault(PROJECT_DIR_ENV, str(project.root))
    pipelines = [
        dg.build_defs_for_component(OmlPipelineComponent(pipeline_file=str(path), project_dir=str(project.root)))
        for path in project.pipeline_files()
    ]
    # One run-failure sensor watches every pipeline job of the code location.
    return dg.Definitions.merge(*pipelines, dg.Definitions(resources=pipeline_resources(), sensors=[run_alert_sensor]))


defs = build_definitions()
