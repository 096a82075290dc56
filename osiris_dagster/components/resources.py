"""Resources every pipeline job uses: run parameters and the two IO managers."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from osiris_dagster.io.extracted_table_io_manager import ExtractedTableIOManager
from osiris_dagster.io.written_target_io_manager import WrittenTargetIOManager

EXTRACTED_TABLE_IO_MANAGER_KEY = "osiris_extracted_table_io_manager"
WRITTEN_TARGET_IO_MANAGER_KEY = "osiris_written_target_io_manager"


class OmlRunParams(dg.ConfigurableResource):
    """`${params.NAME}` values for one run: the highest precedence, above OSIRIS_PARAM_* env vars.

    Set in the launchpad or run config: `resources: {osiris_params: {config: {values: {name: value}}}}`.
    """

    values: dict[str, Any] = Field(default_factory=dict)


def pipeline_resources() -> dict[str, Any]:
    return {
        "osiris_params": OmlRunParams(),
        EXTRACTED_TABLE_IO_MANAGER_KEY: ExtractedTableIOManager(),
        WRITTEN_TARGET_IO_MANAGER_KEY: WrittenTargetIOManager(),
    }
