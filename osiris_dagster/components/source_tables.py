"""The tables a pipeline reads, as external assets upstream of their extracts.

dagster-sling and dagster-dlt users see where data comes from: the source table is a node in the
lineage graph. Here each read step whose source is one table (`table:`, or a query over exactly one
table, the rule `sources/fingerprint.py` already uses) gets an `AssetSpec` keyed
`<pipeline>/source/<table>`, in the pipeline's group, with `dagster/table_name`, the connection
(`@family.alias`, never its fields) and the connection family as its kind. The extract depends on
it.

Keys are per pipeline on purpose: two pipelines reading the same table each show their own
source node, so loading one pipeline never depends on another. A query over several tables
(a join) has no source node: naming one of its tables would be a guess.

Deliberately not here: observing the table (the source-change sensor fingerprints it) or any
database access — definitions load without a connection.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from osiris_dagster.components.ownership import owners_and_tags
from osiris_dagster.sources.fingerprint import source_table
from osiris_dagster.spec.loader import check_step, connection_choice
from osiris_dagster.spec.model import Pipeline, to_python_name


def source_key(pipeline: Pipeline, table: str) -> dg.AssetKey:
    return dg.AssetKey([pipeline.python_name, "source", to_python_name(table)])


def source_tables(pipeline: Pipeline, params: dict[str, Any]) -> dict[str, dg.AssetSpec]:
    """read step id -> the external asset of the table it reads (steps over one table only)."""
    specs: dict[str, dg.AssetSpec] = {}
    for step in pipeline.steps:
        if step.mode != "read":
            continue
        component, config = check_step(pipeline, step, params)
        table = source_table(config.get("table"), config.get("query"))
        if table is None or not component.connection_families:
            continue
        family, alias = connection_choice(
            component, config, file=str(pipeline.file), field=f"{step.field_prefix}.config.connection", connections=None
        )
        connection = f"@{family}.{alias}" if alias else f"@{family} (default)"
        specs[step.id] = dg.AssetSpec(
            key=source_key(pipeline, table),
            description=f"Source table `{table}` read through {connection}",
            group_name=pipeline.python_name,
            kinds={family},
            metadata={"dagster/table_name": table, "osiris/connection": connection},
            owners=owners_and_tags(pipeline, None)["owners"],
            tags=owners_and_tags(pipeline, None)["tags"],
        )
    return specs
