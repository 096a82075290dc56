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
    from osiris_dagster.project import ProjectLayout
    from osiris_dagster.staging import ExtractedTable
    from osiris_dagster.step_run import StepRun, WrittenTarget

ENTRY_POINT_GROUP = "osiris_dagster.components"

ReadDriver = Callable[["StepRun"], "ExtractedTable"]
WriteDriver = Callable[["StepRun", Mapping[str, "ExtractedTable"]], "WrittenTarget"]
# (rendered config, project or None) -> None; raises ConfigProblem.
ConfigCheck = Callable[[Mapping[str, Any], "ProjectLayout | None"], None]
# (rendered config, connection reference "@family.alias" or None, project or None) -> the target.
TargetOf = Callable[[Mapping[str, Any], "str | None", "ProjectLayout | None"], "WriteTarget | None"]


class ConfigProblem(Exception):
    """A component's own check refused a step's config; ``field`` is relative to ``config``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class WriteTarget:
    """Where a write step lands, comparable between steps: two steps on one target are refused.

    ``identity`` is what makes two targets the same (a resolved file path; a connection plus
    schema-qualified table); ``shown`` is how the error names it; ``field`` the config key.
    """

    identity: str
    shown: str
    field: str


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
    # Checks a JSON Schema cannot express (a write path inside the project, a known encoding),
    # run at validation once the config is rendered. Keep them cheap: they run for every step.
    check_config: ConfigCheck | None = None
    # What a write step writes to, so that two writers on one target are refused at validation.
    target_of: TargetOf | None = None


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
