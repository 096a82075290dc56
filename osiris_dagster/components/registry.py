"""The catalogue of OML components (`mysql.extractor`, `filesystem.csv_writer`, ...).

A component type says what a pipeline step may declare (mode, config schema, connection
families) and which driver runs it. Built-in types are declared in `builtin.py`; other
packages (and this package's optional writers, like Supabase) plug in through the
``osiris_dagster.components`` entry-point group, each entry naming a `ComponentType`, so adding
a writer never touches the core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from osiris_dagster.staging import ExtractedTable
    from osiris_dagster.step_run import StepRun, WrittenTarget

ENTRY_POINT_GROUP = "osiris_dagster.components"

ReadDriver = Callable[["StepRun"], "ExtractedTable"]
WriteDriver = Callable[["StepRun", Mapping[str, "ExtractedTable"]], "WrittenTarget"]


@dataclass(frozen=True)
class ComponentType:
    name: str
    mode: Literal["read", "write"]
    description: str
    config_schema: Mapping[str, Any]
    # Connection families a step may reference; empty when the component takes no connection.
    connection_families: frozenset[str]
    run: ReadDriver | WriteDriver
    # Dagster `kinds` for the asset, from the step's config and connection family.
    kinds: Callable[[Mapping[str, Any], str | None], frozenset[str]] = field(default=lambda config, family: frozenset())
    # How many steps a write step may `need` (None: any number).
    max_inputs: int | None = 1


@cache
def component_types() -> Mapping[str, ComponentType]:
    from osiris_dagster.components.builtin import BUILTIN_COMPONENTS

    types = {component.name: component for component in BUILTIN_COMPONENTS}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        component = entry.load()
        if not isinstance(component, ComponentType):
            raise TypeError(f"entry point {entry.name} ({entry.value}) is not a ComponentType")
        types[component.name] = component
    return types


def get_component_type(name: str) -> ComponentType | None:
    return component_types().get(name)
