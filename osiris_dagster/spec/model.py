"""What a validated OML pipeline is, in the product's own words.

`Step.config` keeps the text as written (with `${params.x}` references): the same pipeline is
rendered with different parameters at definition-load time and at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Step:
    id: str
    component: str
    mode: str
    needs: tuple[str, ...]
    config: dict[str, Any]
    index: int
    description: str | None = None

    @property
    def field_prefix(self) -> str:
        """How error messages name this step's fields: ``steps[3]``."""
        return f"steps[{self.index}]"


@dataclass(frozen=True)
class Pipeline:
    name: str
    file: Path
    steps: tuple[Step, ...]
    params: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    document: dict[str, Any] = field(default_factory=dict)

    def step(self, step_id: str) -> Step:
        return next(step for step in self.steps if step.id == step_id)

    @property
    def python_name(self) -> str:
        """The pipeline name as Dagster identifiers need it (hyphens are not allowed there)."""
        return to_python_name(self.name)


def to_python_name(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")
