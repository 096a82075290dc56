"""How a pipeline file that does not load is shown in Dagster: never a silent skip.

Each broken file becomes, in the code location that loads every valid pipeline beside it:

* an asset ``broken_pipelines/<file stem>`` in the group ``broken_pipelines``, whose description
  and metadata (``osiris/pipeline_file``, ``osiris/error``) carry the error, so the asset graph
  and catalog show it; materializing it fails with the same error;
* a job ``broken_<file stem>`` selecting it, so `dagster job list` and the UI's job list show it
  where the user looks for their pipeline's job, and launching it says why it cannot run;
* a warning in the code server's log and a definitions-level metadata entry
  (``osiris/broken_pipelines``: file -> error) for tools that read definitions programmatically.

Chosen over an asset check (a check is only evaluated when something runs, so a broken file
would look healthy until then) and over failing the whole location (one typo would stop every
other pipeline's schedules and sensors). Errors are masked like any other text the product writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from osiris_dagster.project import ProjectLayout

BROKEN_GROUP = "broken_pipelines"
BROKEN_PIPELINES_METADATA_KEY = "osiris/broken_pipelines"


def broken_pipeline_defs(project: ProjectLayout, path: Path, message: str, taken: set[str]) -> dg.Definitions:
    """An always-failing asset and job named after the broken file, carrying its error."""
    name = _unique(f"broken_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}", taken)
    taken.add(name)
    shown = project.relative(path)
    summary = f"BROKEN pipeline file {shown}: {message}"

    @dg.asset(
        key=dg.AssetKey([BROKEN_GROUP, name]),
        group_name=BROKEN_GROUP,
        description=f"{summary}\n\nFix the file, then reload the code location.",
        metadata={"osiris/pipeline_file": shown, "osiris/error": message},
        kinds={"osiris"},
    )
    def broken_pipeline() -> Iterator[dg.Output[None]]:
        raise dg.Failure(description=summary, metadata={"osiris/pipeline_file": shown})
        yield  # a generator, so Dagster does not require an IO manager for a return value

    job = dg.define_asset_job(name=name, selection=[broken_pipeline.key], description=summary)
    return dg.Definitions(assets=[broken_pipeline], jobs=[job])


def _unique(name: str, taken: set[str]) -> str:
    candidate, index = name, 2
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    return candidate
