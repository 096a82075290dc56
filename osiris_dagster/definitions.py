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
from osiris_dagster.session.recording_executor import osiris_executor


def build_definitions(project: ProjectLayout | None = None) -> dg.Definitions:
    project = project or ProjectLayout.discover()
    os.environ.setdefault(PROJECT_DIR_ENV, str(project.root))
    pipelines = [
        dg.build_defs_for_component(OmlPipelineComponent(pipeline_file=str(path), project_dir=str(project.root)))
        for path in project.pipeline_files()
    ]
    # The executor is the location's default, so the implicit asset job (UI Materialize, selections
    # across pipelines, backfills, `dagster asset materialize`) runs and records like a pipeline job;
    # one run-failure sensor watches every run of the location.
    location = dg.Definitions(resources=pipeline_resources(), sensors=[run_alert_sensor], executor=osiris_executor)
    return dg.Definitions.merge(*pipelines, location)


defs = build_definitions()
