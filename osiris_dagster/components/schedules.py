"""A pipeline's optional `schedule:` block as a Dagster `ScheduleDefinition` for its job.

```yaml
schedule: {cron: "0 6 * * 1-5", timezone: Europe/Prague, enabled: true}
```

The JSON Schema only checks the block's shape (five fields or an @macro); the cron expression
itself is checked here with Dagster's own rule (`is_valid_cron_string`: croniter syntax and
ranges, exactly five fields, no February 30th) and the timezone against the IANA database, so a
pipeline that loads is one Dagster's scheduler accepts. Errors are `PipelineSpecError`s naming
`schedule.cron` / `schedule.timezone`.

Deliberately not here: running anything — the Dagster daemon evaluates the schedule.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string

from osiris_dagster.errors import PipelineSpecError
from osiris_dagster.session.recording_executor import PIPELINE_TAG
from osiris_dagster.spec.model import Pipeline

DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True)
class PipelineSchedule:
    cron: str
    timezone: str
    enabled: bool


def pipeline_schedule(pipeline: Pipeline) -> PipelineSchedule | None:
    """The pipeline's `schedule:` block, checked; None when it has none."""
    block: dict[str, Any] | None = pipeline.document.get("schedule")
    if block is None:
        return None
    file = str(pipeline.file)
    cron = checked_cron(file, "schedule.cron", block["cron"])
    timezone = checked_timezone(file, "schedule.timezone", block.get("timezone"))
    return PipelineSchedule(cron=cron, timezone=timezone, enabled=bool(block.get("enabled", True)))


def checked_cron(file: str, field: str, value: object) -> str:
    """A cron string as Dagster's scheduler accepts it (shared by `schedule:` and `automation:`)."""
    cron = " ".join(str(value).split())
    if not is_valid_cron_string(cron):
        raise PipelineSpecError(
            file,
            field,
            f"'{cron}' is not a valid cron expression: five fields (minute hour day-of-month month day-of-week), "
            "e.g. '0 6 * * 1-5', or @hourly/@daily/@weekly/@monthly",
        )
    return cron


def checked_timezone(file: str, field: str, value: object) -> str:
    timezone = str(value or DEFAULT_TIMEZONE)
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise PipelineSpecError(
            file, field, f"unknown timezone '{timezone}' (an IANA name such as 'Europe/Prague')"
        ) from None
    return timezone


def schedule_name(pipeline: Pipeline) -> str:
    return f"{pipeline.python_name}_schedule"


def build_schedule(pipeline: Pipeline, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition | None:
    schedule = pipeline_schedule(pipeline)
    if schedule is None:
        return None
    return dg.ScheduleDefinition(
        name=schedule_name(pipeline),
        job=job,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING if schedule.enabled else dg.DefaultScheduleStatus.STOPPED,
        tags={PIPELINE_TAG: pipeline.name},
        description=f"Pipeline {pipeline.name}: '{schedule.cron}' ({schedule.timezone})",
    )
