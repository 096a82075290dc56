"""The event and metric catalogue, read from `schemas/` (its one source of truth).

Code that emits an event or a metric uses a name the schema declares; `SessionLog` refuses any
other, and a test checks the other direction (every declared name is emitted somewhere). The
remote-only lists are the schemas' `x-remote-only` arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import jsonschema

from osiris_dagster.schemas_dir import SCHEMAS_DIR


@dataclass(frozen=True)
class Catalogue:
    events: frozenset[str]
    metrics: frozenset[str]
    remote_only_events: frozenset[str]
    remote_only_metrics: frozenset[str]
    metric_units: dict[str, str]


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


@cache
def catalogue() -> Catalogue:
    events = load_schema("events")
    metrics = load_schema("metrics")
    return Catalogue(
        events=frozenset(events["properties"]["event"]["enum"]),
        metrics=frozenset(metrics["properties"]["metric"]["enum"]),
        remote_only_events=frozenset(events["x-remote-only"]),
        remote_only_metrics=frozenset(metrics["x-remote-only"]),
        metric_units={name: d["properties"]["unit"]["const"] for name, d in metrics["$defs"].items()},
    )


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one of `events`, `metrics`, `status`, `pipeline`, `connections`."""
    return jsonschema.Draft202012Validator(
        load_schema(name), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
