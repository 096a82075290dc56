"""A pipeline's or a step's `automation:` block as a Dagster `AutomationCondition`.

```yaml
automation: eager                                   # or: on_missing
automation: {on_cron: "0 6 * * *", timezone: Europe/Prague}
```

Declarative automation is the alternative to `schedule:`: instead of one job run per cron tick,
an automation sensor evaluated by the daemon requests each asset when its condition holds. A
step's block replaces its pipeline's for that step's asset. Each pipeline with automation gets its
own `AutomationConditionSensorDefinition`, `<pipeline>_automation`, declared RUNNING: Dagster's
implicit `default_automation_condition_sensor` starts STOPPED in open-source Dagster (1.13), so a
pipeline that says `automation:` would otherwise do nothing until someone finds the toggle.

| OML                 | Dagster                                           |
|---------------------|---------------------------------------------------|
| `eager`             | `AutomationCondition.eager()`                     |
| `on_missing`        | `AutomationCondition.on_missing()`                |
| `{on_cron, timezone}` | `AutomationCondition.on_cron(cron, timezone)`   |

The source tables (external assets upstream of the extracts) are never materialized by Dagster,
so every condition *ignores* them: otherwise `on_cron` (which waits for all upstream assets to
update after the tick) would wait forever.

Checked when the pipeline loads (`PipelineSpecError`, exit 2): the cron string and timezone by
Dagster's own rules, and `automation:` next to `schedule:` is refused (the two would start the
same assets twice). Deliberately not here: running anything — the daemon does.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from osiris_dagster.components.schedules import checked_cron, checked_timezone
from osiris_dagster.errors import PipelineSpecError
from osiris_dagster.spec.model import Pipeline, Step


def automation_block(pipeline: Pipeline, step: Step) -> tuple[str, Any] | None:
    """(field, block) of the `automation:` that applies to a step, or None."""
    raw_step = pipeline.document["steps"][step.index]
    if "automation" in raw_step:
        return f"{step.field_prefix}.automation", raw_step["automation"]
    if "automation" in pipeline.document:
        return "automation", pipeline.document["automation"]
    return None


def check_automation(pipeline: Pipeline) -> None:
    """Refuse what Dagster would refuse, naming the file and the field."""
    file = str(pipeline.file)
    for step in pipeline.steps:
        found = automation_block(pipeline, step)
        if found is None:
            continue
        field, block = found
        if "schedule" in pipeline.document:
            raise PipelineSpecError(
                file, field, "automation: and schedule: are alternatives: declare one of them (docs/automation.md)"
            )
        if isinstance(block, dict):
            checked_cron(file, f"{field}.on_cron", block["on_cron"])
            checked_timezone(file, f"{field}.timezone", block.get("timezone"))


def automation_condition(pipeline: Pipeline, step: Step, *, ignore: list[dg.AssetKey]) -> dg.AutomationCondition | None:
    found = automation_block(pipeline, step)
    if found is None:
        return None
    field, block = found
    file = str(pipeline.file)
    if block == "eager":
        condition = dg.AutomationCondition.eager()
    elif block == "on_missing":
        condition = dg.AutomationCondition.on_missing()
    else:
        condition = dg.AutomationCondition.on_cron(
            checked_cron(file, f"{field}.on_cron", block["on_cron"]),
            checked_timezone(file, f"{field}.timezone", block.get("timezone")),
        )
    return condition.ignore(dg.AssetSelection.assets(*ignore)) if ignore else condition


def automation_sensor_name(pipeline: Pipeline) -> str:
    return f"{pipeline.python_name}_automation"


def build_automation_sensor(
    pipeline: Pipeline, assets: list[dg.AssetsDefinition]
) -> dg.AutomationConditionSensorDefinition | None:
    """The pipeline's automation sensor, over its assets that have a condition (None if none has)."""
    keys = [key for asset in assets for key, condition in asset.automation_conditions_by_key.items() if condition]
    if not keys:
        return None
    return dg.AutomationConditionSensorDefinition(
        automation_sensor_name(pipeline),
        target=dg.AssetSelection.assets(*keys),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Declarative automation of pipeline {pipeline.name} (its automation: blocks)",
    )
