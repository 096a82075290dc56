"""The schemas are the catalogue: code emits only declared names, and every declared name is emitted."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest

from osiris_dagster.session.catalogue import catalogue, load_schema
from osiris_dagster.session.session_log import SessionLog

PACKAGE = Path(__file__).resolve().parents[2] / "osiris_dagster"
EMITTED_EVENT = re.compile(r"""\.event\(\s*["']([A-Za-z0-9_.]+)["']""")
EMITTED_METRIC = re.compile(r"""\.metric\(\s*["']([A-Za-z0-9_.]+)["']""")


def names_in_code(pattern: re.Pattern[str]) -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        found.update(pattern.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_event_the_code_emits_is_declared_and_every_declared_event_is_emitted() -> None:
    emitted = names_in_code(EMITTED_EVENT)
    assert emitted - catalogue().events == set(), "emitted but not declared in schemas/events.schema.json"
    assert catalogue().events - emitted == set(), "declared in schemas/events.schema.json but never emitted"


def test_every_metric_the_code_emits_is_declared_and_every_declared_metric_is_emitted() -> None:
    emitted = names_in_code(EMITTED_METRIC)
    assert emitted - catalogue().metrics == set()
    assert catalogue().metrics - emitted == set()


def test_remote_only_lists_name_declared_entries() -> None:
    assert catalogue().remote_only_events <= catalogue().events
    assert catalogue().remote_only_metrics <= catalogue().metrics


def test_session_log_refuses_undeclared_names(tmp_path: Path) -> None:
    log = SessionLog(tmp_path / "run_x")
    with pytest.raises(ValueError, match="not declared"):
        log.event("step_errored", step_id="a")
    with pytest.raises(ValueError, match="not declared"):
        log.metric("rows_copied", 1, step_id="a")


def test_schemas_are_valid_json_schema_2020_12() -> None:
    for name in ("events", "metrics", "status", "pipeline", "connections"):
        jsonschema.Draft202012Validator.check_schema(load_schema(name))
